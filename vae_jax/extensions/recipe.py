"""The lesson with the extensions a config names: its model, Adam, data and programs.

`setup(config, data)` returns what the lesson's `train.setup` does (a `train.Setup`:
model, optimiser, keys, first state, compiled programs), for any config. For the blog's
(every extension field at its default) it *is* `train.setup`. Otherwise it composes, from
the lesson's pieces and each extension's module:

* the model: `cvae.CVAE`, `burda.BurdaVAE`, or the lesson's `VAE`;
* Adam with `adam_eps`, its rate `burda.learning_rate` of the epoch under `schedule` burda;
* each epoch's plan: the lesson's shuffle and noise (`train.epoch_batches`,
  `train.step_noise`), k samples an image for the IWAE objective, and a key a step for
  `binarize.bernoulli_pixels`;
* each step's loss: the lesson's `losses.batch_loss`, `beta.weighted_batch_loss` or
  `iwae.batch_loss`, of the model or of `cvae.WithLabels(model, the batch's labels)`,
  one Adam step (`train.adam_step`).

The CVAE's programs take the split's labels; `setup` binds them, so that every program
it returns is called as the lesson's are: `train_epoch(state, images, key)`,
`evaluate(params, images)`.
"""

from __future__ import annotations

import math
import time
from typing import NamedTuple

import jax
import optax

from vae_jax import data as mnist
from vae_jax import losses, train
from vae_jax.config import Config
from vae_jax.data import DeviceData, to_inputs
from vae_jax.extensions import beta, binarize, burda, cvae, iwae
from vae_jax.model import VAE

def is_blog(config: Config) -> bool:
  """Whether `config` names no extension: the lesson trains it as it is."""
  return not config.extensions()


def make_model(config: Config) -> VAE:
  cls = cvae.CVAE if config.model == "cvae" else burda.BurdaVAE if config.arch == "burda" else VAE
  return cls.from_config(config)


def steps_per_epoch(config: Config, num_examples: int) -> int:
  return max(1, math.ceil(num_examples / config.batch_size))


