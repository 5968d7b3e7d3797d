"""The blog's VAE as a Flax Linen module: 784-512-z encoder, z-512-784 decoder.

Parameter names map one-to-one onto the blog's PyTorch `state_dict`:

  fc1  784 -> 512  ReLU        (encoder hidden layer)
  fc21 512 -> z                mu
  fc22 512 -> z                logvar = log sigma^2
  fc3  z -> 512    ReLU        (decoder hidden layer)
  fc4  512 -> 784              logits of the Bernoulli means (the blog applies sigmoid here)

A Flax `Dense` kernel is [in, out]; a PyTorch `nn.Linear.weight` is [out, in]:
`params["fc1"]["kernel"] == state_dict["fc1.weight"].T`.

The decoder returns **logits**, not probabilities: the loss applies the sigmoid
inside a numerically stable log (see `losses.py`).
"""

from __future__ import annotations

from typing import NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp


class VAEOutput(NamedTuple):
  logits: jax.Array  # [B, 784]  decoder output before the sigmoid
  mu: jax.Array      # [B, z]
  logvar: jax.Array  # [B, z]
  z: jax.Array       # [B, z]    the latent code that was decoded


def torch_linear_init(fan_in: int):
  """PyTorch's `nn.Linear` default: weights and biases ~ U(-1/sqrt(fan_in), 1/sqrt(fan_in)).

  (`kaiming_uniform_(a=sqrt(5))` on the weight reduces to exactly this bound.)
  """
  bound = 1.0 / jnp.sqrt(fan_in)

  def init(key, shape, dtype=jnp.float32):
    return jax.random.uniform(key, shape, dtype, -bound, bound)

  return init


def reparameterize(mu: jax.Array, logvar: jax.Array, eps: jax.Array) -> jax.Array:
  """z = mu + sigma * eps with sigma = exp(logvar / 2), eps ~ N(0, I).

  The blog's `eps.mul(std).add_(mu)`: one eps per latent dimension. Because z is a
  deterministic, differentiable function of (mu, logvar) given eps, gradients of
  any f(z) flow to the encoder: dz/dmu = 1, dz/dlogvar = sigma * eps / 2.

  Args:
    mu: [..., z]; logvar: [..., z]; eps: [..., z] standard normal noise.
  Returns:
    z: [..., z].
  """
  return mu + jnp.exp(0.5 * logvar) * eps


class VAE(nn.Module):
  """The blog's model. `__call__(x, eps)`: eps=None is eval mode (z = mu)."""

  latent_dim: int = 2
  hidden_dim: int = 512
  data_dim: int = 784         # pixels per image
  init_scheme: str = "torch"  # "torch" (nn.Linear's default) or "flax" (lecun_normal, zero bias)
  precision: str = "highest"  # of every matrix product, forward and backward

  @classmethod
  def from_config(cls, config) -> "VAE":
    return cls(latent_dim=config.latent_dim, hidden_dim=config.hidden_dim,
               init_scheme=config.init, precision=config.matmul_precision)

  def dense(self, features: int, fan_in: int, name: str) -> nn.Dense:
    # The one place the precision is set: every program the package compiles runs the
    # model, and autodiff gives the backward products the forward ones' precision.
    # "highest" is float32 as PyTorch computes it; a GPU's "default" may round the
    # inputs of a product to ~10 bits (TF32-like). On a CPU all three are the same.
    p = jax.lax.Precision(self.precision)
    if self.init_scheme == "torch":
      i = torch_linear_init(fan_in)
      return nn.Dense(features, kernel_init=i, bias_init=i, precision=p, name=name)
    if self.init_scheme != "flax":
      raise ValueError(f"`init` must be torch or flax, got {self.init_scheme!r}")
    return nn.Dense(features, precision=p, name=name)

  def setup(self):
    self.fc1 = self.dense(self.hidden_dim, self.data_dim, "fc1")
    self.fc21 = self.dense(self.latent_dim, self.hidden_dim, "fc21")
    self.fc22 = self.dense(self.latent_dim, self.hidden_dim, "fc22")
    self.fc3 = self.dense(self.hidden_dim, self.latent_dim, "fc3")
    self.fc4 = self.dense(self.data_dim, self.hidden_dim, "fc4")

  def encode(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
    """q(z|x) = N(mu(x), diag(exp(logvar(x)))). x: [B, 784] in [0, 1] -> ([B, z], [B, z])."""
    h = nn.relu(self.fc1(x))           # [B, 512]
    return self.fc21(h), self.fc22(h)  # mu, logvar

  def decode(self, z: jax.Array) -> jax.Array:
    """p(x|z) = Bernoulli(sigmoid(logits)). z: [B, z] -> logits [B, 784]."""
    h = nn.relu(self.fc3(z))  # [B, 512]
    return self.fc4(h)

  def __call__(self, x: jax.Array, eps: jax.Array | None = None) -> VAEOutput:
    """x: [B, 784]; eps: [B, z] noise (train mode) or None (eval mode, z = mu)."""
    mu, logvar = self.encode(x)
    z = mu if eps is None else reparameterize(mu, logvar, eps)
    return VAEOutput(self.decode(z), mu, logvar, z)

  def init_params(self, key: jax.Array):
    """Parameters for a [1, 784] input: {"fc1": {"kernel", "bias"}, ...}."""
    return self.init(key, jnp.zeros((1, self.data_dim), jnp.float32))["params"]
