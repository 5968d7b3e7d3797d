"""Training and evaluation, fast by construction.

* The data goes to the device once, as uint8 [N, 784]; batches are gathered and
  scaled (`/ 255`) inside the compiled code.
* One epoch (shuffle + every Adam step) is one compiled call: a `lax.scan` over
  the batches. The last, partial batch of the blog's DataLoader is kept: it is
  padded to full size with zero-weight examples, and because the loss is a
  *sum* over the batch, padding changes neither the loss nor the gradient.
* Evaluation of a whole split is one compiled call (eval mode: z = mu).
* Both are compiled ahead of time, once; the epoch loop only dispatches. The
  host reads an epoch's metrics while the next epoch already runs, so the
  device never waits for the progress bar.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
import tqdm.auto as tqdm

from vae_jax import losses
from vae_jax.config import Config
from vae_jax.model import VAE, init_params, make_model


class TrainState(NamedTuple):
  params: Any     # {"fc1": {"kernel": [784, 512], "bias": [512]}, ...}
  opt_state: Any  # Adam's moments and step count


class Metrics(NamedTuple):
  """Sums over a split (divide by its size for the blog's "loss per image")."""
  recon: jax.Array
  kl: jax.Array
  loss: jax.Array


def to_inputs(images_u8: jax.Array) -> jax.Array:
  """uint8 [..., 784] -> float32 in [0, 1]: the blog's `transforms.ToTensor()`."""
  return images_u8.astype(jnp.float32) / 255.0


def flatten(images) -> jax.Array:
  """[N, 28, 28] -> [N, 784], still uint8."""
  return jnp.asarray(images).reshape(len(images), -1)


def make_optimizer(config: Config) -> optax.GradientTransformation:
  """Adam with the learning rate kept in the optimiser state, so runs can vmap over it.

  torch.optim.Adam defaults: betas (0.9, 0.999), eps 1e-8, the same as Optax's.
  """
  return optax.inject_hyperparams(optax.adam)(learning_rate=config.learning_rate)


def create_state(model: VAE, optimizer, key: jax.Array,
                 learning_rate: float | None = None) -> TrainState:
  """Initial parameters from `key` and the optimiser's state; optionally another rate."""
  params = init_params(model, key)
  opt_state = optimizer.init(params)
  if learning_rate is not None:  # Adam's rate lives in its state (see make_optimizer)
    opt_state = opt_state._replace(hyperparams={
        **opt_state.hyperparams, "learning_rate": jnp.asarray(learning_rate, jnp.float32)})
  return TrainState(params, opt_state)


def epoch_row(epoch: int, train_sums: Metrics, test_sums: Metrics, n_train: int,
              n_test: int) -> dict:
  """One line of metrics.jsonl: the blog's losses per image (sums over a split / its size)."""
  return {"epoch": epoch,
          **{f"train_{k}": float(v) / n_train for k, v in train_sums._asdict().items()},
          **{f"test_{k}": float(v) / n_test for k, v in test_sums._asdict().items()}}


def batch_loss(params, model: VAE, x, eps, weight):
  """Sum over the batch of weight * (recon + kl), like `size_average=False`.

  x: [B, 784] in [0, 1]; eps: [B, z]; weight: [B] (1 real example, 0 padding).
  Returns (loss, Metrics of the batch sums).
  """
  out = model.apply({"params": params}, x, eps)
  terms = losses.vae_loss(out.logits, x, out.mu, out.logvar)  # each [B]
  sums = Metrics(*(jnp.sum(weight * t) for t in terms))
  return sums.loss, sums


def make_train_epoch(model: VAE, optimizer, *, num_examples: int, batch_size: int,
                     loss_fn=batch_loss):
  """Returns `train_epoch(state, images_u8, key) -> (state, Metrics)`, pure and jittable.

  images_u8: uint8 [num_examples, 784] on the device. The epoch draws its
  shuffle and every eps from `key`; Metrics are sums over the epoch of the
  training-mode loss (sampled z), as the blog's `train_loss`. `loss_fn` has
  `batch_loss`'s signature (the gradient-flow study swaps in variants).
  """
  steps = math.ceil(num_examples / batch_size)
  padded = steps * batch_size
  grad_fn = jax.value_and_grad(loss_fn, has_aux=True)

  def train_epoch(state: TrainState, images_u8: jax.Array, key: jax.Array):
    perm_key, eps_key = jax.random.split(key)
    perm = jax.random.permutation(perm_key, num_examples)              # [N]
    idx = jnp.zeros(padded, perm.dtype).at[:num_examples].set(perm)    # [steps * B]
    weight = (jnp.arange(padded) < num_examples).astype(jnp.float32)   # [steps * B]

    def train_step(state: TrainState, batch):
      idx, weight, key = batch                                      # [B], [B], key
      x = to_inputs(images_u8[idx])                                 # [B, 784]
      eps = jax.random.normal(key, (batch_size, model.latent_dim))  # [B, z]
      (_, sums), grads = grad_fn(state.params, model, x, eps, weight)
      updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
      return TrainState(optax.apply_updates(state.params, updates), opt_state), sums

    batches = (idx.reshape(steps, batch_size), weight.reshape(steps, batch_size),
               jax.random.split(eps_key, steps))
    state, sums = jax.lax.scan(train_step, state, batches)  # sums: Metrics of [steps]
    return state, Metrics(*(s.sum() for s in sums))

  return train_epoch


def make_evaluate(model: VAE, loss_fn=None):
  """Returns `evaluate(params, images_u8) -> Metrics`: eval mode (z = mu), whole split.

  With a `loss_fn` of `batch_loss`'s signature, evaluates it with eps = 0.
  """

  def evaluate(params, images_u8: jax.Array) -> Metrics:
    x = to_inputs(images_u8)                       # [N, 784]
    if loss_fn is not None:
      eps = jnp.zeros((len(x), model.latent_dim))
      return loss_fn(params, model, x, eps, jnp.ones(len(x)))[1]
    out = model.apply({"params": params}, x)       # eps=None: z = mu, as model.eval()
    terms = losses.vae_loss(out.logits, x, out.mu, out.logvar)
    return Metrics(*(t.sum() for t in terms))

  return evaluate


class RunKeys(NamedTuple):
  init: jax.Array    # parameter initialisation
  train: jax.Array   # folded with the epoch number: that epoch's shuffle and eps
  sample: jax.Array  # the 64 prior samples of samples.png


def run_keys(seed: int) -> RunKeys:
  return RunKeys(*jax.random.split(jax.random.PRNGKey(seed), 3))


def epoch_key(train_key: jax.Array, epoch) -> jax.Array:
  """The key of epoch `epoch` (1-based): independent of how many epochs run."""
  return jax.random.fold_in(train_key, epoch)


# --------------------------------------------------------------------------
# One training run: the blog's experiment and every artifact it writes.

RESULT_FILES = ("config.json", "metrics.jsonl", "loss_list.npy", "test_loss_list.npy",
                "learning_curves.png", "latent.png", "samples.png", "params.msgpack")


class RunResult(NamedTuple):
  params: Any
  history: list  # one dict per epoch, as written to metrics.jsonl
  compile_s: float


def check_workdir(workdir, overwrite: bool) -> list[Path]:
  """Refuses (one line, before any work) to write over an earlier run's results.

  Returns the earlier results that `overwrite` allows replacing; the caller
  deletes them only once the new run's data have loaded.
  """
  workdir = Path(workdir)
  if workdir.exists() and not workdir.is_dir():
    raise FileExistsError(f"--workdir {workdir} is a file: choose a directory")
  old = sorted(p for p in workdir.glob("*") if p.name in RESULT_FILES
               or p.name.startswith("reconstruction_")) if workdir.exists() else []
  if old and not overwrite:
    raise FileExistsError(f"{workdir} already holds results ({', '.join(p.name for p in old[:3])}"
                          f", ...): choose another --workdir or pass --overwrite")
  return old


def grid_epochs(config: Config) -> set[int]:
  """Epochs that get a reconstruction grid: 1, every `recon_every`-th, and the last."""
  return {1, config.epochs} | set(range(config.recon_every, config.epochs + 1, config.recon_every))


def train_and_evaluate(config: Config, workdir, *, overwrite: bool = False,
                       progress: bool = True) -> RunResult:
  """Trains the VAE of `config` and writes every artifact into `workdir`."""
  old_results = check_workdir(workdir, overwrite)  # before loading data or compiling
  from vae_jax import checkpoint, data, plots  # plots pulls in matplotlib: import late

  train_split = data.load_mnist("train", source=config.data_source, data_dir=config.data_dir)
  test_split = data.load_mnist("test", source=config.data_source, data_dir=config.data_dir)
  train_split = data.Split(*(a[:config.train_limit] for a in train_split))
  test_split = data.Split(*(a[:config.test_limit] for a in test_split))
  n_train, n_test = len(train_split.labels), len(test_split.labels)
  for path in old_results:  # --overwrite, and the data are good: now replace them
    path.unlink()
  workdir = Path(workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  (workdir / "config.json").write_text(config.to_json() + "\n")

  # Data to the device, once, as uint8.
  x_train = jax.device_put(flatten(train_split.images))  # uint8 [60000, 784]
  x_test = jax.device_put(flatten(test_split.images))    # uint8 [10000, 784]
  x_show = to_inputs(x_test[:8])                         # the 8 images of every grid

  model, optimizer = make_model(config), make_optimizer(config)
  keys = run_keys(config.seed)
  state = create_state(model, optimizer, keys.init)

  # Compile once, ahead of time: the loop below can only call these.
  t0 = time.perf_counter()
  train_epoch = jax.jit(make_train_epoch(model, optimizer, num_examples=n_train,
                                         batch_size=config.batch_size)
                        ).lower(state, x_train, keys.train).compile()
  evaluate = jax.jit(make_evaluate(model)).lower(state.params, x_test).compile()
  reconstruct = jax.jit(lambda p, x: jax.nn.sigmoid(model.apply({"params": p}, x).logits)
                        ).lower(state.params, x_show).compile()
  compile_s = time.perf_counter() - t0

  history, pending, grids = [], [], grid_epochs(config)
  bar = tqdm.tqdm(total=config.epochs, desc=f"z={config.latent_dim}", unit="epoch",
                  disable=not progress)
  t_last = time.perf_counter()

  def record(epoch, train_m, test_m, recon):
    """Reads one finished epoch (a host sync on *that* epoch only) and writes its grid."""
    nonlocal t_last
    train_m, test_m, recon = jax.device_get((train_m, test_m, recon))
    now = time.perf_counter()
    row = {**epoch_row(epoch, train_m, test_m, n_train, n_test), "seconds": now - t_last}
    t_last = now
    history.append(row)
    if recon is not None:
      plots.save_reconstructions(np.asarray(x_show), recon, workdir / f"reconstruction_{epoch}.png")
    bar.set_postfix(loss=f"{row['train_loss']:.2f}", test=f"{row['test_loss']:.2f}", refresh=False)
    bar.update(1)

  for epoch in range(1, config.epochs + 1):
    state, train_m = train_epoch(state, x_train, epoch_key(keys.train, epoch))  # dispatch only
    test_m = evaluate(state.params, x_test)
    recon = reconstruct(state.params, x_show) if epoch in grids else None
    pending.append((epoch, train_m, test_m, recon))
    if len(pending) == 2:  # read the previous epoch while this one runs
      record(*pending.pop(0))
  for item in pending:
    record(*item)
  bar.close()

  # Artifacts, as the blog's plus ours.
  with open(workdir / "metrics.jsonl", "w") as f:
    f.writelines(json.dumps(row) + "\n" for row in history)
  np.save(workdir / "loss_list.npy", np.array([h["train_loss"] for h in history]))
  np.save(workdir / "test_loss_list.npy", np.array([h["test_loss"] for h in history]))
  plots.save_learning_curves(history, workdir / "learning_curves.png",
                             title=f"z = {config.latent_dim}: negative ELBO per image")
  mu, _ = jax.jit(lambda p, x: model.apply({"params": p}, to_inputs(x), method=VAE.encode)
                  )(state.params, x_test)
  plots.save_latent_map(np.asarray(mu), test_split.labels, workdir / "latent.png")
  z = jax.random.normal(keys.sample, (64, config.latent_dim))  # z ~ p(z) = N(0, I)
  samples = jax.nn.sigmoid(model.apply({"params": state.params}, z, method=VAE.decode))
  plots.save_grid(np.asarray(samples), workdir / "samples.png", nrow=8)
  checkpoint.save_params(state.params, workdir / "params.msgpack")

  last = history[-1]
  print(f"z={config.latent_dim}: {config.epochs} epochs, train loss {last['train_loss']:.2f}, "
        f"test loss {last['test_loss']:.2f} (recon {last['test_recon']:.2f} + KL "
        f"{last['test_kl']:.2f}), {sum(h['seconds'] for h in history):.1f} s "
        f"+ {compile_s:.1f} s compile -> {workdir}")
  return RunResult(state.params, history, compile_s)
