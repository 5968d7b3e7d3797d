"""The conditional VAE of Sohn, Lee and Yan (2015) on the blog's model (`--model cvae`).

The label y in 0..9 joins both networks' inputs as a one-hot vector onehot(y) [B, 10]:

  fc1  784 + 10 -> 512  ReLU   q(z|x, y): the encoder sees the image and its digit
  fc21, fc22            as the VAE's
  fc3  z + 10 -> 512    ReLU   p(x|z, y): the decoder is told which digit to draw
  fc4  512 -> 784       as the VAE's

The names are the VAE's; fc1 and fc3 have 10 more input rows, the one-hot's, and
`fc1.kernel[:784]` plays the VAE's fc1. The ELBO is the VAE's with every distribution
conditioned on y and the prior p(z|y) = N(0, I) left unconditional, so the loss, the
reparameterization and the KL are the lesson's: `WithLabels(cvae, y)` is a model the
lesson's `losses.batch_loss` and `train.make_evaluate` take as they are. Because the
decoder is given the digit, z need not encode it: z is left for the style (slant,
width, stroke).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from vae_jax.model import VAE, VAEOutput, reparameterize


class CVAE(VAE):
  num_classes: int = 10  # MNIST's digits

  def setup(self):
    c = self.num_classes
    self.fc1 = self.dense(self.hidden_dim, self.data_dim + c, "fc1")
    self.fc21 = self.dense(self.latent_dim, self.hidden_dim, "fc21")
    self.fc22 = self.dense(self.latent_dim, self.hidden_dim, "fc22")
    self.fc3 = self.dense(self.hidden_dim, self.latent_dim + c, "fc3")
    self.fc4 = self.dense(self.data_dim, self.hidden_dim, "fc4")

  def join(self, a: jax.Array, y: jax.Array) -> jax.Array:
    """[B, n] and labels int [B] -> [B, n + 10]: `a` followed by onehot(y)."""
    return jnp.concatenate([a, jax.nn.one_hot(y, self.num_classes, dtype=a.dtype)], axis=-1)

  def encode(self, x: jax.Array, y: jax.Array) -> tuple[jax.Array, jax.Array]:
    """q(z|x, y): x [B, 784], y int [B] -> mu, logvar [B, z]."""
    return super().encode(self.join(x, y))

  def decode(self, z: jax.Array, y: jax.Array) -> jax.Array:
    """p(x|z, y): z [B, z], y int [B] -> logits [B, 784]."""
    return super().decode(self.join(z, y))

  def __call__(self, x: jax.Array, eps: jax.Array | None = None, *, y: jax.Array) -> VAEOutput:
    mu, logvar = self.encode(x, y)
    z = mu if eps is None else reparameterize(mu, logvar, eps)
    return VAEOutput(self.decode(z, y), mu, logvar, z)

  def init_params(self, key: jax.Array):
    return self.init(key, jnp.zeros((1, self.data_dim), jnp.float32),
                     y=jnp.zeros((1,), jnp.int32))["params"]


class WithLabels(NamedTuple):
  """The CVAE with the labels of a batch or split: a model to the lesson's code, whose
  `apply(variables, x, ...)` is the CVAE's with `y=labels`."""
  cvae: CVAE
  labels: jax.Array  # int [B]

  @property
  def latent_dim(self) -> int:
    return self.cvae.latent_dim

  def apply(self, variables, *args, **kwargs):
    return self.cvae.apply(variables, *args, y=self.labels, **kwargs)
