"""A run's directory: what it holds, where a run may write, and one writer at a time.

A directory W is in one of these states (`status`), read off its files alone:

    empty ------ train -----> unfinished ----- last epoch -----> finished
    (at most a                 | ^   config.json, metrics.jsonl,    | params.msgpack and
     config.json)   kill or    | |   checkpoints/, grids            | the last checkpoint
                    Ctrl-C  ---+ +--- train --resume                |
                                                                    |
    finished --- train --overwrite ---> W.new: empty -> unfinished -> finished
                                            then W.new replaces W (`swap_in`): two
                                            renames; a kill between them is completed
                                            by the next command (`finish_interrupted_swap`)
    results: a finished run's files without its weights or a checkpoint (as the
             repository's results/vae_2): nothing to resume from; --overwrite replaces it

`plan_run` takes the state of W and of W.new and the flags (--resume, --overwrite) and
says where the run writes, or refuses in one line that says how to go on. A directory
holding files that are not a run's (`others_files`: a user's notes, another project's
config.json) is refused whatever the flags, so that --overwrite never deletes them.

One writer: a run holds an OS lock (`fcntl.flock`) on `W/.lock` (and on `W.new/.lock`
under --overwrite; a sweep on its own folder) from its plan to its end. The kernel
releases it when the process ends, however it ends, so a killed run never blocks the
next; a second process that would write W while the lock is held is refused, naming
the first one's PID.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import glob
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import NamedTuple

from vae_jax.app import checkpoint
from vae_jax.app.files import check_directory
from vae_jax.config import Config

# What a run writes, besides config.json and the reconstruction grids.
RESULT_FILES = ("metrics.jsonl", "loss_list.npy", "test_loss_list.npy", "learning_curves.png",
                "latent.png", "manifold.png", "interpolation.png", "kl_per_dim.png", "samples.png",
                "digits.png", "params.msgpack", checkpoint.CHECKPOINT_DIR)
# What only the end of a run writes: the loss arrays and the figures but the grids.
ENDED = tuple(n for n in RESULT_FILES if n.endswith((".npy", ".png")))
# Fields that --resume may change: more epochs, and where the MNIST cache lives.
RESUMABLE_CHANGES = ("epochs", "data_dir")
LOCK = ".lock"


def staging_dir(workdir) -> Path:
  """Where `--overwrite` writes the new run, beside the old: `<workdir>.new`."""
  workdir = Path(workdir).resolve()
  if not workdir.name:
    raise ValueError(f"--workdir {workdir}: choose a directory below the root")
  return workdir.with_name(workdir.name + ".new")


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
  (hidden files aside), and in its checkpoints/ folder the names that are not checkpoints."""
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


class RunStatus(NamedTuple):
  state: str                # "empty", "unfinished", "finished" or "results" (module docstring)
  last_checkpoint: int      # 0 when there is none
  epochs: int | str         # what its config.json asks for ("?" when it cannot be read)


def status(run_dir) -> RunStatus:
  """The state of `run_dir` (the module docstring's diagram). A run is finished once its
  weights are written (its figures may still be missing: --resume redraws them)."""
  run_dir = Path(run_dir)
  found = [p for p in run_dir.glob("*") if _run_name(p.name) and p.name != "config.json"
           and not (p.is_file() and p.stat().st_size == 0)] if run_dir.is_dir() else []
  ckpts = checkpoint.checkpoints(run_dir)
  last = int(ckpts[-1].stem.split("_")[1]) if ckpts else 0
  try:
    epochs = Config.from_file(run_dir / "config.json").epochs
  except ValueError:  # missing or unreadable: said when it matters (--resume)
    epochs = "?"
  weights = (run_dir / "params.msgpack").exists()
  if not found:
    state = "empty"
  elif not weights and not ckpts and any(p.name in ENDED for p in found):
    state = "results"
  elif weights and (not ckpts or epochs == "?" or last >= epochs):
    state = "finished"
  else:
    state = "unfinished"
  return RunStatus(state, last, epochs)


