"""Training the blog's VAE, fast by construction: one compiled call an epoch.

The blog's loop, `for epoch in 1..epochs: train(epoch); test(epoch)`, in compiled pieces:

* `make_train_epoch`: one epoch, its shuffle and every Adam step, as one `lax.scan` over
  the batches. The data sit on the device once as uint8 [N, 784] (`data.load_device_data`);
  each batch is gathered and scaled (`/ 255`) inside. The last, partial batch of the
  blog's DataLoader is kept: padded to full size with zero-weight rows, which change
  neither the summed loss nor its gradient.
* `make_evaluate`: a whole split in eval mode (z = mu), one call.
* `setup(config, data)` builds a run (model, Adam, keys, first state) and compiles both
  programs ahead of time, once; `run_epochs` and `fit` only dispatch them.

The extensions (`vae_jax/extensions/recipe.py`) build their programs from the same
pieces (`epoch_batches`, `step_noise`, `adam_step`) and return the same `Setup`.
"""

from __future__ import annotations

import math
import time
from typing import Any, Callable, Iterator, NamedTuple

import jax
import jax.numpy as jnp
import optax

from vae_jax import losses
from vae_jax.config import SPLIT_SIZES, Config
from vae_jax.data import DeviceData, to_inputs
from vae_jax.losses import Metrics
from vae_jax.model import VAE


class TrainState(NamedTuple):
  params: Any     # {"fc1": {"kernel": [784, 512], "bias": [512]}, ...}
  opt_state: Any  # Adam's moments, step count and learning rate


def make_optimizer(config: Config) -> optax.GradientTransformation:
  """`torch.optim.Adam(lr=config.learning_rate)`: betas (0.9, 0.999) and eps 1e-8, Optax's
  defaults too. The learning rate is kept in the optimiser's state (`inject_hyperparams`),
  so stacked runs can differ in it (app/multi.py)."""
  return optax.inject_hyperparams(optax.adam)(learning_rate=config.learning_rate)


# One compiled program instead of a hundred eager operations (each compiled on its own on a
# GPU); the model is a static argument, so runs of one config share it.
_init_params = jax.jit(lambda model, key: model.init_params(key), static_argnums=0)


def create_state(model: VAE, optimizer, key: jax.Array) -> TrainState:
  """Initial parameters from `key` and the optimiser's state."""
  params = _init_params(model, key)
  return TrainState(params, optimizer.init(params))


class EpochPlan(NamedTuple):
  """Everything random in one epoch: which examples each step sees, and its noise."""
  idx: jax.Array     # int32 [steps, B]: example indices (padding rows point at example 0)
  weight: jax.Array  # float32 [steps, B]: 1 for a real example, 0 for padding
  eps: jax.Array     # float32 [steps, B, z]


def epoch_batches(key: jax.Array, num_examples: int, batch_size: int):
  """The blog's `DataLoader(shuffle=True)`: the examples in the order of
  `jax.random.permutation(key, N)`, `batch_size` at a time, the last batch padded with
  weight-0 rows. -> (idx int32 [steps, B], weight float32 [steps, B])."""
  steps = math.ceil(num_examples / batch_size)
  padded = steps * batch_size
  perm = jax.random.permutation(key, num_examples)                    # [N]
  idx = jnp.zeros(padded, perm.dtype).at[:num_examples].set(perm)    # [steps * B]
  weight = (jnp.arange(padded) < num_examples).astype(jnp.float32)   # [steps * B]
  return idx.reshape(steps, batch_size), weight.reshape(steps, batch_size)


def step_noise(key: jax.Array, steps: int, shape: tuple) -> jax.Array:
  """Each step's eps ~ N(0, I) of `shape`, step s's from the s-th key split from `key`."""
  return jax.vmap(lambda k: jax.random.normal(k, shape))(jax.random.split(key, steps))


def epoch_plan(key: jax.Array, *, num_examples: int, batch_size: int,
               latent_dim: int) -> EpochPlan:
  """The shuffle (`epoch_batches`) from the first half of `key`, every step's eps [B, z]
  (`step_noise`) from the second."""
  perm_key, eps_key = jax.random.split(key)
  idx, weight = epoch_batches(perm_key, num_examples, batch_size)
  return EpochPlan(idx, weight, step_noise(eps_key, len(idx), (batch_size, latent_dim)))


