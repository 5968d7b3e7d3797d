"""Sweeps: every combination of some settings, x seeds, stacked and spread over the devices.

  vae-jax sweep --workdir runs/sweep_z --latent-dim 2,5,10,20,50 --seed 1,2,3,4,5
  vae-jax sweep --workdir runs/sweep_lr --learning-rate 1e-3,3e-4 --seed 1,2,3 --epochs 20

Every Config flag takes a comma list, and every combination is a *member*: the
run the train subcommand makes of that config alone (its seed's keys, its data).
Members that differ only in seed and learning rate share every shape (Adam's rate
lives in its state) and form one *group*, trained by `multi.train_many`: one
vmapped program whose member axis is sharded over all local devices, or the
members one after another, as `--strategy` says (`auto` measures both).

WORKDIR/<member>/ (e.g. `latent_dim=2,seed=1`, named by the swept fields and those
that name the members already in WORKDIR) holds
what a single run writes: config.json, metrics.jsonl, params.msgpack, the loss
arrays, the last epoch's checkpoint (so `vae-jax train --workdir WORKDIR/<member>
--resume --epochs N` trains it on) and, with --figures, a single run's figures.
A member is written to `<member>.new` and renamed when whole, so a kill never
leaves half a member; a member in training checkpoints itself there every
`multi.SAVE_EVERY_S` seconds, so a kill loses about that much of it and the epochs
in flight. A member whose loss or weights stop being finite is not written: one line
names it, the others are, and the command exits 3 with no summary. A rerun skips the
members already finished, continues those with a checkpoint and trains the rest. WORKDIR/sweep.md and sweep.json: the final losses of
every member and their mean and spread over seeds; sweep.png: test loss against each
swept field, a band over the seeds.

Several hosts: start the same command on each, with `--coordinator HOST:PORT
--num-processes P --process-id I` (`jax.distributed.initialize`); member i
trains on process i mod P, each process over its own devices, and process 0
writes the summary once all have finished (docs/sweeps.md). WORKDIR must be one
shared folder.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import NamedTuple

from vae_jax.app import SWEEP_SHARED as SINGLE  # one value: the same images for all
from vae_jax.app import SWEEP_WHERE_FROM as WHERE_FROM  # a rerun's check ignores them
from vae_jax.app import checkpoint, count, rundir
from vae_jax.app.files import atomic_write, check_directory
from vae_jax.config import Config
SUMMARY = ("sweep.json", "sweep.md", "sweep.png")


class Member(NamedTuple):
  name: str       # its directory under WORKDIR
  config: Config


class Plan(NamedTuple):
  members: list      # [Member], every combination, in the order of the flags' values
  swept: tuple       # the fields given with more than one value
  todo: list         # [Member] not yet finished
  command: str


def _text(value) -> str:
  return f"{value:g}" if isinstance(value, float) else str(value)


FIELDS = [f.name for f in dataclasses.fields(Config)]


def member_name(values: dict, named_by) -> str:
  """`latent_dim=2,seed=1`: this member's values of the fields `named_by`, in Config's
  order; "run" when there are none."""
  return ",".join(f"{k}={_text(values[k])}" for k in FIELDS if k in named_by and k in values
                  ) or "run"


def names_in(workdir: Path) -> set:
  """The fields that name the members already in `workdir` (its `a=1,b=2` directories)."""
  found = set()
  for d in (workdir.iterdir() if workdir.is_dir() else ()):
    keys = {part.partition("=")[0] for part in d.name.removesuffix(".new").split(",")}
    if d.is_dir() and "=" in d.name and keys <= set(FIELDS):
      found |= keys
  return found


def _member_dir_name(name: str) -> bool:
  """Whether `name` is one a sweep gives a member's directory (`run`, `a=1,b=2`, + `.new`)."""
  name = name.removesuffix(".new")
  return name == "run" or all(part.partition("=")[1] and part.partition("=")[0] in FIELDS
                              for part in name.split(","))


def others_files(workdir: Path) -> list[str]:
  """The names in `workdir` that are not a sweep's: a user's files, or a single run's (a
  sweep must not mix with them). A sweep's are its members' directories and its summary;
  sweep.md and sweep.png count as its own only beside a sweep.json that a sweep wrote."""
  if not workdir.is_dir():
    return []
  try:
    ours = "members" in json.loads((workdir / "sweep.json").read_text())
  except (OSError, ValueError, TypeError):
    ours = False
  return sorted(p.name for p in workdir.iterdir() if not p.name.startswith(".")
                and not (p.is_dir() and _member_dir_name(p.name))
                and not (ours and p.name in SUMMARY))


