"""A run's checkpoints: `checkpoints/epoch_0007.msgpack`, the last two kept.

A checkpoint holds everything a run needs to continue bit for bit: the parameters,
Adam's state (moments, step count, learning rate), the epoch, the metrics so far and
the config, in Flax's msgpack serialisation, written whole (`files.atomic_write`).

Why not orbax, Flax's recommended checkpointer: its StandardCheckpointer restored the
state bit for bit too, but took 55 and 59 ms a save against 14 and 18 ms for this one
file on 2 cores of an AMD EPYC (`scripts/checkpoint_cost.py`,
results/checkpoint_cost_amd.txt), and writes a folder of 11 to 13 files from background
threads. Sharded arrays, across devices, would be the reason to switch.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, NamedTuple

import jax
from flax import serialization

from vae_jax.app.files import atomic_write
from vae_jax.config import Config

CHECKPOINT_DIR = "checkpoints"


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
  """Writes the checkpoint of `epoch` whole, then deletes all but the last `keep`."""
  path = checkpoint_path(run_dir, epoch)
  path.parent.mkdir(parents=True, exist_ok=True)
  blob = {"epoch": epoch, "state": serialization.to_state_dict(jax.device_get(state)),
          "history": json.dumps(history), "config": config.to_json()}
  atomic_write(path, serialization.msgpack_serialize(blob))
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
