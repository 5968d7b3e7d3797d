"""Burda, Grosse and Salakhutdinov, "Importance Weighted Autoencoders" (ICLR 2016): their
one-stochastic-layer model (`--arch burda`) and training schedule (`--schedule burda`).

Their code (yburda/iwae): 784-200-200-50 with tanh, batch 20, Adam's epsilon 1e-4, and
3^i epochs at learning rate 1e-3 * 10^(-i/7) for i = 0..7 (3,280 epochs). `--arch burda`
brings their sizes and `--schedule burda` their recipe as defaults, each one overridable; `--epochs N` runs a prefix of the schedule. (The presets live in `config.PRESETS`: the
command line reads them without importing JAX.)
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from vae_jax.config import BURDA_STAGES
from vae_jax.model import VAE


def learning_rate(base: float, epoch_index):
  """Their schedule: epochs sum_{j<i} 3^j + 1 .. sum_{j<=i} 3^j (1-based) of stage i = 0..7
  train at base * 10^(-i/7). epoch_index: 0-based (int or int array) -> rate."""
  starts = jnp.array([(3**i - 1) // 2 for i in range(1, BURDA_STAGES)])  # 1, 4, 13, ..., 1093
  stage = jnp.sum(jnp.asarray(epoch_index)[..., None] >= starts, axis=-1)
  return base * 10.0 ** (-stage / 7.0)


class BurdaVAE(VAE):
  """Their model, names continuing the blog's:

    fc1  784 -> h  tanh,  fc2  h -> h  tanh    (encoder)
    fc31 h -> z  mu,      fc32 h -> z  logvar
    fc4  z -> h  tanh,    fc5  h -> h  tanh    (decoder)
    fc6  h -> 784         logits
  """

  def setup(self):
    h, z, d = self.hidden_dim, self.latent_dim, self.data_dim
    self.fc1, self.fc2 = self.dense(h, d, "fc1"), self.dense(h, h, "fc2")
    self.fc31, self.fc32 = self.dense(z, h, "fc31"), self.dense(z, h, "fc32")
    self.fc4, self.fc5 = self.dense(h, z, "fc4"), self.dense(h, h, "fc5")
    self.fc6 = self.dense(d, h, "fc6")

  def encode(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
    """x: [B, 784] -> mu, logvar: [B, z]."""
    h = jnp.tanh(self.fc2(jnp.tanh(self.fc1(x))))  # [B, h]
    return self.fc31(h), self.fc32(h)

  def decode(self, z: jax.Array) -> jax.Array:
    """z: [B, z] -> logits [B, 784]."""
    return self.fc6(jnp.tanh(self.fc5(jnp.tanh(self.fc4(z)))))
