"""What the persistent compilation cache saves: one train subcommand cold, then the same warm.

  python scripts/compile_cache_cost.py                 # 3 epochs of the blog's run, z = 2
  python scripts/compile_cache_cost.py --epochs 1 --latent-dim 20

Makes an empty cache in a temporary data directory (MNIST linked in from
`$VAE_JAX_DATA_DIR`, else ~/.cache/vae_jax), then runs the train subcommand twice in
processes of their own, each into a new run directory. Prints, for each, the programs
it asked the cache for and those the cache served (JAX's monitoring events, as
tests/test_compile_cache.py counts them), the compile seconds train reports, the
whole process's seconds, and whether the two runs' params.msgpack are the same bytes.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# The train subcommand of argv, then `cache REQUESTS HITS` (tests/test_compile_cache.py too).
COUNTING = """
import sys
from jax import monitoring
events = []
monitoring.register_event_listener(lambda event, **kw: events.append(event))
from vae_jax.app import cli
code = cli.main(sys.argv[1:])
print("cache", sum(e.endswith("/compile_requests_use_cache") for e in events),
      sum(e.endswith("/cache_hits") for e in events))
sys.exit(code)
"""


def parse_args(argv=None) -> argparse.Namespace:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--epochs", type=int, default=3, help="epochs per run; default: 3")
  parser.add_argument("--latent-dim", type=int, default=2, help="z; default: 2")
  args = parser.parse_args(argv)
  if args.epochs < 1 or args.latent_dim < 1:
    parser.error("--epochs and --latent-dim must be >= 1")
  return args


def main(argv=None) -> int:
  args = parse_args(argv)
  from vae_jax import data
  source = data.default_data_dir()
  mnist = sorted(source.glob("mnist-*.npz"))
  if not mnist:
    print(f"compile_cache_cost.py: error: no MNIST cache in {source}: run `vae-jax data` "
          f"first", file=sys.stderr)
    return 2
  env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
  with tempfile.TemporaryDirectory() as tmp:
    tmp = Path(tmp)
    (tmp / "data").mkdir()
    for f in mnist:
      os.symlink(f.resolve(), tmp / "data" / f.name)
    print(f"data: {', '.join(f.name for f in mnist)} from {source}; the cache: a new, empty "
          f"jax_compile_cache/ beside it")
    for run in ("cold", "warm"):
      argv = ["train", "--workdir", str(tmp / run), "--epochs", str(args.epochs),
              "--latent-dim", str(args.latent_dim), "--no-progress",
              "--data-dir", str(tmp / "data")]
      t0 = time.perf_counter()
      done = subprocess.run([sys.executable, "-c", COUNTING, *argv], capture_output=True,
                            text=True, env=env)
      seconds = time.perf_counter() - t0
      if done.returncode != 0:
        print(done.stderr, file=sys.stderr)
        return done.returncode
      lines = done.stdout.strip().splitlines()
      requests, hits = lines[-1].split()[1:]
      print(f"{run}: {lines[-2]}")
      print(f"{run}: {requests} programs asked of the cache, {hits} served from it; "
            f"whole process {seconds:.1f} s")
    same = (tmp / "cold" / "params.msgpack").read_bytes() == (
        tmp / "warm" / "params.msgpack").read_bytes()
    print(f"params.msgpack of the two runs: {'the same bytes' if same else 'DIFFERENT'}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
