"""One training run: the blog's experiment, every artifact it writes, and a run that survives.

  vae-jax train --workdir runs/vae_2                   # z = 2, 100 epochs: the blog's run
  vae-jax train --workdir runs/vae_2 --resume          # go on after a crash, a kill or Ctrl-C

`train_and_evaluate(config, workdir)` checks the run directory (`rundir.plan_run`),
loads the data, takes the directory's lock, writes `config.json`, sets up the run
(`recipe.setup`: the lesson's `train.setup` for the blog's config) and trains while the
host reads each finished epoch behind the device. As it goes it writes

  metrics.jsonl                     each epoch's row, as soon as the epoch is read
  reconstruction_{1,10,...}.png     the blog's grids
  checkpoints/epoch_NNNN.msgpack    at most one a second of training, and the last (two kept)

and when training ends, the weights first and the figures after them:

  params.msgpack, loss_list.npy, test_loss_list.npy,
  learning_curves.png, samples.png, latent.png, manifold.png, interpolation.png,
  kl_per_dim.png (z > 2); the CVAE (`--model cvae`) writes digits.png in place of
  samples.png, manifold.png and interpolation.png

What survives what:
* a kill at any moment (SIGKILL, power loss): every file but metrics.jsonl is written
  whole or not at all (`files.atomic_write`); metrics.jsonl is appended a row at a
  time. `--resume` rewrites metrics.jsonl from the last checkpoint, trains on, redraws
  the figures and ends with the same numbers, bit for bit, as a run never stopped
  (each epoch's key depends on its number alone). A kill loses the epochs since the
  last checkpoint and the one in flight: about a second of training by default
  (`checkpoint_seconds`; one epoch where an epoch is longer), or fewer than
  `checkpoint_every` epochs when that is given;
* Ctrl-C: the epoch in flight finishes and is checkpointed; exit code 130;
* a loss or parameter that is no longer finite: the run stops after that epoch,
  with a checkpoint of the epoch before it (the last finite one); exit code 3;
* a write that fails (a full disk, a folder made read-only): one line names the file,
  the checkpoint kept and the command that goes on; no temporary file is left; exit 1;
* a figure that fails: one line, and the run goes on;
* `--overwrite`, a user's own files, a second process: `rundir.py`.
"""

from __future__ import annotations

import json
import math
import shlex
import shutil
import sys
import time
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import tqdm.auto as tqdm

from vae_jax import train
from vae_jax.app import checkpoint, interrupt, plots, rundir
from vae_jax.app.files import atomic_write
from vae_jax.config import Config
from vae_jax.data import to_inputs
from vae_jax.extensions import beta, latent, recipe
from vae_jax.extensions.likelihood import ACTIVE_THRESHOLD, latent_statistics

# Not a hyper-parameter (it changes no number): a run writes a checkpoint at most once per
# this many seconds of training by default. A save costs about 26 ms inside a run on 2 cores
# of an AMD EPYC (9.7 MB at z = 2; 2.61 s for 100, results/train_phases_amd.txt): one a
# second keeps that near 2% of training when epochs are short (a GPU's 20 to 50 ms), while
# each CPU epoch of the blog's run (about 2 s) still gets its own.
CHECKPOINT_SECONDS = 1.0

_clock = time.perf_counter  # the host clock of the rows' seconds and of the checkpoints


class RunResult(NamedTuple):
  params: Any
  history: list  # one dict per epoch, as written to metrics.jsonl
  compile_s: float


class RunStopped(Exception):
  """Training stopped before its end, with what was finished kept on disk. `exit_code`: 1 a
  write failed, 3 the loss or a parameter went non-finite, 130 Ctrl-C."""

  def __init__(self, message: str, exit_code: int):
    super().__init__(message)
    self.exit_code = exit_code


def grid_epochs(config: Config) -> set[int]:
  """Epochs that get a reconstruction grid: 1, every `recon_every`-th, and the last."""
  return {1, config.epochs} | set(range(config.recon_every, config.epochs + 1, config.recon_every))


def first_non_finite(row: dict) -> str | None:
  """The first metric of a metrics.jsonl row that is not finite (a list: any entry), else None."""
  return next((k for k, v in row.items() if k != "epoch" and not all(
      math.isfinite(x) for x in (v if isinstance(v, list) else [v]))), None)