def plan(lists: dict, workdir, command: str = "", named_by=()) -> Plan:
  """Every member of the grid `lists` ({field: [values]}), checked in one line before any work.

  A member is named by the swept fields (given more than one value), the fields `named_by`
  and those that name the members already in `workdir`: a rerun with fewer values (`--seed
  1,2` after `--latent-dim 2,5 --seed 1,2`) finds the members it shares with the first.
  Refused: a workdir holding files that are not a sweep's (`others_files`), a value listed
  twice, a list for a field every member must share (`SINGLE`), a combination Config
  refuses, a member directory holding something other than this member's finished run,
  and a `<member>.new` holding the training of another setting (a rerun with a mistyped
  flag must not throw it away).
  """
  workdir = check_directory(Path(workdir), "--workdir")
  rundir.refuse_if_held(workdir)
  other = others_files(workdir)
  if other:
    raise ValueError(f"{workdir} holds files that are not a sweep's ({', '.join(other[:3])}"
                     f"{', ...' if len(other) > 3 else ''}): a sweep needs a directory of its "
                     f"own; choose another --workdir, or move them out")
  for field, values in lists.items():
    flag = f"--{field.replace('_', '-')}"
    if field in SINGLE and len(values) > 1:
      raise ValueError(f"{flag} takes one value in a sweep: every member trains on the same "
                       f"images")
    seen = [v for i, v in enumerate(values) if v in values[:i]]
    if seen:
      raise ValueError(f"{flag} lists {_text(seen[0])} twice: give each value once")
  fields = list(lists)
  swept = tuple(f for f in fields if len(lists[f]) > 1)
  named_by = set(swept) | set(named_by) | names_in(workdir)
  members = []
  for combo in itertools.product(*lists.values()):
    values = dict(zip(fields, combo))
    try:
      config = Config.with_presets(values)
    except ValueError as e:
      raise ValueError(f"member {member_name(values, named_by)}: {e}") from None
    name = member_name(dataclasses.asdict(config), named_by)
    if any(m.name == name for m in members):
      raise ValueError(f"two members would share the directory {name}: give values that "
                       f"differ in their first 6 digits")
    members.append(Member(name, config))
  todo = [m for m in members if not _finished(workdir / m.name, m.config)]
  for m in todo:
    _check_in_training(workdir / f"{m.name}.new", m.config)
  from vae_jax.extensions.beta import idle_warmup
  idle = next((m for m in todo if idle_warmup(m.config)), None)  # as train refuses a new run
  if idle is not None:
    raise ValueError(f"member {idle.name}: {idle_warmup(idle.config)}")
  return Plan(members, swept, todo, command)


def _same_run(a: Config, b: Config) -> bool:
  return all(getattr(a, f.name) == getattr(b, f.name) for f in dataclasses.fields(Config)
             if f.name not in WHERE_FROM)


def _difference(saved: Config, config: Config) -> str:
  """The first field of a run that differs, as '--flag SAVED, not this member's VALUE'."""
  field = next(f.name for f in dataclasses.fields(Config)
               if getattr(saved, f.name) != getattr(config, f.name) and f.name not in WHERE_FROM)
  return (f"--{field.replace('_', '-')} {_text(getattr(saved, field))}, not this member's "
          f"{_text(getattr(config, field))}")


def _check_in_training(new: Path, config: Config) -> None:
  """Refuses a `<member>.new` whose checkpoints (`save_progress`) are not this member's
  setting, or whose config.json is lost: it holds training that the command would discard."""
  if not checkpoint.checkpoints(new):
    return  # nothing trained to lose: the member's write starts it anew
  fix = f"delete {new} to train the member from its first epoch"
  try:
    saved = Config.from_file(new / "config.json")
  except (OSError, ValueError):
    raise ValueError(f"{new} holds checkpoints but no readable config.json to say of which "
                     f"setting: {fix}") from None
  if not _same_run(saved, config):
    raise ValueError(f"{new} holds the unfinished training of a member with "
                     f"{_difference(saved, config)}: rerun with that member's flags to finish "
                     f"it, or {fix}")


