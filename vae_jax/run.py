"""One training run: the blog's experiment, every artifact it writes, and a run that survives.

  vae-jax train --workdir runs/vae_2                   # z = 2, 100 epochs: the blog's run
  vae-jax train --workdir runs/vae_2 --resume          # go on after a crash, a kill or Ctrl-C

`train_and_evaluate(config, workdir)` checks the run directory, writes
`config.json`, loads the data, sets up the run (`train.setup`) and trains while
the host reads each finished epoch behind the device. As it goes it writes

  metrics.jsonl                     each epoch's row, as soon as the epoch is read
  reconstruction_{1,10,...}.png     the blog's grids
  checkpoints/epoch_NNNN.msgpack    at most one a second of training, and the last (two kept)

and when training ends, the weights first and the figures after them:

  params.msgpack, loss_list.npy, test_loss_list.npy,
  learning_curves.png, samples.png, latent.png, manifold.png, interpolation.png,
  kl_per_dim.png (z > 2); the CVAE (`--model cvae`) writes digits.png in place of
  samples.png, manifold.png and interpolation.png

What survives what:
* a kill at any moment (SIGKILL, power loss): config.json, the checkpoints, the
  weights and the loss arrays are written to a temporary name and renamed, so each
  is whole or absent; metrics.jsonl is appended a row at a time. `--resume`
  rewrites metrics.jsonl from the last checkpoint, trains on, redraws the figures
  and ends with the same numbers, bit for bit, as a run never stopped (each
  epoch's key depends on its number alone). A kill loses the epochs since the last
  checkpoint and the one in flight: about a second of training by default
  (`checkpoint_seconds`; one epoch where an epoch is longer), or fewer than
  `checkpoint_every` epochs when that is given;
* Ctrl-C: the epoch in flight finishes and is checkpointed; exit code 130;
* a loss or parameter that is no longer finite: the run stops after that epoch,
  with a checkpoint of the epoch before it (the last finite one); exit code 3;
* a figure that fails: one line, and the run goes on;
* `--overwrite`: the new run is written beside the old one, in `<workdir>.new`,
  and replaces it only once it has finished;
* a user's own files: a run refuses a directory holding files no run writes
  (`others_files`), so that `--overwrite` never deletes them.
"""

from __future__ import annotations

import dataclasses
import glob
import io
import json
import math
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import tqdm.auto as tqdm

from vae_jax import checkpoint, data, losses, train
from vae_jax.config import CHECKPOINT_SECONDS, Config
from vae_jax.likelihood import ACTIVE_THRESHOLD

_clock = time.perf_counter  # the host clock of the rows' seconds and of the checkpoints

RESULT_FILES = ("metrics.jsonl", "loss_list.npy", "test_loss_list.npy", "learning_curves.png",
                "latent.png", "manifold.png", "interpolation.png", "kl_per_dim.png", "samples.png",
                "digits.png",
                "params.msgpack",
                checkpoint.CHECKPOINT_DIR)


class RunResult(NamedTuple):
  params: Any
  history: list  # one dict per epoch, as written to metrics.jsonl
  compile_s: float


class RunStopped(Exception):
  """Training stopped before its last epoch, with what was finished kept on disk.

  `exit_code`: 3 when the loss or a parameter went non-finite, 130 on Ctrl-C.
  """

  def __init__(self, message: str, exit_code: int):
    super().__init__(message)
    self.exit_code = exit_code


# --------------------------------------------------------------------------
# The run directory: empty, an unfinished run, or a finished one.


def staging_dir(workdir) -> Path:
  """Where `--overwrite` writes the new run, beside the old: `<workdir>.new`."""
  workdir = Path(workdir).resolve()
  if not workdir.name:
    raise ValueError(f"--workdir {workdir}: choose a directory below the root")
  return workdir.with_name(workdir.name + ".new")


class RunStatus(NamedTuple):
  state: str                # "empty", "unfinished" or "finished"
  last_checkpoint: int      # 0 when there is none
  epochs: int | str         # what its config.json asks for ("?" when it cannot be read)


