"""Many training runs at once: seeds (and learning rates) stacked on a leading axis.

`train_many(config, members, ...)` trains one model per member (a seed and a
learning rate; every shape is shared) on the same data. Member i gets exactly the
keys a single run with its seed gets (`recipe.setup` of that seed): the same initial
parameters, the same shuffles, the same eps. So a stacked run and single runs
compute the same thing, up to float rounding (tested).

Two ways to run them, the same numbers either way:

* ``vmap``: one compiled program trains every member: `jax.vmap` of the epoch
  over the stacked states. On a GPU, where one small model leaves most of the
  device idle, this is where the gain is. The member axis is sharded over the
  local devices (a one-axis `Mesh`, `NamedSharding`): JAX's SPMD partitioner
  gives each device its share of the members and the data whole, and no member
  talks to another. A stack that does not divide evenly is padded with copies of
  its last member, whose results are dropped.
* ``sequential``: the members one after another with the single-run program
  (`recipe.setup` and its epochs, compiled once for all of them). On
  a small CPU one run already keeps every core busy, and the batched matrix
  products of `vmap` are slower than the same products one by one.

``auto`` measures both on a short slice of the data (a few dozen steps, compile
excluded) and picks the faster.

Either way, every `SAVE_EVERY_S` seconds of training the members' states can be
handed to the caller (`on_progress`), and a later call continues them from there
(`resumed`): each epoch's key depends on its number alone, so a member resumed
from epoch k ends as the one never stopped, bit for bit, when the program is the
same (the same strategy and stack, on a CPU; on a GPU, XLA may pick other kernels
in another process unless the compilation cache serves the program).
"""

from __future__ import annotations

import time
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import tqdm.auto as tqdm
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from vae_jax import train
from vae_jax.app import STRATEGIES
from vae_jax.config import Config
from vae_jax.data import DeviceData
from vae_jax.extensions import recipe


class Member(NamedTuple):
  seed: int
  learning_rate: float


class ManyResult(NamedTuple):
  members: list        # [Member]
  histories: list      # per member: one dict per epoch, as a single run's metrics.jsonl
  params: Any          # parameters stacked on a leading member axis
  strategy: str        # what ran: "vmap" or "sequential"
  compile_s: float
  train_s: float       # wall time of the epochs, compile excluded
  calibration: dict    # seconds per step of each strategy, when "auto" measured them
  states: Any = None   # the final TrainStates (Adam's too), stacked: a checkpoint per member
  devices: int = 1     # the parts the member axis was sharded into, one a device


SAVE_EVERY_S = 30.0  # seconds of training between two states handed to `on_progress`


class Progress(NamedTuple):
  """A member's training so far: what `on_progress` gets and `resumed` gives back."""
  epoch: int      # the last epoch trained
  state: Any      # the TrainState after it (host arrays)
  history: list   # its rows (`train.epoch_row`) for epochs 1..epoch


def _epochs(run: train.Setup, d: DeviceData, epochs: int, state, first: int, save=None,
            tick=None):
  """`train.run_epochs` from `first`; returns the last state and each epoch's sums (device
  arrays). With `save`, every SAVE_EVERY_S seconds `save(epoch, state, sums so far)` gets the
  epoch before the one just dispatched: the host waits for that one to finish (dispatch
  alone would run ahead of the device, and the clock with it) while the device runs the
  next, as a single run reads its epochs. `tick()`: once an epoch, when the host has it."""
  per_epoch, before, saved_at = [], None, time.perf_counter()
  for epoch, state, train_m, test_m in train.run_epochs(run, d, epochs, state, first):
    if save is not None and before is not None:
      jax.block_until_ready(before[1])
      if time.perf_counter() - saved_at >= SAVE_EVERY_S:
        save(*before, per_epoch)
        saved_at = time.perf_counter()
    per_epoch.append((train_m, test_m))
    before = (epoch, state)
    if tick is not None:
      tick()
  return state, per_epoch