def saved_config(workdir, overwrite: bool = False) -> Config:
  """The config of the run `--resume` would continue (of `<workdir>.new` under --overwrite)."""
  where = staging_dir(workdir) if overwrite else Path(workdir)
  check_directory(where, "--workdir")
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


def train_flags(config: Config) -> str:
  """The train flags that make `config` again: its fields that differ from the defaults."""
  default = Config()
  return "".join(f" --{f.name.replace('_', '-')} {getattr(config, f.name)}"
                 for f in dataclasses.fields(Config)
                 if f.name != "data_dir" and getattr(config, f.name) != getattr(default, f.name))


def _no_checkpoint(run_dir: Path, config: Config) -> str:
  flags = train_flags(config)
  ended = sorted(p.name for p in run_dir.glob("*") if p.name in ENDED)
  return (f"{run_dir} holds a finished run's results ({', '.join(ended[:2])}) but no weights "
          f"or checkpoint to continue from: start again with --overwrite"
          + (f" and the flags{flags}" if flags else "") + " (the old results stay until the "
          "new run finishes), or choose another --workdir")


def plan_run(config: Config, workdir, *, overwrite: bool = False, resume: bool = False) -> Plan:
  """Checks the run directory (one line, before any work) and says where the run writes.

  Refuses a directory holding a run unless `overwrite` (the new run is then written to
  `<workdir>.new` and swapped in when finished) or `resume` (which must not change the
  config, except to ask for more epochs); and one that another process is writing.
  """
  final = check_free(workdir)
  finish_interrupted_swap(final)
  other = others_files(final)
  if other and (overwrite or not resume):  # --resume alone adds to the run in place
    raise FileExistsError(foreign_files_error(final, other, overwrite))
  here, staged, new = status(final), status(staging_dir(final)), staging_dir(final)
  interrupted = (f"{new} holds an interrupted --overwrite of {final} (last checkpoint: epoch "
                 f"{staged.last_checkpoint} of {staged.epochs})")
  if resume:
    if not overwrite and here.state == "finished" and staged.state != "empty":
      raise FileExistsError(f"{interrupted}: continue it with --resume --overwrite, or delete "
                            f"{new} to resume the finished run in {final}")
    return _plan_resume(config, final, new if overwrite else final, overwrite)
  if here.state != "empty" and not overwrite:
    if staged.state != "empty":  # two runs to go on with: say which flags continue which
      other = (f"the unfinished run in {final} itself with --resume" if here.state ==
               "unfinished" else f"keep the run's results in {final} and delete {new}")
      raise FileExistsError(f"{interrupted}: continue it with --resume --overwrite, or {other}")
    if here.state == "results":
      raise FileExistsError(_no_checkpoint(final, config))
    if here.state == "unfinished":
      raise FileExistsError(
          f"{final} holds an unfinished run (last checkpoint: epoch {here.last_checkpoint} of "
          f"{here.epochs}): continue it with --resume, or start again with --overwrite")
    raise FileExistsError(
        f"{final} already holds a finished run: choose another --workdir, pass --overwrite "
        f"(the old results stay until the new run finishes), or --resume to train on with a "
        f"larger --epochs or to redraw missing figures")
  if overwrite and staged.state != "empty":
    raise FileExistsError(f"{interrupted}: continue it with --resume --overwrite, or delete {new}")
  return Plan(final, final if here.state == "empty" else new, None)


def _plan_resume(config: Config, final: Path, where: Path, overwrite: bool) -> Plan:
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
    if not overwrite and status(where).state == "results":  # a start would truncate them
      raise ValueError(_no_checkpoint(where, saved))
    return Plan(final, where, None)  # no epoch was checkpointed: from the start
  from vae_jax.extensions import recipe
  ckpt = checkpoint.load_checkpoint(ckpts[-1], recipe.setup(config).state)  # read it now
  if ckpt.config.replace(**{f: getattr(config, f) for f in RESUMABLE_CHANGES}) != config:
    raise ValueError(f"{ckpt.path} was written by another config than {where}/config.json: "
                     f"delete it to resume from the one before")
  return Plan(final, where, ckpt)