def _run_name(name: str) -> bool:
  """Whether a run writes files of this name: config.json, RESULT_FILES, the grids."""
  return name == "config.json" or name in RESULT_FILES or name.startswith("reconstruction_")


def has_run_config(run_dir) -> bool:
  """Whether `run_dir` holds a config.json that this version reads as a run's."""
  try:
    Config.from_file(Path(run_dir) / "config.json")
    return True
  except ValueError:
    return False


def others_files(run_dir) -> list[str]:
  """The names in `run_dir` that are not a run's: a user's own files, which a run must
  neither mix with nor replace. A run writes its config.json before anything else, so
  without a config.json this version reads, every file is someone else's (a samples.png
  of the user's own, another project's config.json); with one, the names no run writes
  (hidden temporary files aside), and in its checkpoints/ folder the names that are not
  checkpoints."""
  run_dir = Path(run_dir)
  if not run_dir.is_dir():
    return []
  ours = has_run_config(run_dir)
  inside = run_dir / checkpoint.CHECKPOINT_DIR  # a run's folder, but only its checkpoints are
  kept = {p.name for p in checkpoint.checkpoints(run_dir)}
  return sorted([p.name for p in run_dir.iterdir() if not p.name.startswith(".")
                 and not (ours and _run_name(p.name))]
                + [f"{inside.name}/{p.name}" for p in (inside.iterdir() if ours and
                                                        inside.is_dir() else ())
                   if not p.name.startswith(".") and p.name not in kept])


def foreign_files_error(run_dir: Path, other: list[str], deleted: bool) -> str:
  """The refusal of a directory holding `other` (from `others_files`): a user's files, or a
  run's without the config.json that says which run (lost, or written by another version)."""
  listed = ", ".join(other[:3]) + (", ..." if len(other) > 3 else "")
  if other == ["config.json"]:  # alone, and not one this version reads
    return (f"{run_dir} holds a config.json this version cannot read as a run's (another "
            f"project's, or another version's): choose another --workdir")
  if all(_run_name(n) for n in other):  # others_files found no readable config.json
    why = "a config.json this version cannot read" if "config.json" in other else "no config.json"
    return (f"{run_dir} holds a run's files ({listed}) but {why} to say which run: choose "
            f"another --workdir, or put back the run's config.json")
  return (f"{run_dir} holds files that are not a run's ({listed}): "
          + ("--overwrite would delete them" if deleted else "a run needs a directory of its own")
          + "; choose another --workdir, or move them out")


def run_status(run_dir) -> RunStatus:
  """What `run_dir` holds. A directory with at most a config.json holds nothing yet:
  its run never finished an epoch, and a new run may start there. A run is finished
  once its weights are written (its figures may still be missing: --resume redraws them)."""
  run_dir = Path(run_dir)
  found = [p for p in run_dir.glob("*") if (p.name in RESULT_FILES or p.name.startswith(
      "reconstruction_")) and not (p.is_file() and p.stat().st_size == 0)
           ] if run_dir.is_dir() else []
  ckpts = checkpoint.checkpoints(run_dir)
  last = int(ckpts[-1].stem.split("_")[1]) if ckpts else 0
  try:
    epochs = Config.from_file(run_dir / "config.json").epochs
  except ValueError:  # missing or unreadable: say so when it matters (--resume)
    epochs = "?"
  if not found:
    return RunStatus("empty", last, epochs)
  done = (run_dir / "params.msgpack").exists() and (not ckpts or epochs == "?" or last >= epochs)
  return RunStatus("finished" if done else "unfinished", last, epochs)


def saved_config(workdir, overwrite: bool = False) -> Config:
  """The config of the run `--resume` would continue (of `<workdir>.new` under --overwrite)."""
  where = staging_dir(workdir) if overwrite else Path(workdir)
  checkpoint.check_directory(where, "--workdir")
  if not (where / "config.json").exists():
    raise FileNotFoundError(
        f"{where} holds no run to resume: "
        + (f"no --overwrite of {workdir} was interrupted; drop --resume" if overwrite
           else "drop --resume to start a run there"))
  return Config.from_file(where / "config.json")


