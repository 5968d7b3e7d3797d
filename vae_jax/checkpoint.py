"""Saving and loading: the weights (`params.msgpack`) and a run's checkpoints.

Both use Flax's msgpack serialisation, written atomically: the bytes go to a
temporary file in the same directory, are flushed to the disk (fsync), and the
file is renamed into place. A crash or a SIGKILL at any moment leaves either the
old file or the new one, never half of one.

A checkpoint (`checkpoints/epoch_0007.msgpack`) holds everything a run needs to
continue bit for bit: the parameters, Adam's state (moments, step count, learning
rate), the epoch, the metrics so far and the config. The last `keep` are kept.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, NamedTuple

import jax
from flax import serialization

from vae_jax.config import Config

CHECKPOINT_DIR = "checkpoints"


def check_directory(path, flag: str, *, writable: bool = True) -> Path:
  """`path`, or the folder it would be made in, must be a directory (and writable, if
  asked): refused in one line naming `flag`, before any work."""
  path = Path(path)
  for p in (path, *path.absolute().parents):
    if p.exists():
      if not p.is_dir():
        raise FileExistsError(f"{flag} {path}: {p} is a file, not a directory: choose a directory")
      if writable and not os.access(p, os.W_OK | os.X_OK):
        raise PermissionError(f"{flag} {path}: {p} is not writable: choose another directory")
      break
  return path


def check_results_dir(path, flag: str, what: str) -> Path:
  """`check_directory`, and not a training run's folder (its config.json): `what`'s results
  would mix with the run's files, which train would then count as a user's."""
  path = check_directory(path, flag)
  if (path / "config.json").exists():
    raise FileExistsError(f"{flag} {path} holds a training run (config.json): give {what} a "
                          f"folder of its own")
  return path


def config_beside(weights) -> Path | None:
  """The run's config.json beside a params.msgpack (None for other weights, or none there)."""
  cfg = Path(weights).parent / "config.json"
  return cfg if Path(weights).suffix == ".msgpack" and cfg.exists() else None


def check_new_file(path, flag: str, suffix: str = "") -> Path:
  """`path` must not exist yet, and its folder must (writable): refused in one line naming
  `flag`, before any work."""
  path = Path(path)
  if path.is_dir():  # "delete it" would be advice to delete a folder, a run's perhaps
    raise IsADirectoryError(f"{flag} {path} is a directory: give a new file's name, such as "
                            f"{path.with_name(path.name + suffix)} beside it")
  if path.exists():
    raise FileExistsError(f"{flag} {path} exists: choose another {flag} or delete it")
  check_directory(path, flag)  # a file on the way, or a folder not writable
  if not path.parent.is_dir():
    raise FileNotFoundError(f"{flag} {path}: the folder {path.parent} does not exist: create "
                            f"it or choose another {flag}")
  return path


def atomic_write_bytes(path, data: bytes) -> None:
  """Writes `data` to `path` so that `path` is always whole: temp file, fsync, rename."""
  path = Path(path)
  tmp = path.with_name(f".{path.name}.tmp")
  with open(tmp, "wb") as f:
    f.write(data)
    f.flush()
    os.fsync(f.fileno())
  os.replace(tmp, path)
  dir_fd = os.open(path.parent, os.O_RDONLY)  # make the rename itself durable
  try:
    os.fsync(dir_fd)
  finally:
    os.close(dir_fd)


def save_params(params, path) -> None:
  atomic_write_bytes(path, serialization.to_bytes(jax.device_get(params)))


# --------------------------------------------------------------------------
# Checkpoints of a run.


class Checkpoint(NamedTuple):
  epoch: int       # the last epoch trained
  state: Any       # the TrainState after that epoch (host arrays)
  history: list    # metrics.jsonl's rows for epochs 1..epoch
  config: Config   # the config of the run that wrote it
  path: Path


def checkpoint_path(run_dir, epoch: int) -> Path:
  return Path(run_dir) / CHECKPOINT_DIR / f"epoch_{epoch:04d}.msgpack"


def checkpoints(run_dir) -> list[Path]:
  """The run's checkpoints, oldest first (temporary files of an interrupted write excluded)."""
  directory = Path(run_dir) / CHECKPOINT_DIR
  if not directory.is_dir():
    return []
  return sorted(directory.glob("epoch_*.msgpack"))


