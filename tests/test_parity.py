"""PyTorch parity: the blog's model, written from the post, against the JAX model.

Needs PyTorch (`pip install torch==2.13.0`, a CPU build); CI installs it.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vae_jax import Config, torch_io, train
from vae_jax.model import make_model

torch = pytest.importorskip("torch")
nn, F = torch.nn, torch.nn.functional


class BlogVAE(nn.Module):
  """The post's model. Modernised only where the 2018 API no longer runs: no `Variable`,
  `reduction="sum"` for `size_average=False`, and eps passed in so both sides share it."""

  def __init__(self, z=2):
    super().__init__()
    self.fc1 = nn.Linear(784, 512)
    self.fc21 = nn.Linear(512, z)  # mu
    self.fc22 = nn.Linear(512, z)  # logvar
    self.fc3 = nn.Linear(z, 512)
    self.fc4 = nn.Linear(512, 784)
    self.relu = nn.ReLU()
    self.sigmoid = nn.Sigmoid()

  def encode(self, x):
    h = self.relu(self.fc1(x))
    return self.fc21(h), self.fc22(h)

  def reparameterize(self, mu, logvar, eps):
    if self.training:
      std = logvar.mul(0.5).exp_()
      return eps.mul(std).add_(mu)
    return mu

  def decode(self, z):
    h = self.relu(self.fc3(z))
    return self.sigmoid(self.fc4(h))

  def forward(self, x, eps=None):
    mu, logvar = self.encode(x.view(-1, 784))
    z = self.reparameterize(mu, logvar, eps)
    return self.decode(z), mu, logvar


def blog_loss(recon_x, x, mu, logvar):
  recon = F.binary_cross_entropy(recon_x, x.view(-1, 784), reduction="sum")
  kld = -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp())
  return recon + kld


def _digits(n, seed):
  """Continuous digit-like images in [0, 1]: dark background, bright strokes."""
  rng = np.random.default_rng(seed)
  x = rng.uniform(0, 0.1, (n, 28, 28)) * (rng.uniform(size=(n, 28, 28)) < 0.3)
  for i in range(n):
    r, c = rng.integers(4, 20, 2)
    x[i, r:r + 6, c:c + 3] = rng.uniform(0.6, 1.0)
  return x.reshape(n, 784).astype(np.float32)


def test_state_dict_round_trip_and_errors(tmp_path):
  torch.manual_seed(0)
  model = BlogVAE(z=3)
  torch.save(model.state_dict(), tmp_path / "vae.pth")
  params = torch_io.params_from_state_dict(torch_io.load_state_dict(tmp_path / "vae.pth"))
  np.testing.assert_array_equal(params["fc1"]["kernel"], model.fc1.weight.detach().numpy().T)
  torch_io.export_state_dict(params, tmp_path / "back.npz")
  torch_io.export_state_dict(params, tmp_path / "back.pth")
  for name in ("back.npz", "back.pth"):
    back = torch_io.load_state_dict(tmp_path / name)
    for k, v in model.state_dict().items():
      np.testing.assert_array_equal(back[k], v.numpy())
  model.load_state_dict(torch.load(tmp_path / "back.pth", weights_only=True))  # PyTorch reads it
  state = torch_io.state_dict_from_params(params)
  with pytest.raises(ValueError, match=r"missing \['fc4.bias'\]"):
    torch_io.params_from_state_dict({k: v for k, v in state.items() if k != "fc4.bias"})
  with pytest.raises(ValueError, match=r"'fc1.weight' has shape \[784, 512\], expected \[512, 784\]"):
    torch_io.params_from_state_dict({**state, "fc1.weight": state["fc1.weight"].T})


@pytest.mark.parametrize("z", [2, 20])
def test_200_adam_steps_match_pytorch(z):
  steps, batch = 200, 128
  torch.manual_seed(1)
  torch.set_num_threads(2)
  tmodel = BlogVAE(z)
  params = torch_io.params_from_state_dict(tmodel.state_dict())  # the same initial weights
  toptim = torch.optim.Adam(tmodel.parameters(), lr=1e-3)

  config = Config(latent_dim=z)
  model, optimizer = make_model(config), train.make_optimizer(config)
  state = train.TrainState(params, optimizer.init(params))

  @jax.jit
  def step(state, x, eps):
    (loss, _), grads = jax.value_and_grad(train.batch_loss, has_aux=True)(
        state.params, model, x, eps, jnp.ones(batch))
    updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
    return train.TrainState(jax.tree.map(jnp.add, state.params, updates), opt_state), loss

  data = _digits(1024, seed=0)
  rng = np.random.default_rng(1)
  jax_losses, torch_losses = [], []
  for _ in range(steps):
    x = data[rng.choice(len(data), batch, replace=False)]  # the same batch for both
    eps = rng.standard_normal((batch, z)).astype(np.float32)  # and the same eps
    state, loss = step(state, x, eps)
    jax_losses.append(float(loss))
    toptim.zero_grad()
    xt = torch.from_numpy(x)
    recon, mu, logvar = tmodel(xt, torch.from_numpy(eps))
    tloss = blog_loss(recon, xt, mu, logvar)
    tloss.backward()
    toptim.step()
    torch_losses.append(tloss.item())

  jax_losses, torch_losses = np.array(jax_losses), np.array(torch_losses)
  rel = np.abs(jax_losses - torch_losses) / np.abs(torch_losses)
  print(f"z={z}: per-step loss, max relative difference {rel.max():.2e}")
  # float32 throughout; the two differ in summation order and in the BCE (logits
  # vs clamped probabilities): per-step losses agree to about 1e-7.
  assert rel.max() < 1e-5, (rel.max(), rel.argmax())
  assert jax_losses[-1] < 0.7 * jax_losses[0]  # it did learn
  final = torch_io.state_dict_from_params(state.params)
  for k, v in tmodel.state_dict().items():
    v = v.numpy()
    err = np.abs(final[k] - v) / np.abs(v).max()  # relative to the tensor's scale
    print(f"  {k}: median {np.median(err):.1e}, 99th pct {np.quantile(err, 0.99):.1e}, "
          f"max {err.max():.1e}")
    # Almost every weight agrees to 1e-5 of its tensor's scale. A few do not: a hidden
    # unit whose pre-activation sits within rounding of ReLU's kink on some example
    # is on in one framework and off in the other; from then on the weights into and
    # out of that unit see different gradients, and Adam moves each by up to lr (1e-3)
    # a step. Measured on fc1.weight (the worst): median 1.7e-7 / 1.2e-6, 99th
    # percentile 3.8e-5 / 2.2e-4, max 1.1e-2 / 2.6e-2 for z = 2 / 20 (4 of 512 units
    # flipped at z = 2); the worst median is fc21.bias at z = 20, 3.9e-5. Bounds:
    # median 1e-4, 99th percentile 1e-3, max 5e-2.
    assert np.median(err) < 1e-4, k
    assert np.quantile(err, 0.99) < 1e-3, k
    assert err.max() < 0.05, k

  # Eval mode (z = mu) on the same weights: the blog's test loss.
  tmodel.eval()
  test = _digits(500, seed=2)
  with torch.no_grad():
    xt = torch.from_numpy(test)
    recon, mu, logvar = tmodel(xt)
    t_eval = blog_loss(recon, xt, mu, logvar).item() / len(test)
  j_eval = float(train.make_evaluate(model)(
      torch_io.params_from_state_dict(tmodel.state_dict()),
      jnp.asarray(np.round(test * 255), jnp.uint8)).loss) / len(test)
  # The JAX side reads uint8 pixels: quantise the torch input the same way first.
  with torch.no_grad():
    xq = torch.from_numpy((np.round(test * 255) / 255).astype(np.float32))
    recon, mu, logvar = tmodel(xq)
    t_eval_q = blog_loss(recon, xq, mu, logvar).item() / len(test)
  np.testing.assert_allclose(j_eval, t_eval_q, rtol=1e-5)
  assert abs(t_eval - t_eval_q) < 0.01 * t_eval
