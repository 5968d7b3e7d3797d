"""The measuring scripts that time the package's own calls: they must see those calls.

scripts/train_phases.py wraps functions of the package by name; were the run to stop
calling one of them through its module (renamed, imported another way), its row would
silently read zero. Run here on the tiny fixture, its counts must be the run's own.
"""

import pytest

from conftest import script_module


def _rows(out: str) -> dict:
  """The printed table: {phase: (calls, seconds)}."""
  rows = {}
  for line in out.splitlines():
    cells = [c.strip() for c in line.strip("|").split("|")]
    if len(cells) == 4 and cells[1].isdigit():
      rows[cells[0]] = (int(cells[1]), float(cells[2]))
  return rows


def test_train_phases_counts_the_runs_checkpoints_grids_and_epochs(tiny_data_dir, tmp_path,
                                                                  capsys):
  from vae_jax import run
  from vae_jax.config import Config
  phases = script_module("train_phases.py")
  argv = ["--workdir", str(tmp_path / "run"), "--data-dir", str(tiny_data_dir), "--epochs", "5",
          "--hidden-dim", "32", "--recon-every", "2", "--checkpoint-every", "2"]
  assert phases.main(argv) == 0
  rows = _rows(capsys.readouterr().out)
  assert rows["... of which: checkpoints"][0] == 3  # epochs 2, 4 and the last
  grids = run.grid_epochs(Config(epochs=5, recon_every=2))  # 1, 2, 4, 5
  assert rows["... of which: reconstruction grids"][0] == len(grids) == 4
  assert rows["the 5 epochs (metrics.jsonl's seconds)"][0] == 5
  assert rows["load MNIST onto the device"][0] == 1
  assert rows["the end: weights, loss arrays, figures"][0] == 1
  assert (tmp_path / "run" / "params.msgpack").exists()


@pytest.mark.parametrize("flag", ["--resume", "--overwrite"])
def test_train_phases_times_only_a_new_run(flag, tmp_path, capsys):
  with pytest.raises(SystemExit) as exit_:
    script_module("train_phases.py").parse_args(["--workdir", str(tmp_path), flag])
  assert exit_.value.code == 2 and "new run" in capsys.readouterr().err
