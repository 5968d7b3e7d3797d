"""Runs that survive: checkpoints, --resume after SIGKILL bit for bit, Ctrl-C, the NaN guard,
and --overwrite that keeps the old results until the new run has finished.

The killed runs are real processes: a small wrapper around `vae_jax.cli.main` sends
itself SIGKILL right after the checkpoint of epoch k (or between writing that
checkpoint's temporary file and renaming it), so the kill lands at a known point.
They compute on the CPU, and so do the runs compared with them bit for bit (`_cli`):
on a GPU, XLA picks each product's kernel per process by timing candidates, so two
processes that compile the same program may round differently (docs/performance.md,
"Float32"); bit for bit across processes is the CPU's guarantee.
"""

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import serialization

from vae_jax import losses
from vae_jax.app import checkpoint, cli, files, rundir, run
from vae_jax.config import Config

ROOT = Path(__file__).resolve().parents[1]
EPOCHS = 4

KILLER = textwrap.dedent("""
    import os, signal, sys, time
    from vae_jax.app import checkpoint, cli, plots
    kill_epoch, mode = int(sys.argv[1]), sys.argv[2]
    real_save, real_fsync = checkpoint.save_checkpoint, os.fsync

    def half_then_die(fd):  # a crash while the bytes reach the disk: half a file, then nothing
      os.ftruncate(fd, os.fstat(fd).st_size // 2)
      os.kill(os.getpid(), signal.SIGKILL)

    def save(run_dir, epoch, *args, **kwargs):
      if mode == "during" and epoch == kill_epoch:
        os.fsync = half_then_die
      path = real_save(run_dir, epoch, *args, **kwargs)
      if mode == "after" and epoch == kill_epoch:
        os.kill(os.getpid(), signal.SIGKILL)
      if mode == "sigint" and epoch == kill_epoch:  # as Ctrl-C would, at a known epoch
        os.kill(os.getpid(), signal.SIGINT)
      if mode == "pause" and epoch == kill_epoch:  # a run in training, for a second process
        print("paused", flush=True)
        time.sleep(600)
      return path

    def latent_map(*args, **kwargs):  # killed after the weights, while drawing the figures
      os.kill(os.getpid(), signal.SIGKILL)

    checkpoint.save_checkpoint = save
    if mode == "figures":
      plots.save_latent_map = latent_map
    sys.exit(cli.main(sys.argv[3:]))
""")


def _train_args(workdir, data_dir, *extra, epochs=EPOCHS):
  """A tiny run with a checkpoint every epoch (the kills land after a given one's), unless
  `extra` says otherwise."""
  every = [] if any(a.startswith("--checkpoint") for a in extra) else ["--checkpoint-every", "1"]
  return ["train", "--workdir", str(workdir), "--data-dir", str(data_dir), "--epochs",
          str(epochs), "--no-progress", "--no-compile-cache", *every, *extra]


def _env():
  return {**os.environ, "PYTHONPATH": str(ROOT), "JAX_PLATFORMS": "cpu"}


def _cli(argv, capsys) -> tuple[int, str, str]:
  """`vae-jax argv` on the CPU -> (exit code, stdout, stderr): in this process when it
  computes on the CPU, else in a CPU process like the killed runs'."""
  if jax.default_backend() == "cpu":
    code = cli.main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err
  done = subprocess.run([sys.executable, "-m", "vae_jax", *argv], env=_env(),
                        capture_output=True, text=True, timeout=300)
  return done.returncode, done.stdout, done.stderr


def _rows(workdir):
  rows = [json.loads(line) for line in (Path(workdir) / "metrics.jsonl").read_text().splitlines()]
  return [{k: v for k, v in r.items() if k != "seconds"} for r in rows]


def _assert_same_run(a: Path, b: Path):
  """Every metric but the seconds, the weights' bytes, the loss arrays, every figure's bytes."""
  assert _rows(a) == _rows(b)
  assert (a / "params.msgpack").read_bytes() == (b / "params.msgpack").read_bytes()
  for name in ("loss_list.npy", "test_loss_list.npy"):
    np.testing.assert_array_equal(np.load(a / name), np.load(b / name))
  pngs = sorted(p.name for p in a.glob("*.png"))
  assert pngs == sorted(p.name for p in b.glob("*.png")) and "latent.png" in pngs
  for name in pngs:
    assert (a / name).read_bytes() == (b / name).read_bytes(), name