class Plan(NamedTuple):
  final: Path                            # where the results are once the run ends
  write: Path                            # where this run writes: `final`, or `<final>.new`
  resumed: checkpoint.Checkpoint | None  # the checkpoint --resume continues from


# Fields that --resume may change: more epochs, and where the MNIST cache lives.
RESUMABLE_CHANGES = ("epochs", "data_dir")


# What only the end of a run writes (`write_results`): the loss arrays and the figures but
# the reconstruction grids, which each checkpointed epoch may draw.
ENDED = tuple(n for n in RESULT_FILES if n.endswith((".npy", ".png")))


def ended_results(run_dir: Path) -> list[str]:
  """The files of a finished run in `run_dir`: a run that ended there, whatever became of its
  weights and checkpoints."""
  return sorted(p.name for p in Path(run_dir).glob("*") if p.name in ENDED)


def results_without_weights(run_dir: Path) -> bool:
  """A finished run's results with neither its weights nor a checkpoint (as results/vae_2,
  its weights git-ignored): nothing to resume from, and too much to start over on."""
  run_dir = Path(run_dir)
  return (not (run_dir / "params.msgpack").exists() and not checkpoint.checkpoints(run_dir)
          and bool(ended_results(run_dir)))


def train_flags(config: Config) -> str:
  """The train flags that make `config` again: its fields that differ from the defaults."""
  default = Config()
  return "".join(f" --{f.name.replace('_', '-')} {getattr(config, f.name)}"
                 for f in dataclasses.fields(Config)
                 if f.name != "data_dir" and getattr(config, f.name) != getattr(default, f.name))


def _no_checkpoint(run_dir: Path, config: Config) -> str:
  flags = train_flags(config)
  return (f"{run_dir} holds a finished run's results ({', '.join(ended_results(run_dir)[:2])}) "
          f"but no weights or checkpoint to continue from: start again with --overwrite"
          + (f" and the flags{flags}" if flags else "") + " (the old results stay until the "
          f"new run finishes), or choose another --workdir")