def metrics_row(config: Config, row: dict, stats=None) -> dict:
  """A line of metrics.jsonl from `train.epoch_row` and its seconds: under a weighted KL, the
  weight and each split's objective; with `stats` (the test set's KL per latent dimension
  and Var(mu), `latent_statistics`), those and the active units."""
  if beta.weighs_kl(config):
    row = beta.objective_row(config, row)
  if stats is not None:
    kl_per_dim, mu_var = stats
    row = {**row, "test_kl_per_dim": [float(v) for v in kl_per_dim],
           "active_units": int((mu_var > ACTIVE_THRESHOLD).sum())}
  return row


def read_metrics(run_dir) -> list[dict]:
  """A run's metrics.jsonl: one dict per epoch ([] when there is none)."""
  path = Path(run_dir) / "metrics.jsonl"
  return [json.loads(line) for line in path.read_text().splitlines() if line.strip()
          ] if path.is_file() else []


def _draw(name: str, draw, path: Path) -> None:
  """Draws one figure; a failure is one line, not the end of the run."""
  try:
    draw(path)
  except Exception as e:  # the weights and metrics are saved: a figure is not worth them
    print(f"vae-jax: warning: could not draw {name} ({type(e).__name__}: {e}); the weights "
          f"and metrics are saved", file=sys.stderr)


BEFORE_FIRST_EPOCH = ("interrupted before the first epoch: nothing was trained; run the same "
                      "command again")


def train_and_evaluate(config: Config, workdir, *, overwrite: bool = False, resume: bool = False,
                       checkpoint_every: int | None = None,
                       checkpoint_seconds: float = CHECKPOINT_SECONDS, progress: bool = True,
                       loss_fn=None, program: str = "vae-jax") -> RunResult:
  """Trains the model of `config` and writes every artifact into `workdir`.

  A checkpoint follows the first epoch that ends `checkpoint_seconds` or more of host time
  after the last one (or the start; 0: every epoch), or, given `checkpoint_every`, every
  `checkpoint_every`-th epoch; and always the last epoch, and the last before a Ctrl-C.
  `loss_fn` (`losses.batch_loss`'s signature) replaces the blog's loss; the tests swap in
  one known to go NaN. `program`: how the user runs this program, in the command a stopped
  run says goes on.
  """
  if checkpoint_every is not None and checkpoint_every < 1:
    raise ValueError(f"--checkpoint-every must be >= 1, got {checkpoint_every}")
  if not checkpoint_seconds >= 0 or math.isinf(checkpoint_seconds):
    raise ValueError(f"--checkpoint-seconds must be a finite number >= 0, got "
                     f"{checkpoint_seconds}")
  plan = rundir.plan_run(config, workdir, overwrite=overwrite, resume=resume)  # before any work
  try:  # until the first epoch, a Ctrl-C loses nothing: nothing was trained
    d = recipe.load_data(config)  # uint8 [N, 784] train and test, on the device once
    interrupt.check()
  except KeyboardInterrupt:
    raise RunStopped(BEFORE_FIRST_EPOCH, exit_code=130) from None
  if plan.write != plan.final and not resume and plan.write.exists():
    shutil.rmtree(plan.write)  # a <workdir>.new that holds nothing yet (plan_run checked)
  with rundir.hold(*dict.fromkeys((plan.final, plan.write))):
    return _Run(config, plan, d, checkpoint_every, checkpoint_seconds, program).train(progress,
                                                                                       loss_fn)


