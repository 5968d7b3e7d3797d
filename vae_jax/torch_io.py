"""The blog's `vae.pth` <-> Flax parameters.

The blog saves `torch.save(model.state_dict(), 'vae.pth')`: for each layer of
`fc1, fc21, fc22, fc3, fc4` a `weight` [out, in] and a `bias` [out]. Flax's `Dense`
keeps `kernel` [in, out] and `bias` [out], so `kernel = weight.T`.

A state dict can also travel as a NumPy archive (`.npz` with the same keys), which
needs no PyTorch to read: `export_state_dict(params, "vae.npz")`.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Mapping

import jax.numpy as jnp
import numpy as np

from vae_jax import interrupt

LAYERS = ("fc1", "fc21", "fc22", "fc3", "fc4")


def expected_shapes(latent_dim: int, hidden_dim: int = 512, data_dim: int = 784) -> dict:
  """PyTorch shapes of every state_dict entry of the blog's model."""
  w = {"fc1": (hidden_dim, data_dim), "fc21": (latent_dim, hidden_dim),
       "fc22": (latent_dim, hidden_dim), "fc3": (hidden_dim, latent_dim),
       "fc4": (data_dim, hidden_dim)}
  return {**{f"{k}.weight": v for k, v in w.items()}, **{f"{k}.bias": v[:1] for k, v in w.items()}}


def dims_of(state_dict: Mapping, name="state dict") -> tuple[int, int]:
  """(latent_dim, hidden_dim) read off a state dict's `fc21.weight` [z, hidden]."""
  if "fc21.weight" not in state_dict:
    raise ValueError(f"{name} has no 'fc21.weight' (keys: {sorted(state_dict)[:5]}): "
                     f"not the blog's VAE")
  shape = np.shape(state_dict["fc21.weight"])
  if len(shape) != 2 or min(shape) < 1:
    raise ValueError(f"{name}: 'fc21.weight' has shape {list(shape)}, expected [z, hidden]: "
                     f"not the blog's VAE")
  return int(shape[0]), int(shape[1])


def check_values(array, key: str, name) -> None:
  """Trained weights are finite floating-point numbers: anything else is refused, naming `key`."""
  array = _to_numpy(array)
  if not jnp.issubdtype(array.dtype, jnp.floating):  # bfloat16 too
    raise ValueError(f"{name}: {key} holds {array.dtype} values, not floating point: these "
                     f"are not a trained model's weights")
  bad = int(array.size - np.isfinite(array).sum())
  if bad:
    raise ValueError(f"{name}: {key} holds {bad} NaN or infinite values: the run that wrote "
                     f"it diverged, or the file is damaged")


def params_from_state_dict(state_dict: Mapping, latent_dim: int | None = None,
                           hidden_dim: int | None = None, name="state dict",
                           dtype=np.float32) -> dict:
  """PyTorch state dict (arrays or tensors) -> Flax params {"fc1": {"kernel", "bias"}, ...}
  of `dtype` (float32, the blog's; float64 for a float64 computation, under x64).

  Raises ValueError naming the first missing, unexpected or wrongly shaped entry.
  """
  found_z, found_h = dims_of(state_dict, name)
  want = expected_shapes(latent_dim or found_z, hidden_dim or found_h)
  state_dict = {k: _to_numpy(v) for k, v in state_dict.items()}
  missing = sorted(set(want) - set(state_dict))
  extra = sorted(set(state_dict) - set(want))
  if missing or extra:
    raise ValueError(f"{name}: keys differ from the blog's VAE: missing {missing}, "
                     f"unexpected {extra}")
  for key, shape in want.items():
    if state_dict[key].shape != shape:
      raise ValueError(f"{name}: '{key}' has shape {list(state_dict[key].shape)}, "
                       f"expected {list(shape)} for z={want['fc21.weight'][0]}, "
                       f"hidden={want['fc21.weight'][1]}")
  # jnp.array copies: on the CPU, jnp.asarray may share a tensor's memory, which
  # PyTorch's in-place optimiser steps would then change under the JAX arrays.
  return {name: {"kernel": jnp.array(state_dict[f"{name}.weight"].T, dtype),
                 "bias": jnp.array(state_dict[f"{name}.bias"], dtype)}
          for name in LAYERS}


def state_dict_from_params(params, dtype=np.float32) -> dict[str, np.ndarray]:
  """Flax params -> PyTorch-layout state dict of NumPy arrays of `dtype` (float32, the
  blog's; float64 keeps the weights of a float64 computation whole)."""
  out = {}
  for name in LAYERS:
    out[f"{name}.weight"] = np.array(np.asarray(params[name]["kernel"]).T, dtype)  # a copy
    out[f"{name}.bias"] = np.array(params[name]["bias"], dtype)
  return out


def load_state_dict(path) -> dict:
  """Reads `.npz` (NumPy only) or a PyTorch `.pth`/`.pt` (needs torch) as NumPy arrays.

  Anything but a flat mapping of names to arrays is a ValueError naming the file;
  a `.pth` is read with `weights_only=True`, so no code in it ever runs.
  """
  path = Path(path)
  what = "a state dict of the blog's VAE (fc1.weight, ..., fc4.bias)"
  if path.suffix == ".npz":
    try:
      with np.load(path, allow_pickle=False) as f:
        state = {k: f[k] for k in f.files}
    except Exception as e:
      raise ValueError(f"{path} is not a readable .npz ({type(e).__name__}: {e}): "
                       f"expected {what}") from None
  elif path.suffix in (".pth", ".pt"):
    try:
      import torch
    except ImportError as e:
      interrupt.raise_if_ctrl_c(e)
      raise ValueError(f"reading {path} needs PyTorch (pip install torch==2.13.0); or export "
                       f"it as .npz with NumPy") from None
    try:
      with warnings.catch_warnings():  # e.g. about old pickle protocols: our line says it all
        warnings.simplefilter("ignore")
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch's own message ends with advice we must not give
      noise = ("weights_only", "Weights only load failed", "Check the documentation",
               "WeightsUnpickler error:")
      lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()
               and not any(n in ln for n in noise)] or [type(e).__name__]
      why = lines[0].split(". ")[0].rstrip(".")  # e.g. "... unsupported GLOBAL posix.system ..."
      raise ValueError(f"{path} cannot be read safely ({why[:120]}): expected {what}, "
                       f"saved with torch.save(model.state_dict(), ...)") from None
    if not isinstance(state, Mapping) or not all(hasattr(v, "detach") for v in state.values()):
      raise ValueError(f"{path} holds a {type(state).__name__}"
                       f"{' of non-tensors' if isinstance(state, Mapping) else ''}, not {what}")
    state = {k: v.detach().cpu().numpy() for k, v in state.items()}
  else:
    raise ValueError(f"--weights {path}: unknown suffix {path.suffix!r}; use params.msgpack, "
                     f".pth/.pt or .npz")
  if not state:
    raise ValueError(f"{path} is empty: expected {what}")
  return state


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