def plan_run(config: Config, workdir, *, overwrite: bool = False, resume: bool = False) -> Plan:
  """Checks the run directory (one line, before any work) and says where the run writes.

  Refuses a directory holding a run unless `overwrite` (the new run is then
  written to `<workdir>.new` and swapped in when finished) or `resume` (which
  must not change the config, except to ask for more epochs).
  """
  final = Path(workdir)
  checkpoint.check_directory(final, "--workdir")
  _finish_interrupted_swap(final)
  other = others_files(final)
  if other and (overwrite or not resume):  # --resume alone adds to the run in place
    raise FileExistsError(foreign_files_error(final, other, overwrite))
  if resume and not overwrite and run_status(final).state == "finished":
    staged = run_status(staging_dir(final))
    if staged.state != "empty":  # --resume of the finished run would leave it waiting unsaid
      raise FileExistsError(
          f"{staging_dir(final)} holds an interrupted --overwrite of {final} (last checkpoint: "
          f"epoch {staged.last_checkpoint} of {staged.epochs}): continue it with --resume "
          f"--overwrite, or delete {staging_dir(final)} to resume the finished run in {final}")
  if resume:
    where = staging_dir(final) if overwrite else final
    saved = saved_config(final, overwrite)
    changed = [f.name for f in dataclasses.fields(Config) if f.name not in RESUMABLE_CHANGES
               and getattr(saved, f.name) != getattr(config, f.name)]
    if changed:
      name = changed[0]
      raise ValueError(f"--resume: --{name.replace('_', '-')} {getattr(config, name)} differs "
                       f"from the run's {getattr(saved, name)} in {where}/config.json: a "
                       f"resumed run keeps its config (only --epochs may grow, and --data-dir "
                       f"move)")
    if config.epochs < saved.epochs:
      raise ValueError(f"--resume: --epochs {config.epochs} is fewer than the run's "
                       f"{saved.epochs}: a resumed run trains to {saved.epochs} or more")
    ckpts = checkpoint.checkpoints(where)
    if not ckpts:
      if (where / "params.msgpack").exists():
        raise ValueError(f"--resume: {where} holds finished weights but no checkpoint to "
                         f"continue from: choose another --workdir")
      if not overwrite and results_without_weights(where):  # a start would truncate them
        raise ValueError(_no_checkpoint(where, saved))
      return Plan(final, where, None)  # no epoch was checkpointed: from the start
    from vae_jax import train
    ckpt = checkpoint.load_checkpoint(ckpts[-1], train.setup(config).state)  # read it now
    if ckpt.config.replace(**{f: getattr(config, f) for f in RESUMABLE_CHANGES}) != config:
      raise ValueError(f"{ckpt.path} was written by another config than {where}/config.json: "
                       f"delete it to resume from the one before")
    return Plan(final, where, ckpt)
  status, staged = run_status(final), run_status(staging_dir(final))
  interrupted_overwrite = (
      f"{staging_dir(final)} holds an interrupted --overwrite of {final} (last checkpoint: "
      f"epoch {staged.last_checkpoint} of {staged.epochs})")
  if status.state != "empty" and not overwrite:
    if staged.state != "empty":  # two runs to go on with: say which flags continue which
      if status.state == "unfinished" and not results_without_weights(final):
        other = f"the unfinished run in {final} itself with --resume"
      else:  # finished, or results with nothing to resume from (as results/vae_2)
        other = f"keep the run's results in {final} and delete {staging_dir(final)}"
      raise FileExistsError(f"{interrupted_overwrite}: continue it with --resume --overwrite, "
                            f"or {other}")
    if results_without_weights(final):
      raise FileExistsError(_no_checkpoint(final, config))
    if status.state == "unfinished":
      raise FileExistsError(
          f"{final} holds an unfinished run (last checkpoint: epoch {status.last_checkpoint} "
          f"of {status.epochs}): continue it with --resume, or start again with --overwrite")
    raise FileExistsError(
        f"{final} already holds a finished run: choose another --workdir, pass --overwrite "
        f"(the old results stay until the new run finishes), or --resume to train on with a "
        f"larger --epochs or to redraw missing figures")
  if overwrite and staged.state != "empty":
    raise FileExistsError(f"{interrupted_overwrite}: continue it with --resume --overwrite, or "
                          f"delete {staging_dir(final)}")
  return Plan(final, final if status.state == "empty" else staging_dir(final), None)


def _swap_in(new: Path, final: Path) -> None:
  """Replaces `final` by the finished run in `new`: two renames, then the old run goes."""
  final = final.resolve()
  if final.exists():
    old = Path(tempfile.mkdtemp(prefix=f"{final.name}.old-", dir=final.parent))
    os.replace(final, old)  # onto the empty directory just made: a name no one else uses
  os.replace(new, final)
  for old in final.parent.glob(f"{glob.escape(final.name)}.old-*"):
    shutil.rmtree(old, ignore_errors=True)


def _finish_interrupted_swap(final: Path) -> None:
  """A kill between `_swap_in`'s two renames leaves no `final`, the old run in
  `<final>.old-*` and the finished new one in `<final>.new`: complete the swap."""
  resolved = final.resolve()
  if resolved.exists() or not resolved.name:
    return
  new, olds = staging_dir(final), list(resolved.parent.glob(f"{glob.escape(resolved.name)}.old-*"))
  if olds and new.is_dir():
    print(f"vae-jax: finishing the interrupted replacement of {final} by {new}", file=sys.stderr)
    _swap_in(new, final)


# --------------------------------------------------------------------------


def grid_epochs(config: Config) -> set[int]:
  """Epochs that get a reconstruction grid: 1, every `recon_every`-th, and the last."""
  return {1, config.epochs} | set(range(config.recon_every, config.epochs + 1, config.recon_every))


