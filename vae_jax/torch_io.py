"""The blog's `vae.pth` <-> Flax parameters.

The blog saves `torch.save(model.state_dict(), 'vae.pth')`: for each layer of
`fc1, fc21, fc22, fc3, fc4` a `weight` [out, in] and a `bias` [out]. Flax's `Dense`
keeps `kernel` [in, out] and `bias` [out], so `kernel = weight.T`.

A state dict can also travel as a NumPy archive (`.npz` with the same keys), which
needs no PyTorch to read: `export_state_dict(params, "vae.npz")`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping

import jax.numpy as jnp
import numpy as np

LAYERS = ("fc1", "fc21", "fc22", "fc3", "fc4")


def expected_shapes(latent_dim: int, hidden_dim: int = 512, data_dim: int = 784) -> dict:
  """PyTorch shapes of every state_dict entry of the blog's model."""
  w = {"fc1": (hidden_dim, data_dim), "fc21": (latent_dim, hidden_dim),
       "fc22": (latent_dim, hidden_dim), "fc3": (hidden_dim, latent_dim),
       "fc4": (data_dim, hidden_dim)}
  return {**{f"{k}.weight": v for k, v in w.items()}, **{f"{k}.bias": v[:1] for k, v in w.items()}}


def dims_of(state_dict: Mapping) -> tuple[int, int]:
  """(latent_dim, hidden_dim) read off a state dict."""
  if "fc21.weight" not in state_dict:
    raise ValueError("state dict has no 'fc21.weight': not the blog's VAE")
  latent_dim, hidden_dim = np.shape(state_dict["fc21.weight"])
  return int(latent_dim), int(hidden_dim)


def params_from_state_dict(state_dict: Mapping, latent_dim: int | None = None,
                           hidden_dim: int | None = None) -> dict:
  """PyTorch state dict (arrays or tensors) -> Flax params {"fc1": {"kernel", "bias"}, ...}.

  Raises ValueError naming the first missing, unexpected or wrongly shaped entry.
  """
  found_z, found_h = dims_of(state_dict)
  want = expected_shapes(latent_dim or found_z, hidden_dim or found_h)
  state_dict = {k: _to_numpy(v) for k, v in state_dict.items()}
  missing = sorted(set(want) - set(state_dict))
  extra = sorted(set(state_dict) - set(want))
  if missing or extra:
    raise ValueError(f"state dict keys differ from the blog's VAE: missing {missing}, "
                     f"unexpected {extra}")
  for key, shape in want.items():
    if state_dict[key].shape != shape:
      raise ValueError(f"state dict '{key}' has shape {list(state_dict[key].shape)}, "
                       f"expected {list(shape)}")
  # jnp.array copies: on the CPU, jnp.asarray may share a tensor's memory, which
  # PyTorch's in-place optimiser steps would then change under the JAX arrays.
  return {name: {"kernel": jnp.array(state_dict[f"{name}.weight"].T, jnp.float32),
                 "bias": jnp.array(state_dict[f"{name}.bias"], jnp.float32)}
          for name in LAYERS}


def state_dict_from_params(params) -> dict[str, np.ndarray]:
  """Flax params -> PyTorch-layout state dict of float32 NumPy arrays."""
  out = {}
  for name in LAYERS:
    out[f"{name}.weight"] = np.array(np.asarray(params[name]["kernel"]).T, np.float32)  # a copy
    out[f"{name}.bias"] = np.array(params[name]["bias"], np.float32)
  return out


def load_state_dict(path) -> dict:
  """Reads `.npz` (NumPy only) or a PyTorch `.pth`/`.pt` (needs torch) as NumPy arrays."""
  path = Path(path)
  if path.suffix == ".npz":
    with np.load(path, allow_pickle=False) as f:
      return {k: f[k] for k in f.files}
  try:
    import torch
  except ImportError:
    raise ValueError(f"reading {path} needs PyTorch (pip install torch==2.13.0); or export "
                     f"it as .npz with NumPy") from None
  state = torch.load(path, map_location="cpu", weights_only=True)
  return {k: v.detach().cpu().numpy() for k, v in state.items()}


def export_state_dict(params, path) -> None:
  """Writes Flax params in the blog's layout: `.npz` always, `.pth`/`.pt` with torch."""
  path = Path(path)
  state = state_dict_from_params(params)
  if path.suffix == ".npz":
    np.savez(path, **state)
    return
  import torch
  torch.save({k: torch.from_numpy(v) for k, v in state.items()}, path)


def _to_numpy(v) -> np.ndarray:
  if hasattr(v, "detach"):  # a torch tensor
    v = v.detach().cpu().numpy()
  return np.asarray(v)
