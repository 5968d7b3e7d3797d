"""The persistent compilation cache: a second process loads its programs instead of compiling.

Run in subprocesses: the cache is process-wide JAX state (conftest gives the in-process
tests a shared one of their own). Counted through JAX's monitoring events, not timed.
"""

import os
import subprocess
import sys
from pathlib import Path

from conftest import script_module

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = script_module("compile_cache_cost.py").COUNTING  # train, then `cache REQUESTS HITS`


def _train(workdir, data_dir, *extra) -> tuple[int, int]:
  """(programs asked of the cache, programs it served) in a one-epoch `train`."""
  argv = ["train", "--workdir", str(workdir), "--epochs", "1", "--hidden-dim", "32",
          "--batch-size", "64", "--no-progress", "--data-dir", str(data_dir), *extra]
  env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
  out = subprocess.run([sys.executable, "-c", SCRIPT, *argv], capture_output=True, text=True,
                       env=env, check=True).stdout
  requests, hits = out.strip().splitlines()[-1].split()[1:]
  return int(requests), int(hits)


def test_a_second_process_is_served_from_the_cache_beside_the_data(tiny_data_dir, tmp_path):
  cache = tiny_data_dir / "jax_compile_cache"
  requests, hits = _train(tmp_path / "a", tiny_data_dir)  # the first compiles and stores
  assert requests > 2 and hits == 0
  def programs():  # the epoch's and the evaluation's entries
    return {n for n in os.listdir(cache) if n.startswith(("jit_train_epoch", "jit_evaluate"))}
  first = programs()
  assert len(first) == 2, sorted(os.listdir(cache))
  # The second is served every program, the small ones of the eager operations too.
  assert _train(tmp_path / "b", tiny_data_dir) == (requests, requests)
  assert programs() == first  # and not compiled again
  assert _train(tmp_path / "c", tiny_data_dir, "--no-compile-cache")[1] == 0
