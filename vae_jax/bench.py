"""Seconds per epoch: this JAX trainer vs the blog's PyTorch loop, same machine, same run.

  python -m vae_jax bench --epochs 3            # or: python scripts/bench.py

An epoch is the blog's: 60k training images in shuffled batches of 128 (Adam
steps, sampled z) then the 10k test images (eval mode). Compile time is shown
apart. The PyTorch rows need the `torch` extra (`pip install torch==2.13.0`,
a CPU build); they are skipped when it is missing.

PyTorch rows:
* ``blog``: the post's loop: a `DataLoader(batch_size=128, shuffle=True)` over a
  dataset that converts each image like `ToTensor()` (uint8 -> float / 255),
  forward, `binary_cross_entropy(..., reduction="sum")` + KLD, backward, Adam.
  (torchvision itself does not import beside this torch build, so the dataset
  is written here; it skips PIL and is, if anything, faster than the original.)
* ``tensor``: the same model and loss fed by slicing one pre-converted tensor
  with `randperm`: the fastest plain PyTorch loop, to show where time goes.
"""

from __future__ import annotations

import math
import os
import platform
import time

import jax
import numpy as np

from vae_jax import train
from vae_jax.config import Config


def bench_jax(config: Config, train_u8: np.ndarray, test_u8: np.ndarray, epochs: int) -> dict:
  model, optimizer = train.make_model(config), train.make_optimizer(config)
  keys = train.run_keys(config.seed)
  state = train.create_state(model, optimizer, keys.init)
  x_train, x_test = jax.device_put(train.flatten(train_u8)), jax.device_put(train.flatten(test_u8))
  t0 = time.perf_counter()
  train_epoch = jax.jit(train.make_train_epoch(
      model, optimizer, num_examples=len(train_u8), batch_size=config.batch_size)
  ).lower(state, x_train, keys.train).compile()
  evaluate = jax.jit(train.make_evaluate(model)).lower(state.params, x_test).compile()
  compile_s = time.perf_counter() - t0
  train_s, test_s = [], []
  for epoch in range(1, epochs + 1):
    t0 = time.perf_counter()
    state, _ = jax.block_until_ready(train_epoch(state, x_train, train.epoch_key(keys.train, epoch)))
    t1 = time.perf_counter()
    jax.block_until_ready(evaluate(state.params, x_test))
    t2 = time.perf_counter()
    train_s.append(t1 - t0)
    test_s.append(t2 - t1)
  return _row("jax (this project)", compile_s, train_s, test_s)


def _row(name, compile_s, train_s, test_s) -> dict:
  # The median of the epochs: robust to one slow epoch on a shared machine.
  tr, te = float(np.median(train_s)), float(np.median(test_s))
  return {"name": name, "compile_s": compile_s, "train_s": tr, "test_s": te, "epoch_s": tr + te}