@pytest.fixture
def uninterrupted(tiny_data_dir, tmp_path):
  workdir = tmp_path / "whole"
  assert cli.main(_train_args(workdir, tiny_data_dir)) == 0
  return workdir


@pytest.fixture
def uninterrupted_cpu(tiny_data_dir, tmp_path, capsys):
  """The same run on the CPU, where the killed runs compute (`_cli`)."""
  workdir = tmp_path / "whole"
  assert _cli(_train_args(workdir, tiny_data_dir), capsys)[0] == 0
  return workdir


@pytest.mark.parametrize("kill_epoch,mode", [(2, "after"), (3, "during")])
def test_resume_after_sigkill_equals_the_uninterrupted_run_bit_for_bit(
    kill_epoch, mode, uninterrupted_cpu, tiny_data_dir, tmp_path, capsys):
  workdir = tmp_path / "killed"
  _killed(kill_epoch, mode, _train_args(workdir, tiny_data_dir))
  kept = kill_epoch if mode == "after" else kill_epoch - 1
  names = [p.name for p in checkpoint.checkpoints(workdir)]
  assert names[-1] == f"epoch_{kept:04d}.msgpack" and len(names) == min(kept, 2)
  if mode == "during":  # the half-written file is a temp file, never a checkpoint
    tmp = workdir / "checkpoints" / f".epoch_{kill_epoch:04d}.msgpack.tmp"
    assert 0 < tmp.stat().st_size < checkpoint.checkpoints(workdir)[-1].stat().st_size
  assert not (workdir / "params.msgpack").exists()
  assert len(_rows(workdir)) == kill_epoch  # each row written as soon as its epoch was read

  # The same command without --resume is refused, and says how to go on.
  code, _, err = _cli(_train_args(workdir, tiny_data_dir), capsys)
  err = err.strip()
  assert code == 2 and "unfinished run" in err and "--resume" in err
  assert len(err.splitlines()) == 1

  # --resume takes every flag from the run itself.
  code, out, _ = _cli(["train", "--workdir", str(workdir), "--resume", "--no-progress",
                       "--no-compile-cache"], capsys)
  assert code == 0 and f"resumed after epoch {kept}" in out
  _assert_same_run(uninterrupted_cpu, workdir)


def test_a_larger_epochs_extends_a_finished_run_to_the_longer_run(uninterrupted, tiny_data_dir,
                                                                  tmp_path, capsys):
  short = tmp_path / "short"
  assert cli.main(_train_args(short, tiny_data_dir, epochs=2)) == 0
  # A plain --resume of the finished run (it redraws the figures) keeps every grid.
  grids = sorted(p.name for p in short.glob("reconstruction_*"))
  assert grids == ["reconstruction_1.png", "reconstruction_2.png"]
  capsys.readouterr()
  assert cli.main(["train", "--workdir", str(short), "--resume", "--no-progress",
                   "--no-compile-cache"]) == 0
  assert "2 epochs (all trained before: its results written again)" in capsys.readouterr().out
  assert sorted(p.name for p in short.glob("reconstruction_*")) == grids
  assert cli.main(["train", "--workdir", str(short), "--resume", "--epochs", str(EPOCHS),
                   "--no-progress", "--no-compile-cache"]) == 0
  assert "removed reconstruction_2.png, the grid of the shorter run's last epoch" in \
      capsys.readouterr().err
  assert _rows(short) == _rows(uninterrupted)
  assert (short / "params.msgpack").read_bytes() == (uninterrupted / "params.msgpack").read_bytes()
  # The same files too: the short run's last grid (epoch 2) is off the longer run's schedule.
  names = lambda d: sorted(p.name for p in d.iterdir())
  assert names(short) == names(uninterrupted), (names(short), names(uninterrupted))
  for grid in uninterrupted.glob("reconstruction_*.png"):
    assert (short / grid.name).read_bytes() == grid.read_bytes()