class _CtrlC:
  """The first Ctrl-C asks the run to stop after the epoch in flight; a second stops it at once."""

  def __init__(self):
    self.requested = threading.Event()
    self._old = None

  def __enter__(self):
    if threading.current_thread() is threading.main_thread():
      self._old = signal.signal(signal.SIGINT, self._handle)
    return self

  def _handle(self, signum, frame):  # only a flag: the loop says what happens
    self.requested.set()
    signal.signal(signal.SIGINT, signal.default_int_handler)

  def __exit__(self, *exc):
    if self._old is not None:
      signal.signal(signal.SIGINT, self._old)


def first_non_finite(row: dict) -> str | None:
  """The first metric of a metrics.jsonl row that is not finite (a list: any entry), else None."""
  return next((k for k, v in row.items() if k != "epoch" and not all(
      math.isfinite(x) for x in (v if isinstance(v, list) else [v]))), None)


def _save_npy(path: Path, array: np.ndarray) -> None:
  buffer = io.BytesIO()
  np.save(buffer, array)
  checkpoint.atomic_write_bytes(path, buffer.getvalue())


def _draw(name: str, draw, path: Path) -> None:
  """Draws one figure; a failure is one line, not the end of the run."""
  try:
    draw(path)
  except Exception as e:  # the weights and metrics are saved: a figure is not worth them
    print(f"vae-jax: warning: could not draw {name} ({type(e).__name__}: {e}); the weights "
          f"and metrics are saved", file=sys.stderr)


