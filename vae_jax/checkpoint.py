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


def load_weights(path, config: Config | None = None):
  """Parameters from any of our formats -> (params, config).

  * `params.msgpack` of a run: the model's sizes come from `config.json` beside it;
  * a PyTorch state dict, `.pth`/`.pt` (needs torch) or `.npz` (NumPy only), in the
    blog's layout: the sizes are read off its shapes.
  """
  from vae_jax import torch_io

  path = Path(path)
  if not path.exists():
    raise FileNotFoundError(f"{path} does not exist")
  config = config or Config()
  if path.suffix == ".msgpack":
    cfg = path.parent / "config.json"
    if cfg.exists():
      config = Config.from_json(cfg.read_text())
    return load_params(path, config), config
  state = torch_io.load_state_dict(path)
  latent_dim, hidden_dim = torch_io.dims_of(state)
  config = config.replace(latent_dim=latent_dim, hidden_dim=hidden_dim)
  return torch_io.params_from_state_dict(state), config
