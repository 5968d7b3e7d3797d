"""Many training runs at once: seeds (and learning rates) stacked on a leading axis.

`train_many(config, members, ...)` trains one model per member (a seed and a
learning rate; every shape is shared) on the same data. Member i gets exactly the
keys a single run with its seed gets (`train.run_keys(seed)`): the same initial
parameters, the same shuffles, the same eps. So a stacked run and single runs
compute the same thing, up to float rounding (tested).

Two ways to run them, the same numbers either way:

* ``vmap``: one compiled program trains every member: `jax.vmap` of the epoch
  over the stacked states. On a GPU, where one small model leaves most of the
  device idle, this is where the gain is.
* ``sequential``: the members one after another with the single-run program. On
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

from vae_jax import train
from vae_jax.config import Config

STRATEGIES = ("auto", "vmap", "sequential")


class Member(NamedTuple):
  seed: int
  learning_rate: float


class ManyResult(NamedTuple):
  members: list        # [Member]
  histories: list      # per member: one dict per epoch, as train.train_and_evaluate's
  params: Any          # parameters stacked on a leading member axis
  strategy: str        # what ran: "vmap" or "sequential"
  compile_s: float
  train_s: float       # wall time of the epochs, compile excluded
  calibration: dict    # seconds per step of each strategy, when "auto" measured them


def _init_states(members, model, optimizer):
  """Stacked TrainStates and train keys: member i's are a single run's with its seed."""
  states, keys = [], []
  for m in map(Member._make, members):
    k = train.run_keys(m.seed)
    states.append(train.create_state(model, optimizer, k.init, m.learning_rate))
    keys.append(k.train)
  return jax.tree.map(lambda *xs: jnp.stack(xs), *states), jnp.stack(keys)


def _programs(config: Config, model, optimizer, num_examples: int):
  """(train_epoch, evaluate) for one member and their vmapped versions for many."""
  epoch = train.make_train_epoch(model, optimizer, num_examples=num_examples,
                                 batch_size=config.batch_size)
  evaluate = train.make_evaluate(model)
  many_epoch = jax.vmap(epoch, in_axes=(0, None, 0))   # states [S], images shared, keys [S]
  many_evaluate = jax.vmap(evaluate, in_axes=(0, None))
  return (jax.jit(epoch), jax.jit(evaluate)), (jax.jit(many_epoch), jax.jit(many_evaluate))


def _take(tree, i):
  return jax.tree.map(lambda x: x[i], tree)


def calibrate(config: Config, members, x_train, steps: int = 64, repeats: int = 3) -> dict:
  """Seconds per training step of `vmap` (all members) and `sequential` (one member x S).

  Runs `steps` steps of each on the first `steps * batch` images, after compiling,
  `repeats` times in turn, and keeps each one's fastest (the least disturbed).
  """
  model, optimizer = train.make_model(config), train.make_optimizer(config)
  n = min(len(x_train), steps * config.batch_size)
  x = x_train[:n]
  states, keys = _init_states(members, model, optimizer)
  (one, _), (many, _) = _programs(config, model, optimizer, n)
  one = one.lower(_take(states, 0), x, keys[0]).compile()
  many = many.lower(states, x, keys).compile()
  runs = {"vmap": lambda: many(states, x, keys),
          "sequential": lambda: [one(_take(states, i), x, keys[i]) for i in range(len(members))]}
  timing = {name: float("inf") for name in runs}
  for name, run in runs.items():
    jax.block_until_ready(run())  # warm-up
  for _ in range(repeats):
    for name, run in runs.items():
      t0 = time.perf_counter()
      jax.block_until_ready(run())
      timing[name] = min(timing[name], (time.perf_counter() - t0) / (-(-n // config.batch_size)))
  return timing


def train_many(config: Config, members, x_train, x_test, *, strategy: str = "auto",
               progress: bool = True) -> ManyResult:
  """Trains one model per member for `config.epochs` epochs; evaluates each every epoch.

  x_train, x_test: uint8 [N, 784] on the device. Metrics per member and epoch are
  the single run's (losses per image: train with sampled z, test with z = mu).
  """
  if strategy not in STRATEGIES:
    raise ValueError(f"strategy must be one of {STRATEGIES}, got {strategy!r}")
  members = [Member(*m) for m in members]
  calibration = {}
  if strategy == "auto":
    calibration = calibrate(config, members, x_train)
    strategy = min(calibration, key=calibration.get)

  model, optimizer = train.make_model(config), train.make_optimizer(config)
  states, keys = _init_states(members, model, optimizer)
  (one_epoch, one_eval), (many_epoch, many_eval) = _programs(config, model, optimizer,
                                                             len(x_train))
  t0 = time.perf_counter()
  if strategy == "vmap":
    groups = [(many_epoch.lower(states, x_train, keys).compile(),
               many_eval.lower(states.params, x_test).compile(), states, keys)]
  else:
    epoch_c = one_epoch.lower(_take(states, 0), x_train, keys[0]).compile()
    eval_c = one_eval.lower(_take(states, 0).params, x_test).compile()
    groups = [(epoch_c, eval_c, _take(states, i), keys[i]) for i in range(len(members))]
  compile_s = time.perf_counter() - t0

  fold = jax.vmap(train.epoch_key, in_axes=(0, None)) if strategy == "vmap" else train.epoch_key
  bar = tqdm.tqdm(total=config.epochs * len(groups), unit="epoch", disable=not progress,
                  desc=f"{len(members)} runs, {strategy}")
  t0 = time.perf_counter()
  finals, metrics = [], []
  for epoch_fn, eval_fn, state, key in groups:
    per_epoch = []
    for epoch in range(1, config.epochs + 1):  # dispatch only: no host sync in the loop
      state, train_m = epoch_fn(state, x_train, fold(key, epoch))
      per_epoch.append((train_m, eval_fn(state.params, x_test)))
      bar.update(1)
    finals.append(state.params)
    metrics.append(per_epoch)
  metrics = jax.device_get(metrics)
  train_s = time.perf_counter() - t0
  bar.close()

  if strategy == "vmap":  # one group: per epoch, Metrics of [S] -> per member, per epoch
    metrics = [[jax.tree.map(lambda v: v[i], m) for m in metrics[0]] for i in range(len(members))]
  histories = [[train.epoch_row(e, tm, em, len(x_train), len(x_test))
                for e, (tm, em) in enumerate(per_epoch, start=1)] for per_epoch in metrics]
  params = finals[0] if strategy == "vmap" else jax.tree.map(lambda *x: jnp.stack(x), *finals)
  return ManyResult(members, histories, params, strategy, compile_s, train_s, calibration)


def settle_epoch(losses, tol: float = 0.01) -> int:
  """The first epoch (1-based) from which the loss stays within `tol` of its final value."""
  losses = np.asarray(losses, np.float64)
  inside = np.abs(losses - losses[-1]) <= tol * abs(losses[-1])
  outside = np.flatnonzero(~inside)
  return int(outside[-1] + 2) if len(outside) else 1