def make_optimizer(config: Config, steps_per_epoch: int) -> optax.GradientTransformation:
  """The lesson's Adam with `config.adam_eps`; under `schedule` burda its rate is
  `burda.learning_rate(rate, count // steps_per_epoch)` of Adam's step count, so that a
  resumed run continues the schedule where it stopped."""
  if config.schedule == "burda":
    base = config.learning_rate
    rate = lambda count: burda.learning_rate(base, count // steps_per_epoch)
  else:
    rate = config.learning_rate
  return optax.inject_hyperparams(optax.adam)(learning_rate=rate, eps=config.adam_eps)


def load_data(config: Config, *, with_train: bool = True, binarized: bool | None = None):
  """`data.load_device_data`, with the test set binarized once (`binarize.fixed_test_images`)
  when `binarized` (default: `config.binarize` dynamic)."""
  if binarized is None:
    binarized = config.binarize == "dynamic"
  return mnist.load_device_data(config, with_train=with_train,
                                test_images=binarize.fixed_test_images if binarized else None)


def labels(config: Config, split_labels) -> tuple:
  """The programs' arguments after the images: `(labels,)` for the CVAE, `()` otherwise."""
  return (split_labels,) if config.model == "cvae" else ()


def conditioned(model, labels: tuple):
  """The model a loss sees: the CVAE with its labels (`cvae.WithLabels`), or `model`."""
  return cvae.WithLabels(model, labels[0]) if labels else model


class StepPlan(NamedTuple):
  """The lesson's `train.EpochPlan`, with k samples of eps per image for the IWAE objective
  ([steps, B, k, z]) and each step's binarization key ([steps, 2]) when binarizing."""
  idx: jax.Array
  weight: jax.Array
  eps: jax.Array
  binarize: jax.Array | None


def epoch_plan(config: Config, key: jax.Array, num_examples: int, latent_dim: int) -> StepPlan:
  """The lesson's `epoch_plan`, `key` split in three when binarizing (the third half: the
  steps' binarization keys)."""
  bin_ = config.binarize == "dynamic"
  perm_key, eps_key, *bin_key = jax.random.split(key, 3 if bin_ else 2)
  idx, weight = train.epoch_batches(perm_key, num_examples, config.batch_size)
  shape = ((config.batch_size, config.k, latent_dim) if config.objective == "iwae"
           else (config.batch_size, latent_dim))
  return StepPlan(idx, weight, train.step_noise(eps_key, len(idx), shape),
                  jax.random.split(bin_key[0], len(idx)) if bin_ else None)


def functions(config: Config, model, optimizer, num_examples: int):
  """(`train_epoch(state, images_u8, key, *labels)`, `evaluate(params, images_u8, *labels)`),
  not compiled: the lesson's for the blog's config (app/multi.py vmaps them)."""
  if is_blog(config):
    return (train.make_train_epoch(model, optimizer, num_examples=num_examples,
                                   batch_size=config.batch_size), train.make_evaluate(model))
  weighted = beta.weighs_kl(config)
  loss_fn = (iwae.batch_loss if config.objective == "iwae" else
             beta.weighted_batch_loss if weighted else losses.batch_loss)
  spe = steps_per_epoch(config, num_examples)

  def train_epoch(state, images_u8, key, *labels):
    def train_step(state, step: StepPlan):
      x = to_inputs(images_u8[step.idx])                        # [B, 784]
      if step.binarize is not None:
        x = binarize.bernoulli_pixels(step.binarize, x)
      model_y = conditioned(model, tuple(y[step.idx] for y in labels))
      b = (beta.kl_weight(config.beta, config.kl_warmup_epochs, state.opt_state.count // spe),
           ) if weighted else ()
      return train.adam_step(state, optimizer, loss_fn, model_y, x, step.eps, step.weight, *b)

    plan = epoch_plan(config, key, num_examples, model.latent_dim)
    state, sums = jax.lax.scan(train_step, state, plan)
    return state, losses.Metrics(*(s.sum() for s in sums))

  return train_epoch, make_evaluate(config, model)


def make_evaluate(config: Config, model):
  """`evaluate(params, images_u8, *labels)`: the blog's loss at z = mu, whatever trained (the
  lesson's `train.make_evaluate`, of the CVAE with the split's labels)."""
  if config.model != "cvae":
    return train.make_evaluate(model)
  return lambda params, images_u8, labels: train.make_evaluate(cvae.WithLabels(model, labels))(
      params, images_u8)


def setup(config: Config, data: DeviceData | None = None, *, loss_fn=None,
          programs: train.Programs | None = None) -> train.Setup:
  """`train.setup` of any config (module docstring). `loss_fn` (the tests' NaN losses, the
  study's variants) replaces the blog's loss of a blog config."""
  if is_blog(config):
    return train.setup(config, data, loss_fn=loss_fn or losses.batch_loss, programs=programs)
  if loss_fn is not None:
    raise ValueError("a loss_fn replaces the blog's loss, and this config names extensions")
  n = train.num_train(config, data)
  model, optimizer = make_model(config), make_optimizer(config, steps_per_epoch(config, n))
  keys = train.run_keys(config.seed)
  state = train.create_state(model, optimizer, keys.init)
  t0 = time.perf_counter()
  if programs is None and data is not None:
    epoch, evaluate = functions(config, model, optimizer, n)
    y_train, y_test = labels(config, data.y_train), labels(config, data.y_test)
    epoch = jax.jit(epoch).lower(state, data.x_train, keys.train, *y_train).compile()
    evaluate = jax.jit(evaluate).lower(state.params, data.x_test, *y_test).compile()
    programs = bound(epoch, evaluate, y_train, y_test)
  return train.Setup(model, optimizer, keys, state, programs, time.perf_counter() - t0)


def bound(train_epoch, evaluate, y_train: tuple, y_test: tuple) -> train.Programs:
  """Compiled programs called as the lesson's are: the CVAE's with its split's labels bound."""
  if not y_train:
    return train.Programs(train_epoch, evaluate)
  return train.Programs(lambda state, x, key: train_epoch(state, x, key, *y_train),
                        lambda params, x: evaluate(params, x, *y_test))


def decode_means(model, params, z, *labels) -> jax.Array:
  """sigmoid(decoder(z)): the Bernoulli means the figures draw. z [N, z] -> [N, 784]."""
  return jax.nn.sigmoid(conditioned(model, labels).apply({"params": params}, z, method="decode"))


def encode_mean(model, params, images_u8, *labels) -> jax.Array:
  """mu(x) of uint8 images [N, 784] (eval mode's z): [N, z]."""
  return conditioned(model, labels).apply({"params": params}, to_inputs(images_u8),
                                          method="encode")[0]

