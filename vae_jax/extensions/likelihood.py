"""The test log-likelihood as the field reports it: importance sampling with k samples.

For an image x and k samples z_i ~ q(z|x) (Burda, Grosse and Salakhutdinov 2016):

  L_k(x) = log (1/k) sum_i w_i,   w_i = p(x|z_i) p(z_i) / q(z_i|x)

E[L_1] is the ELBO, E[L_k] grows with k, and L_k -> log p(x) as k -> infinity; the
field reports -L_5000 on the test set of binarized MNIST as "the test NLL". Every
term is a log-density (`iwae.log_weights`) and the average is a logsumexp, so no
weight is ever exponentiated alone.

`estimate(model, params, x, k)` draws k samples per image once and scores, from
the same draws:

* L_j for each j in `ks` that divides into k: the k samples split into k // j
  groups of j, L_j averaged over the groups (an unbiased estimate of E[L_j], with
  less noise than one group);
* the ELBO with the analytic KL: mean_i log p(x|z_i) - KL(q(z|x) || p(z)), and its
  Monte Carlo standard error, sqrt(sum_x Var_i(log p(x|z_i)) / k) / N over the N images
  (the sample variance of each image's k terms; none from k = 1);
* the active units (Burda et al., section 5.2): latent dimension u is active when
  Cov_x(E_q(z|x)[z_u]) = Var_x(mu_u(x)) > 0.01 over the test images;
* the Monte Carlo standard error of the L_k average, by the delta method:
  Var(L_k(x)) ~ Var(w) / (k E[w]^2) per image.

Memory stays bounded: the images go through in chunks of `image_chunk`, and inside
one compiled call a `lax.scan` walks their k samples `sample_chunk` at a time, so
no more than image_chunk x sample_chunk decoded images exist at once (and the
image_chunk x k x z noise). Image i's samples come from `fold_in(key, i)` alone, so
the chunk sizes change the memory and the speed, never the numbers.

On continuous pixels (the blog's data) p(x|z) is the blog's Bernoulli cross-entropy
of grey pixels, not a density of x: -L_k is then, in expectation, a bound below the
blog's loss with z sampled (its sampled -ELBO; not its test loss, which decodes z = mu),
no likelihood, and `describe` says so.
"""

from __future__ import annotations

import functools
import math
import resource
import time
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import tqdm.auto as tqdm

from vae_jax import losses
from vae_jax.data import to_inputs
from vae_jax.extensions import iwae

REPORTED_KS = (1, 5, 50, 5000)  # Burda et al.'s Table 1 columns, and their evaluation k
ACTIVE_THRESHOLD = 0.01         # Burda et al.: Cov_x(E_q[z_u]) > 0.01


class Estimate(NamedTuple):
  """Averages over the test images, in nats per image (log-likelihoods, so negative)."""
  n: int                # test images
  k: int                # samples per image
  bounds: dict          # {j: average L_j} for j in ks
  mc_se: float | None   # Monte Carlo standard error of bounds[k] (delta method); None: k = 1
  elbo: float           # average ELBO: mean_i log p(x|z_i) - analytic KL
  elbo_se: float | None  # Monte Carlo standard error of `elbo`; None: k = 1
  active_units: int     # latent dimensions with Var_x(mu_u) > 0.01
  mu_variance: np.ndarray  # [z] Var_x(mu_u(x)) of each dimension
  seconds: float        # wall time of the estimate (compilation included)
  peak_rss_mb: float    # this process's peak resident memory when it ended


def _divisor_at_most(n: int, cap: int) -> int:
  return max(d for d in range(1, min(n, cap) + 1) if n % d == 0)