def _finished(run_dir: Path, config: Config) -> bool:
  """Whether `run_dir` holds this member's finished run; refuses anything else it could hold."""
  if not run_dir.exists():
    return False
  check_directory(run_dir, "--workdir")
  status = rundir.status(run_dir)
  fix = f"delete {run_dir}, or choose another --workdir"
  if status.state == "empty" or not rundir.has_run_config(run_dir):
    other = rundir.others_files(run_dir)
    if other:  # a user's, or a run's without its config.json: the member would replace them
      raise ValueError(rundir.foreign_files_error(run_dir, other, deleted=False))
    return False
  saved = Config.from_file(run_dir / "config.json")  # unreadable: a ValueError naming the fix
  if not _same_run(saved, config):
    raise ValueError(f"{run_dir} holds a run with {_difference(saved, config)}: {fix}")
  if status.state == "results":
    raise ValueError(f"{run_dir} holds a finished run's results without its weights or "
                     f"checkpoint: {fix}")
  if status.state == "unfinished":
    raise ValueError(f"{run_dir} holds an unfinished single run: finish it with "
                     f"`vae-jax train --workdir {run_dir} --resume`, or {fix}")
  return True


def group_key(config: Config) -> tuple:
  """What members of one stacked program share: everything but the seed and (at a constant
  rate, which Adam keeps in its state) the learning rate."""
  free = ("seed", "learning_rate") if config.schedule == "constant" else ("seed",)
  return tuple((f.name, getattr(config, f.name)) for f in dataclasses.fields(Config)
               if f.name not in free + WHERE_FROM)


def groups(members) -> list[list]:
  """`members` in groups of equal `group_key`, in order of first appearance."""
  out: dict = {}
  for m in members:
    out.setdefault(group_key(m.config), []).append(m)
  return list(out.values())


# --------------------------------------------------------------------------
# Training, and writing each member's directory.


GROUP_FILE = "sweep_group.json"  # in each member: how its group trained


def save_progress(workdir: Path, member: Member, progress) -> None:
  """A member's training so far (`multi.Progress`), as a single run's checkpoint in
  `<member>.new`: a kill then loses about `multi.SAVE_EVERY_S` seconds of it and the epochs
  in flight."""
  out = workdir / f"{member.name}.new"
  out.mkdir(parents=True, exist_ok=True)
  atomic_write(out / "config.json", (member.config.to_json() + "\n").encode())
  checkpoint.save_checkpoint(out, progress.epoch, progress.state, progress.history,
                             member.config)


def resumable(workdir: Path, group: list) -> dict:
  """{name: multi.Progress} of the members of `group` whose `<member>.new` holds checkpoints
  of this member's setting (`save_progress`).

  When every member of the group has checkpointed some same epoch, all go on from the
  last such epoch, so that a stack goes on as one (a kill between two members' saves
  leaves them an epoch apart: each keeps two); the later checkpoints are deleted, to be
  written again, the same. Otherwise each goes on from its own last. A `.new` of another
  setting was refused by `plan`; a checkpoint that cannot be read as this member's is
  refused here, in one line, and nothing is deleted.
  """
  from vae_jax.app import multi
  from vae_jax.extensions import recipe
  found = {}  # name: {epoch: Checkpoint}
  for m in group:
    new, kept = workdir / f"{m.name}.new", {}
    paths = checkpoint.checkpoints(new)
    fresh = recipe.setup(m.config).state if paths else None  # the structure they are read into
    for path in paths:
      ckpt = checkpoint.load_checkpoint(path, fresh)  # unreadable: one line naming the fix
      if not _same_run(ckpt.config, m.config):
        raise ValueError(f"{path} is a checkpoint of a member with "
                         f"{_difference(ckpt.config, m.config)}: delete {new} to train the "
                         f"member from its first epoch")
      kept[ckpt.epoch] = ckpt
    if kept:
      found[m.name] = kept
  shared = set.intersection(*map(set, found.values())) if len(found) == len(group) else set()
  out = {}
  for name, kept in found.items():
    epoch = max(shared) if shared else max(kept)
    for later in [e for e in kept if e > epoch]:
      kept[later].path.unlink()
    out[name] = multi.Progress(epoch, kept[epoch].state, kept[epoch].history)
  return out


