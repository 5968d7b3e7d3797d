"""Weights in and out: a run's `params.msgpack`, and the blog's `vae.pth`.

The blog saves `torch.save(model.state_dict(), 'vae.pth')`: for each layer of
`fc1, fc21, fc22, fc3, fc4` a `weight` [out, in] and a `bias` [out]. Flax's `Dense`
keeps `kernel` [in, out] and `bias` [out], so `kernel = weight.T`.

A state dict can also travel as a NumPy archive (`.npz` with the same keys), which
needs no PyTorch to read: `export_state_dict(params, "vae.npz")`. `load_weights`
reads any of these, checking every shape and value.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Mapping

import jax
import jax.numpy as jnp
import numpy as np
from flax import serialization

from vae_jax.app import interrupt
from vae_jax.app.files import atomic_write
from vae_jax.config import Config

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
  if path.suffix.lower() == ".npz":
    try:
      with np.load(path, allow_pickle=False) as f:
        state = {k: f[k] for k in f.files}
    except Exception as e:
      raise ValueError(f"{path} is not a readable .npz ({type(e).__name__}: {e}): "
                       f"expected {what}") from None
  elif path.suffix.lower() in (".pth", ".pt"):
    torch = interrupt.optional_import("torch")
    if torch is None:
      raise ValueError(f"reading {path} needs PyTorch (pip install torch==2.13.0); or export "
                       f"it as .npz with NumPy")
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
  if path.suffix.lower() == ".npz":
    atomic_write(path, lambda f: np.savez(f, **state))
    return
  import torch
  atomic_write(path, lambda f: torch.save({k: torch.from_numpy(v) for k, v in state.items()}, f))


def _to_numpy(v) -> np.ndarray:
  if hasattr(v, "detach"):  # a torch tensor
    v = v.detach().cpu().numpy()
  return np.asarray(v)


def save_params(params, path) -> None:
  atomic_write(path, serialization.to_bytes(jax.device_get(params)))


def config_beside(weights) -> Path | None:
  """The run's config.json beside a params.msgpack, or beside the file a link to it points to
  (None for other weights, or none there)."""
  weights = Path(weights)
  found = [folder / "config.json" for folder in (weights.parent, weights.resolve().parent)
           if (folder / "config.json").exists()]
  return found[0] if weights.suffix.lower() == ".msgpack" and found else None


def load_weights(path):
  """Parameters from any of our formats -> (params, config), every shape and value checked.

  * `params.msgpack` of a run: `config.json` beside it names the model, whose every array
    must be there with its shape;
  * the blog's VAE without a config.json: a PyTorch state dict, `.pth`/`.pt` (needs torch)
    or `.npz` (NumPy only), or a `params.msgpack` alone; its sizes are read off the arrays.
  """
  path = Path(path)
  if not path.is_file():
    inside = path / "params.msgpack"
    if inside.is_file():  # a run's directory: its weights are one file in it
      raise FileNotFoundError(f"--weights {path} is a run's directory, not a file: pass "
                              f"--weights {inside}")
    raise FileNotFoundError(f"--weights {path} does not exist or is not a file")
  if config_beside(path):
    config = Config.from_file(config_beside(path))
    return _load_run_weights(path, config), config
  # Weights that do not fit the blog's VAE may be another model's whose config.json is gone.
  alone = (f"; {path.parent / 'config.json'} is missing, and a run of another --arch or --model "
           f"needs it beside its weights" if path.suffix.lower() == ".msgpack" else "")
  if path.suffix.lower() == ".msgpack":
    raw = _restore_weights(path)
    try:
      state = state_dict_from_params(raw)
    except Exception as e:
      raise ValueError(f"{path} does not hold the blog VAE's parameters "
                       f"({type(e).__name__}: {e}){alone}") from None
    stored = {jax.tree_util.keystr(k): a for k, a in jax.tree_util.tree_leaves_with_path(raw)}
  else:
    state = load_state_dict(path)
    stored = {f"'{k}'": a for k, a in state.items()}
  try:
    latent_dim, hidden_dim = dims_of(state, path)
    params = params_from_state_dict(state, name=path)  # checks every shape
  except ValueError as e:
    raise ValueError(f"{e}{alone}") from None
  for key, array in stored.items():  # as stored, before the cast to float32
    check_values(array, key, path)
  return params, Config(latent_dim=latent_dim, hidden_dim=hidden_dim)


def _restore_weights(path: Path):
  """The tree in a weights `.msgpack`; a checkpoint passed instead is named as one."""
  try:
    raw = serialization.msgpack_restore(path.read_bytes())
  except Exception as e:
    raise ValueError(f"{path} does not hold a model's parameters ({type(e).__name__}: {e})"
                     ) from None
  if isinstance(raw, dict) and {"epoch", "state"} <= raw.keys():
    raise ValueError(f"{path} is a checkpoint (an epoch's training state), not a run's "
                     f"weights: pass the params.msgpack of the run, written when it "
                     f"finishes (train's --resume finishes a stopped run)")
  return raw


def _load_run_weights(path: Path, config: Config):
  """`params.msgpack` of a run, into the structure of the model its config.json names."""
  from vae_jax.extensions import recipe
  want = jax.eval_shape(lambda: recipe.make_model(config).init_params(jax.random.PRNGKey(0)))
  what = f"{config.arch} model" + (" (CVAE)" if config.model == "cvae" else "")
  fix = "they are not one run, or the file is damaged: retrain into a new --workdir"
  raw = _restore_weights(path)
  try:
    params = serialization.from_state_dict(want, raw)
  except Exception as e:
    raise ValueError(f"{path} does not hold the parameters of the {what} its config.json "
                     f"describes ({type(e).__name__}: {e}): {fix}") from None
  for (where, a), b in zip(jax.tree_util.tree_leaves_with_path(params), jax.tree.leaves(want)):
    if getattr(a, "shape", None) != b.shape:
      raise ValueError(f"{path}: {jax.tree_util.keystr(where)} has shape "
                       f"{getattr(a, 'shape', None)}, the {what} of its "
                       f"config.json needs {b.shape}: {fix}")
    check_values(a, jax.tree_util.keystr(where), path)
  return jax.tree.map(jax.numpy.asarray, params)