def save_checkpoint(run_dir, epoch: int, state, history: list, config: Config,
                    keep: int = 2) -> Path:
  """Writes the checkpoint of `epoch` atomically, then deletes all but the last `keep`."""
  path = checkpoint_path(run_dir, epoch)
  path.parent.mkdir(parents=True, exist_ok=True)
  blob = {"epoch": epoch, "state": serialization.to_state_dict(jax.device_get(state)),
          "history": json.dumps(history), "config": config.to_json()}
  atomic_write_bytes(path, serialization.msgpack_serialize(blob))
  for old in checkpoints(run_dir)[:-keep]:
    old.unlink()
  return path


def load_checkpoint(path, target_state) -> Checkpoint:
  """Reads a checkpoint into the structure of `target_state` (a fresh TrainState)."""
  path = Path(path)
  try:
    blob = serialization.msgpack_restore(path.read_bytes())
    state = serialization.from_state_dict(target_state, blob["state"])
    history, config = json.loads(blob["history"]), Config.from_json(blob["config"])
    epoch = int(blob["epoch"])
  except Exception as e:  # truncated, not ours, or for another model's shapes
    raise ValueError(f"{path} is not a readable checkpoint of this run ({type(e).__name__}: "
                     f"{e}): delete it to resume from the one before") from None
  return Checkpoint(epoch, state, history, config, path)


# --------------------------------------------------------------------------
# Weights for `evaluate` and `export`.


def load_weights(path):
  """Parameters from any of our formats -> (params, config); the sizes come from the weights.

  * `params.msgpack` of a run: its arrays give z and the hidden width; `config.json`
    beside it, when present, gives the rest (and must agree with those sizes); a run of
    another `--arch` or `--model` needs its config.json, and every array must have the shape that
    config's model gives it;
  * a PyTorch state dict, `.pth`/`.pt` (needs torch) or `.npz` (NumPy only), in the
    blog's layout.
  Every array's shape is checked against the blog's model of those sizes.
  """
  from vae_jax import torch_io

  path = Path(path)
  if not path.is_file():
    inside = path / "params.msgpack"
    if inside.is_file():  # a run's directory: its weights are one file in it
      raise FileNotFoundError(f"--weights {path} is a run's directory, not a file: pass "
                              f"--weights {inside}")
    raise FileNotFoundError(f"--weights {path} does not exist or is not a file")
  cfg = path.parent / "config.json"
  run_config = Config.from_file(cfg) if config_beside(path) else None
  if run_config is not None and (run_config.arch, run_config.model) != ("blog", "vae"):
    return _load_run_weights(path, run_config), run_config
  # Weights that do not fit the blog's VAE may be another model's whose config.json is gone.
  alone = (f"; {cfg} is missing, and a run of another --arch or --model needs it beside its "
           f"weights" if path.suffix == ".msgpack" and not cfg.exists() else "")
  if path.suffix == ".msgpack":
    raw = _restore_weights(path)
    try:
      state = torch_io.state_dict_from_params(raw)
    except Exception as e:
      raise ValueError(f"{path} does not hold the blog VAE's parameters "
                       f"({type(e).__name__}: {e}){alone}") from None
    stored = {jax.tree_util.keystr(k): a for k, a in jax.tree_util.tree_leaves_with_path(raw)}
  else:
    state = torch_io.load_state_dict(path)
    stored = {f"'{k}'": a for k, a in state.items()}
  try:
    latent_dim, hidden_dim = torch_io.dims_of(state, path)
    params = torch_io.params_from_state_dict(state, name=path)  # checks every shape
  except ValueError as e:
    raise ValueError(f"{e}{alone}") from None
  for key, array in stored.items():  # as stored, before the cast to float32
    torch_io.check_values(array, key, path)
  config = Config(latent_dim=latent_dim, hidden_dim=hidden_dim)
  if run_config is not None:
    config = run_config
    if (config.latent_dim, config.hidden_dim) != (latent_dim, hidden_dim):
      raise ValueError(f"{path} holds a z={latent_dim}, hidden={hidden_dim} VAE but {cfg} says "
                       f"z={config.latent_dim}, hidden={config.hidden_dim}: they are not one run")
  return params, config


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
  """`params.msgpack` of a run whose config.json names a model other than the blog's VAE."""
  from vae_jax import torch_io
  from vae_jax.model import init_params, make_model
  want = jax.eval_shape(lambda: init_params(make_model(config), jax.random.PRNGKey(0)))
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
    torch_io.check_values(a, jax.tree_util.keystr(where), path)
  return jax.tree.map(jax.numpy.asarray, params)