def write_member(workdir: Path, member: Member, state, rows: list, seconds: float, d,
                 figures: bool, group: dict) -> None:
  """Writes one trained member into `<workdir>/<name>.new`, then renames it into place.

  The last row gains the test set's KL per latent dimension and active units (a
  single run measures them every epoch; a stacked run at the end only). `seconds`:
  the member's training time in this call (its share of a stacked program's), over
  `group["epochs_trained"]` epochs: the rows of those epochs get that time per epoch (a
  continued member's earlier rows keep the seconds they were saved with); `group`: how
  its group trained, kept in the member as GROUP_FILE for the summary.
  """
  import jax

  from vae_jax.app import run
  from vae_jax.data import to_inputs
  from vae_jax.extensions import recipe

  config = member.config
  out, final = workdir / f"{member.name}.new", workdir / member.name
  state = jax.device_get(state)
  setup = recipe.setup(config)  # the model and its keys (no programs)
  # A row saved by an earlier call keeps its seconds; this call's epochs share `seconds`.
  each = seconds / max(1, group.get("epochs_trained", config.epochs))
  rows = [{**r, "seconds": r.get("seconds", each)} for r in rows]
  stats = jax.device_get(_latent_statistics(setup.model)(
      state.params, to_inputs(d.x_test), *recipe.labels(config, d.y_test)))
  history = [run.metrics_row(config, r, stats if i == len(rows) - 1 else None)
             for i, r in enumerate(rows)]
  # `out` may hold the member's checkpoints so far, and what a kill left of an earlier write:
  # the checkpoints stay until the last one is written, first; the rest is written anew.
  out.mkdir(parents=True, exist_ok=True)
  for left in out.iterdir():
    if left.name != checkpoint.CHECKPOINT_DIR:
      shutil.rmtree(left) if left.is_dir() else left.unlink()
  checkpoint.save_checkpoint(out, config.epochs, state, history, config)
  atomic_write(out / "config.json", (config.to_json() + "\n").encode())
  atomic_write(out / GROUP_FILE, (json.dumps(group) + "\n").encode())
  atomic_write(out / "metrics.jsonl", "".join(json.dumps(r) + "\n" for r in history).encode())
  run.write_results(config, out, state.params, history, setup, d, figures=figures)
  if final.exists():  # holds no results (`plan` checked): at most a config.json
    shutil.rmtree(final)
  os.replace(out, final)


_STATS: dict = {}


def _latent_statistics(model):
  """`likelihood.latent_statistics` of `model`, compiled once per model."""
  import jax

  from vae_jax.extensions import recipe
  from vae_jax.extensions.likelihood import latent_statistics
  if model not in _STATS:
    _STATS[model] = jax.jit(lambda p, x, *y: latent_statistics(p, recipe.conditioned(model, y), x))
  return _STATS[model]


def _share(members, process: int, processes: int) -> list:
  """The members process `process` of `processes` trains: every `processes`-th, from its own."""
  return [m for i, m in enumerate(members) if i % processes == process]


def run(lists: dict, workdir, *, strategy: str = "auto", figures: bool = False,
        progress: bool = True, command: str = "", named_by=()) -> Plan:
  """Trains every unfinished member of the grid `lists` (named as `plan` says), then writes
  the summary of this grid."""
  import jax

  from vae_jax.extensions import recipe

  workdir = Path(workdir)
  p = plan(lists, workdir, command, named_by)  # every refusal, before any work
  process, processes = jax.process_index(), jax.process_count()
  mine = {m.name for m in _share(p.members, process, processes)}
  todo = [m for m in p.todo if m.name in mine]
  done = len(p.members) - len(p.todo)
  print(f"sweep: {count(len(p.members), 'member')}, {done} finished already"
        + (f"; process {process} of {processes} trains {len(todo)}" if processes > 1 else
           f", {len(todo)} to train") + f", on {jax.local_device_count()} "
        f"{jax.local_devices()[0].platform} device(s)", file=sys.stderr)
  with contextlib.ExitStack() as held:
    def hold():  # the sweep's folder, one writer; made once the data load (a data error leaves
      if processes == 1 and not locked:  # no folder behind). The processes of one sweep share it.
        locked.append(held.enter_context(rundir.hold(workdir)))

    loaded, locked = {}, []
    diverged: list = []  # "<member> at epoch E: ...", the members not written
    for group in groups(todo):
      config = group[0].config
      key = (config.binarize, config.train_limit, config.test_limit)
      if key not in loaded:
        loaded[key] = recipe.load_data(config)  # to the device once per kind of data
      hold()
      resumed = resumable(workdir, group)  # {name: Progress} of those with a checkpoint
      for start, part in _by_start(group, resumed):
        _train_part(workdir, part, start, resumed, loaded[key], p, strategy=strategy,
                    figures=figures, progress=progress, diverged=diverged)
    _finish(workdir, p, diverged, process, processes, hold)
  return p


