"""Many training runs at once: seeds (and learning rates) stacked on a leading axis.

`train_many(config, members, ...)` trains one model per member (a seed and a
learning rate; every shape is shared) on the same data. Member i gets exactly the
keys a single run with its seed gets (`train.setup` of that seed): the same initial
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
  (`train.setup` and `train.fit`, compiled once for all of them). On
  a small CPU one run already keeps every core busy, and the batched matrix
  products of `vmap` are slower than the same products one by one.

``auto`` measures both on a short slice of the data (a few dozen steps, compile
excluded) and picks the faster.
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
from vae_jax.config import Config
from vae_jax.data import DeviceData
from vae_jax.experiments import STRATEGIES


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
  """One `train.setup` per member (no programs), stacked and sharded over `mesh`: initial
  states [S] and train keys [S], member i on device i // (S / devices)."""
  why = stackable(config, members)
  if why:
    raise ValueError(why)
  setups = [train.setup(_member_config(config, m)) for m in members]
  shard = NamedSharding(mesh, P("members"))
  states = jax.device_put(_stack([s.state for s in setups]), shard)
  return setups[0], states, jax.device_put(jnp.stack([s.keys.train for s in setups]), shard)


def _replicated(d: DeviceData, mesh: Mesh) -> DeviceData:
  """The data whole on every device of `mesh` (a copy per device, sent once)."""
  return DeviceData(*jax.device_put(tuple(d), NamedSharding(mesh, P())))


def _vmapped_programs(config: Config, first: train.Setup, states, keys, d: DeviceData):
  """The epoch and evaluation of one member, vmapped over the stack and compiled once.

  The inputs' shardings (`_stacked_setups`, `_replicated`) are the programs': the
  partitioner splits the member axis over the devices and keeps everything else local.
  """
  epoch = train.make_train_epoch(first.model, first.optimizer, num_examples=len(d.x_train),
                                 **train.epoch_options(config, num_examples=len(d.x_train)))
  y_train, y_test = train.labels_of(first.model, d.y_train), train.labels_of(first.model, d.y_test)
  # states [S], images shared, keys [S], labels (the CVAE's) shared
  many_epoch = jax.jit(jax.vmap(epoch, in_axes=(0, None, 0) + (None,) * len(y_train)))
  many_eval = jax.jit(jax.vmap(train.make_evaluate(first.model),
                               in_axes=(0, None) + (None,) * len(y_test)))
  return train.Programs(many_epoch.lower(states, d.x_train, keys, *y_train).compile(),
                        many_eval.lower(states.params, d.x_test, *y_test).compile())


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
  one_run = train.setup(config, part)
  one, y = one_run.programs.train_epoch, train.labels_of(one_run.model, part.y_train)
  many = _vmapped_programs(config, first, states, keys, shared).train_epoch
  y_many = train.labels_of(first.model, shared.y_train)
  on_one = part.x_train.sharding  # the single run's device
  single = [jax.device_put(_take(states, i), on_one) for i in range(len(members))]
  single_keys = jax.device_put(keys, on_one)
  runs = {"vmap": lambda: many(states, shared.x_train, keys, *y_many),
          "sequential": lambda: [one(single[i], part.x_train, single_keys[i], *y)
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


def _how(strategy: str, devices: int, compile_s: float, calibration: dict) -> dict:
  """How a group trained, as `on_member` gets it and a sweep records it (`sweep_group.json`)."""
  return {"strategy": strategy, "devices": devices, "compile_s": compile_s,
          "calibration_s_per_step": calibration}


def train_many(config: Config, members, d: DeviceData, *, strategy: str = "auto",
               progress: bool = True, devices=None, on_member=None) -> ManyResult:
  """Trains one model per member for `config.epochs` epochs; evaluates each every epoch.

  Metrics per member and epoch are the single run's (losses per image: train with
  sampled z, test with z = mu). `vmap` shards the members over `devices` (default:
  every local device); `auto` picks it only where it measured faster, and never for
  members that cannot stack (`stackable`). `on_member(i, state, history, seconds, how)`
  is called as soon as member i is trained (one after another: after each member;
  vmap: all at the end), with its final state, its rows, its share of the training
  seconds and `how` ({strategy, devices, compile_s, calibration_s_per_step}), so that
  a caller can save it before the next member starts.
  """
  if strategy not in STRATEGIES:
    raise ValueError(f"strategy must be one of {STRATEGIES}, got {strategy!r}")
  members = [Member(*m) for m in members]
  calibration = {}
  if strategy == "auto":
    if stackable(config, members) is not None or len(members) == 1:
      strategy = "sequential"
    else:
      calibration = calibrate(config, members, d, devices=devices)
      strategy = min(calibration, key=calibration.get)

  bar = tqdm.tqdm(total=config.epochs * (1 if strategy == "vmap" else len(members)),
                  unit="epoch", disable=not progress, desc=f"{len(members)} runs, {strategy}")
  mesh = member_mesh(devices if strategy == "vmap" else jax.local_devices()[:1])
  if strategy == "vmap":
    first, states, keys = _stacked_setups(config, _pad(members, mesh), mesh)
    d = _replicated(d, mesh)
    t0 = time.perf_counter()
    programs = _vmapped_programs(config, first, states, keys, d)
    compile_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    # The stack as one run: a Setup whose state and keys carry the member axis.
    stacked = first._replace(state=states, keys=first.keys._replace(train=keys),
                             programs=programs)
    per_epoch, state = [], states
    for _, state, train_m, test_m in train.run_epochs(stacked, d, config.epochs):  # dispatch only
      per_epoch.append((train_m, test_m))
      bar.update(1)
    per_epoch = jax.device_get(per_epoch)
    train_s = time.perf_counter() - t0
    # Per epoch, Metrics of [S] -> per member, per epoch (the padding dropped).
    histories = [[train.epoch_row(e, _take(tm, i), _take(em, i), len(d.x_train), len(d.x_test))
                  for e, (tm, em) in enumerate(per_epoch, start=1)] for i in range(len(members))]
    # How many parts the member axis was cut into, read off the result (1: not sharded).
    devices = len({str(s.index) for s in jax.tree.leaves(state)[0].addressable_shards})
    # To the host once, and each member sliced there: an eager slice of the sharded stack
    # is a program over the devices, which with `jax.distributed` can wait on the other
    # processes (a sweep's process hung so, while its peer waited at the last barrier).
    states = jax.tree.map(lambda x: x[:len(members)], jax.device_get(state))
    how = _how(strategy, devices, compile_s, calibration)
    for i in range(len(members)) if on_member else ():
      on_member(i, _take(states, i), histories[i], train_s / len(members), how)
  else:
    devices = 1
    programs, fits, compile_s, train_s = None, [], 0.0, 0.0
    for i, m in enumerate(members):
      run = train.setup(_member_config(config, m), d, programs=programs)  # compiled once
      programs, compile_s = run.programs, compile_s + run.compile_s
      t0 = time.perf_counter()
      fits.append(train.fit(run, d, config.epochs))
      seconds = time.perf_counter() - t0
      train_s += seconds
      bar.update(config.epochs)
      if on_member:
        on_member(i, fits[-1].state, fits[-1].history, seconds,
                  _how(strategy, 1, compile_s, calibration))
    histories = [f.history for f in fits]
    states = _stack([f.state for f in fits])
  bar.close()
  return ManyResult(members, histories, states.params, strategy, compile_s, train_s,
                    calibration, states, devices)
