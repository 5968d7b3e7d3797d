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

`CVAE` is the conditional VAE (`--model cvae`): the same five layers, with the label's
one-hot vector joined to fc1's input (q(z|x, y)) and to fc3's input (p(x|z, y)).
"""

from __future__ import annotations

from typing import NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from vae_jax.config import ARCHS, INITS, MODELS, PRECISIONS


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
  """The blog's model. `__call__(x, eps)`: eps=None is eval mode (z = mu).

  Every method takes the labels `y` as its last argument, for the CVAE's sake; the VAE
  is unconditional and refuses them (`_join`).
  """

  latent_dim: int = 2
  hidden_dim: int = 512
  data_dim: int = 784       # pixels per image, as torch_io's data_dim
  init_scheme: str = "torch"  # "torch" (nn.Linear's default) or "flax" (lecun_normal, zero bias)
  precision: str = "highest"  # of every matrix product, forward and backward (PRECISIONS)

  def _dense(self, features: int, fan_in: int, name: str) -> nn.Dense:
    # The one place the precision is set: every program the package compiles runs the
    # model, and autodiff gives the backward products the forward ones' precision.
    # "highest" is float32 as PyTorch computes it; a GPU's "default" may round the
    # inputs of a product to ~10 bits (TF32-like). On a CPU all three are the same.
    p = jax.lax.Precision(self.precision)
    if self.init_scheme == "torch":
      i = torch_linear_init(fan_in)
      return nn.Dense(features, kernel_init=i, bias_init=i, precision=p, name=name)
    return nn.Dense(features, precision=p, name=name)

  def _check(self):
    if self.init_scheme not in INITS:
      raise ValueError(f"init_scheme must be one of {INITS}, got {self.init_scheme!r}")
    if self.precision not in PRECISIONS:
      raise ValueError(f"precision must be one of {PRECISIONS}, got {self.precision!r}")

  # Inputs the label adds to fc1 and fc3: 0 here, the number of classes in the CVAE.
  condition_dim = 0
  conditional = False  # whether encode, decode and __call__ need the labels y

  def _join(self, a: jax.Array, y: jax.Array | None) -> jax.Array:
    """The VAE's input to fc1 or fc3: `a` alone (the CVAE joins the label to it)."""
    if y is not None:
      raise ValueError("the VAE is unconditional: it takes no labels (the CVAE does)")
    return a

  def setup(self):
    self._check()
    c = self.condition_dim
    self.fc1 = self._dense(self.hidden_dim, self.data_dim + c, "fc1")
    self.fc21 = self._dense(self.latent_dim, self.hidden_dim, "fc21")
    self.fc22 = self._dense(self.latent_dim, self.hidden_dim, "fc22")
    self.fc3 = self._dense(self.hidden_dim, self.latent_dim + c, "fc3")
    self.fc4 = self._dense(self.data_dim, self.hidden_dim, "fc4")

  def encode(self, x: jax.Array, y: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
    """q(z|x) = N(mu(x), diag(exp(logvar(x)))). x: [B, 784] in [0, 1] -> ([B, z], [B, z])."""
    h = nn.relu(self.fc1(self._join(x, y)))  # [B, 512]
    return self.fc21(h), self.fc22(h)         # mu, logvar

  def decode(self, z: jax.Array, y: jax.Array | None = None) -> jax.Array:
    """p(x|z) = Bernoulli(sigmoid(logits)). z: [B, z] -> logits [B, 784]."""
    h = nn.relu(self.fc3(self._join(z, y)))  # [B, 512]
    return self.fc4(h)

  def __call__(self, x: jax.Array, eps: jax.Array | None = None,
               y: jax.Array | None = None) -> VAEOutput:
    """x: [B, 784]; eps: [B, z] noise (train mode) or None (eval mode, z = mu);
    y: int [B] labels (the CVAE's; None for the VAE)."""
    mu, logvar = self.encode(x, y)
    z = mu if eps is None else reparameterize(mu, logvar, eps)
    return VAEOutput(self.decode(z, y), mu, logvar, z)


class CVAE(VAE):
  """The conditional VAE of Sohn, Lee and Yan (2015) on the blog's model (`--model cvae`).

  The label y in 0..9 joins both networks' inputs as a one-hot vector onehot(y) [B, 10]:

    fc1  784 + 10 -> 512  ReLU   q(z|x, y): the encoder sees the image and its digit
    fc21, fc22            as the VAE's
    fc3  z + 10 -> 512    ReLU   p(x|z, y): the decoder is told which digit to draw
    fc4  512 -> 784       as the VAE's

  The names are the VAE's; fc1 and fc3 have 10 more input rows, the one-hot's, and
  `fc1.kernel[:784]` plays the VAE's fc1. The ELBO is the VAE's with every
  distribution conditioned on y and the prior p(z|y) = N(0, I) left unconditional, so
  the loss, the reparameterization and the KL are unchanged. Because the decoder is
  given the digit, z need not encode it: z is left for the style (slant, width, stroke).
  """

  condition_dim = 10  # MNIST's ten digits
  conditional = True

  def _join(self, a: jax.Array, y: jax.Array | None) -> jax.Array:
    """[B, n] and labels [B] -> [B, n + classes]: `a` followed by onehot(y)."""
    if y is None:
      raise ValueError("the CVAE is conditional: pass the labels y")
    return jnp.concatenate([a, jax.nn.one_hot(y, self.condition_dim, dtype=a.dtype)], axis=-1)


class BurdaVAE(VAE):
  """The one-stochastic-layer model of Burda, Grosse and Salakhutdinov (2016): two tanh layers.

  `--arch burda` (784-200-200-50 with its sizes' defaults). Names continue the blog's:

    fc1  784 -> h  tanh,  fc2  h -> h  tanh    (encoder)
    fc31 h -> z  mu,      fc32 h -> z  logvar
    fc4  z -> h  tanh,    fc5  h -> h  tanh    (decoder)
    fc6  h -> 784         logits
  """

  def setup(self):
    self._check()
    h, z, d = self.hidden_dim, self.latent_dim, self.data_dim
    self.fc1, self.fc2 = self._dense(h, d, "fc1"), self._dense(h, h, "fc2")
    self.fc31, self.fc32 = self._dense(z, h, "fc31"), self._dense(z, h, "fc32")
    self.fc4, self.fc5 = self._dense(h, z, "fc4"), self._dense(h, h, "fc5")
    self.fc6 = self._dense(d, h, "fc6")

  def encode(self, x: jax.Array, y: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
    """x: [B, 784] -> mu, logvar: [B, z]."""
    h = jnp.tanh(self.fc2(jnp.tanh(self.fc1(self._join(x, y)))))  # [B, h]
    return self.fc31(h), self.fc32(h)

  def decode(self, z: jax.Array, y: jax.Array | None = None) -> jax.Array:
    """z: [B, z] -> logits [B, 784]."""
    return self.fc6(jnp.tanh(self.fc5(jnp.tanh(self.fc4(self._join(z, y))))))


def make_model(config) -> VAE:
  """The model `config.model` and `config.arch` name, at its sizes and precision."""
  if config.arch not in ARCHS:
    raise ValueError(f"arch must be one of {ARCHS}, got {config.arch!r}")
  if config.model not in MODELS:
    raise ValueError(f"model must be one of {MODELS}, got {config.model!r}")
  cls = CVAE if config.model == "cvae" else BurdaVAE if config.arch == "burda" else VAE
  return cls(latent_dim=config.latent_dim, hidden_dim=config.hidden_dim, init_scheme=config.init,
             precision=config.matmul_precision)


def init_params(model: VAE, key: jax.Array):
  """Parameters of `model` for a [1, 784] input: {"fc1": {"kernel", "bias"}, ...}."""
  x = jnp.zeros((1, model.data_dim), jnp.float32)
  y = jnp.zeros((1,), jnp.int32) if model.conditional else None  # the CVAE's label
  return model.init(key, x, None, y)["params"]