class _Run:
  """One run in its directory: set up, trained epoch by epoch, its results written."""

  def __init__(self, config: Config, plan: rundir.Plan, d, checkpoint_every, checkpoint_seconds,
               program: str):
    self.config, self.plan, self.d, self.out = config, plan, d, plan.write
    self.every, self.seconds = checkpoint_every, checkpoint_seconds
    self.resume_hint = (f"{program} train --workdir {shlex.quote(str(plan.final))} --resume"
                        + (" --overwrite" if plan.write != plan.final else ""))

  def train(self, progress: bool, loss_fn) -> RunResult:
    config, out, d = self.config, self.out, self.d
    try:  # still nothing trained
      atomic_write(out / "config.json", (config.to_json() + "\n").encode())
      run = recipe.setup(config, d, loss_fn=loss_fn)  # model, Adam, keys; programs compiled
      t0 = time.perf_counter()
      self.compile_extras(run)
      self.compile_s = run.compile_s + time.perf_counter() - t0
      state, self.history, start = run.state, [], 0
      if self.plan.resumed is not None:
        ckpt = self.plan.resumed
        state, self.history, start = jax.device_put(ckpt.state), ckpt.history, ckpt.epoch
      self.metrics = out / "metrics.jsonl"  # the rows of the epochs kept, then one an epoch
      atomic_write(self.metrics, "".join(json.dumps(r) + "\n" for r in self.history).encode())
      interrupt.check()
    except KeyboardInterrupt:
      raise RunStopped(BEFORE_FIRST_EPOCH, exit_code=130) from None
    except OSError as e:
      raise RunStopped(self.write_failed(e, 0), exit_code=1) from None
    self.saved, self.last_read = start, None  # last_read: (epoch, state) read, finite
    self.t_last = self.saved_at = _clock()     # saved_at: when the saved epoch was read
    bar = tqdm.tqdm(total=config.epochs, initial=start, desc=f"z={config.latent_dim}",
                    unit="epoch", disable=not progress)
    grids, pending = grid_epochs(config), []
    try:
      with open(self.metrics, "a") as self.metrics_file, interrupt.stop_after_epoch():
        for epoch, state, train_m, test_m in train.run_epochs(run, d, config.epochs, state,
                                                              first=start + 1):  # dispatch only
          recon = self.reconstruct(state.params) if epoch in grids else None
          pending.append((epoch, state, (train_m, test_m, recon, self.all_finite(state.params),
                                         self.latent_stats(state.params))))
          if len(pending) == 2:  # read the previous epoch while this one runs
            self.read(*pending.pop(0), bar)
          if interrupt.requested():
            print(f"\nvae-jax: Ctrl-C: stopping after epoch {epoch}, in flight (Ctrl-C again "
                  f"to stop at once)", file=sys.stderr)
            break  # dispatch nothing more: the epoch in flight is the last
        for i, item in enumerate(pending):
          self.read(*item, bar, force_checkpoint=i == len(pending) - 1)
        pending = []
      if interrupt.requested():
        interrupt.clear()  # answered here: the run stops, or had ended anyway
        if self.history[-1]["epoch"] < config.epochs:
          raise RunStopped(f"interrupted after epoch {self.history[-1]['epoch']} of "
                           f"{config.epochs}, checkpoint kept; continue with: "
                           f"{self.resume_hint}", exit_code=130)
    except KeyboardInterrupt:  # a second Ctrl-C: every file on disk is still whole
      last = checkpoint.checkpoints(out)
      raise RunStopped(f"interrupted; the last checkpoint is {last[-1] if last else 'none'}; "
                       f"continue with: {self.resume_hint}", exit_code=130) from None
    except OSError as e:
      raise RunStopped(self.write_failed(e, self.saved), exit_code=1) from None
    finally:
      bar.close()

    try:
      params = write_results(config, out, state.params, self.history, run, d)
      if self.plan.resumed is not None:
        self.drop_stale_grid()
      if out != self.plan.final:
        rundir.swap_in(out, self.plan.final)
    except KeyboardInterrupt:
      raise RunStopped(f"interrupted while writing the results of the last epoch; every file "
                       f"is whole; finish them with: {self.resume_hint}", exit_code=130) from None
    except OSError as e:
      raise RunStopped(self.write_failed(e, self.saved), exit_code=1) from None
    last = self.history[-1]
    resumed = (" (all trained before: its results written again)" if start == config.epochs
               else f" (resumed after epoch {start})" if start else "")
    print(f"{'CVAE, ' if config.model == 'cvae' else ''}z={config.latent_dim}: {config.epochs} "
          f"epoch{'s' if config.epochs != 1 else ''}{resumed}, train loss "
          f"{last['train_loss']:.2f}, test loss {last['test_loss']:.2f} (recon "
          f"{last['test_recon']:.2f} + KL {last['test_kl']:.2f}), "
          f"{sum(h['seconds'] for h in self.history):.1f} s + {self.compile_s:.1f} s compile "
          f"-> {self.plan.final}")
    return RunResult(params, self.history, self.compile_s)

  def compile_extras(self, run: train.Setup) -> None:
    """The small programs each epoch also runs: the grid's reconstructions, whether every
    parameter is finite, and the test set's KL per dimension and Var(mu)."""
    model, d = run.model, self.d
    self.x_show = to_inputs(d.x_test[:8])  # the 8 images of every grid
    y_show, y_test = recipe.labels(self.config, d.y_test[:8]), recipe.labels(self.config, d.y_test)
    recon = jax.jit(lambda p, x, *y: jax.nn.sigmoid(
        recipe.conditioned(model, y).apply({"params": p}, x).logits)
                    ).lower(run.state.params, self.x_show, *y_show).compile()
    self.reconstruct = lambda p: recon(p, self.x_show, *y_show)
    self.all_finite = jax.jit(lambda p: jnp.all(jnp.stack([jnp.isfinite(a).all()
                                                           for a in jax.tree.leaves(p)])))
    x_test = to_inputs(d.x_test)  # float32 [N, 784], once: an argument, not a constant
    stats = jax.jit(lambda p, x, *y: latent_statistics(p, recipe.conditioned(model, y), x))
    self.latent_stats = lambda p: stats(p, x_test, *y_test)

  def read(self, epoch: int, state, values, bar, force_checkpoint: bool = False) -> None:
    """Reads one finished epoch (a host sync on *that* epoch only); writes its row, its grid
    and, when one is due, its checkpoint."""
    train_m, test_m, recon, finite, stats = jax.device_get(values)
    now = _clock()
    row = {**train.epoch_row(epoch, train_m, test_m, len(self.d.x_train), len(self.d.x_test)),
           "seconds": now - self.t_last}
    row = metrics_row(self.config, row, stats)
    self.t_last = now
    bad = first_non_finite(row) or (None if finite else "a parameter")
    if bad is not None:
      self.diverged(epoch, row, bad)
    self.history.append(row)
    try:
      self.metrics_file.write(json.dumps(row) + "\n")
      self.metrics_file.flush()
    except OSError as e:
      raise OSError(e.errno, e.strerror, str(self.metrics)) from None
    if recon is not None:
      _draw(f"reconstruction_{epoch}.png", lambda path: plots.save_reconstructions(
          np.asarray(self.x_show), recon, path), self.out / f"reconstruction_{epoch}.png")
    due = (epoch % self.every == 0 if self.every is not None
           else now - self.saved_at >= self.seconds)
    if due or epoch == self.config.epochs or force_checkpoint:
      checkpoint.save_checkpoint(self.out, epoch, state, self.history, self.config)
      self.saved, self.saved_at = epoch, now  # from this epoch's read: the save's own time counts
    self.last_read = (epoch, state)
    bar.set_postfix(loss=f"{row['train_loss']:.2f}", test=f"{row['test_loss']:.2f}", refresh=False)
    bar.update(1)

  def diverged(self, epoch: int, row: dict, bad: str):
    """Stops the run at the first epoch whose numbers are not finite, keeping the one before."""
    if self.last_read is not None and self.last_read[0] != self.saved:  # the last finite epoch
      checkpoint.save_checkpoint(self.out, *self.last_read, self.history, self.config)
      self.saved = self.last_read[0]
    kept = (f"the checkpoint of epoch {self.saved} is kept in "
            f"{self.out / checkpoint.CHECKPOINT_DIR}" if self.saved else
            "no epoch finished before it, so no checkpoint is kept")
    value = f" = {row[bad]}" if bad in row else ""
    again = ("run the command again with it: the directory holds nothing trained"
             if not self.saved else "start again with --overwrite" if self.out == self.plan.final
             else f"delete {self.out} (this --overwrite's) and start again with --overwrite")
    raise RunStopped(f"training diverged at epoch {epoch}: {bad}{value} is not finite "
                     f"(learning rate {self.config.learning_rate}); {kept}. Try a smaller "
                     f"--learning-rate and {again}", exit_code=3)

  def write_failed(self, error: OSError, saved: int) -> str:
    kept = (f"the checkpoint of epoch {saved} is kept in {self.out / checkpoint.CHECKPOINT_DIR}"
            if saved else "no epoch was checkpointed yet")
    return (f"could not write {error.filename or 'a file'} ({error.strerror}): {kept}; free "
            f"some space or make the folder writable, then continue with: {self.resume_hint}")

  def drop_stale_grid(self) -> None:
    """A run extended by `--resume --epochs M` from a finished shorter run: that run drew a
    grid at its last epoch, which the run never stopped would not have (it is off M's
    schedule). Once the run has finished, that one file goes, saying so; nothing else does."""
    old, resumed = self.plan.resumed.config.epochs, self.plan.resumed
    stale = self.out / f"reconstruction_{old}.png"
    if resumed.epoch == old and old not in grid_epochs(self.config) and stale.exists():
      stale.unlink()
      print(f"vae-jax: removed {stale.name}, the grid of the shorter run's last epoch: not one "
            f"of this {self.config.epochs}-epoch run's", file=sys.stderr)