def train_and_evaluate(config: Config, workdir, *, overwrite: bool = False, resume: bool = False,
                       checkpoint_every: int | None = None,
                       checkpoint_seconds: float = CHECKPOINT_SECONDS, progress: bool = True,
                       loss_fn=None) -> RunResult:
  """Trains the VAE of `config` and writes every artifact into `workdir`.

  A checkpoint follows the first epoch that ends `checkpoint_seconds` or more of host time
  after the last one (or the start; 0: every epoch), or, given `checkpoint_every`, every
  `checkpoint_every`-th epoch; and always the last epoch, and the last before a Ctrl-C.

  `loss_fn` (default: `config.objective`'s) has `losses.batch_loss`'s signature; the tests
  swap in a loss known to go NaN.
  """
  if checkpoint_every is not None and checkpoint_every < 1:
    raise ValueError(f"--checkpoint-every must be >= 1, got {checkpoint_every}")
  if not checkpoint_seconds >= 0 or math.isinf(checkpoint_seconds):
    raise ValueError(f"--checkpoint-seconds must be a finite number >= 0, got "
                     f"{checkpoint_seconds}")
  plan = plan_run(config, workdir, overwrite=overwrite, resume=resume)  # before any work
  try:  # until the first epoch, a Ctrl-C loses nothing: nothing was trained
    from vae_jax import plots  # pulls in matplotlib: import late
    d = data.load_device_data(config)  # uint8 [N, 784] train and test, on the device once
    out = plan.write
    if out != plan.final and not resume and out.exists():
      shutil.rmtree(out)  # a <workdir>.new that holds nothing yet (plan_run checked)
    out.mkdir(parents=True, exist_ok=True)
    checkpoint.atomic_write_bytes(out / "config.json", (config.to_json() + "\n").encode())
    resume_hint = (f"vae-jax train --workdir {plan.final} --resume"
                   + (" --overwrite" if out != plan.final else ""))
    n_train, n_test = len(d.x_train), len(d.x_test)
    run = train.setup(config, d, loss_fn=loss_fn)  # model, Adam, keys; programs compiled
    model = run.model
    state, history, start = run.state, [], 0
    if plan.resumed is not None:
      ckpt = plan.resumed
      state, history, start = jax.device_put(ckpt.state), ckpt.history, ckpt.epoch

    x_show = data.to_inputs(d.x_test[:8])  # the 8 images of every grid
    y_show, y_test = (d.y_test[:8], d.y_test) if model.conditional else (None, None)  # CVAE
    t0 = time.perf_counter()
    reconstruct = jax.jit(lambda p, x, y: jax.nn.sigmoid(model.apply({"params": p}, x, None, y
                                                                     ).logits)
                          ).lower(run.state.params, x_show, y_show).compile()
    all_finite = jax.jit(lambda p: jnp.all(jnp.stack([jnp.isfinite(a).all()
                                                      for a in jax.tree.leaves(p)])))
    x_test = data.to_inputs(d.x_test)  # float32 [N, 784], once: an argument, not a constant
    latent_stats = jax.jit(lambda p, x, y: losses.latent_statistics(p, model, x, y))
    compile_s = run.compile_s + time.perf_counter() - t0

    metrics_path = out / "metrics.jsonl"  # the rows of the epochs kept, then one per epoch
    checkpoint.atomic_write_bytes(metrics_path, "".join(json.dumps(r) + "\n" for r in history
                                                        ).encode())
  except KeyboardInterrupt:
    raise RunStopped("interrupted before the first epoch: nothing was trained; run the same "
                     "command again", exit_code=130) from None
  grids = grid_epochs(config)
  bar = tqdm.tqdm(total=config.epochs, initial=start, desc=f"z={config.latent_dim}",
                  unit="epoch", disable=not progress)
  t_last, saved = _clock(), start
  saved_at = t_last  # when the last checkpoint's epoch was read (the start, before the first)
  last_read = None    # (epoch, state) of the last epoch read: finite, maybe not saved

  def record(metrics_file, epoch, state, train_m, test_m, recon, finite, stats,
             force_checkpoint=False):
    """Reads one finished epoch (a host sync on *that* epoch only); writes its row, its grid
    and, when one is due, its checkpoint."""
    nonlocal t_last, saved, saved_at, last_read
    train_m, test_m, recon, finite, stats = jax.device_get((train_m, test_m, recon, finite,
                                                            stats))
    now = _clock()
    row = {**train.epoch_row(epoch, train_m, test_m, n_train, n_test), "seconds": now - t_last}
    if config.weights_kl:  # what training minimised, beside the unweighted recon + KL
      w = config.kl_weight(epoch)
      row.update(kl_weight=w, **{f"{s}_objective": row[f"{s}_recon"] + w * row[f"{s}_kl"]
                                 for s in ("train", "test")})
    kl_per_dim, mu_var = stats
    row.update(test_kl_per_dim=[float(v) for v in kl_per_dim],
               active_units=int((mu_var > ACTIVE_THRESHOLD).sum()))
    t_last = now
    bad = first_non_finite(row) or (None if finite else "a parameter")
    if bad is not None:
      if last_read is not None and last_read[0] != saved:  # the last finite epoch, kept
        checkpoint.save_checkpoint(out, *last_read, history, config)
        saved = last_read[0]
      kept = (f"the checkpoint of epoch {saved} is kept in {out / checkpoint.CHECKPOINT_DIR}"
              if saved else "no epoch finished before it, so no checkpoint is kept")
      value = f" = {row[bad]}" if bad in row else ""
      again = ("run the command again with it: the directory holds nothing trained"
               if not saved else "start again with --overwrite" if out == plan.final else
               f"delete {out} (this --overwrite's) and start again with --overwrite")
      raise RunStopped(f"training diverged at epoch {epoch}: {bad}{value} is not finite "
                       f"(learning rate {config.learning_rate}); {kept}. Try a smaller "
                       f"--learning-rate and {again}", exit_code=3)
    history.append(row)
    metrics_file.write(json.dumps(row) + "\n")
    metrics_file.flush()
    if recon is not None:
      _draw(f"reconstruction_{epoch}.png", lambda path: plots.save_reconstructions(
          np.asarray(x_show), recon, path), out / f"reconstruction_{epoch}.png")
    due = (epoch % checkpoint_every == 0 if checkpoint_every is not None
           else now - saved_at >= checkpoint_seconds)
    if due or epoch == config.epochs or force_checkpoint:
      checkpoint.save_checkpoint(out, epoch, state, history, config)
      saved, saved_at = epoch, now  # from this epoch's read: the save's own time counts
    last_read = (epoch, state)
    bar.set_postfix(loss=f"{row['train_loss']:.2f}", test=f"{row['test_loss']:.2f}", refresh=False)
    bar.update(1)

  pending = []
  try:
    with open(metrics_path, "a") as metrics_file, _CtrlC() as ctrl_c:
      for epoch, state, train_m, test_m in train.run_epochs(run, d, config.epochs, state,
                                                            first=start + 1):  # dispatch only
        recon = reconstruct(state.params, x_show, y_show) if epoch in grids else None
        pending.append((epoch, state, train_m, test_m, recon, all_finite(state.params),
                        latent_stats(state.params, x_test, y_test)))
        if len(pending) == 2:  # read the previous epoch while this one runs
          record(metrics_file, *pending.pop(0))
        if ctrl_c.requested.is_set():
          print(f"\nvae-jax: Ctrl-C: stopping after epoch {epoch}, in flight (Ctrl-C again "
                f"to stop at once)", file=sys.stderr)
          break  # dispatch nothing more: the epoch in flight is the last
      for i, item in enumerate(pending):
        record(metrics_file, *item, force_checkpoint=i == len(pending) - 1)
      pending = []
      if ctrl_c.requested.is_set() and history[-1]["epoch"] < config.epochs:
        raise RunStopped(f"interrupted after epoch {history[-1]['epoch']} of {config.epochs}, "
                         f"checkpoint kept; continue with: {resume_hint}", exit_code=130)
  except KeyboardInterrupt:  # a second Ctrl-C: every file on disk is still whole
    last = checkpoint.checkpoints(out)
    raise RunStopped(f"interrupted; the last checkpoint is {last[-1] if last else 'none'}; "
                     f"continue with: {resume_hint}", exit_code=130) from None
  finally:
    bar.close()

  try:
    params = write_results(config, out, state.params, history, run, d)
    if plan.resumed is not None:
      _drop_stale_grid(out, config, plan.resumed)
    if out != plan.final:
      _swap_in(out, plan.final)
  except KeyboardInterrupt:
    raise RunStopped(f"interrupted while writing the results of the last epoch; every file is "
                     f"whole; finish them with: {resume_hint}", exit_code=130) from None

  last = history[-1]
  resumed = (" (all trained before: its results written again)" if start == config.epochs
             else f" (resumed after epoch {start})" if start else "")
  print(f"{'CVAE, ' if model.conditional else ''}z={config.latent_dim}: {config.epochs} "
        f"epoch{'s' if config.epochs != 1 else ''}{resumed}, train loss "
        f"{last['train_loss']:.2f}, test loss {last['test_loss']:.2f} (recon "
        f"{last['test_recon']:.2f} + KL {last['test_kl']:.2f}), "
        f"{sum(h['seconds'] for h in history):.1f} s + {compile_s:.1f} s compile "
        f"-> {plan.final}")
  return RunResult(params, history, compile_s)


