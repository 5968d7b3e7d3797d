"""Gradient estimators for  d/d(mu, logvar)  E_{z ~ N(mu, diag(exp(logvar)))} [f(z)].

Three ways to get a gradient through a sample, each returning per-sample terms so a
caller can measure the estimator's variance:

* `pathwise` (the reparameterization trick): z = mu + sigma * eps, eps ~ N(0, I),
  so  grad E f(z) = E_eps [ grad_(mu, logvar) f(mu + sigma * eps) ].
  Needs f differentiable in z; usually low variance.
* `score_function` (REINFORCE, the likelihood-ratio trick):
  grad E f(z) = E_z [ (f(z) - b) grad log q(z) ], with
  d log q / d mu = (z - mu) / sigma^2 = eps / sigma  and
  d log q / d logvar = (eps^2 - 1) / 2.
  Needs only values of f; a baseline b (here the mean of the *other* samples'
  f, which keeps it unbiased) reduces the variance.
* `stop_gradient_sampling`: draw z from N(mu, sigma^2) as a constant, like
  PyTorch's `tensor.normal_(mean, std)` on detached values, then differentiate
  f(z): the gradient with respect to mu and logvar is exactly zero. Nothing
  flows back through a sample that was drawn rather than computed.

Every estimator takes `f: [d] -> scalar`, mu and logvar [d], a key and a number
of samples n, and returns `Estimate(mu, logvar, per_sample_mu, per_sample_logvar)`:
the estimates [d] are the means of the per-sample terms [n, d].
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp

from vae_jax.model import reparameterize


class Estimate(NamedTuple):
  mu: jax.Array                  # [d]    the gradient estimate wrt mu
  logvar: jax.Array              # [d]    ... wrt logvar
  per_sample_mu: jax.Array       # [n, d] the terms it averages
  per_sample_logvar: jax.Array   # [n, d]


def _estimate(g_mu, g_lv) -> Estimate:
  return Estimate(g_mu.mean(0), g_lv.mean(0), g_mu, g_lv)


def pathwise(f: Callable, mu, logvar, key, n: int) -> Estimate:
  """Reparameterization: mean over eps of grad_(mu, logvar) f(mu + exp(logvar / 2) eps)."""
  eps = jax.random.normal(key, (n,) + mu.shape)                       # [n, d]
  grad = jax.grad(lambda m, lv, e: f(reparameterize(m, lv, e)), argnums=(0, 1))
  g_mu, g_lv = jax.vmap(grad, in_axes=(None, None, 0))(mu, logvar, eps)  # [n, d] each
  return _estimate(g_mu, g_lv)


def score_function(f: Callable, mu, logvar, key, n: int, baseline: bool = False) -> Estimate:
  """REINFORCE: mean over z of (f(z) - b) grad log q(z); b = leave-one-out mean of f if asked."""
  eps = jax.random.normal(key, (n,) + mu.shape)               # [n, d]
  z = jax.lax.stop_gradient(reparameterize(mu, logvar, eps))  # a draw, no path back
  fz = jax.vmap(f)(z)                                         # [n]
  if baseline:
    if n < 2:
      raise ValueError("a leave-one-out baseline needs n >= 2 samples")
    fz = fz - (fz.sum() - fz) / (n - 1)                       # f_i - mean_{j != i} f_j
  score_mu = eps * jnp.exp(-0.5 * logvar)                     # (z - mu) / sigma^2
  score_lv = 0.5 * (eps**2 - 1.0)                             # d log q / d logvar
  return _estimate(fz[:, None] * score_mu, fz[:, None] * score_lv)


def stop_gradient_sampling(f: Callable, mu, logvar, key, n: int) -> Estimate:
  """Autodiff through a sample drawn as a constant: the gradient that actually flows (zero)."""
  def one(m, lv, k):
    z = jax.lax.stop_gradient(m + jnp.exp(0.5 * lv) * jax.random.normal(k, m.shape))
    return f(z)

  keys = jax.random.split(key, n)
  g_mu, g_lv = jax.vmap(jax.grad(one, argnums=(0, 1)), in_axes=(None, None, 0))(mu, logvar, keys)
  return _estimate(g_mu, g_lv)


def encoder_weight_gradient(kind: str, encode: Callable, f: Callable, enc_params, key,
                            n: int):
  """The estimator `kind` of  d/dtheta sum_b E_{z ~ q_theta(z|x_b)} f_b(z)  for encoder weights.

  encode(theta) -> (mu, logvar), each [B, z]; f(z) -> [B] for z [B, z] (image b's
  integrand at its own z_b). Each estimator is the gradient of a surrogate loss:
    pathwise:        mean_i sum_b f_b(mu_b + sigma_b eps_ib)
    score function:  mean_i sum_b (f_b(z_ib) - baseline) log q_theta(z_ib | x_b), z held fixed
  (with "+ baseline", the leave-one-out mean of the other samples' f_b). Returns a
  pytree shaped like enc_params; with B = 1 and encode the identity it is
  `ESTIMATORS[kind](...)`'s estimate, wrt mu and logvar.
  """
  if kind not in ESTIMATORS:
    raise ValueError(f"kind must be one of {list(ESTIMATORS)}, got {kind!r}")
  if kind == "score function + baseline" and n < 2:
    raise ValueError("a leave-one-out baseline needs n >= 2 samples")

  def surrogate(theta):
    m, lv = encode(theta)                                # [B, z] each
    eps = jax.random.normal(key, (n,) + m.shape)         # [n, B, z]
    z = reparameterize(m, lv, eps)                       # [n, B, z]
    if kind == "pathwise":
      return jnp.mean(jax.vmap(f)(z).sum(-1))
    zc = jax.lax.stop_gradient(z)
    fz = jax.lax.stop_gradient(jax.vmap(f)(zc))          # [n, B]
    if kind == "score function + baseline":
      fz = fz - (fz.sum(0) - fz) / (n - 1)
    logq = jnp.sum(-0.5 * (zc - m) ** 2 / jnp.exp(lv) - 0.5 * lv, -1)  # [n, B], up to a constant
    return jnp.mean(jnp.sum(fz * logq, -1))

  return jax.grad(surrogate)(enc_params)


ESTIMATORS = {
    "pathwise": pathwise,
    "score function": score_function,
    "score function + baseline": lambda f, mu, lv, key, n: score_function(f, mu, lv, key, n, True),
}


# Closed forms used by the tests and the variance study.

def quadratic(a):
  """f(z) = sum (z - a)^2: E f = sum (mu - a)^2 + sigma^2; grads 2 (mu - a) and sigma^2."""
  f = lambda z: jnp.sum((z - a) ** 2)
  def exact(mu, logvar):
    return 2 * (mu - a), jnp.exp(logvar)
  return f, exact


def exponential(c):
  """f(z) = exp(c . z): E f = exp(c . mu + sum c^2 sigma^2 / 2) =: E;
  grads c E and c^2 sigma^2 E / 2."""
  f = lambda z: jnp.exp(jnp.dot(c, z))
  def exact(mu, logvar):
    e = jnp.exp(jnp.dot(c, mu) + 0.5 * jnp.sum(c**2 * jnp.exp(logvar)))
    return c * e, 0.5 * c**2 * jnp.exp(logvar) * e
  return f, exact