def adam_step(state: TrainState, optimizer, loss_fn, *args) -> tuple[TrainState, Any]:
  """One step on `loss_fn(params, *args) -> (loss, aux)`: its gradient, Adam's update and
  the new parameters, in the caller's compiled program. Returns (state, aux)."""
  (_, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params, *args)
  updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
  return TrainState(optax.apply_updates(state.params, updates), opt_state), aux


def make_train_steps(model: VAE, optimizer, loss_fn=losses.batch_loss):
  """Returns `train_steps(state, images_u8, plan) -> (state, Metrics of [steps])`: the Adam
  steps of one epoch in the order `plan` gives, step s on `images_u8[plan.idx[s]] / 255`
  with noise `plan.eps[s]` and weights `plan.weight[s]`. The seam the PyTorch parity test
  drives with a plan of its own. `loss_fn` has `losses.batch_loss`'s signature (the
  gradient-flow study swaps in variants)."""

  def train_steps(state: TrainState, images_u8: jax.Array, plan: EpochPlan):
    def train_step(state: TrainState, step: EpochPlan):
      x = to_inputs(images_u8[step.idx])  # [B, 784]
      return adam_step(state, optimizer, loss_fn, model, x, step.eps, step.weight)

    return jax.lax.scan(train_step, state, plan)

  return train_steps


def make_train_epoch(model: VAE, optimizer, *, num_examples: int, batch_size: int,
                     loss_fn=losses.batch_loss):
  """Returns `train_epoch(state, images_u8, key) -> (state, Metrics)`, pure and jittable.

  images_u8: uint8 [num_examples, 784] on the device. The epoch draws its shuffle and
  every eps from `key` (`epoch_plan`) and runs its steps (`make_train_steps`); the
  Metrics are sums over the epoch of the training loss (sampled z), as the blog's
  `train_loss`.
  """
  train_steps = make_train_steps(model, optimizer, loss_fn)

  def train_epoch(state: TrainState, images_u8: jax.Array, key: jax.Array):
    plan = epoch_plan(key, num_examples=num_examples, batch_size=batch_size,
                      latent_dim=model.latent_dim)
    state, sums = train_steps(state, images_u8, plan)  # sums: Metrics of [steps]
    return state, Metrics(*(s.sum() for s in sums))

  return train_epoch


def make_evaluate(model: VAE, loss_fn=losses.batch_loss):
  """Returns `evaluate(params, images_u8) -> Metrics`: a whole split in eval mode.

  Eval mode is `loss_fn` with eps = 0: z = mu + sigma * 0 = mu exactly (the blog's
  `model.eval()`), for the blog's loss and for every variant alike.
  """

  def evaluate(params, images_u8: jax.Array) -> Metrics:
    x = to_inputs(images_u8)                      # [N, 784]
    eps = jnp.zeros((len(x), model.latent_dim))   # [N, z]: z = mu
    return loss_fn(params, model, x, eps, jnp.ones(len(x)))[1]

  return evaluate


class RunKeys(NamedTuple):
  init: jax.Array    # parameter initialisation
  train: jax.Array   # folded with the epoch number: that epoch's shuffle and eps
  sample: jax.Array  # the 64 prior samples of samples.png (the CVAE: the ten z of digits.png)


def run_keys(seed: int) -> RunKeys:
  return RunKeys(*jax.random.split(jax.random.PRNGKey(seed), 3))


def epoch_key(train_key: jax.Array, epoch) -> jax.Array:
  """The key of epoch `epoch` (1-based): independent of how many epochs run.

  A stack of train keys [S, 2] (stacked runs) gives the stack of their epoch keys.
  """
  if train_key.ndim > 1:
    return jax.vmap(jax.random.fold_in, in_axes=(0, None))(train_key, epoch)
  return jax.random.fold_in(train_key, epoch)


def epoch_row(epoch: int, train_sums: Metrics, test_sums: Metrics, n_train: int,
              n_test: int) -> dict:
  """One line of metrics.jsonl: the blog's losses per image (sums over a split / its size)."""
  return {"epoch": epoch,
          **{f"train_{k}": float(v) / n_train for k, v in train_sums._asdict().items()},
          **{f"test_{k}": float(v) / n_test for k, v in test_sums._asdict().items()}}


