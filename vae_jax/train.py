"""Training and evaluation, fast by construction: the library every path calls.

* The data sit on the device once, as uint8 [N, 784] (`data.load_device_data`);
  batches are gathered and scaled (`/ 255`) inside the compiled code.
* One epoch (shuffle + every Adam step) is one compiled call: a `lax.scan` over
  the batches. The last, partial batch of the blog's DataLoader is kept: it is
  padded to full size with zero-weight examples, and because the loss is a
  *sum* over the batch, padding changes neither the loss nor the gradient.
* Evaluation of a whole split is one compiled call (eval mode: z = mu).
* `setup(config, data)` builds a run (model, Adam, keys, initial state) and
  compiles both programs ahead of time, once; `run_epochs` / `fit` only dispatch
  them. The single run (`run.py`), the benchmark, stacked runs, the
  gradient-flow study and the tests all start from `setup`.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any, Callable, Iterator, NamedTuple

import jax
import jax.numpy as jnp
import optax

from vae_jax import losses
from vae_jax.config import BURDA_STAGES, Config
from vae_jax.data import SPLIT_SIZES, DeviceData, to_inputs
from vae_jax.losses import Metrics
from vae_jax.model import VAE, init_params, make_model


def enable_compile_cache(directory) -> Path:
  """Keeps every compiled program in `directory` (JAX's persistent compilation cache).

  A second process with the same shapes, config and JAX version then loads the
  epoch and evaluation programs instead of compiling them again, and also the forty-odd
  small programs of the eager operations around them (figures, checkpoints), each of
  which compiles in a few hundredths of a second: together about 1.4 s of a warm
  one-epoch `train` on our 2-core AMD EPYC (12.8 s -> 11.4 s). The CLI puts the cache
  beside the MNIST cache (`data.compile_cache_dir`) unless --no-compile-cache.
  """
  directory = Path(directory)
  jax.config.update("jax_compilation_cache_dir", str(directory))
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
  jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
  return directory


class TrainState(NamedTuple):
  params: Any     # {"fc1": {"kernel": [784, 512], "bias": [512]}, ...}
  opt_state: Any  # Adam's moments, step count and learning rate


def make_optimizer(config: Config, steps_per_epoch: int = 1) -> optax.GradientTransformation:
  """Adam with the learning rate kept in the optimiser state, so runs can vmap over it.

  torch.optim.Adam defaults: betas (0.9, 0.999), eps 1e-8, the same as Optax's; `config.adam_eps`
  sets eps (Burda et al.: 1e-4). `--schedule burda` makes the rate a function of Adam's step
  count, `burda_learning_rate(config.learning_rate, count // steps_per_epoch)`, so a resumed
  run continues the schedule where it stopped.
  """
  if config.schedule == "burda":
    base = config.learning_rate
    rate = lambda count: burda_learning_rate(base, count // steps_per_epoch)
  else:
    rate = config.learning_rate
  return optax.inject_hyperparams(optax.adam)(learning_rate=rate, eps=config.adam_eps)


def burda_learning_rate(base: float, epoch_index):
  """Burda et al.'s schedule: epochs sum_{j<i} 3^j + 1 .. sum_{j<=i} 3^j (1-based) of stage
  i = 0..7 train at base * 10^(-i/7). epoch_index: 0-based (int or int array) -> rate."""
  starts = jnp.array([(3**i - 1) // 2 for i in range(1, BURDA_STAGES)])  # 1, 4, 13, ..., 1093
  stage = jnp.sum(jnp.asarray(epoch_index)[..., None] >= starts, axis=-1)
  return base * 10.0 ** (-stage / 7.0)


def steps_per_epoch(config: Config, num_examples: int | None = None) -> int:
  """Adam steps in one epoch: ceil(N / batch); N the training images (default: MNIST's 60,000
  cut to config.train_limit)."""
  if num_examples is None:
    num_examples = config.train_limit or SPLIT_SIZES["train"]
  return max(1, math.ceil(num_examples / config.batch_size))


# One compiled program instead of a hundred eager operations (each compiled on its own on a
# GPU); the model is a static argument, so runs of one config share it. Bit for bit the
# eager values (checked on this project's CPUs).
_init_params = jax.jit(init_params, static_argnums=0)


def create_state(model: VAE, optimizer, key: jax.Array) -> TrainState:
  """Initial parameters from `key` and the optimiser's state."""
  params = _init_params(model, key)
  return TrainState(params, optimizer.init(params))


class EpochPlan(NamedTuple):
  """Everything random in one epoch: which examples each step sees, and its noise."""
  idx: jax.Array     # int32 [steps, B]: example indices (padding rows point at example 0)
  weight: jax.Array  # float32 [steps, B]: 1 for a real example, 0 for padding
  eps: jax.Array     # float32 [steps, B, z] (or [steps, B, k, z]: k samples per image)
  binarize: jax.Array | None = None  # [steps, 2] keys of each step's Bernoulli pixels, or None


def epoch_plan(key: jax.Array, *, num_examples: int, batch_size: int, latent_dim: int,
               samples: int | None = None, binarize: bool = False) -> EpochPlan:
  """The blog's DataLoader(shuffle=True) order and every step's eps, from one key.

  The examples are taken in the order of `jax.random.permutation` of the first
  half of `key`, `batch_size` at a time; the last, partial batch is padded with
  weight-0 rows. Step s draws its eps from the s-th of `steps` keys split from
  the second half: [B, z], or [B, samples, z] when `samples` is given (the IWAE
  objective). `binarize` splits `key` in three instead: the third half gives
  each step the key of its binarized pixels.
  """
  steps = math.ceil(num_examples / batch_size)
  padded = steps * batch_size
  perm_key, eps_key, *bin_key = jax.random.split(key, 3 if binarize else 2)
  perm = jax.random.permutation(perm_key, num_examples)              # [N]
  idx = jnp.zeros(padded, perm.dtype).at[:num_examples].set(perm)    # [steps * B]
  weight = (jnp.arange(padded) < num_examples).astype(jnp.float32)   # [steps * B]
  shape = (batch_size, latent_dim) if samples is None else (batch_size, samples, latent_dim)
  eps = jax.vmap(lambda k: jax.random.normal(k, shape))(
      jax.random.split(eps_key, steps))                               # [steps, B, (k,) z]
  return EpochPlan(idx.reshape(steps, batch_size), weight.reshape(steps, batch_size), eps,
                   jax.random.split(bin_key[0], steps) if binarize else None)


def binarize_batch(key: jax.Array, x: jax.Array) -> jax.Array:
  """Dynamic binarization: each pixel ~ Bernoulli(x), drawn afresh. [B, 784] -> 0. / 1."""
  return jax.random.bernoulli(key, x).astype(x.dtype)


def kl_weight_schedule(config: Config, steps_per_epoch: int):
  """`weight(count)`: the KL's weight at Adam step `count` (0-based, from the optimiser's
  state), `config.kl_weight` of its epoch, count // steps_per_epoch + 1; so a resumed run
  continues the warm-up where it stopped. None for the blog's ELBO (beta 1, no warm-up)."""
  if not config.weights_kl:
    return None
  beta, n = float(config.beta), config.kl_warmup_epochs

  def weight(count):
    if not n:
      return jnp.float32(beta)
    return beta * jnp.minimum(1.0, (count // steps_per_epoch) / n)

  return weight


def make_train_steps(model: VAE, optimizer, loss_fn=losses.batch_loss, unroll: int = 1,
                     kl_weight=None):
  """Returns `train_steps(state, images_u8, plan) -> (state, Metrics of [steps])`.

  The Adam steps of one epoch, in the order `plan` gives: step s trains on
  `images_u8[plan.idx[s]] / 255` (binarized with `plan.binarize[s]` when the
  plan has those keys) with noise `plan.eps[s]` and weights `plan.weight[s]`, and
  returns that step's sums. This is the seam the PyTorch
  parity test drives with a plan of its own; `make_train_epoch` calls it with
  `epoch_plan(key)`. `unroll` steps run per iteration of the compiled loop
  (`lax.scan(unroll=...)`): the same steps in the same order, fewer loop iterations.
  `kl_weight(count)` (`kl_weight_schedule`), when given, weighs the KL of each step's
  objective; the returned sums stay the true loss. `labels` (int [N], the CVAE's) gives
  each step the labels of its images, `labels[plan.idx[s]]`.
  """
  grad_fn = jax.value_and_grad(loss_fn, has_aux=True)

  def train_steps(state: TrainState, images_u8: jax.Array, plan: EpochPlan,
                  labels: jax.Array | None = None):
    def train_step(state: TrainState, batch):
      idx, weight, eps, bin_key = batch                           # [B], [B], [B, (k,) z]
      x = to_inputs(images_u8[idx])                               # [B, 784]
      if bin_key is not None:
        x = binarize_batch(bin_key, x)
      extra = {} if kl_weight is None else {"kl_weight": kl_weight(state.opt_state.count)}
      if labels is not None:
        extra["y"] = labels[idx]                                  # [B]: the CVAE's condition
      (_, sums), grads = grad_fn(state.params, model, x, eps, weight, **extra)
      updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
      return TrainState(optax.apply_updates(state.params, updates), opt_state), sums

    return jax.lax.scan(train_step, state, tuple(plan), unroll=unroll)

  return train_steps


def make_train_epoch(model: VAE, optimizer, *, num_examples: int, batch_size: int,
                     loss_fn=losses.batch_loss, samples: int | None = None,
                     binarize: bool = False, unroll: int = 1, kl_weight=None):
  """Returns `train_epoch(state, images_u8, key[, labels]) -> (state, Metrics)`, pure and
  jittable (the labels: the CVAE's, int [num_examples]).

  images_u8: uint8 [num_examples, 784] on the device. The epoch draws its
  shuffle and every eps from `key` (`epoch_plan`) and runs its steps
  (`make_train_steps`); Metrics are sums over the epoch of the training-mode
  loss (sampled z), as the blog's `train_loss`. `loss_fn` has
  `losses.batch_loss`'s signature (the gradient-flow study swaps in variants);
  `samples` and `binarize` go to `epoch_plan` (the IWAE objective's k, `--binarize dynamic`);
  `unroll` and `kl_weight` to `make_train_steps`.
  """
  train_steps = make_train_steps(model, optimizer, loss_fn, unroll, kl_weight)

  def train_epoch(state: TrainState, images_u8: jax.Array, key: jax.Array,
                  labels: jax.Array | None = None):
    plan = epoch_plan(key, num_examples=num_examples, batch_size=batch_size,
                      latent_dim=model.latent_dim, samples=samples, binarize=binarize)
    state, sums = train_steps(state, images_u8, plan, labels)  # sums: Metrics of [steps]
    return state, Metrics(*(s.sum() for s in sums))

  return train_epoch


def make_evaluate(model: VAE, loss_fn=losses.batch_loss):
  """Returns `evaluate(params, images_u8[, labels]) -> Metrics`: a whole split in eval mode.

  Eval mode is `loss_fn` with eps = 0: z = mu + sigma * 0 = mu exactly (the
  blog's `model.eval()`), for the blog's loss and for every variant alike. The CVAE
  is scored on the labels of the split (int [N]).
  """

  def evaluate(params, images_u8: jax.Array, labels: jax.Array | None = None) -> Metrics:
    x = to_inputs(images_u8)                           # [N, 784]
    eps = jnp.zeros((len(x), model.latent_dim))        # [N, z]: z = mu
    extra = {} if labels is None else {"y": labels}
    return loss_fn(params, model, x, eps, jnp.ones(len(x)), **extra)[1]

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


def epoch_options(config: Config, loss_fn=None, num_examples: int | None = None) -> dict:
  """`make_train_epoch`'s options for `config`: batch size, objective (unless `loss_fn`),
  samples per image, binarization and the KL's weight (`num_examples` training images)."""
  return dict(batch_size=config.batch_size, loss_fn=loss_fn or losses.training_loss(config),
              samples=config.k if config.objective == "iwae" else None,
              binarize=config.binarize == "dynamic",
              kl_weight=kl_weight_schedule(config, steps_per_epoch(config, num_examples)))


class Programs(NamedTuple):
  """The two compiled programs of a run, for one config's shapes and one data size.
  The CVAE's take the split's labels last (`labels_of`)."""
  train_epoch: Callable  # (TrainState, x_train u8, key[, y_train]) -> (TrainState, Metrics)
  evaluate: Callable     # (params, x_test u8[, y_test]) -> Metrics of sums


def labels_of(model: VAE, labels) -> tuple:
  """The extra arguments of a run's programs: `(labels,)` for the CVAE, `()` for the VAE."""
  return (labels,) if model.conditional else ()


class Setup(NamedTuple):
  model: VAE
  optimizer: optax.GradientTransformation
  keys: RunKeys
  state: TrainState           # the initial state
  programs: Programs | None   # None when `setup` was given no data
  compile_s: float            # seconds spent compiling (0 when reused)


def setup(config: Config, data: DeviceData | None = None, *, loss_fn=None,
          programs: Programs | None = None) -> Setup:
  """Everything one run needs, from `config` alone: its seed, learning rate and sizes.

  The model, Adam, the keys `run_keys(config.seed)`, the initial state and, given
  `data`, the epoch and evaluation programs compiled ahead of time for its shapes.
  Pass `programs` from an earlier setup to reuse them: a program depends on the
  shapes only, and Adam's learning rate lives in the state, so runs that differ
  in seed or learning rate share one compilation.

  Training maximises `config.objective` (`losses.training_loss`) unless `loss_fn`
  is given; evaluation scores the blog's loss at z = mu (or `loss_fn`, when given).
  """
  n_train = None if data is None else len(data.x_train)
  model = make_model(config)
  optimizer = make_optimizer(config, steps_per_epoch(config, n_train))
  keys = run_keys(config.seed)
  state = create_state(model, optimizer, keys.init)
  t0 = time.perf_counter()
  if programs is None and data is not None:
    epoch = make_train_epoch(model, optimizer, num_examples=n_train,
                             **epoch_options(config, loss_fn, n_train))
    programs = Programs(
        jax.jit(epoch).lower(state, data.x_train, keys.train,
                             *labels_of(model, data.y_train)).compile(),
        jax.jit(make_evaluate(model, loss_fn or losses.batch_loss)).lower(
            state.params, data.x_test, *labels_of(model, data.y_test)).compile())
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
  y_train, y_test = labels_of(run.model, data.y_train), labels_of(run.model, data.y_test)
  for epoch in range(first, epochs + 1):
    state, train_sums = run.programs.train_epoch(state, data.x_train,
                                                 epoch_key(run.keys.train, epoch), *y_train)
    yield epoch, state, train_sums, run.programs.evaluate(state.params, data.x_test, *y_test)


class Fit(NamedTuple):
  params: Any
  history: list  # one dict per epoch: epoch_row plus the on_epoch values
  state: TrainState | None = None  # the final state, Adam's moments too


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
