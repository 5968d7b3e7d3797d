"""How far stacked runs drift from single runs, against a one-ulp control (docs/sweeps.md).

  XLA_FLAGS=--xla_force_host_platform_device_count=4 python scripts/sweep_drift.py --epochs 5

Trains the blog's setting (z = 2, full MNIST) for each seed three ways: stacked by
`multi.train_many(strategy="vmap")` over every local device; alone (`train.setup` +
`train.fit`, what the train subcommand runs); and alone from initial weights moved by one
ulp (`jnp.nextafter`). Prints, per seed, the relative difference of each epoch's test loss
from the single run's, the largest weight difference at the end and the final test losses
(the single run's, then this one's), for the stack and for the control: the stack's drift is float32 rounding grown by training when it is of the
control's size.
"""

from __future__ import annotations

import argparse

import jax
import jax.numpy as jnp
import numpy as np

from vae_jax import Config, data, train
from vae_jax.app import multi


def parse_args(argv=None) -> argparse.Namespace:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--epochs", type=int, default=5, help="epochs per run; default: 5")
  parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3],
                      help="seeds, stacked together; default: 1 2 3")
  parser.add_argument("--latent-dim", type=int, default=2, help="z; default: 2")
  return parser.parse_args(argv)


def _largest_difference(a, b) -> float:
  return max(float(np.abs(np.asarray(x) - np.asarray(y)).max())
             for x, y in zip(jax.tree.leaves(jax.device_get(a)), jax.tree.leaves(jax.device_get(b))))


def main(argv=None) -> None:
  args = parse_args(argv)
  config = Config(epochs=args.epochs, latent_dim=args.latent_dim)
  d = data.load_device_data(config)
  stacked = multi.train_many(config, [(s, config.learning_rate) for s in args.seeds], d,
                             strategy="vmap", progress=False)
  print(f"{len(args.seeds)} seeds stacked on {stacked.devices} {jax.devices()[0].platform} "
        f"device(s), z = {args.latent_dim}, {args.epochs} epochs of {len(d.x_train)} images")
  print("seed | what | test loss: relative difference from the single run, epoch 1, 2, ... "
        "| largest weight difference at the end | final test loss: single, this")
  for i, seed in enumerate(args.seeds):
    run = train.setup(config.replace(seed=seed), d)
    single = train.fit(run, d, args.epochs)
    moved = jax.tree.map(lambda p: jnp.nextafter(p, jnp.inf), run.state.params)
    control = train.fit(run._replace(state=train.TrainState(moved, run.optimizer.init(moved))),
                        d, args.epochs)
    for what, history, params in (
        ("stacked", stacked.histories[i], jax.tree.map(lambda x: x[i], stacked.params)),
        ("one ulp", control.history, control.params)):
      rel = [abs(a["test_loss"] - b["test_loss"]) / b["test_loss"]
             for a, b in zip(history, single.history)]
      print(f"{seed} | {what} | {', '.join(f'{r:.1e}' for r in rel)} | "
            f"{_largest_difference(params, single.params):.2e} | "
            f"{single.history[-1]['test_loss']:.2f}, {history[-1]['test_loss']:.2f}", flush=True)


if __name__ == "__main__":
  main()
