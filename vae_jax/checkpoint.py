"""Saving and loading the parameters (Flax's msgpack serialisation)."""

from __future__ import annotations

from pathlib import Path

import jax
from flax import serialization

from vae_jax.config import Config


def save_params(params, path) -> None:
  Path(path).write_bytes(serialization.to_bytes(jax.device_get(params)))


def load_weights(path):
  """Parameters from any of our formats -> (params, config); the sizes come from the weights.

  * `params.msgpack` of a run: its arrays give z and the hidden width; `config.json`
    beside it, when present, gives the rest (and must agree with those sizes);
  * a PyTorch state dict, `.pth`/`.pt` (needs torch) or `.npz` (NumPy only), in the
    blog's layout.
  """
  from vae_jax import torch_io

  path = Path(path)
  if not path.is_file():
    raise FileNotFoundError(f"{path} does not exist or is not a file")
  if path.suffix == ".msgpack":
    try:
      raw = serialization.msgpack_restore(path.read_bytes())
      state = torch_io.state_dict_from_params(raw)
    except Exception as e:
      raise ValueError(f"{path} does not hold the blog VAE's parameters "
                       f"({type(e).__name__}: {e})") from None
  else:
    state = torch_io.load_state_dict(path)
  latent_dim, hidden_dim = torch_io.dims_of(state)
  config = Config(latent_dim=latent_dim, hidden_dim=hidden_dim)
  cfg = path.parent / "config.json"
  if path.suffix == ".msgpack" and cfg.exists():
    config = Config.from_json(cfg.read_text())
    if (config.latent_dim, config.hidden_dim) != (latent_dim, hidden_dim):
      raise ValueError(f"{path} holds a z={latent_dim}, hidden={hidden_dim} VAE but {cfg} says "
                       f"z={config.latent_dim}, hidden={config.hidden_dim}: they are not one run")
  return torch_io.params_from_state_dict(state), config