def write_results(config: Config, out: Path, params, history: list, run: train.Setup, d, *,
                  figures: bool = True):
  """The weights first (nothing after them can lose them), then the loss arrays and, if asked,
  the figures (`run`: the run's `train.Setup`, for its model and sample key)."""
  from vae_jax.app.weights import save_params
  save_params(params, out / "params.msgpack")
  for name, key in (("loss_list.npy", "train_loss"), ("test_loss_list.npy", "test_loss")):
    array = np.array([h[key] for h in history])
    atomic_write(out / name, lambda f: np.save(f, array))
  if not figures:
    return params
  model, cvae = run.model, config.model == "cvae"

  def samples(path):
    z = jax.random.normal(run.keys.sample, (64, config.latent_dim))  # z ~ p(z) = N(0, I)
    plots.save_grid(np.asarray(recipe.decode_means(model, params, z)), path, nrow=8)

  def digits(path):  # the CVAE's: row y decodes the same ten z with the label y
    z = jax.random.normal(run.keys.sample, (10, config.latent_dim))  # [10, z] ~ N(0, I)
    y = jnp.repeat(jnp.arange(10), 10)                               # [100]: 0 x10, 1 x10, ...
    plots.save_digits(np.asarray(recipe.decode_means(model, params, jnp.tile(z, (10, 1)), y)),
                      path)

  _draw("learning_curves.png", lambda path: plots.save_learning_curves(
      history, path, title=("CVAE, " if cvae else "")
      + f"z = {config.latent_dim}: negative ELBO per image" + (
          f" (train: -L_{config.k}, the IWAE bound)" if config.objective == "iwae" else "")),
      out / "learning_curves.png")
  _draw(*(("digits.png", digits) if cvae else ("samples.png", samples)),
        out / ("digits.png" if cvae else "samples.png"))
  if config.latent_dim > 2:
    _draw("kl_per_dim.png", lambda path: plots.save_kl_per_dim(history, path),
          out / "kl_per_dim.png")
  latent_figures(config, model, params, d.x_test, d.y_test, out)
  return params


