"""Importance weights: the IWAE objective (`--objective iwae --k K`) and the terms of the
likelihood estimator (`likelihood.py`).

For an image x and k samples z_i = mu(x) + sigma(x) * eps_i of q(z|x) (Burda, Grosse and
Salakhutdinov 2016):

  log w_i = log p(x|z_i) + log p(z_i) - log q(z_i|x)
  L_k(x)  = log (1/k) sum_i w_i    (E[L_1] is the ELBO; E[L_k] grows with k to log p(x))

Every term is a log-density and the average a logsumexp: no weight is exponentiated alone.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from vae_jax.losses import Metrics, kl_standard_normal

LOG_2PI = 1.8378770664093453  # log(2 pi)


class LogWeights(NamedTuple):
  """log w_i = log p(x|z_i) + log p(z_i) - log q(z_i|x) and its parts, each [B, k]."""
  log_px_z: jax.Array  # log p(x|z_i): minus the Bernoulli NLL
  log_pz: jax.Array    # log N(z_i; 0, I)
  log_qz: jax.Array    # log N(z_i; mu(x), diag(exp(logvar(x))))
  log_w: jax.Array     # log_px_z + log_pz - log_qz


def bernoulli_log_likelihood(logits: jax.Array, x: jax.Array) -> jax.Array:
  """log Bernoulli(x | sigmoid(l)) summed over pixels = sum_i x_i l_i - softplus(l_i).

  The same number as -`losses.bernoulli_nll` (x log s(l) + (1 - x) log s(-l) with
  log s(l) = l - softplus(l) and log s(-l) = -softplus(l)), from one softplus per pixel
  instead of two: the estimator evaluates it for 5000 samples of each of 10,000 images,
  and these transcendentals are half its time on a CPU. [..., D] -> [...].
  """
  return jnp.sum(x * logits - jax.nn.softplus(logits), axis=-1)


def log_weights(params, model, x: jax.Array, eps: jax.Array) -> tuple[LogWeights, jax.Array]:
  """The log importance weights of k samples z_i = mu(x) + sigma(x) * eps_i per image.

  x: [B, 784] in [0, 1]; eps: [B, k, z] standard normal. Returns (LogWeights of [B, k],
  kl [B]: the analytic KL(q(z|x) || p(z)), for the ELBO beside them). With z = mu + sigma eps,
  (z - mu)^2 / sigma^2 = eps^2, so log q(z|x) = -1/2 sum_j (eps_j^2 + log 2 pi + logvar_j).
  """
  mu, logvar = model.apply({"params": params}, x, method="encode")  # [B, z] each
  z = mu[:, None, :] + jnp.exp(0.5 * logvar)[:, None, :] * eps      # [B, k, z]
  b, k, d = z.shape
  logits = model.apply({"params": params}, z.reshape(b * k, d), method="decode")  # [B k, 784]
  log_px_z = bernoulli_log_likelihood(logits.reshape(b, k, -1), x[:, None, :])    # [B, k]
  log_pz = -0.5 * jnp.sum(z**2 + LOG_2PI, axis=-1)                                 # [B, k]
  log_qz = -0.5 * jnp.sum(eps**2 + LOG_2PI + logvar[:, None, :], axis=-1)          # [B, k]
  return (LogWeights(log_px_z, log_pz, log_qz, log_px_z + log_pz - log_qz),
          kl_standard_normal(mu, logvar))


def iwae_bound(log_w: jax.Array) -> jax.Array:
  """L_k = log (1/k) sum_i w_i, from log w [..., k] by logsumexp. [..., k] -> [...]."""
  return jax.nn.logsumexp(log_w, axis=-1) - jnp.log(log_w.shape[-1])


def batch_loss(params, model, x, eps, weight):
  """Sum over the batch of weight * (-L_k): the IWAE objective (Burda et al. 2016, eq. 8),
  with `losses.batch_loss`'s arguments but eps [B, k, z].

  The Metrics' recon and kl are the ELBO's two terms (the recon averaged over the k
  samples, the KL analytic), so recon + kl estimates the negative ELBO from the same
  samples, and E[loss] <= E[recon + kl] (E[L_k] >= ELBO): the bound training tightens.
  For one set of samples the order can go either way, since the KL is the analytic one.
  """
  lw, kl = log_weights(params, model, x, eps)
  sums = Metrics(jnp.sum(weight * -lw.log_px_z.mean(axis=-1)), jnp.sum(weight * kl),
                 jnp.sum(weight * -iwae_bound(lw.log_w)))
  return sums.loss, sums
