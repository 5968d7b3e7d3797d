"""vae-jax: the MNIST VAE of "PyTorch (11) Variational Autoencoder" (2018) in JAX, Flax and
Optax.

`from vae_jax import VAE, vae_loss, ...` imports JAX on first use of such a name, not
with the package: the command line starts without it, so that Ctrl-C works from its
first line (`vae_jax.interrupt`).
"""

import importlib

_EXPORTS = {"Config": "config", "LossTerms": "losses", "bernoulli_nll": "losses",
            "kl_standard_normal": "losses", "vae_loss": "losses", "VAE": "model",
            "VAEOutput": "model", "reparameterize": "model"}
__all__ = sorted(_EXPORTS)
__version__ = "0.1.0"


def __getattr__(name: str):
  if name in _EXPORTS:
    return getattr(importlib.import_module(f"vae_jax.{_EXPORTS[name]}"), name)
  raise AttributeError(f"module 'vae_jax' has no attribute {name!r}")