def bench_torch(config: Config, train_u8: np.ndarray, test_u8: np.ndarray, epochs: int,
                loader: str = "blog") -> dict:
  import torch
  from torch import nn
  from torch.nn import functional as F

  torch.manual_seed(config.seed)

  class VAE(nn.Module):  # the blog's model, verbatim but for the 2018 Variable API
    def __init__(self, z):
      super().__init__()
      self.fc1 = nn.Linear(784, config.hidden_dim)
      self.fc21 = nn.Linear(config.hidden_dim, z)
      self.fc22 = nn.Linear(config.hidden_dim, z)
      self.fc3 = nn.Linear(z, config.hidden_dim)
      self.fc4 = nn.Linear(config.hidden_dim, 784)

    def forward(self, x):
      h = F.relu(self.fc1(x.view(-1, 784)))
      mu, logvar = self.fc21(h), self.fc22(h)
      z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar) if self.training else mu
      return torch.sigmoid(self.fc4(F.relu(self.fc3(z)))), mu, logvar

  def loss_function(recon_x, x, mu, logvar):
    bce = F.binary_cross_entropy(recon_x, x.view(-1, 784), reduction="sum")
    return bce - 0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp())

  class ToTensorMNIST(torch.utils.data.Dataset):  # datasets.MNIST + transforms.ToTensor()
    def __init__(self, images):
      self.images = torch.from_numpy(images)
    def __len__(self):
      return len(self.images)
    def __getitem__(self, i):
      return self.images[i].unsqueeze(0).float().div(255), 0

  if loader == "blog":
    def batches(images):
      return (x for x, _ in torch.utils.data.DataLoader(
          ToTensorMNIST(images), batch_size=config.batch_size, shuffle=True))
  elif loader == "tensor":
    converted = {"train": torch.from_numpy(train_u8).reshape(-1, 784).float() / 255,
                 "test": torch.from_numpy(test_u8).reshape(-1, 784).float() / 255}

    def batches(images):
      x = converted["train" if images is train_u8 else "test"]
      perm = torch.randperm(len(x))
      return (x[perm[i:i + config.batch_size]] for i in range(0, len(x), config.batch_size))
  else:
    raise ValueError(f"loader must be 'blog' or 'tensor', got {loader!r}")

  model = VAE(config.latent_dim)
  optimizer = torch.optim.Adam(model.parameters(), lr=config.learning_rate)
  train_s, test_s = [], []
  for _ in range(epochs):
    t0 = time.perf_counter()
    model.train()
    train_loss = 0.0
    for x in batches(train_u8):
      optimizer.zero_grad()
      recon, mu, logvar = model(x)
      loss = loss_function(recon, x, mu, logvar)
      loss.backward()
      train_loss += loss.item()  # the blog's `loss.data[0]`
      optimizer.step()
    t1 = time.perf_counter()
    model.eval()
    with torch.no_grad():
      test_loss = 0.0
      for x in batches(test_u8):
        recon, mu, logvar = model(x)
        test_loss += loss_function(recon, x, mu, logvar).item()
    t2 = time.perf_counter()
    train_s.append(t1 - t0)
    test_s.append(t2 - t1)
  return _row(f"pytorch {torch.__version__}, {loader} loop", math.nan, train_s, test_s)


def run(config: Config, epochs: int, torch_loaders=("blog", "tensor")) -> list[dict]:
  """Benchmarks JAX and (if installed) PyTorch on the full MNIST; prints and returns rows."""
  from vae_jax import data
  tr = data.load_mnist("train", source=config.data_source, data_dir=config.data_dir)
  te = data.load_mnist("test", source=config.data_source, data_dir=config.data_dir)
  rows = [bench_jax(config, tr.images, te.images, epochs)]
  try:
    import torch  # noqa: F401
  except ImportError:
    print("PyTorch is not installed: skipping its rows (pip install torch==2.13.0)")
  else:
    for loader in torch_loaders:
      rows.append(bench_torch(config, tr.images, te.images, epochs, loader))
  print(format_table(rows, config, epochs))
  return rows


def describe_machine() -> str:
  """The device JAX runs on, the CPU model and core count, and the library versions."""
  dev = jax.devices()[0]
  cpu = platform.processor() or platform.machine()
  try:
    with open("/proc/cpuinfo") as f:
      cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
  except (OSError, StopIteration):
    pass
  return (f"jax {jax.__version__} on {dev.platform} ({dev.device_kind}); "
          f"CPU: {cpu}, {os.cpu_count()} cores, {platform.machine()}")


def format_table(rows: list[dict], config: Config, epochs: int) -> str:
  base = next((r for r in rows if "blog" in r["name"]), None)
  lines = [f"machine: {describe_machine()}",
           f"z = {config.latent_dim}, batch {config.batch_size}, median of {epochs} epochs",
           "| loop | compile s | train s/epoch | test s/epoch | epoch s | vs blog loop |",
           "|---|---|---|---|---|---|"]
  for r in rows:
    ratio = f"{r['epoch_s'] / base['epoch_s']:.2f}x" if base else "n/a"
    comp = "-" if math.isnan(r["compile_s"]) else f"{r['compile_s']:.2f}"
    lines.append(f"| {r['name']} | {comp} | {r['train_s']:.3f} | {r['test_s']:.3f} "
                 f"| {r['epoch_s']:.3f} | {ratio} |")
  return "\n".join(lines)