def test_resume_refuses_a_changed_config_naming_the_field(uninterrupted, tiny_data_dir, capsys):
  before = {p: p.read_bytes() for p in uninterrupted.rglob("*") if p.is_file()}
  for flags, field in ((["--latent-dim", "3"], "--latent-dim"),
                       (["--learning-rate", "0.002"], "--learning-rate"),
                       (["--epochs", "2"], "--epochs")):
    assert cli.main(["train", "--workdir", str(uninterrupted), "--resume", *flags]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and field in err, err
  assert {p: p.read_bytes() for p in uninterrupted.rglob("*") if p.is_file()} == before


def test_resume_with_nothing_to_resume_is_refused(tmp_path, capsys):
  assert cli.main(["train", "--workdir", str(tmp_path / "none"), "--resume"]) == 2
  assert "no run to resume" in capsys.readouterr().err


def test_results_without_a_checkpoint_are_never_truncated_by_resume(uninterrupted, capsys):
  # As the repository's results/vae_2 is: metrics, loss arrays and figures, but its weights
  # and checkpoints left out. --resume would have started over and truncated metrics.jsonl.
  for p in [uninterrupted / "params.msgpack", *checkpoint.checkpoints(uninterrupted)]:
    p.unlink()
  before = {p: p.read_bytes() for p in uninterrupted.rglob("*") if p.is_file()}
  # The command it suggests: this one's flags with --overwrite; under --resume, the run's.
  for flags, suggested in (([], "again with --overwrite (the"),
                           (["--resume"], "again with --overwrite and the flags --epochs 4 (")):
    assert cli.main(["train", "--workdir", str(uninterrupted), "--no-compile-cache",
                     *flags]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "no weights or checkpoint to continue from" in err
    assert suggested in err and "with --resume" not in err, err
  assert {p: p.read_bytes() for p in uninterrupted.rglob("*") if p.is_file()} == before


def test_a_run_killed_before_its_first_checkpoint_resumes_from_the_start(
    uninterrupted, tiny_data_dir, tmp_path, capsys):
  # With --checkpoint-every 2, a kill during epoch 2 leaves epoch 1's row and grid, no
  # checkpoint: nothing of a finished run, so --resume starts over (and ends as a whole run).
  killed = tmp_path / "killed"
  killed.mkdir()
  for name in ("config.json", "reconstruction_1.png"):
    (killed / name).write_bytes((uninterrupted / name).read_bytes())
  (killed / "metrics.jsonl").write_text((uninterrupted / "metrics.jsonl").read_text(
      ).splitlines()[0] + "\n")
  assert cli.main(["train", "--workdir", str(killed), "--resume", "--no-progress",
                   "--no-compile-cache"]) == 0
  assert _rows(killed) == _rows(uninterrupted)
  assert (killed / "params.msgpack").read_bytes() == (uninterrupted / "params.msgpack").read_bytes()


def test_checkpoints_hold_the_state_and_history_and_only_the_last_two_stay(uninterrupted):
  names = [p.name for p in checkpoint.checkpoints(uninterrupted)]
  assert names == ["epoch_0003.msgpack", "epoch_0004.msgpack"]
  config = Config.from_file(uninterrupted / "config.json")
  from vae_jax import train
  fresh = train.setup(config).state
  ckpt = checkpoint.load_checkpoint(checkpoint.checkpoints(uninterrupted)[-1], fresh)
  assert ckpt.epoch == EPOCHS and ckpt.config == config
  assert ckpt.history == [json.loads(line) for line in
                          (uninterrupted / "metrics.jsonl").read_text().splitlines()]
  final = serialization.msgpack_restore((uninterrupted / "params.msgpack").read_bytes())
  jax.tree.map(np.testing.assert_array_equal, final, ckpt.state.params)  # bit for bit
  steps = EPOCHS * -(-300 // config.batch_size)  # 3 steps per epoch on the 300-image fixture
  assert int(ckpt.state.opt_state.inner_state[0].count) == steps  # Adam's step count


def test_checkpoint_every_n_epochs_and_always_the_last(tiny_data_dir, tmp_path):
  workdir = tmp_path / "every3"
  assert cli.main(_train_args(workdir, tiny_data_dir, "--checkpoint-every", "3", epochs=5)) == 0
  assert [p.name for p in checkpoint.checkpoints(workdir)] == ["epoch_0003.msgpack",
                                                               "epoch_0005.msgpack"]


class _FakeHost:
  """A fake host clock (`run._clock`) on which reading an epoch off the device takes 0.5 s
  (the loop's one `jax.device_get` an epoch, where the host waits for the device) and a
  checkpoint 0.375 s, both exact in binary; and the epochs checkpointed."""
  READ_S, SAVE_S = 0.5, 0.375

  def __init__(self, monkeypatch):
    self.now, self.saved = 0.0, []
    real_save = checkpoint.save_checkpoint

    def device_get(tree):
      self.now += self.READ_S
      return jax.device_get(tree)

    def save(run_dir, epoch, *args, **kwargs):
      self.saved.append(epoch)
      self.now += self.SAVE_S
      return real_save(run_dir, epoch, *args, **kwargs)

    monkeypatch.setattr(run, "_clock", lambda: self.now)
    class Jax:  # run.py's `jax`: the real one, but for its device_get
      def __getattr__(self, name):
        return device_get if name == "device_get" else getattr(jax, name)

    monkeypatch.setattr(run, "jax", Jax())
    monkeypatch.setattr(checkpoint, "save_checkpoint", save)


@pytest.mark.parametrize("flags,saved", [
    # 1.2 s: epochs 1, 2, 3 are read at 0.5, 1.0, 1.5 s: 3 is saved, its clock restarting at
    # 1.5 s, the read (the save ends at 1.875); 4 and 5 are read at 2.375 and 2.875 s, 1.375 s
    # after: 5 is saved; so 7 and 9; and the last. (A clock restarted after the save would
    # give 3, 6, 9, 10.)
    (("--checkpoint-seconds", "1.2"), [3, 5, 7, 9, 10]),
    ((), [2, 4, 6, 8, 10]),  # the default, 1 s: read at 1.0 s, then 1.375 s apart
    (("--checkpoint-seconds", "0"), list(range(1, 11))),
    (("--checkpoint-every", "4"), [4, 8, 10]),  # epochs, whatever the clock says
])
def test_a_checkpoint_follows_each_epoch_read_s_seconds_after_the_last_and_the_last_epoch(
    flags, saved, tiny_data_dir, tmp_path, monkeypatch):
  host = _FakeHost(monkeypatch)
  argv = ["train", "--workdir", str(tmp_path / "run"), "--data-dir", str(tiny_data_dir),
          "--epochs", "10", "--no-progress", "--no-compile-cache", *flags]
  assert cli.main(argv) == 0
  assert host.saved == saved
  assert [p.name for p in checkpoint.checkpoints(tmp_path / "run")] == [
      f"epoch_{e:04d}.msgpack" for e in saved[-2:]]


def test_train_and_evaluate_refuses_a_bad_checkpoint_clock_before_any_work(tmp_path):
  for bad in (-1.0, float("nan"), float("inf")):
    with pytest.raises(ValueError, match="--checkpoint-seconds must be a finite number >= 0"):
      run.train_and_evaluate(Config(), tmp_path / "run", checkpoint_seconds=bad)
  with pytest.raises(ValueError, match="--checkpoint-every must be >= 1"):
    run.train_and_evaluate(Config(), tmp_path / "run", checkpoint_every=0)
  assert not (tmp_path / "run").exists()


def test_checkpoint_seconds_and_every_are_one_choice(tiny_data_dir, tmp_path, capsys):
  with pytest.raises(SystemExit) as e:
    cli.main(_train_args(tmp_path / "run", tiny_data_dir, "--checkpoint-every", "2",
                         "--checkpoint-seconds", "5"))
  assert e.value.code == 2 and "not allowed with argument" in capsys.readouterr().err
  assert not (tmp_path / "run").exists()


def _killed(kill_epoch, mode, argv, returncode=-signal.SIGKILL):
  """Runs `vae-jax argv` in a process that KILLER stops at a known point."""
  done = subprocess.run([sys.executable, "-c", KILLER, str(kill_epoch), mode, *argv],
                        env=_env(), capture_output=True, text=True, timeout=300)
  assert done.returncode == returncode, done.stderr
  return done


def test_ctrl_c_stops_after_the_epoch_in_flight_with_exit_130_and_resumes(
    uninterrupted_cpu, tiny_data_dir, tmp_path, capsys):
  workdir = tmp_path / "ctrl_c"
  done = _killed(1, "sigint", _train_args(workdir, tiny_data_dir), returncode=130)
  err = done.stderr.strip().splitlines()
  assert "Traceback" not in done.stderr and "Ctrl-C: stopping after epoch" in done.stderr
  assert "interrupted after epoch" in err[-1] and "--resume" in err[-1]
  rows = _rows(workdir)
  assert len(rows) in (1, 2)  # epoch 1, and epoch 2 if it was already in flight
  assert checkpoint.checkpoints(workdir)[-1].name == f"epoch_{len(rows):04d}.msgpack"
  assert _cli(["train", "--workdir", str(workdir), "--resume", "--no-progress",
               "--no-compile-cache"], capsys)[0] == 0
  _assert_same_run(uninterrupted_cpu, workdir)


def test_a_kill_while_drawing_the_figures_keeps_the_weights_and_resume_redraws(
    uninterrupted_cpu, tiny_data_dir, tmp_path, capsys):
  workdir = tmp_path / "figures"
  _killed(0, "figures", _train_args(workdir, tiny_data_dir))
  assert (workdir / "params.msgpack").read_bytes() == (
      uninterrupted_cpu / "params.msgpack").read_bytes()
  assert not (workdir / "latent.png").exists()
  code, _, err = _cli(_train_args(workdir, tiny_data_dir), capsys)
  assert code == 2 and "--resume" in err  # finished: says how to redraw
  assert _cli(["train", "--workdir", str(workdir), "--resume", "--no-progress",
               "--no-compile-cache"], capsys)[0] == 0
  _assert_same_run(uninterrupted_cpu, workdir)


def test_a_diverging_learning_rate_stops_with_exit_3_and_one_line(tiny_data_dir, tmp_path,
                                                                 capsys):
  workdir = tmp_path / "diverged"
  assert cli.main(_train_args(workdir, tiny_data_dir, "--learning-rate", "1e6")) == 3
  err = capsys.readouterr().err.strip()
  assert len(err.splitlines()) == 1 and "diverged at epoch 1" in err and "1000000.0" in err
  assert "not finite" in err and err.endswith(
      "Try a smaller --learning-rate and run the command again with it: the directory holds "
      "nothing trained"), err
  assert not (workdir / "params.msgpack").exists() and not checkpoint.checkpoints(workdir)
  assert cli.main(_train_args(workdir, tiny_data_dir, "--learning-rate", "1e-3")) == 0  # as said


def test_the_raw_variance_loss_going_nan_stops_the_run(tiny_data_dir, tmp_path):
  from vae_jax.study import variants
  config = Config(epochs=EPOCHS, data_dir=str(tiny_data_dir), learning_rate=3e-3)
  with pytest.raises(run.RunStopped, match="diverged at epoch 1: train_recon = nan") as e:
    run.train_and_evaluate(config, tmp_path / "raw_var", progress=False,
                           loss_fn=variants.make_loss(param="raw_var"))
  assert e.value.exit_code == 3


@pytest.mark.parametrize("every", [dict(checkpoint_seconds=1e6), dict(checkpoint_every=1)],
                         ids=["no checkpoint due", "every epoch"])
def test_divergence_after_some_epochs_keeps_the_last_finite_checkpoint(every, tiny_data_dir,
                                                                       tmp_path):
  """A loss that turns NaN once a batch's KL passes 1.5 nats per image (the fixture's KL
  grows past that within a few epochs): the guard must stop at that epoch and keep the
  epoch before, whether or not a checkpoint of it was due."""
  def kl_capped(params, model, x, eps, weight):
    loss, m = losses.batch_loss(params, model, x, eps, weight)
    over = m.kl / weight.sum() > 1.5
    return loss, losses.Metrics(*(jnp.where(over, jnp.nan, v) for v in m))

  config = Config(epochs=20, data_dir=str(tiny_data_dir))
  workdir = tmp_path / "capped"
  with pytest.raises(run.RunStopped, match=r"diverged at epoch (\d+)") as e:
    run.train_and_evaluate(config, workdir, progress=False, loss_fn=kl_capped, **every)
  bad_epoch = int(e.value.args[0].split("diverged at epoch ")[1].split(":")[0])
  assert bad_epoch >= 2 and e.value.exit_code == 3
  assert f"checkpoint of epoch {bad_epoch - 1} is kept" in str(e.value)
  assert len(_rows(workdir)) == bad_epoch - 1
  last = checkpoint.checkpoints(workdir)[-1]
  assert last.name == f"epoch_{bad_epoch - 1:04d}.msgpack"
  from vae_jax import train
  ckpt = checkpoint.load_checkpoint(last, train.setup(config).state)
  assert ckpt.epoch == bad_epoch - 1 and ckpt.history == [  # metrics.jsonl's rows, seconds too
      json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
  assert all(np.isfinite(np.asarray(a)).all() for a in jax.tree.leaves(ckpt.state))


def test_divergence_under_overwrite_says_to_delete_its_staging_directory(tiny_data_dir, tmp_path):
  """Under --overwrite the kept checkpoint is in WORKDIR.new, which a plain --overwrite
  refuses: the line must say to delete it, and the old run must be untouched."""
  def kl_capped(params, model, x, eps, weight):  # NaN once the KL passes 1.5 nats an image
    loss, m = losses.batch_loss(params, model, x, eps, weight)
    return loss, losses.Metrics(*(jnp.where(m.kl / weight.sum() > 1.5, jnp.nan, v) for v in m))

  workdir = tmp_path / "run"
  config = Config(epochs=1, data_dir=str(tiny_data_dir))
  run.train_and_evaluate(config, workdir, progress=False)
  before = {p: p.read_bytes() for p in workdir.rglob("*") if p.is_file()}
  with pytest.raises(run.RunStopped, match=r"diverged at epoch") as e:
    run.train_and_evaluate(config.replace(epochs=20), workdir, overwrite=True, progress=False,
                           loss_fn=kl_capped, checkpoint_every=1)
  staged = rundir.staging_dir(workdir)
  assert str(e.value).endswith(f"Try a smaller --learning-rate and delete {staged} (this "
                               f"--overwrite's) and start again with --overwrite"), e.value
  assert checkpoint.checkpoints(staged)  # what it says it keeps
  assert {p: p.read_bytes() for p in workdir.rglob("*") if p.is_file()} == before
  shutil.rmtree(staged)  # as told: the next --overwrite is accepted
  assert rundir.plan_run(config, workdir, overwrite=True).write == staged


def test_overwrite_keeps_the_old_results_until_the_new_run_has_finished(
    uninterrupted, tiny_data_dir, tmp_path, capsys):
  before = (uninterrupted / "params.msgpack").read_bytes()
  # An --overwrite run killed midway: the old run is untouched.
  _killed(2, "after", _train_args(uninterrupted, tiny_data_dir, "--overwrite", "--seed", "2"))
  assert (uninterrupted / "params.msgpack").read_bytes() == before
  staged = rundir.staging_dir(uninterrupted)
  assert len(_rows(staged)) == 2
  # A plain --overwrite now would discard that work: refused, and it says how to go on.
  assert cli.main(_train_args(uninterrupted, tiny_data_dir, "--overwrite")) == 2
  err = capsys.readouterr().err
  assert "interrupted --overwrite" in err and "--resume --overwrite" in err
  # So is a plain run, and its line names both ways on, not an --overwrite refused next.
  assert cli.main(_train_args(uninterrupted, tiny_data_dir)) == 2
  err = capsys.readouterr().err.strip()
  assert err.endswith(f"{staged} holds an interrupted --overwrite of {uninterrupted} (last "
                      f"checkpoint: epoch 2 of {EPOCHS}): continue it with --resume --overwrite, "
                      f"or keep the run's results in {uninterrupted} and delete {staged}"), err
  # And a plain --resume, which would redraw the finished run and leave that one waiting.
  files = {p: p.read_bytes() for p in uninterrupted.rglob("*") if p.is_file()}
  assert cli.main(["train", "--workdir", str(uninterrupted), "--resume", "--no-progress",
                   "--no-compile-cache"]) == 2
  err = capsys.readouterr().err.strip()
  assert err.count("\n") == 0 and err.endswith(
      f"{staged} holds an interrupted --overwrite of {uninterrupted} (last checkpoint: epoch 2 "
      f"of {EPOCHS}): continue it with --resume --overwrite, or delete {staged} to resume the "
      f"finished run in {uninterrupted}"), err
  assert {p: p.read_bytes() for p in uninterrupted.rglob("*") if p.is_file()} == files
  # It can be resumed, and replaces the old run only when finished.
  assert cli.main(["train", "--workdir", str(uninterrupted), "--resume", "--overwrite",
                   "--no-progress", "--no-compile-cache"]) == 0
  assert not staged.exists()
  assert Config.from_file(uninterrupted / "config.json").seed == 2
  assert (uninterrupted / "params.msgpack").read_bytes() != before
  assert len(_rows(uninterrupted)) == EPOCHS


def test_a_failing_figure_is_one_line_and_the_weights_are_saved(tiny_data_dir, tmp_path,
                                                                monkeypatch, capsys):
  from vae_jax.app import plots

  def broken(*args, **kwargs):
    raise IndexError("tuple index out of range")
  monkeypatch.setattr(plots, "save_latent_map", broken)
  workdir = tmp_path / "fig"
  assert cli.main(_train_args(workdir, tiny_data_dir)) == 0
  err = capsys.readouterr().err.strip()
  assert err.startswith("vae-jax: warning: could not draw latent.png (IndexError")
  assert len(err.splitlines()) == 1
  assert (workdir / "params.msgpack").exists() and (workdir / "samples.png").exists()


def test_z5_on_one_test_image_draws_its_latent_map(tiny_data_dir, tmp_path, capsys):
  """The PCA of a single mu has one axis; the map pads the second with zeros."""
  workdir = tmp_path / "one"
  assert cli.main(_train_args(workdir, tiny_data_dir, "--latent-dim", "5", "--test-limit",
                              "1")) == 0
  err = capsys.readouterr().err
  assert "warning" not in err and (workdir / "latent.png").exists()
  assert (workdir / "manifold.png").exists() and not (workdir / "interpolation.png").exists()
  assert "interpolation.png skipped: it joins two test images, and there is 1" in err


def test_a_kill_between_the_two_renames_of_the_swap_is_completed_by_the_next_command(
    uninterrupted, tiny_data_dir, tmp_path, capsys):
  new = rundir.staging_dir(uninterrupted)
  assert cli.main(_train_args(tmp_path / "other", tiny_data_dir, "--seed", "3")) == 0
  os.replace(tmp_path / "other", new)                    # a finished new run ...
  os.replace(uninterrupted, tmp_path / "whole.old-abc")  # ... and the first rename done
  assert cli.main(_train_args(uninterrupted, tiny_data_dir)) == 2  # then refuses: finished
  err = capsys.readouterr().err
  assert "finishing the interrupted replacement" in err
  assert Config.from_file(uninterrupted / "config.json").seed == 3
  assert not new.exists() and not (tmp_path / "whole.old-abc").exists()


def test_beside_an_interrupted_overwrite_results_without_weights_are_not_offered_a_resume(
    tmp_path):
  # As results/vae_2 (its weights git-ignored): --resume there is refused, so not advised.
  final, config = tmp_path / "vae_2", Config(epochs=3)
  final.mkdir()
  (final / "config.json").write_text(config.to_json())
  np.save(final / "loss_list.npy", np.ones(3))
  staged = rundir.staging_dir(final)
  staged.mkdir()
  (staged / "config.json").write_text(config.to_json())
  (staged / "metrics.jsonl").write_text('{"epoch": 1}\n')
  with pytest.raises(FileExistsError) as e:
    rundir.plan_run(config, final)
  assert str(e.value).endswith(f"continue it with --resume --overwrite, or keep the run's "
                               f"results in {final} and delete {staged}"), e.value


def test_a_second_process_is_refused_naming_the_first_and_a_killed_one_blocks_nothing(
    uninterrupted_cpu, tiny_data_dir, tmp_path, capsys):
  """A run in training holds its directory: train, --resume and --overwrite into it from a
  second process are each refused in one line naming the holder's PID, touching nothing.
  Killed (SIGKILL), it holds nothing: --resume goes on at once, to the run never stopped."""
  workdir = tmp_path / "held"
  holder = subprocess.Popen([sys.executable, "-c", KILLER, "2", "pause",
                             *_train_args(workdir, tiny_data_dir)], env=_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
  try:
    assert holder.stdout.readline().strip() == "paused", holder.stderr.read()
    before = {p: p.read_bytes() for p in workdir.rglob("*") if p.is_file()}
    resume = ["train", "--workdir", str(workdir), "--resume", "--no-progress",
              "--no-compile-cache"]
    for argv in (_train_args(workdir, tiny_data_dir), resume, resume + ["--overwrite"],
                 _train_args(workdir, tiny_data_dir, "--overwrite"),
                 _train_args(workdir / "inside", tiny_data_dir)):
      code, _, err = _cli(argv, capsys)
      err = err.strip()
      assert code == 2 and len(err.splitlines()) == 1, err
      assert f"is being written by process {holder.pid} (" in err, err
    assert {p: p.read_bytes() for p in workdir.rglob("*") if p.is_file()} == before
    assert not rundir.staging_dir(workdir).exists() and not (workdir / "inside").exists()
  finally:
    holder.kill()
    holder.wait()
  assert (workdir / ".lock").exists()  # left by the killed process, and locked by nobody
  assert _cli(resume, capsys)[0] == 0
  _assert_same_run(uninterrupted_cpu, workdir)
  assert not (workdir / ".lock").exists()  # a run that ends removes its lock file


def test_a_write_that_fails_mid_run_says_which_file_keeps_the_last_checkpoint_and_resumes(
    uninterrupted, tiny_data_dir, tmp_path, capsys, monkeypatch):
  """The disk fills up while epoch 3's checkpoint is written (root ignores permissions, so
  the OSError is injected where the bytes reach the disk): one line names the file, the
  checkpoint kept and the command that goes on; no temporary file is left; exit 1."""
  workdir = tmp_path / "full"
  real_fsync = files.os.fsync

  def full_disk(fd):
    if os.readlink(f"/proc/self/fd/{fd}").endswith(".epoch_0003.msgpack.tmp"):
      raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    return real_fsync(fd)

  monkeypatch.setattr(files.os, "fsync", full_disk)
  assert cli.main(_train_args(workdir, tiny_data_dir)) == 1
  err = capsys.readouterr().err.strip()
  ckpts = workdir / "checkpoints"
  assert len(err.splitlines()) == 1 and err.startswith(
      f"vae-jax train: could not write {ckpts / 'epoch_0003.msgpack'} (No space left on "
      f"device): the checkpoint of epoch 2 is kept in {ckpts}; free some space or make the "
      f"folder writable, then continue with: "), err
  assert err.endswith(f"-m vae_jax train --workdir {workdir} --resume"), err
  assert sorted(p.name for p in ckpts.iterdir()) == ["epoch_0001.msgpack", "epoch_0002.msgpack"]
  monkeypatch.setattr(files.os, "fsync", real_fsync)
  assert cli.main(["train", "--workdir", str(workdir), "--resume", "--no-progress",
                   "--no-compile-cache"]) == 0
  _assert_same_run(uninterrupted, workdir)
  assert not [p for p in workdir.rglob(".*.tmp")]