def _rows(per_epoch, first: int, d: DeviceData, member=None) -> list:
  """Rows for epochs first, first + 1, ... from their sums (host arrays; of stack entry
  `member`, when the sums carry the member axis)."""
  pick = (lambda m: m) if member is None else (lambda m: _take(m, member))
  return [train.epoch_row(e, pick(tm), pick(em), len(d.x_train), len(d.x_test))
          for e, (tm, em) in enumerate(per_epoch, start=first)]


def _timed(rows: list, seconds: float, epochs: int) -> list:
  """`rows` with the seconds per epoch of `seconds` spent on `epochs` epochs (a saved
  member's rows keep theirs when it goes on in a later call)."""
  return [{**row, "seconds": seconds / max(1, epochs)} for row in rows]


def _member_config(config: Config, member) -> Config:
  return config.replace(seed=member.seed, learning_rate=member.learning_rate)


def _stack(trees):
  return jax.tree.map(lambda *xs: jnp.stack(xs), *trees)


def stackable(config: Config, members) -> str | None:
  """Why `members` of `config` cannot train as one stack (None when they can): a learning
  rate schedule is a function of one run's rate, so its members must share that rate."""
  if config.schedule != "constant" and len({float(m[1]) for m in members}) > 1:
    return (f"--schedule {config.schedule} makes the learning rate a function of one run's "
            f"rate: members with different rates train one after another")
  return None


def member_mesh(devices=None) -> Mesh:
  """A one-axis mesh, "members", over `devices` (default: this process's local devices)."""
  return Mesh(np.array(list(devices or jax.local_devices())), ("members",))


def _pad(members, mesh: Mesh) -> list:
  """`members` and copies of the last, up to a multiple of the mesh's size."""
  return list(members) + [members[-1]] * (-len(members) % mesh.size)


def _stacked_setups(config: Config, members, mesh: Mesh):
  """One `recipe.setup` per member (no programs), stacked and sharded over `mesh`: initial
  states [S] and train keys [S], member i on device i // (S / devices)."""
  why = stackable(config, members)
  if why:
    raise ValueError(why)
  setups = [recipe.setup(_member_config(config, m)) for m in members]
  shard = NamedSharding(mesh, P("members"))
  states = jax.device_put(_stack([s.state for s in setups]), shard)
  return setups[0], states, jax.device_put(jnp.stack([s.keys.train for s in setups]), shard)


def _replicated(d: DeviceData, mesh: Mesh) -> DeviceData:
  """The data whole on every device of `mesh` (a copy per device, sent once)."""
  return DeviceData(*jax.device_put(tuple(d), NamedSharding(mesh, P())))


def _vmapped_programs(config: Config, first: train.Setup, states, keys, d: DeviceData):
  """The epoch and evaluation of one member, vmapped over the stack and compiled once (the
  CVAE's labels bound, as `recipe.setup` binds them).

  The inputs' shardings (`_stacked_setups`, `_replicated`) are the programs': the
  partitioner splits the member axis over the devices and keeps everything else local.
  """
  epoch, evaluate = recipe.functions(config, first.model, first.optimizer, len(d.x_train))
  y_train, y_test = recipe.labels(config, d.y_train), recipe.labels(config, d.y_test)
  # states [S], images shared, keys [S], labels (the CVAE's) shared
  many_epoch = jax.jit(jax.vmap(epoch, in_axes=(0, None, 0) + (None,) * len(y_train))).lower(
      states, d.x_train, keys, *y_train).compile()
  many_eval = jax.jit(jax.vmap(evaluate, in_axes=(0, None) + (None,) * len(y_test))).lower(
      states.params, d.x_test, *y_test).compile()
  return recipe.bound(many_epoch, many_eval, y_train, y_test)


def _take(tree, i):
  return jax.tree.map(lambda x: x[i], tree)