def _drop_stale_grid(out: Path, config: Config, resumed: checkpoint.Checkpoint) -> None:
  """A run extended by `--resume --epochs M` from a finished shorter run: that run drew a
  grid at its last epoch, which the run never stopped would not have (it is off M's
  schedule). Once the run has finished, that one file goes, saying so; nothing else does."""
  old = resumed.config.epochs
  stale = out / f"reconstruction_{old}.png"
  if resumed.epoch == old and old not in grid_epochs(config) and stale.exists():
    stale.unlink()
    print(f"vae-jax: removed {stale.name}, the grid of the shorter run's last epoch: not one "
          f"of this {config.epochs}-epoch run's", file=sys.stderr)


def write_results(config: Config, out: Path, params, history: list, run, d, *,
                  figures: bool = True):
  """The weights first (nothing after them can lose them), then the loss arrays and, if asked,
  the figures (`run`: the run's `train.Setup`, for its model and sample key)."""
  checkpoint.save_params(params, out / "params.msgpack")
  for name, key in (("loss_list.npy", "train_loss"), ("test_loss_list.npy", "test_loss")):
    _save_npy(out / name, np.array([h[key] for h in history]))
  if not figures:
    return params
  from vae_jax import plots
  model = run.model

  def samples(path):
    z = jax.random.normal(run.keys.sample, (64, config.latent_dim))  # z ~ p(z) = N(0, I)
    images = jax.nn.sigmoid(model.apply({"params": params}, z, method="decode"))
    plots.save_grid(np.asarray(images), path, nrow=8)

  def digits(path):  # the CVAE's: row y decodes the same ten z with the label y
    z = jax.random.normal(run.keys.sample, (10, config.latent_dim))  # [10, z] ~ N(0, I)
    y = jnp.repeat(jnp.arange(10), 10)                               # [100]: 0 x10, 1 x10, ...
    images = jax.nn.sigmoid(model.apply({"params": params}, jnp.tile(z, (10, 1)), y,
                                        method="decode"))            # [100, 784]
    plots.save_digits(np.asarray(images), path)

  _draw("learning_curves.png", lambda path: plots.save_learning_curves(
      history, path, title=("CVAE, " if model.conditional else "")
      + f"z = {config.latent_dim}: negative ELBO per image" + (
          f" (train: -L_{config.k}, the IWAE bound)" if config.objective == "iwae" else "")),
      out / "learning_curves.png")
  if model.conditional:
    _draw("digits.png", digits, out / "digits.png")
  else:
    _draw("samples.png", samples, out / "samples.png")
  if config.latent_dim > 2:
    _draw("kl_per_dim.png", lambda path: plots.save_kl_per_dim(history, path),
          out / "kl_per_dim.png")
  latent_figures(model, params, d.x_test, d.y_test, out)
  return params