def swap_in(new: Path, final: Path) -> None:
  """Replaces `final` by the finished run in `new`: two renames, then the old run goes."""
  final = final.resolve()
  if final.exists():
    old = Path(tempfile.mkdtemp(prefix=f"{final.name}.old-", dir=final.parent))
    os.replace(final, old)  # onto the empty directory just made: a name no one else uses
  os.replace(new, final)
  for old in final.parent.glob(f"{glob.escape(final.name)}.old-*"):
    shutil.rmtree(old, ignore_errors=True)


def finish_interrupted_swap(final: Path) -> None:
  """A kill between `swap_in`'s two renames leaves no `final`, the old run in
  `<final>.old-*` and the finished new one in `<final>.new`: complete the swap."""
  resolved = final.resolve()
  if resolved.exists() or not resolved.name:
    return
  new, olds = staging_dir(final), list(resolved.parent.glob(f"{glob.escape(resolved.name)}.old-*"))
  if olds and new.is_dir():
    print(f"vae-jax: finishing the interrupted replacement of {final} by {new}", file=sys.stderr)
    swap_in(new, final)


# --------------------------------------------------------------------------
# One writer at a time.


def holder(directory) -> str | None:
  """Who holds `directory`'s lock ("process PID (its command)"), or None: free, or never
  locked. Reads only: a directory that is not there is not held."""
  path = Path(directory) / LOCK
  try:
    fd = os.open(path, os.O_RDONLY)
  except OSError:
    return None
  try:
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
  except BlockingIOError:
    return os.pread(fd, 4096, 0).decode(errors="replace").strip() or "another process"
  finally:
    os.close(fd)  # (releases the lock if this call took it)
  return None


def check_free(workdir) -> Path:
  """A run's --workdir, refused in one line when it is no directory or another process
  writes it (its own lock, its --overwrite's, or a sweep's of the folder above)."""
  workdir = check_directory(Path(workdir), "--workdir")
  refuse_if_held(workdir, workdir.parent, staging_dir(workdir))
  return workdir


def refuse_if_held(*directories) -> None:
  for d in directories:
    who = holder(d)
    if who is not None:
      raise FileExistsError(f"{d} is being written by {who}: wait for it to end, or stop it "
                            f"(a lock left by a process that ended does not count)")


@contextlib.contextmanager
def hold(*directories):
  """Holds the lock of each directory (made if missing) until the block ends, then removes
  its lock file; refused in one line naming the holder (`refuse_if_held`) when another
  process holds one."""
  held = []
  try:
    for d in directories:
      held.append(_lock(Path(d)))
    yield
  finally:
    ours = {os.fstat(fd).st_ino for fd in held}
    for d in directories:  # (after an --overwrite's swap, W's lock file is W.new's, ours too)
      with contextlib.suppress(OSError):
        if os.stat(Path(d) / LOCK).st_ino in ours:
          os.unlink(Path(d) / LOCK)
    for fd in held:
      os.close(fd)


def _lock(directory: Path) -> int:
  directory.mkdir(parents=True, exist_ok=True)
  path = directory / LOCK
  for _ in range(3):  # a holder that ends removes its lock file: lock the one now at `path`
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      os.close(fd)
      refuse_if_held(directory)
      raise FileExistsError(f"{directory} is being written by another process") from None
    with contextlib.suppress(OSError):
      if os.stat(path).st_ino == os.fstat(fd).st_ino:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"process {os.getpid()} ({' '.join(sys.argv)[:200]})\n".encode(), 0)
        return fd
    os.close(fd)
  raise FileExistsError(f"{directory}: its lock file keeps changing: is another process "
                        f"starting there? Try again")
