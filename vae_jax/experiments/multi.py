"""Many training runs at once: seeds (and learning rates) stacked on a leading axis.

`train_many(config, members, ...)` trains one model per member (a seed and a
learning rate; every shape is shared) on the same data. Member i gets exactly the
keys a single run with its seed gets (`train.setup` of that seed): the same initial
parameters, the same shuffles, the same eps. So a stacked run and single runs
compute the same thing, up to float rounding (tested).

Two ways to run them, the same numbers either way:

* ``vmap``: one compiled program trains every member: `jax.vmap` of the epoch
  over the stacked states. On a GPU, where one small model leaves most of the
  device idle, this is where the gain is.
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
import tqdm.auto as tqdm

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


def _member_config(config: Config, member) -> Config:
  return config.replace(seed=member.seed, learning_rate=member.learning_rate)


def _stack(trees):
  return jax.tree.map(lambda *xs: jnp.stack(xs), *trees)


def _stacked_setups(config: Config, members):
  """One `train.setup` per member (no programs), stacked: initial states [S] and train keys [S]."""
  if config.model != "vae":
    raise ValueError(f"stacked runs train the VAE, not --model {config.model}")
  setups = [train.setup(_member_config(config, m)) for m in members]
  return setups[0], _stack([s.state for s in setups]), jnp.stack([s.keys.train for s in setups])


def _vmapped_programs(config: Config, first: train.Setup, states, keys, d: DeviceData):
  """The epoch and evaluation of one member, vmapped over the stack and compiled once."""
  epoch = train.make_train_epoch(first.model, first.optimizer, num_examples=len(d.x_train),
                                 **train.epoch_options(config, num_examples=len(d.x_train)))
  many_epoch = jax.jit(jax.vmap(epoch, in_axes=(0, None, 0)))  # states [S], images shared, keys [S]
  many_eval = jax.jit(jax.vmap(train.make_evaluate(first.model), in_axes=(0, None)))
  return train.Programs(many_epoch.lower(states, d.x_train, keys).compile(),
                        many_eval.lower(states.params, d.x_test).compile())


def _take(tree, i):
  return jax.tree.map(lambda x: x[i], tree)


def calibrate(config: Config, members, d: DeviceData, steps: int = 64,
              repeats: int = 3) -> dict:
  """Seconds per training step of `vmap` (all members) and `sequential` (one member x S).

  Runs `steps` steps of each on the first `steps * batch` images, after compiling,
  `repeats` times in turn, and keeps each one's fastest (the least disturbed).
  """
  members = [Member(*m) for m in members]
  n = min(len(d.x_train), steps * config.batch_size)
  part = d._replace(x_train=d.x_train[:n])
  first, states, keys = _stacked_setups(config, members)
  one = train.setup(config, part).programs.train_epoch
  many = _vmapped_programs(config, first, states, keys, part).train_epoch
  runs = {"vmap": lambda: many(states, part.x_train, keys),
          "sequential": lambda: [one(_take(states, i), part.x_train, keys[i])
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


def train_many(config: Config, members, d: DeviceData, *, strategy: str = "auto",
               progress: bool = True) -> ManyResult:
  """Trains one model per member for `config.epochs` epochs; evaluates each every epoch.

  Metrics per member and epoch are the single run's (losses per image: train with
  sampled z, test with z = mu).
  """
  if strategy not in STRATEGIES:
    raise ValueError(f"strategy must be one of {STRATEGIES}, got {strategy!r}")
  if config.schedule != "constant":  # its rates are a function of one run's learning rate
    raise ValueError(f"stacked runs train at a constant learning rate, got schedule "
                     f"{config.schedule!r}: train such runs one at a time, with the train subcommand")
  members = [Member(*m) for m in members]
  calibration = {}
  if strategy == "auto":
    calibration = calibrate(config, members, d)
    strategy = min(calibration, key=calibration.get)

  bar = tqdm.tqdm(total=config.epochs * (1 if strategy == "vmap" else len(members)),
                  unit="epoch", disable=not progress, desc=f"{len(members)} runs, {strategy}")
  if strategy == "vmap":
    first, states, keys = _stacked_setups(config, members)
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
    # Per epoch, Metrics of [S] -> per member, per epoch.
    histories = [[train.epoch_row(e, _take(tm, i), _take(em, i), len(d.x_train), len(d.x_test))
                  for e, (tm, em) in enumerate(per_epoch, start=1)] for i in range(len(members))]
    params = state.params
  else:
    programs, fits, compile_s, train_s = None, [], 0.0, 0.0
    for m in members:
      run = train.setup(_member_config(config, m), d, programs=programs)  # compiled once
      programs, compile_s = run.programs, compile_s + run.compile_s
      t0 = time.perf_counter()
      fits.append(train.fit(run, d, config.epochs))
      train_s += time.perf_counter() - t0
      bar.update(config.epochs)
    histories = [f.history for f in fits]
    params = _stack([f.params for f in fits])
  bar.close()
  return ManyResult(members, histories, params, strategy, compile_s, train_s, calibration)