def latent_figures(model, params, x_test_u8, y_test, out: Path) -> None:
  """latent.png (the test set's mu), manifold.png and interpolation.png (`vae_jax.latent`)
  of a trained model, into `out`; a figure that fails is one line (`_draw`). The CVAE's
  latent map encodes each image with its label; its decoder needs a label for every z, so
  its manifold and interpolations are left out (digits.png shows what its z holds)."""
  from vae_jax import latent, plots

  labels = y_test if model.conditional else None  # on the device already (DeviceData)
  y_test = np.asarray(y_test)                       # the figures' colours and row names
  encode = jax.jit(lambda p, x, y: model.apply({"params": p}, data.to_inputs(x), y,
                                               method="encode"))
  decode = jax.jit(lambda p, z: jax.nn.sigmoid(model.apply({"params": p}, z, method="decode")))
  mu = np.asarray(encode(params, x_test_u8, labels)[0])  # [N, z]: eval mode's z

  def manifold(path):
    grid = latent.manifold_latents(mu)
    plots.save_manifold(np.asarray(decode(params, grid.z)), grid.values, grid.label, path)

  def interpolation(path):
    a, b = map(list, zip(*latent.interpolation_pairs(len(mu))))
    z = latent.interpolation_latents(mu[a], mu[b])                    # [P, steps, z]
    decoded = np.asarray(decode(params, z.reshape(-1, z.shape[-1]))).reshape(*z.shape[:2], -1)
    images = np.asarray(data.to_inputs(x_test_u8[np.array(a + b)]))  # [2P, 784]
    labels = [f"{y_test[i]} to {y_test[j]}" for i, j in zip(a, b)]
    plots.save_interpolation(images[:len(a)], decoded, images[len(a):], labels, path)

  _draw("latent.png", lambda path: plots.save_latent_map(mu, y_test, path), out / "latent.png")
  if model.conditional:
    return
  _draw("manifold.png", manifold, out / "manifold.png")
  if len(mu) < 2:
    print(f"vae-jax: interpolation.png skipped: it joins two test images, and there is "
          f"{len(mu)}", file=sys.stderr)
  else:
    _draw("interpolation.png", interpolation, out / "interpolation.png")
