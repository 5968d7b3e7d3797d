"""The persistent compilation cache: a second process loads its programs instead of compiling.

Run in subprocesses: the cache is process-wide JAX state (conftest keeps it off for the
in-process tests). Counted through JAX's monitoring events, not timed.
"""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = """
import sys
from jax import monitoring
hits = []
monitoring.register_event_listener(
    lambda event, **kw: hits.append(event) if event.endswith("cache_hits") else None)
from vae_jax import cli
code = cli.main(sys.argv[1:])
print("cache hits", len(hits))
sys.exit(code)
"""


def _train(workdir, data_dir, *extra) -> int:
  argv = ["train", "--workdir", str(workdir), "--epochs", "1", "--hidden-dim", "32",
          "--batch-size", "64", "--no-progress", "--data-dir", str(data_dir), *extra]
  env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
  out = subprocess.run([sys.executable, "-c", SCRIPT, *argv], capture_output=True, text=True,
                       env=env, check=True).stdout
  return int(out.strip().splitlines()[-1].split()[-1])


def test_a_second_process_is_served_from_the_cache_beside_the_data(tiny_data_dir, tmp_path):
  cache = tiny_data_dir / "jax_compile_cache"
  assert _train(tmp_path / "a", tiny_data_dir) == 0  # the first compiles and stores
  def programs():  # the epoch's and the evaluation's entries
    return {n for n in os.listdir(cache) if n.startswith(("jit_train_epoch", "jit_evaluate"))}
  first = programs()
  assert len(first) == 2, sorted(os.listdir(cache))
  assert _train(tmp_path / "b", tiny_data_dir) >= 2  # both loaded, at least
  assert programs() == first  # and not compiled again
  assert _train(tmp_path / "c", tiny_data_dir, "--no-compile-cache") == 0
