"""The KL's weight in training: the beta-VAE (Higgins et al. 2017, `--beta B`) and KL
warm-up (Bowman et al. 2016, `--kl-warmup-epochs N`).

Training minimises sum_x recon(x) + b * kl(x) with b = `kl_weight(...)`; the metrics stay
the unweighted terms, so a run's reported loss is the blog's recon + KL whatever b was.
b comes from Adam's step count inside the compiled epoch, so a resumed run goes on with
the warm-up where it stopped.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from vae_jax import losses
from vae_jax.losses import Metrics


def weighs_kl(config) -> bool:
  """Whether training weighs the KL (beta != 1 or a warm-up): not the blog's ELBO."""
  return config.beta != 1 or config.kl_warmup_epochs > 0


def idle_warmup(config) -> str | None:
  """Why a new run's warm-up would change nothing (to beta 0), or None: refused for new runs
  and sweep members; a config.json that holds one still reads."""
  if config.beta == 0 and config.kl_warmup_epochs:
    return (f"`kl_warmup_epochs` {config.kl_warmup_epochs} would raise the KL's weight from 0 "
            f"to `beta` 0, i.e. change nothing: drop one of them")
  return None


def kl_weight(beta: float, warmup_epochs: int, epoch_index):
  """b = beta * min(1, i / N) in the epoch of 0-based index i, N the warm-up's epochs (epoch 1
  trains with 0, epoch N + 1 on with beta); beta without a warm-up. `epoch_index`: a Python
  int (a metrics row's, in float64) or a traced int (a training step's, in float32)."""
  if not warmup_epochs:
    return float(beta)
  minimum = jnp.minimum if isinstance(epoch_index, jax.Array) else min
  return beta * minimum(1.0, epoch_index / warmup_epochs)


def weighted_batch_loss(params, model, x, eps, weight, kl_weight):
  """Sum over the batch of weight * (recon + kl_weight * kl), and the unweighted Metrics
  (`losses.batch_loss`'s arguments, then the scalar weight)."""
  out = model.apply({"params": params}, x, eps)
  terms = losses.vae_loss(out.logits, x, out.mu, out.logvar)  # each [B]
  sums = Metrics(*(jnp.sum(weight * t) for t in terms))
  return jnp.sum(weight * (terms.recon + kl_weight * terms.kl)), sums


def objective_row(config, row: dict) -> dict:
  """A metrics row of a weighted run gains `kl_weight` and each split's weighted objective."""
  w = kl_weight(config.beta, config.kl_warmup_epochs, row["epoch"] - 1)
  return {**row, "kl_weight": w,
          **{f"{s}_objective": row[f"{s}_recon"] + w * row[f"{s}_kl"] for s in ("train", "test")}}