def _finish(workdir: Path, p: Plan, diverged: list, process: int, processes: int, hold) -> None:
  """Once every process has trained its members: the summary, or one line that names the
  members that diverged (exit 3)."""
  if processes > 1:
    from jax.experimental import multihost_utils
    multihost_utils.sync_global_devices("every member of the sweep trained")
  missing = [m.name for m in p.members if not (workdir / m.name / "params.msgpack").is_file()]
  if diverged or (process == 0 and missing):
    from vae_jax.app.run import RunStopped
    what = "; ".join(diverged) or f"{', '.join(missing)} (on another process)"
    raise RunStopped(f"{count(len(diverged) or len(missing), 'member')} diverged, not written "
                     f"(the others are): {what}. No summary until every member is finished: "
                     f"try a smaller --learning-rate for it, or leave it out", exit_code=3)
  if process == 0:
    hold()
    write_summary(workdir, p, _machine())
    print(f"sweep: wrote {workdir}/sweep.md, sweep.json and sweep.png", file=sys.stderr)


def _by_start(group: list, resumed: dict) -> list:
  """`group` split by the epoch each member goes on from (0: from the start), the furthest
  first: members at one epoch can still train as one stack."""
  parts: dict = {}
  for m in group:
    parts.setdefault(resumed[m.name].epoch if m.name in resumed else 0, []).append(m)
  return sorted(parts.items(), key=lambda item: -item[0])


def divergence(rows: list, params) -> str | None:
  """Where a member's training stopped being finite ('at epoch E: train_loss = nan'), from
  its metrics rows and final parameters; None if it never did. (A single run stops at that
  epoch; a member of a stack trains on, its own numbers only.)"""
  import jax
  import numpy as np

  from vae_jax.app import run
  for row in rows:
    bad = run.first_non_finite(row)
    if bad is not None:
      return f"at epoch {row['epoch']}: {bad} = {row[bad]} is not finite"
  if not all(np.isfinite(a).all() for a in jax.tree.leaves(jax.device_get(params))):
    return "its final weights are not finite"
  return None


def _train_part(workdir: Path, part: list, start: int, resumed: dict, d, p: Plan, *,
                strategy: str, figures: bool, progress: bool, diverged: list) -> None:
  """Trains the members `part` of one group, all from epoch `start` + 1 (from their
  checkpoints in `resumed`, {name: Progress}), checkpointing them as they go and writing
  each when done: each whose numbers are finite (`divergence`); the others are added to
  `diverged`, and their `.new` is left as it is."""
  from vae_jax.app import multi
  config, setting = part[0].config, _describe(part[0].config, p.swept)
  record = {"id": f"{part[0].name} {time.strftime('%Y-%m-%dT%H:%M:%S')} {os.getpid()}",
            "setting": setting, "members": [m.name for m in part]}
  if start:
    print(f"sweep: {count(len(part), 'member')} of {setting} "
          f"{'goes' if len(part) == 1 else 'go'} on from epoch {start} (the checkpoint"
          f"{'s' if len(part) > 1 else ''} in {', '.join(m.name + '.new' for m in part)})",
          file=sys.stderr)

  def write(i, state, rows, seconds, how):
    bad = divergence(rows, state.params)
    if bad is not None:
      diverged.append(f"{part[i].name} {bad} (learning rate {_text(part[i].config.learning_rate)})")
      print(f"sweep: {part[i].name} diverged {bad}: not written", file=sys.stderr)
      return
    write_member(workdir, part[i], state, rows, seconds, d, figures, {**record, **how})

  def checkpoint_member(i, progress):
    save_progress(workdir, part[i], progress)

  result = multi.train_many(config, [(m.config.seed, m.config.learning_rate) for m in part], d,
                            strategy=strategy, progress=progress, on_member=write,
                            on_progress=checkpoint_member,
                            resumed={i: resumed[m.name] for i, m in enumerate(part)
                                     if m.name in resumed})
  print(f"sweep: {count(len(part), 'member')} of {setting} trained ({result.strategy} on "
        f"{result.devices} device(s), {result.train_s:.1f} s + {result.compile_s:.1f} s "
        f"compile)", file=sys.stderr)


