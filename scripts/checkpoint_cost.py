"""What one checkpoint costs: its size and write time, ours (Flax msgpack) beside orbax-checkpoint.

  python scripts/checkpoint_cost.py                 # the blog's z = 2 state, 20 saves each
  python scripts/checkpoint_cost.py --latent-dim 20 --saves 5

Saves the TrainState of `--latent-dim` after one epoch's worth of Adam steps on
noise (so that Adam's moments are not zeros a compressor would squeeze) `--saves`
times with `vae_jax.app.checkpoint.save_checkpoint`, then with orbax's
StandardCheckpointer (waiting for each save), prints the median time and size of
each, and checks that both restore the state bit for bit.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import jax
import numpy as np


def parse_args(argv=None) -> argparse.Namespace:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--latent-dim", type=int, default=2, help="z; default: 2")
  parser.add_argument("--saves", type=int, default=20, help="saves timed per format; default: 20")
  args = parser.parse_args(argv)
  if args.latent_dim < 1 or args.saves < 1:
    parser.error("--latent-dim and --saves must be >= 1")
  return args


def _state(config):
  """A TrainState after 20 Adam steps on random images: moments that are not zero."""
  from vae_jax import train
  run = train.setup(config)
  step = jax.jit(train.make_train_steps(run.model, run.optimizer))
  images = jax.random.randint(jax.random.PRNGKey(0), (config.batch_size * 20, 784), 0, 256
                              ).astype(np.uint8)
  plan = train.epoch_plan(jax.random.PRNGKey(1), num_examples=len(images),
                          batch_size=config.batch_size, latent_dim=config.latent_dim)
  return jax.device_get(step(run.state, images, plan)[0]), run.state


def _same(a, b) -> bool:
  return all(np.array_equal(np.asarray(x), np.asarray(y))
             for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def main(argv=None) -> int:
  args = parse_args(argv)
  from vae_jax.app import checkpoint
  from vae_jax.config import Config
  config = Config(latent_dim=args.latent_dim)
  state, fresh = _state(config)
  history = [{"epoch": e, "train_loss": 150.0} for e in range(1, 101)]
  with tempfile.TemporaryDirectory() as tmp:
    ours, times = Path(tmp) / "ours", []
    for epoch in range(1, args.saves + 1):
      t0 = time.perf_counter()
      checkpoint.save_checkpoint(ours, epoch, state, history, config)
      times.append(time.perf_counter() - t0)
    last = checkpoint.checkpoints(ours)[-1]
    back = checkpoint.load_checkpoint(last, fresh).state
    print(f"Flax msgpack (vae_jax.app.checkpoint): median {statistics.median(times) * 1e3:.0f} ms "
          f"per save (fsync included), {last.stat().st_size / 1e6:.2f} MB in 1 file, "
          f"bit-exact: {_same(state, back)}")
    try:
      import orbax.checkpoint as ocp
    except ImportError:
      print("orbax-checkpoint is not installed: no comparison")
      return 0
    saver, times, where = ocp.StandardCheckpointer(), [], Path(tmp) / "orbax"
    where.mkdir()
    for epoch in range(1, args.saves + 1):
      t0 = time.perf_counter()
      saver.save(where / f"epoch_{epoch}", state)
      saver.wait_until_finished()
      times.append(time.perf_counter() - t0)
      if epoch > 2:
        shutil.rmtree(where / f"epoch_{epoch - 2}")  # keep two, as ours does
    files = [f for f in (where / f"epoch_{args.saves}").rglob("*") if f.is_file()]
    back = saver.restore(where / f"epoch_{args.saves}", jax.device_get(fresh))
    print(f"orbax StandardCheckpointer:        median {statistics.median(times) * 1e3:.0f} ms "
          f"per save (waited for), {sum(f.stat().st_size for f in files) / 1e6:.2f} MB in "
          f"{len(files)} files, bit-exact: {_same(state, back)}")
  return 0


if __name__ == "__main__":
  raise SystemExit(main())
