"""The blog's PyTorch code, the one reference this project compares against.

Model, loss and training loop of "PyTorch (11) Variational Autoencoder" (a reading
of pytorch/examples `vae/main.py`), modernised only where the 2018 API no longer
runs: no `Variable`, `reduction="sum"` for `size_average=False`, `loss.item()` for
`loss.data[0]`. One addition: `forward(x, eps)` takes the noise from the caller
when given, so a test can feed both frameworks the same eps.

Needs PyTorch (`pip install torch==2.13.0`, a CPU build); only the benchmark (when
it times PyTorch) and the parity tests import this module. The loops run on whatever
device the model and batches are on: the benchmark puts them on CUDA when torch sees
a GPU, as the blog does (`model.cuda()`, `data.cuda()` per batch).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F


class BlogVAE(nn.Module):
  """784-512-z encoder, z-512-784 decoder, as the post's `VAE`."""

  def __init__(self, latent_dim: int = 2, hidden_dim: int = 512):
    super().__init__()
    self.fc1 = nn.Linear(784, hidden_dim)
    self.fc21 = nn.Linear(hidden_dim, latent_dim)  # mu
    self.fc22 = nn.Linear(hidden_dim, latent_dim)  # logvar
    self.fc3 = nn.Linear(latent_dim, hidden_dim)
    self.fc4 = nn.Linear(hidden_dim, 784)
    self.relu = nn.ReLU()
    self.sigmoid = nn.Sigmoid()

  def encode(self, x):
    h = self.relu(self.fc1(x))
    return self.fc21(h), self.fc22(h)

  def reparameterize(self, mu, logvar, eps=None):
    if self.training:
      std = logvar.mul(0.5).exp_()
      eps = torch.randn_like(std) if eps is None else eps
      return eps.mul(std).add_(mu)
    return mu

  def decode(self, z):
    h = self.relu(self.fc3(z))
    return self.sigmoid(self.fc4(h))

  def forward(self, x, eps=None):
    mu, logvar = self.encode(x.view(-1, 784))
    z = self.reparameterize(mu, logvar, eps)
    return self.decode(z), mu, logvar


def loss_function(recon_x, x, mu, logvar):
  """The post's loss: summed BCE (clamped logs, PyTorch's) + the analytic KL."""
  bce = F.binary_cross_entropy(recon_x, x.view(-1, 784), reduction="sum")
  kld = -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp())
  return bce + kld


class ToTensorMNIST(torch.utils.data.Dataset):
  """`datasets.MNIST(..., transform=transforms.ToTensor())` over uint8 images [N, 28, 28].

  (torchvision does not import beside this torch build, so the conversion is
  written here; it skips PIL and is, if anything, faster than the original.)
  """

  def __init__(self, images_u8: np.ndarray):
    self.images = torch.from_numpy(np.asarray(images_u8).reshape(-1, 28, 28))

  def __len__(self):
    return len(self.images)

  def __getitem__(self, i):
    return self.images[i].unsqueeze(0).float().div(255), 0


def blog_batches(images_u8: np.ndarray, batch_size: int):
  """The post's loader: `DataLoader(dataset, batch_size, shuffle=True)`; yields x [B, 1, 28, 28]."""
  loader = torch.utils.data.DataLoader(ToTensorMNIST(images_u8), batch_size=batch_size,
                                       shuffle=True)
  return (x for x, _ in loader)


def tensor_batches(images: torch.Tensor, batch_size: int):
  """The fastest plain PyTorch feed: slices of one pre-converted float tensor [N, 784],
  shuffled on the tensor's own device (the data stay resident on a GPU)."""
  perm = torch.randperm(len(images), device=images.device)
  return (images[perm[i:i + batch_size]] for i in range(0, len(images), batch_size))


def train_epoch(model: BlogVAE, optimizer, batches) -> float:
  """The post's `train(epoch)`: returns the summed training loss."""
  model.train()
  train_loss = 0.0
  for x in batches:
    optimizer.zero_grad()
    recon, mu, logvar = model(x)
    loss = loss_function(recon, x, mu, logvar)
    loss.backward()
    train_loss += loss.item()
    optimizer.step()
  return train_loss


def compiled_train_epoch(model: BlogVAE, optimizer, mode: str | None = None):
  """The strongest plain PyTorch we know for this loop: `torch.compile` of one whole step.

  Returns `epoch(batches) -> summed training loss`. Forward, the blog's loss, backward
  and Adam run as compiled graphs (TorchInductor); the losses are summed on the device
  and read once per epoch instead of `loss.item()` every step. Not the blog's code: a
  yardstick for the benchmark. The first epoch compiles (and again for the last,
  shorter batch's shape). `mode="reduce-overhead"` (CUDA) replays each graph as a CUDA
  graph, one launch for all of its kernels.
  """

  @torch.compile(mode=mode)
  def step(x):
    optimizer.zero_grad(set_to_none=True)
    recon, mu, logvar = model(x)
    loss = loss_function(recon, x, mu, logvar)
    loss.backward()
    optimizer.step()
    return loss.detach()

  def epoch(batches) -> float:
    model.train()
    total = torch.zeros((), device=next(model.parameters()).device)
    for x in batches:
      total += step(x)  # read now: a CUDA graph's next replay reuses its output's memory
    return float(total)

  return epoch


def test_epoch(model: BlogVAE, batches) -> float:
  """The post's `test(epoch)`: eval mode (z = mu), returns the summed test loss."""
  model.eval()
  test_loss = 0.0
  with torch.no_grad():
    for x in batches:
      recon, mu, logvar = model(x)
      test_loss += loss_function(recon, x, mu, logvar).item()
  return test_loss
