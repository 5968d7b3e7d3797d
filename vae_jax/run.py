"""One training run: the blog's experiment and every artifact it writes.

  vae-jax train --workdir runs/vae_2                   # z = 2, 100 epochs: the blog's run

`train_and_evaluate(config, workdir)` checks the run directory, loads the data,
sets up the run (`train.setup`), trains while the host reads each finished epoch
behind the device, then writes the blog's artifacts:

  config.json, metrics.jsonl, loss_list.npy, test_loss_list.npy,
  learning_curves.png, reconstruction_{1,10,...}.png, latent.png, samples.png,
  params.msgpack
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, NamedTuple

import jax
import numpy as np
import tqdm.auto as tqdm

from vae_jax import data, train
from vae_jax.config import Config
from vae_jax.model import VAE

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
  from vae_jax import checkpoint, plots  # plots pulls in matplotlib: import late

  d = data.load_device_data(config)  # uint8 [N, 784] train and test, on the device once
  n_train, n_test = len(d.x_train), len(d.x_test)
  for path in old_results:  # --overwrite, and the data are good: now replace them
    path.unlink()
  workdir = Path(workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  (workdir / "config.json").write_text(config.to_json() + "\n")

  run = train.setup(config, d)  # model, Adam, keys, state; epoch and evaluation compiled
  model = run.model
  x_show = data.to_inputs(d.x_test[:8])  # the 8 images of every grid
  t0 = time.perf_counter()
  reconstruct = jax.jit(lambda p, x: jax.nn.sigmoid(model.apply({"params": p}, x).logits)
                        ).lower(run.state.params, x_show).compile()
  compile_s = run.compile_s + time.perf_counter() - t0

  history, pending, grids = [], [], grid_epochs(config)
  bar = tqdm.tqdm(total=config.epochs, desc=f"z={config.latent_dim}", unit="epoch",
                  disable=not progress)
  t_last = time.perf_counter()

  def record(epoch, train_m, test_m, recon):
    """Reads one finished epoch (a host sync on *that* epoch only) and writes its grid."""
    nonlocal t_last
    train_m, test_m, recon = jax.device_get((train_m, test_m, recon))
    now = time.perf_counter()
    row = {**train.epoch_row(epoch, train_m, test_m, n_train, n_test), "seconds": now - t_last}
    t_last = now
    history.append(row)
    if recon is not None:
      plots.save_reconstructions(np.asarray(x_show), recon, workdir / f"reconstruction_{epoch}.png")
    bar.set_postfix(loss=f"{row['train_loss']:.2f}", test=f"{row['test_loss']:.2f}", refresh=False)
    bar.update(1)

  state = run.state
  for epoch, state, train_m, test_m in train.run_epochs(run, d, config.epochs):  # dispatch only
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
  mu, _ = jax.jit(lambda p, x: model.apply({"params": p}, data.to_inputs(x), method=VAE.encode)
                  )(state.params, d.x_test)
  plots.save_latent_map(np.asarray(mu), d.y_test, workdir / "latent.png")
  z = jax.random.normal(run.keys.sample, (64, config.latent_dim))  # z ~ p(z) = N(0, I)
  samples = jax.nn.sigmoid(model.apply({"params": state.params}, z, method=VAE.decode))
  plots.save_grid(np.asarray(samples), workdir / "samples.png", nrow=8)
  checkpoint.save_params(state.params, workdir / "params.msgpack")

  last = history[-1]
  print(f"z={config.latent_dim}: {config.epochs} epochs, train loss {last['train_loss']:.2f}, "
        f"test loss {last['test_loss']:.2f} (recon {last['test_recon']:.2f} + KL "
        f"{last['test_kl']:.2f}), {sum(h['seconds'] for h in history):.1f} s "
        f"+ {compile_s:.1f} s compile -> {workdir}")
  return RunResult(state.params, history, compile_s)