def latent_figures(config: Config, model, params, x_test_u8, y_test, out: Path) -> None:
  """latent.png (the test set's mu), manifold.png and interpolation.png (`extensions/latent.py`)
  of a trained model, into `out`; a figure that fails is one line (`_draw`). The CVAE's
  latent map encodes each image with its label; its decoder needs a label for every z, so
  its manifold and interpolations are left out (digits.png shows what its z holds)."""
  labels = recipe.labels(config, y_test)  # on the device already (DeviceData)
  y_test = np.asarray(y_test)             # the figures' colours and row names
  mu = np.asarray(jax.jit(recipe.encode_mean, static_argnums=0)(model, params, x_test_u8,
                                                                *labels))  # [N, z]
  decode = jax.jit(recipe.decode_means, static_argnums=0)

  def manifold(path):
    grid = latent.manifold_latents(mu)
    plots.save_manifold(np.asarray(decode(model, params, grid.z)), grid.values, grid.label, path)

  def interpolation(path):
    a, b = map(list, zip(*latent.interpolation_pairs(len(mu))))
    z = latent.interpolation_latents(mu[a], mu[b])                    # [P, steps, z]
    decoded = np.asarray(decode(model, params, z.reshape(-1, z.shape[-1]))
                         ).reshape(*z.shape[:2], -1)
    images = np.asarray(to_inputs(x_test_u8[np.array(a + b)]))  # [2P, 784]
    labels = [f"{y_test[i]} to {y_test[j]}" for i, j in zip(a, b)]
    plots.save_interpolation(images[:len(a)], decoded, images[len(a):], labels, path)

  _draw("latent.png", lambda path: plots.save_latent_map(mu, y_test, path), out / "latent.png")
  if config.model == "cvae":
    return
  _draw("manifold.png", manifold, out / "manifold.png")
  if len(mu) < 2:
    print(f"vae-jax: interpolation.png skipped: it joins two test images, and there is "
          f"{len(mu)}", file=sys.stderr)
  else:
    _draw("interpolation.png", interpolation, out / "interpolation.png")