def _machine() -> str:
  import jax

  from vae_jax.app import bench
  return bench.describe_machine() + (f"; {jax.process_count()} processes"
                                     if jax.process_count() > 1 else "")


def _describe(config: Config, swept) -> str:
  shown = [f"{f}={_text(getattr(config, f))}" for f in swept if f not in ("seed", "learning_rate")]
  return ", ".join(shown) or "the setting"


# --------------------------------------------------------------------------
# The summary: a table and a figure over every member of the grid.


def summary(workdir, p: Plan) -> dict:
  """Every member's last epoch, and per setting (the swept fields but the seed) the mean and
  spread over its seeds."""
  import numpy as np

  from vae_jax.app.run import read_metrics
  rows = []
  for m in p.members:
    last = read_metrics(Path(workdir) / m.name)[-1]
    rows.append({"name": m.name, "seed": m.config.seed,
                 **{f: getattr(m.config, f) for f in p.swept},
                 **{k: last[k] for k in ("epoch", "train_loss", "test_loss", "test_recon",
                                         "test_kl", "active_units") if k in last}})
  settings = [f for f in p.swept if f != "seed"]
  by_setting: dict = {}
  for r in rows:
    by_setting.setdefault(tuple(r[f] for f in settings), []).append(r)
  table = []
  for values, rs in by_setting.items():
    entry = {**dict(zip(settings, values)), "seeds": [r["seed"] for r in rs]}
    for key in ("train_loss", "test_loss", "test_recon", "test_kl"):
      v = np.array([r[key] for r in rs])
      entry[key] = {"mean": float(v.mean()), "std": float(v.std(ddof=1)) if len(v) > 1 else 0.0,
                    "min": float(v.min()), "max": float(v.max()), "values": v.tolist()}
    table.append(entry)
  return {"swept": list(p.swept), "settings": settings, "members": rows, "table": table}


def markdown(report: dict) -> str:
  settings = report["settings"]
  lines = ["# Sweep", "", f"Machine: {report['machine']}.", ""]
  if report.get("command"):
    lines += [f"Command: `{report['command']}`.", ""]
  spread = any(len(e["seeds"]) > 1 for e in report["table"])
  lines += [f"{count(len(report['members']), 'member')}; losses are nats per image at the last "
            "epoch (train with sampled z, test with z = mu)"
            + ("; mean ± standard deviation over seeds." if spread else "; one seed each."), "",
            "| " + " | ".join(settings + ["seeds", "test loss", "test recon", "test KL",
                                         "train loss", "test loss per seed"]) + " |",
            "|" + "---|" * (len(settings) + 6)]
  for e in report["table"]:
    ms = lambda k: (f"{e[k]['mean']:.2f} ± {e[k]['std']:.2f}" if len(e["seeds"]) > 1
                    else f"{e[k]['mean']:.2f}")
    lines.append("| " + " | ".join([_text(e[f]) for f in settings] + [
        str(len(e["seeds"])), f"**{ms('test_loss')}**", ms("test_recon"), ms("test_kl"),
        ms("train_loss"), ", ".join(f"{v:.2f}" for v in e["test_loss"]["values"])]) + " |")
  lines += ["", "![test loss against each swept field](sweep.png)", ""]
  if report.get("groups"):
    lines += ["How the members trained (each group: one stacked program, or one run after "
              "another):", ""]
    for g in report["groups"]:
      lines.append(f"* {g.get('setting', 'the setting')}: {count(len(g['members']), 'member')}, "
                   f"{g['strategy']} on {g['devices']} device(s): {g['train_s']:.1f} s of "
                   f"training, {g['compile_s']:.1f} s compile")
  return "\n".join(lines) + "\n"


