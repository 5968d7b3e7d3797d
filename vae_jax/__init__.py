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
  """`vae_jax.VAE` and the other names above, or a submodule (`vae_jax.losses`), on first use."""
  if name in _EXPORTS:
    return getattr(importlib.import_module(f"vae_jax.{_EXPORTS[name]}"), name)
  try:
    return importlib.import_module(f"vae_jax.{name}")
  except ModuleNotFoundError as e:
    if e.name != f"vae_jax.{name}":  # the submodule exists and lacks a package of its own
      raise
  raise AttributeError(f"module 'vae_jax' has no attribute {name!r}")


def __dir__():
  return sorted([*globals(), *__all__])