def calibrate(config: Config, members, d: DeviceData, steps: int = 64,
              repeats: int = 3, devices=None) -> dict:
  """Seconds per training step of `vmap` (all members, over `devices`) and `sequential`
  (one member x S, on one device).

  Runs `steps` steps of each on the first `steps * batch` images, after compiling,
  `repeats` times in turn, and keeps each one's fastest (the least disturbed).
  """
  members = [Member(*m) for m in members]
  n = min(len(d.x_train), steps * config.batch_size)
  part = d._replace(x_train=d.x_train[:n], y_train=d.y_train[:n])
  mesh = member_mesh(devices)
  first, states, keys = _stacked_setups(config, _pad(members, mesh), mesh)
  shared = _replicated(part, mesh)
  one = recipe.setup(config, part).programs.train_epoch
  many = _vmapped_programs(config, first, states, keys, shared).train_epoch
  on_one = part.x_train.sharding  # the single run's device
  single = [jax.device_put(_take(states, i), on_one) for i in range(len(members))]
  single_keys = jax.device_put(keys, on_one)
  runs = {"vmap": lambda: many(states, shared.x_train, keys),
          "sequential": lambda: [one(single[i], part.x_train, single_keys[i])
                                 for i in range(len(members))]}
  timing = {name: float("inf") for name in runs}
  for name, run in runs.items():
    jax.block_until_ready(run())  # warm-up
  for _ in range(repeats):
    for name, run in runs.items():
      t0 = time.perf_counter()
      jax.block_until_ready(run())
      timing[name] = min(timing[name], (time.perf_counter() - t0) / (-(-n // config.batch_size)))
  return timing


def _how(strategy: str, devices: int, compile_s: float, calibration: dict,
         epochs_trained: int) -> dict:
  """How a group trained, as `on_member` gets it and a sweep records it (`sweep_group.json`):
  `epochs_trained`, the epochs of this call (fewer than the config's for a member resumed)."""
  return {"strategy": strategy, "devices": devices, "compile_s": compile_s,
          "calibration_s_per_step": calibration, "epochs_trained": epochs_trained}


def lockstep(resumed: dict, n: int) -> bool:
  """Whether `resumed` continues all `n` members from one epoch (none resumed counts too):
  only then can they go on as one stack."""
  return not resumed or (len(resumed) == n and len({p.epoch for p in resumed.values()}) == 1)


def train_many(config: Config, members, d: DeviceData, *, strategy: str = "auto",
               progress: bool = True, devices=None, on_member=None, on_progress=None,
               resumed=None) -> ManyResult:
  """Trains one model per member for `config.epochs` epochs; evaluates each every epoch.

  Metrics per member and epoch are the single run's (losses per image: train with
  sampled z, test with z = mu). `vmap` shards the members over `devices` (default:
  every local device); `auto` picks it only where it measured faster, and never for
  members that cannot stack (`stackable`). `on_member(i, state, history, seconds, how)`
  is called as soon as member i is trained (one after another: after each member;
  vmap: all at the end), with its final state, its rows, its share of the training
  seconds and `how` ({strategy, devices, compile_s, calibration_s_per_step,
  epochs_trained}), so that a caller can save it before the next member starts.

  `on_progress(i, Progress)`, every SAVE_EVERY_S seconds of training, gets member i's
  state so far (host arrays; its rows with their seconds, this call's share per epoch
  so far), so that a caller can checkpoint it; `resumed` ({i:
  Progress}) continues those members from there, and the others from the start. A
  stack goes on only from one epoch for all (`lockstep`); otherwise the members train
  one after another.
  """
  if strategy not in STRATEGIES:
    raise ValueError(f"strategy must be one of {STRATEGIES}, got {strategy!r}")
  members, resumed = [Member(*m) for m in members], dict(resumed or {})
  calibration = {}
  if not lockstep(resumed, len(members)):
    strategy = "sequential"
  if strategy == "auto":
    if stackable(config, members) is not None or len(members) == 1:
      strategy = "sequential"
    else:
      calibration = calibrate(config, members, d, devices=devices)
      strategy = min(calibration, key=calibration.get)

  start = resumed[0].epoch if strategy == "vmap" and resumed else 0  # (one epoch for all)
  bar = tqdm.tqdm(total=config.epochs * (1 if strategy == "vmap" else len(members)),
                  initial=start if strategy == "vmap" else sum(p.epoch for p in resumed.values()),
                  unit="epoch", disable=not progress, desc=f"{len(members)} runs, {strategy}")
  mesh = member_mesh(devices if strategy == "vmap" else jax.local_devices()[:1])
  if strategy == "vmap":
    first, states, keys = _stacked_setups(config, _pad(members, mesh), mesh)
    if resumed:  # the saved states, stacked as the fresh ones (the padding: the last again)
      saved = [resumed[i].state for i in range(len(members))]
      states = jax.device_put(_stack(_pad(saved, mesh)), NamedSharding(mesh, P("members")))
    d = _replicated(d, mesh)
    t0 = time.perf_counter()
    programs = _vmapped_programs(config, first, states, keys, d)
    compile_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    # The stack as one run: a Setup whose state and keys carry the member axis.
    stacked = first._replace(state=states, keys=first.keys._replace(train=keys),
                             programs=programs)

    def checkpoint_stack(epoch, state, per_epoch):  # to the host once, sliced there (below)
      state, per_epoch = jax.device_get((state, per_epoch))
      seconds = (time.perf_counter() - t0) / len(members)  # a member's share, this call
      for i in range(len(members)):
        before = resumed[i].history if resumed else []
        rows = _rows(per_epoch, start + 1, d, member=i)
        on_progress(i, Progress(epoch, _take(state, i),
                                before + _timed(rows, seconds, len(rows))))

    state, per_epoch = _epochs(stacked, d, config.epochs, states, start + 1,
                               checkpoint_stack if on_progress else None, tick=bar.update)
    per_epoch = jax.device_get(per_epoch)
    train_s = time.perf_counter() - t0
    # Per epoch, Metrics of [S] -> per member, per epoch (the padding dropped).
    histories = [(resumed[i].history if resumed else []) + _rows(per_epoch, start + 1, d, i)
                 for i in range(len(members))]
    # How many parts the member axis was cut into, read off the result (1: not sharded).
    devices = len({str(s.index) for s in jax.tree.leaves(state)[0].addressable_shards})
    # To the host once, and each member sliced there: an eager slice of the sharded stack
    # is a program over the devices, which with `jax.distributed` can wait on the other
    # processes (a sweep's process hung so, while its peer waited at the last barrier).
    states = jax.tree.map(lambda x: x[:len(members)], jax.device_get(state))
    how = _how(strategy, devices, compile_s, calibration, config.epochs - start)
    for i in range(len(members)) if on_member else ():
      on_member(i, _take(states, i), histories[i], train_s / len(members), how)
  else:
    devices = 1
    programs, fits, compile_s, train_s = None, [], 0.0, 0.0
    for i, m in enumerate(members):
      run = recipe.setup(_member_config(config, m), d, programs=programs)  # compiled once
      programs, compile_s = run.programs, compile_s + run.compile_s
      go_on = resumed.get(i, Progress(0, run.state, []))

      def checkpoint_member(epoch, state, per_epoch, i=i, go_on=go_on):
        rows = _rows(jax.device_get(per_epoch), go_on.epoch + 1, d)
        rows = _timed(rows, time.perf_counter() - t0, len(rows))  # t0: this member's start
        on_progress(i, Progress(epoch, jax.device_get(state), go_on.history + rows))

      t0 = time.perf_counter()
      state, per_epoch = _epochs(run, d, config.epochs, jax.device_put(go_on.state),
                                 go_on.epoch + 1, checkpoint_member if on_progress else None)
      history = go_on.history + _rows(jax.device_get(per_epoch), go_on.epoch + 1, d)
      fits.append(train.Fit(state.params, history, state))
      seconds = time.perf_counter() - t0
      train_s += seconds
      bar.update(config.epochs - go_on.epoch)
      if on_member:
        on_member(i, fits[-1].state, fits[-1].history, seconds,
                  _how(strategy, 1, compile_s, calibration, config.epochs - go_on.epoch))
    histories = [f.history for f in fits]
    states = _stack([f.state for f in fits])
  bar.close()
  return ManyResult(members, histories, states.params, strategy, compile_s, train_s,
                    calibration, states, devices)