def plot(report: dict, path) -> None:
  """Per swept field (but the seed), the final test loss against its values: a line per setting
  of the other fields, the mean over seeds, a band from the lowest seed to the highest."""
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  from vae_jax.app import plots
  settings, table = report["settings"], report["table"]
  if not settings:  # seeds alone: each seed's test loss
    fig, ax = plt.subplots(figsize=(5, 4))
    e = table[0]
    ax.plot(e["seeds"], e["test_loss"]["values"], "o")
    ax.axhline(e["test_loss"]["mean"], color="grey", label="mean over seeds")
    ax.set(xlabel="seed", ylabel="test loss (nats per image)", title="test loss per seed")
    ax.legend()
    ax.grid(True)
    plots.save_figure(fig, path)
    return
  fig, axes = plt.subplots(1, len(settings), figsize=(5.5 * len(settings), 4), squeeze=False)
  for ax, field in zip(axes[0], settings):
    others = [f for f in settings if f != field]
    lines: dict = {}
    for e in table:
      lines.setdefault(tuple(e[f] for f in others), []).append(e)
    numeric = all(isinstance(e[field], (int, float)) for e in table)
    ticks = sorted({e[field] for e in table}, key=lambda v: (v if numeric else str(v)))
    for rest, es in lines.items():
      es = sorted(es, key=lambda e: ticks.index(e[field]))
      x = [e[field] if numeric else ticks.index(e[field]) for e in es]
      mean = [e["test_loss"]["mean"] for e in es]
      label = ", ".join(f"{f}={_text(v)}" for f, v in zip(others, rest)) or None
      line, = ax.plot(x, mean, marker="o", label=label)
      ax.fill_between(x, [e["test_loss"]["min"] for e in es], [e["test_loss"]["max"] for e in es],
                      color=line.get_color(), alpha=0.25)
    if numeric and min(ticks) > 0 and max(ticks) / min(ticks) >= 10:
      ax.set_xscale("log")
    ax.set_xticks(ticks if numeric else range(len(ticks)), [_text(t) for t in ticks])
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    seeds = max(len(e["seeds"]) for e in table)
    ax.set(xlabel=field, ylabel="test loss (nats per image)",
           title=f"mean of {seeds} seed(s), band: lowest to highest" if seeds > 1 else "one seed")
    ax.grid(True)
    if any(label for label in [l.get_label() for l in ax.get_lines()] if not label.startswith("_")):
      ax.legend(fontsize=8)
  plots.save_figure(fig, path)


def trained_groups(workdir, p: Plan) -> list:
  """How every member of the grid trained, from the GROUP_FILE each keeps: per group (one
  stacked program, or members one after another, whichever process or invocation ran it)
  its strategy, devices, compile seconds and training seconds (the sum of its members',
  a continued member's earlier calls included)."""
  from vae_jax.app.run import read_metrics
  workdir, out = Path(workdir), {}
  for m in p.members:
    path = workdir / m.name / GROUP_FILE
    if not path.is_file():  # trained by the train subcommand, or before sweeps kept this
      continue
    g = json.loads(path.read_text())
    seconds = sum(r.get("seconds", 0.0) for r in read_metrics(workdir / m.name))
    entry = out.setdefault(g["id"], {**g, "members": [], "train_s": 0.0, "compile_s": 0.0})
    entry["members"].append(m.name)
    entry["train_s"] += seconds
    entry["compile_s"] = max(entry["compile_s"], g["compile_s"])  # one compile per group
  return list(out.values())


def _say_what_a_narrower_summary_replaces(workdir: Path, p: Plan) -> None:
  """The summary is of the grid given; when it replaces one of more members, one line says
  which command writes that one again (its members are all still there: no training)."""
  try:
    old = json.loads((workdir / "sweep.json").read_text())
    left_out = sorted({m["name"] for m in old["members"]} - {m.name for m in p.members})
  except (OSError, ValueError, KeyError, TypeError):  # none yet, or not one we can read
    return
  if left_out and old.get("command"):  # (compare's groups have none: its report is the record)
    print(f"sweep: this summary covers {count(len(p.members), 'member')}; the one it replaces "
          f"also had {', '.join(left_out[:3])}{', ...' if len(left_out) > 3 else ''}: "
          f"`{old['command']}` writes it again without training", file=sys.stderr)


def write_summary(workdir, p: Plan, machine: str) -> dict:
  """sweep.json, sweep.md and sweep.png in `workdir`, each written whole or not at all."""
  workdir = Path(workdir)
  _say_what_a_narrower_summary_replaces(workdir, p)
  report = {"machine": machine, "command": p.command, **summary(workdir, p),
            "groups": trained_groups(workdir, p)}
  atomic_write(workdir / "sweep.json", (json.dumps(report, indent=1) + "\n").encode())
  atomic_write(workdir / "sweep.md", markdown(report).encode())
  plot(report, workdir / "sweep.png")
  return report