# --------------------------------------------------------------------------
# Setting up a run, and running its epochs.


class Programs(NamedTuple):
  """The two compiled programs of a run, for one config's shapes and one data size."""
  train_epoch: Callable  # (TrainState, x_train u8, key) -> (TrainState, Metrics of sums)
  evaluate: Callable     # (params, x_test u8) -> Metrics of sums


class Setup(NamedTuple):
  model: VAE
  optimizer: optax.GradientTransformation
  keys: RunKeys
  state: TrainState           # the initial state
  programs: Programs | None   # None when `setup` was given no data
  compile_s: float            # seconds spent compiling (0 when reused)


def num_train(config: Config, data: DeviceData | None) -> int:
  """The training images of a run: the data's, else MNIST's cut to `config.train_limit`."""
  return len(data.x_train) if data is not None else config.train_limit or SPLIT_SIZES["train"]


def setup(config: Config, data: DeviceData | None = None, *, loss_fn=losses.batch_loss,
          programs: Programs | None = None) -> Setup:
  """Everything one run of the blog's VAE needs, from `config` alone.

  The model, Adam, the keys `run_keys(config.seed)`, the initial state and, given `data`,
  the epoch and evaluation programs compiled ahead of time for its shapes. Pass
  `programs` from an earlier setup to reuse them: a program depends on the shapes only,
  and Adam's learning rate lives in the state, so runs that differ in seed or learning
  rate share one compilation. `loss_fn` (`losses.batch_loss`'s signature) replaces the
  blog's loss in training and evaluation (the gradient-flow study's variants).
  """
  if config.extensions():
    raise ValueError(f"train.setup trains the blog's VAE, and this config names "
                     f"{config.extensions()}: extensions/recipe.py sets it up")
  model, optimizer = VAE.from_config(config), make_optimizer(config)
  keys = run_keys(config.seed)
  state = create_state(model, optimizer, keys.init)
  t0 = time.perf_counter()
  if programs is None and data is not None:
    epoch = make_train_epoch(model, optimizer, num_examples=num_train(config, data),
                             batch_size=config.batch_size, loss_fn=loss_fn)
    programs = Programs(jax.jit(epoch).lower(state, data.x_train, keys.train).compile(),
                        jax.jit(make_evaluate(model, loss_fn)).lower(state.params,
                                                                     data.x_test).compile())
  return Setup(model, optimizer, keys, state, programs, time.perf_counter() - t0)


def run_epochs(run: Setup, data: DeviceData, epochs: int,
               state: TrainState | None = None, first: int = 1) -> Iterator[tuple]:
  """Yields `(epoch, state, train_sums, test_sums)` for epochs `first`..`epochs`.

  Dispatch only: the values are device arrays still being computed, so the
  caller decides when the host waits (read epoch e while e + 1 runs). A run
  resumed from the state after epoch k passes it with `first = k + 1`: every
  epoch's key depends on its number alone, so the epochs are the same.
  """
  state = run.state if state is None else state
  for epoch in range(first, epochs + 1):
    state, train_sums = run.programs.train_epoch(state, data.x_train,
                                                 epoch_key(run.keys.train, epoch))
    yield epoch, state, train_sums, run.programs.evaluate(state.params, data.x_test)


class Fit(NamedTuple):
  params: Any
  history: list      # one dict per epoch: epoch_row plus the on_epoch values
  state: TrainState  # the final state, Adam's moments too


def fit(run: Setup, data: DeviceData, epochs: int, on_epoch=None) -> Fit:
  """Trains `epochs` epochs; the host reads every metric once, at the end.

  `on_epoch(params) -> {name: scalar}` (jitted by the caller) adds values to each
  epoch's row, e.g. gradient norms.
  """
  per_epoch, state = [], run.state
  for epoch, state, train_sums, test_sums in run_epochs(run, data, epochs):
    extra = on_epoch(state.params) if on_epoch is not None else {}
    per_epoch.append((train_sums, test_sums, extra))
  n_train, n_test = len(data.x_train), len(data.x_test)
  history = [{**epoch_row(e, tm, em, n_train, n_test), **{k: float(v) for k, v in extra.items()}}
             for e, (tm, em, extra) in enumerate(jax.device_get(per_epoch), start=1)]
  return Fit(state.params, history, state)
