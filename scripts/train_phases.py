"""Where the seconds of one train subcommand go: imports, data, setup, epochs, figures.

  python scripts/train_phases.py --workdir /tmp/phases          # the blog's run, 100 epochs
  python scripts/train_phases.py --workdir /tmp/short --train-limit 1024 --test-limit 1024

The second has epochs as short as a GPU's (41 ms on 2 CPU cores). Runs the train
subcommand itself (`vae_jax.app.cli.main(["train", ...])`: the same flags,
checks, compilation cache and files) in this process, with a timer around each function
a phase calls, and prints one table of host wall seconds. The loop reads epoch e while
the device runs e + 1, so the checkpoints and grids it writes are host time that may
overlap the device's work: their cost to the run is what `--checkpoint-every 1000` (only
the last epoch checkpointed) saves, measured by running both.
"""

from __future__ import annotations

import time

START = time.perf_counter()  # before any heavy import: the table counts them

import json  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402


def _timed(module, name: str, times: dict, label: str) -> None:
  """Replaces `module.name` by a wrapper adding each call's seconds to `times[label]`."""
  real = getattr(module, name)

  def wrapper(*args, **kwargs):
    t0 = time.perf_counter()
    try:
      return real(*args, **kwargs)
    finally:
      calls, seconds = times.get(label, (0, 0.0))
      times[label] = (calls + 1, seconds + time.perf_counter() - t0)

  setattr(module, name, wrapper)


def parse_args(argv) -> list[str]:
  """The train flags, checked by the train subcommand's own parser (exit 2 on a bad one); a
  new run only, so that every phase is timed from its first epoch."""
  from vae_jax.app import cli
  argv = list(argv)
  if any(a in argv for a in ("--resume", "--overwrite")):
    print("train_phases.py: error: times a new run from its first epoch: drop --resume and "
          "--overwrite, and give a new --workdir", file=sys.stderr)
    raise SystemExit(2)
  cli.build_parser().parse_args(["train", *argv])
  return argv


def main(argv=None) -> int:
  import jax
  t1 = time.perf_counter()
  jax.devices()
  t2 = time.perf_counter()
  from vae_jax import data, train
  from vae_jax.app import checkpoint, cli, plots, run
  t3 = time.perf_counter()
  argv = parse_args(sys.argv[1:] if argv is None else argv)

  times: dict = {}
  _timed(data, "load_device_data", times, "load MNIST onto the device")
  _timed(train, "setup", times, "set up: init, Adam, the epoch programs (compile or cache)")
  _timed(checkpoint, "save_checkpoint", times, "... of which: checkpoints")
  _timed(plots, "save_reconstructions", times, "... of which: reconstruction grids")
  _timed(run, "write_results", times, "the end: weights, loss arrays, figures")
  t4 = time.perf_counter()
  code = cli.main(["train", "--no-progress", *argv])
  t5 = time.perf_counter()
  if code != 0:
    return code

  workdir = Path(cli.build_parser().parse_args(["train", *argv]).workdir)
  rows = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
  epochs = sum(r["seconds"] for r in rows)
  whole = t5 - START
  table = [("import jax", t1 - START, 1),
           (f"start the backend (jax.devices(): {jax.devices()[0].platform})", t2 - t1, 1),
           ("import the package (flax, optax, matplotlib)", t3 - t2, 1)]
  table += [(label, seconds, calls) for label, (calls, seconds) in times.items()
            if label.startswith(("load", "set up"))]
  table.append((f"the {len(rows)} epochs (metrics.jsonl's seconds)", epochs, len(rows)))
  table += [(label, seconds, calls) for label, (calls, seconds) in times.items()
            if label.startswith("... of which")]
  table += [(label, seconds, calls) for label, (calls, seconds) in times.items()
            if label.startswith("the end")]
  counted = sum(s for label, s, _ in table if not label.startswith("... of which"))
  table.append(("the rest (checks, config.json, small programs)", whole - counted, 1))
  print(f"\nmachine: {_machine()}")
  print(f"command: vae-jax train {' '.join(argv)}")
  print("| phase | calls | seconds | share |\n|---|---|---|---|")
  for label, seconds, calls in table:
    print(f"| {label} | {calls} | {seconds:.2f} | {seconds / whole:.0%} |")
  print(f"| **the whole process, from the script's first line** | | **{whole:.2f}** | |")
  print(f"(cli.main itself: {t5 - t4:.2f} s)")
  return 0


def _machine() -> str:
  from vae_jax.app import bench
  return bench.describe_machine()


if __name__ == "__main__":
  sys.exit(main())
