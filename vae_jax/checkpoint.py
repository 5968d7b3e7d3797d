"""Saving and loading the parameters (Flax's msgpack serialisation)."""

from __future__ import annotations

from pathlib import Path

import jax
from flax import serialization

from vae_jax.config import Config
from vae_jax.model import init_params, make_model


def save_params(params, path) -> None:
  Path(path).write_bytes(serialization.to_bytes(jax.device_get(params)))


def load_params(path, config: Config):
  """Reads parameters saved by `save_params` for a model built from `config`."""
  template = init_params(make_model(config), jax.random.PRNGKey(0))
  try:
    return serialization.from_bytes(template, Path(path).read_bytes())
  except FileNotFoundError:
    raise
  except Exception as e:
    raise ValueError(f"{path} does not hold parameters of a z={config.latent_dim}, "
                     f"hidden={config.hidden_dim} VAE ({type(e).__name__}: {e})") from None
