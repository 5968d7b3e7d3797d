"""Variants of the blog's loss that answer its open questions (see docs/gradient_flow.md).

`make_loss(sampling, param)` returns a loss with `losses.batch_loss`'s signature
`(params, model, x, eps, weight) -> (loss, Metrics)`, so `train.make_train_epoch`
trains it unchanged.

sampling (how z is drawn from q(z|x) = N(mu, diag(var))):
  "reparam"        z = mu + std * eps, eps [B, z]: the blog's trick
  "stop_gradient"  z = stop_gradient(mu + std * eps): a draw with no path back, like
                   PyTorch's `normal_(mean, std)` on detached values
  "scalar_eps"     z = mu + std * eps[:, :1]: ONE eps shared by every latent dimension

param (what the encoder's second head h = fc22(hidden) means):
  "logvar"         var = exp(h)                 the blog
  "softplus_var"   var = softplus(h) = log(1 + e^h)
  "raw_var"        var = h + 1                  (the +1 starts it near var = 1, not at 0)
  "raw_std"        std = h + 1, var = std^2
The KL is the analytic one for whatever variance results, -1/2 sum(1 + log var - mu^2 - var);
a non-positive raw variance makes log var (and sqrt) NaN, and the run is lost.

Closed forms the study compares these against: `gradient_scale` (how the KL's and
std's gradients scale with the variance under each parameterisation; `gradient_scale_at`
gives them at one variance, as the report's table does) and
`kl_rank_one_plus_noise` (the KL of the scalar-eps posterior, regularised).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from vae_jax import losses
from vae_jax.losses import Metrics
from vae_jax.model import VAE

SAMPLINGS = ("reparam", "stop_gradient", "scalar_eps")
PARAMS = ("logvar", "softplus_var", "raw_var", "raw_std")


def variance_and_std(h: jax.Array, param: str) -> tuple[jax.Array, jax.Array]:
  """The encoder's second head h [B, z] -> (var, std) under parameterisation `param`."""
  if param == "logvar":
    return jnp.exp(h), jnp.exp(0.5 * h)
  if param == "softplus_var":
    var = jax.nn.softplus(h)
    return var, jnp.sqrt(var)
  if param == "raw_var":
    var = h + 1.0
    return var, jnp.sqrt(var)
  if param == "raw_std":
    std = h + 1.0
    return std**2, std
  raise ValueError(f"param must be one of {PARAMS}, got {param!r}")


def make_loss(sampling: str = "reparam", param: str = "logvar"):
  if sampling not in SAMPLINGS:
    raise ValueError(f"sampling must be one of {SAMPLINGS}, got {sampling!r}")
  variance_and_std(jnp.zeros(1), param)  # validates `param`

  def loss_fn(params, model: VAE, x, eps, weight):
    mu, h = model.apply({"params": params}, x, method=VAE.encode)  # [B, z] each
    var, std = variance_and_std(h, param)
    if sampling == "scalar_eps":
      eps = eps[:, :1]                                             # [B, 1], broadcast
    z = mu + std * eps
    if sampling == "stop_gradient":
      z = jax.lax.stop_gradient(z)
    logits = model.apply({"params": params}, z, method=VAE.decode)
    recon = losses.bernoulli_nll(logits, x)
    kl = losses.kl_standard_normal(mu, jnp.log(var))
    sums = Metrics(*(jnp.sum(weight * t) for t in (recon, kl, recon + kl)))
    return sums.loss, sums

  return loss_fn


# Closed forms, in float64 NumPy.


def gradient_scale(v: np.ndarray) -> dict:
  """For each parameterisation: (dKL/dh, d std/dh) at variance v, one dimension, mu = 0.

  The KL of one dimension, k(v) = -(1 + log v - v) / 2, has dk/dv = (1 - 1/v) / 2, and
  dk/dh = dk/dv * dv/dh with dv/dh: logvar e^h = v; softplus sigmoid(h) = 1 - e^-v;
  raw_var 1; raw_std 2 std. And d std/dh = dv/dh / (2 std).
  """
  dk_dv = 0.5 * (1 - 1 / v)
  std = np.sqrt(v)
  return {p: (dk_dv * dv, dv / (2 * std)) for p, dv in _dv_dh(v).items()}


def _dv_dh(v: np.ndarray) -> dict:
  return {"logvar": v, "softplus_var": -np.expm1(-v), "raw_var": np.ones_like(v),
          "raw_std": 2 * np.sqrt(v)}


def gradient_scale_at(v: float) -> dict:
  """The table of docs/gradient_flow.md at one variance v: for each parameterisation,
  {"dv_dh", "dkl_dh", "dstd_dh"} as signed floats (`gradient_scale`'s closed forms).

  At v = 1e-4: dKL/dh = (v - 1)/2 = -0.49995 for logvar, -4999.5 * (1 - e^-v) for
  softplus, (1 - 1/v) std = -99.99 for raw std, (1 - 1/v)/2 = -4999.5 for raw variance;
  d std/dh = std/2 = 0.005, (1 - e^-v)/(2 std), 1 and 1/(2 std) = 50.
  """
  va = np.array([float(v)])
  dv_dh = _dv_dh(va)
  return {p: {"dv_dh": float(dv_dh[p][0]), "dkl_dh": float(g[0][0]), "dstd_dh": float(g[1][0])}
          for p, g in gradient_scale(va).items()}


def kl_rank_one_plus_noise(mu, std, delta):
  """KL(N(mu, s s^T + delta^2 I) || N(0, I)) for one image: s = std [z].

  = 1/2 (tr C + mu.mu - z - log det C), C = s s^T + delta^2 I,
  det C = delta^(2(z-1)) (delta^2 + |s|^2). As delta -> 0 this grows like
  -(z - 1) log delta^2: the KL of the scalar-eps posterior itself (delta = 0) is +inf.
  """
  z = len(mu)
  trace = np.sum(std**2) + z * delta**2
  logdet = 2 * (z - 1) * np.log(delta) + np.log(delta**2 + np.sum(std**2))
  return 0.5 * (trace + mu @ mu - z - logdet)