def grouped_bound(log_w: jax.Array, j: int) -> jax.Array:
  """The average of L_j over the k // j disjoint groups of j samples: [C, k] -> [C].

  Each group's L_j is unbiased for E[L_j]; their mean has k // j times less variance
  than one group. The k % j samples left over are not used."""
  c, k = log_w.shape
  return iwae.iwae_bound(log_w[:, :(k // j) * j].reshape(c, k // j, j)).mean(-1)


@functools.lru_cache(maxsize=8)  # one compilation per (model, k, ks, sample_chunk)
def compiled_chunk_estimator(model, k: int, ks: tuple[int, ...], sample_chunk: int):
  return jax.jit(make_chunk_estimator(model, k, ks, sample_chunk))


def make_chunk_estimator(model, k: int, ks: tuple[int, ...], sample_chunk: int = 100):
  """Returns `chunk(params, x, keys) -> dict of [C] arrays`, jittable: one image chunk.

  x: float32 [C, 784]; keys: [C, 2], one per image. Image i's k samples are
  `normal(keys[i], (k, z))`, whatever the chunking; a scan decodes them
  `s = largest divisor of k <= sample_chunk` at a time (C x s decoded images at once).
  """
  s = _divisor_at_most(k, sample_chunk)
  z = model.latent_dim

  def chunk(params, x, keys):
    c = x.shape[0]
    eps = jax.vmap(lambda key: jax.random.normal(key, (k, z)))(keys)  # [C, k, z]
    eps = jnp.moveaxis(eps.reshape(c, k // s, s, z), 1, 0)              # [k / s, C, s, z]

    def draw(_, eps_j):
      lw, _ = iwae.log_weights(params, model, x, eps_j)  # each [C, s]
      return None, (lw.log_w, lw.log_px_z)

    _, (log_w, log_px_z) = jax.lax.scan(draw, None, eps)
    log_w = jnp.moveaxis(log_w, 0, 1).reshape(c, k)                  # [C, k]
    mu, logvar = model.apply({"params": params}, x, method="encode")  # [C, z]
    out = {f"L{j}": grouped_bound(log_w, j) for j in ks}              # each [C]
    log_px_z = jnp.moveaxis(log_px_z, 0, 1).reshape(c, k)            # [C, k]
    out["elbo"] = log_px_z.mean(-1) - losses.kl_standard_normal(mu, logvar)
    out["var_elbo"] = log_px_z.var(-1, ddof=1) / k if k > 1 else jnp.zeros(c)  # of its mean
    # delta method: Var(log mean w) ~ (E[w^2] / E[w]^2 - 1) / k, from w / max(w)
    w = jnp.exp(log_w - log_w.max(-1, keepdims=True))
    out["var_Lk"] = ((w**2).mean(-1) / w.mean(-1)**2 - 1.0) / k
    out["mu"] = mu
    return out

  return chunk


def reported_ks(k: int) -> tuple[int, ...]:
  """The columns printed for a given k: Burda et al.'s 1, 5, 50, 5000 up to k, and k."""
  return tuple(sorted({j for j in REPORTED_KS if j <= k} | {k}))


def estimate(model, params, images_u8, k: int = 5000, *, key, ks=None, image_chunk: int = 10,
             sample_chunk: int = 100, progress: bool = False) -> Estimate:
  """L_k, the ELBO and the active units of `model` on `images_u8` (uint8 [N, 784]).

  Image i draws its samples from `fold_in(key, i)`: the numbers do not depend on the
  chunk sizes, which only set the memory (image_chunk x sample_chunk decoded images
  at a time; about 1,000 ran fastest on a 2-core CPU, where larger blocks leave the
  cache). One program is compiled for a chunk; the last chunk is padded with copies
  of the last image and their rows dropped.
  """
  if k < 1:
    raise ValueError(f"k must be >= 1, got {k}")
  ks = reported_ks(k) if ks is None else tuple(ks)
  n = len(images_u8)
  if n == 0:
    raise ValueError("no test images to score")
  t0 = time.perf_counter()
  chunk = compiled_chunk_estimator(model, k, ks, sample_chunk)
  images_u8 = jnp.asarray(images_u8)
  image_keys = jax.vmap(jax.random.fold_in, in_axes=(None, 0))
  parts = []
  for start in tqdm.trange(0, n, image_chunk, unit="chunk", disable=not progress, desc=f"L_{k}"):
    idx = jnp.minimum(jnp.arange(start, start + image_chunk), n - 1)  # [C]: pad with the last
    out = chunk(params, to_inputs(images_u8[idx]), image_keys(key, idx))
    parts.append(jax.tree.map(lambda a: a[:min(image_chunk, n - start)], out))
  rows = jax.device_get(parts)  # the host reads once, at the end
  cat = {name: np.concatenate([r[name] for r in rows]) for name in rows[0]}
  mu_variance = cat["mu"].astype(np.float64).var(axis=0)
  return Estimate(
      n=n, k=k, bounds={j: float(cat[f"L{j}"].astype(np.float64).mean()) for j in ks},
      mc_se=(float(math.sqrt(cat["var_Lk"].astype(np.float64).sum()) / n) if k > 1
             else None),  # one sample: no variance of the weights to estimate
      elbo=float(cat["elbo"].astype(np.float64).mean()),
      elbo_se=(float(math.sqrt(cat["var_elbo"].astype(np.float64).sum()) / n) if k > 1
               else None),
      active_units=int((mu_variance > ACTIVE_THRESHOLD).sum()), mu_variance=mu_variance,
      seconds=time.perf_counter() - t0,
      peak_rss_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)


def describe(est: Estimate, *, binarized: bool, latent_dim: int) -> str:
  """The printed report: per test image, averaged, in nats."""
  what = ("test NLL = -L_k, nats per image (binarized test set)" if binarized else
          "-L_k of the blog's loss on grey pixels, nats per image: in expectation a bound "
          "below that loss with z sampled (not the test loss at z = mu), NOT a "
          "log-likelihood (the Bernoulli density is only a density on 0/1 pixels; use "
          "--binarize dynamic for one)")
  lines = [f"{est.n} test images, k = {est.k} samples each; {what}"]
  for j, value in est.bounds.items():
    se = ("" if j != est.k else " (no Monte Carlo s.e. from k = 1)" if est.mc_se is None
          else f" +- {est.mc_se:.3f} (Monte Carlo s.e.)")
    lines.append(f"  -L_{j:<5} {-value:9.3f}{se}")
  se = ("" if est.elbo_se is None else f" +- {est.elbo_se:.3f} (Monte Carlo s.e.)")
  lines.append(f"  -ELBO    {-est.elbo:9.3f}{se}; the reconstruction term from the same k "
               f"samples, the KL analytic")
  lines.append(f"  active units {est.active_units} of {latent_dim} (Var_x(mu_u) > "
               f"{ACTIVE_THRESHOLD})")
  lines.append(f"  {est.seconds:.1f} s, peak memory {est.peak_rss_mb:.0f} MB (resident, "
               f"the whole process)")
  return "\n".join(lines)


def to_json(est: Estimate) -> dict:
  return {"n": est.n, "k": est.k, "nll": {str(j): -v for j, v in est.bounds.items()},
          "mc_se": est.mc_se, "neg_elbo": -est.elbo, "neg_elbo_mc_se": est.elbo_se,
          "active_units": est.active_units, "mu_variance": est.mu_variance.tolist(),
          "seconds": est.seconds,
          "peak_rss_mb": est.peak_rss_mb}


def latent_statistics(params, model, x):
  """Per latent dimension u, over the images x [N, 784]: the mean of
  KL(q(z_u|x) || N(0, 1)) = -1/2 (1 + logvar_u - mu_u^2 - exp(logvar_u)), whose sum over u is
  the KL per image, and Var_x(mu_u), Burda et al.'s activity (active: > 0.01). -> [z], [z]."""
  mu, logvar = model.apply({"params": params}, x, method="encode")  # [N, z] each
  kl = -0.5 * (1.0 + logvar - mu**2 - jnp.exp(logvar))              # [N, z]
  return kl.mean(axis=0), mu.var(axis=0)
