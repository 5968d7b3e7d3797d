"""The VAE objective, per example: reconstruction + KL = the negative ELBO.

For one image x (784 pixels in [0, 1]) with q(z|x) = N(mu, diag(exp(logvar))):

  loss(x) = recon(x) + kl(x)
  recon(x) = -sum_i [x_i log p_i + (1 - x_i) log(1 - p_i)],  p = sigmoid(logits)
           = the binary cross-entropy; -log p(x|z) of a Bernoulli decoder when x is 0/1
             (on the blog's grey pixels no density: docs/gradient_flow.md, question 4)
  kl(x)    = KL(N(mu, sigma^2) || N(0, I)) = -1/2 sum_k (1 + logvar_k - mu_k^2 - exp(logvar_k))

With z sampled from q(z|x) (training), loss(x) is a one-sample estimate of the negative
ELBO; with z = mu (the blog's eval mode, its test loss) it is a plug-in value and no bound
of anything (at z = 20: 92.47, where the sampled -ELBO is 100.02; results/likelihood.md).
Each function returns one value per example; the caller reduces. The blog's reported loss
is sum over the split / split size ("loss per image").

How this differs from the blog's `F.binary_cross_entropy(sigmoid(logits), x)`:
PyTorch takes the logs of probabilities and clamps each at -100. We work from
logits: log p = log_sigmoid(l) and log(1 - p) = log_sigmoid(-l), exact for any
logit. The two agree wherever the clamp is inactive and float32 can represent
1 - p (|l| below about 17); where a pixel is confidently wrong (say l = 30, x = 0)
PyTorch's term saturates at 100 while ours is the true 30. See
`tests/test_losses.py`.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax


class LossTerms(NamedTuple):
  recon: jax.Array  # [B] the BCE, -log p(x|z) on 0/1 pixels
  kl: jax.Array     # [B] KL(q(z|x) || p(z))
  loss: jax.Array   # [B] recon + kl: the -ELBO's estimate at this z


def bernoulli_nll(logits: jax.Array, x: jax.Array) -> jax.Array:
  """-log Bernoulli(x | sigmoid(logits)), summed over pixels. [B, D], [B, D] -> [B].

  Optax's `sigmoid_binary_cross_entropy` is -x log_sigmoid(l) - (1-x) log_sigmoid(-l),
  stable for any logit (never log(sigmoid(l))).
  """
  return optax.sigmoid_binary_cross_entropy(logits, x).sum(axis=-1)


def kl_standard_normal(mu: jax.Array, logvar: jax.Array) -> jax.Array:
  """KL(N(mu, diag(exp(logvar))) || N(0, I)) = -1/2 sum_k (1 + logvar - mu^2 - exp(logvar)).

  Kingma & Welling (2014), appendix B; the blog's `kld`. [B, z], [B, z] -> [B].
  """
  return -0.5 * jnp.sum(1.0 + logvar - mu**2 - jnp.exp(logvar), axis=-1)


def vae_loss(logits: jax.Array, x: jax.Array, mu: jax.Array, logvar: jax.Array) -> LossTerms:
  """Per-example negative ELBO and its two parts. Shapes as above; all outputs [B]."""
  recon = bernoulli_nll(logits, x)
  kl = kl_standard_normal(mu, logvar)
  return LossTerms(recon, kl, recon + kl)


# --------------------------------------------------------------------------
# The training objective of a batch, and the sums a split is scored by.


class Metrics(NamedTuple):
  """Sums over a batch or a split (divide by its size for the blog's "loss per image")."""
  recon: jax.Array
  kl: jax.Array
  loss: jax.Array


def batch_loss(params, model, x, eps, weight, kl_weight=1.0, y=None):
  """Sum over the batch of weight * (recon + kl): the blog's `size_average=False`.

  model: a `VAE`; x: [B, 784] in [0, 1]; eps: [B, z] (zeros: z = mu, eval mode);
  weight: [B] (1 a real example, 0 padding); y: int [B] labels, the CVAE's condition
  (None for the VAE). Returns (loss, Metrics of the batch sums).
  `kl_weight` b (a scalar) makes the objective sum weight * (recon + b * kl): the
  beta-VAE (Higgins et al. 2017) and KL warm-up (Bowman et al. 2016); the Metrics stay
  the unweighted terms, so `Metrics.loss` is recon + KL whatever b is.
  """
  out = model.apply({"params": params}, x, eps, y)
  terms = vae_loss(out.logits, x, out.mu, out.logvar)  # each [B]
  sums = Metrics(*(jnp.sum(weight * t) for t in terms))
  if isinstance(kl_weight, (int, float)) and kl_weight == 1:
    return sums.loss, sums  # the ELBO itself: the very program the blog's runs compile
  return jnp.sum(weight * (terms.recon + kl_weight * terms.kl)), sums


def latent_statistics(params, model, x, y=None):
  """Per latent dimension u, over the images x [N, 784] (labels y [N], the CVAE's): the mean of
  KL(q(z_u|x) || N(0, 1)) = -1/2 (1 + logvar_u - mu_u^2 - exp(logvar_u)), whose sum over u is
  the KL per image, and Var_x(mu_u), Burda et al.'s activity (active: > 0.01). -> [z], [z]."""
  mu, logvar = model.apply({"params": params}, x, y, method="encode")  # [N, z] each
  kl = -0.5 * (1.0 + logvar - mu**2 - jnp.exp(logvar))              # [N, z]
  return kl.mean(axis=0), mu.var(axis=0)


def torch_bce(probs: jax.Array, x: jax.Array) -> jax.Array:
  """PyTorch's `F.binary_cross_entropy(probs, x, reduction='none')`, for comparison only.

  -(x * max(log p, -100) + (1 - x) * max(log(1 - p), -100)), elementwise.
  """
  log_p = jnp.maximum(jnp.log(probs), -100.0)
  log_1mp = jnp.maximum(jnp.log1p(-probs), -100.0)
  return -(x * log_p + (1.0 - x) * log_1mp)


# --------------------------------------------------------------------------
# Importance weights: the IWAE objective and the likelihood estimator (likelihood.py).

LOG_2PI = 1.8378770664093453  # log(2 pi)


class LogWeights(NamedTuple):
  """log w_i = log p(x|z_i) + log p(z_i) - log q(z_i|x) and its parts, each [B, k]."""
  log_px_z: jax.Array  # log p(x|z_i): minus the Bernoulli NLL
  log_pz: jax.Array    # log N(z_i; 0, I)
  log_qz: jax.Array    # log N(z_i; mu(x), diag(exp(logvar(x))))
  log_w: jax.Array     # log_px_z + log_pz - log_qz


def bernoulli_log_likelihood(logits: jax.Array, x: jax.Array) -> jax.Array:
  """log Bernoulli(x | sigmoid(l)) summed over pixels = sum_i x_i l_i - softplus(l_i).

  The same number as -`bernoulli_nll` (x log s(l) + (1 - x) log s(-l) with
  log s(l) = l - softplus(l) and log s(-l) = -softplus(l)), from one softplus per pixel
  instead of two: the importance-weighted estimator evaluates it for 5000 samples of each
  of 10,000 images, and these transcendentals are half its time on a CPU. [..., D] -> [...].
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
  """L_k = log (1/k) sum_i w_i, from log w [..., k] by logsumexp (no w is ever exponentiated
  alone). [..., k] -> [...]."""
  return jax.nn.logsumexp(log_w, axis=-1) - jnp.log(log_w.shape[-1])


def iwae_batch_loss(params, model, x, eps, weight):
  """Sum over the batch of weight * (-L_k): the IWAE objective (Burda et al. 2016, eq. 8).

  eps: [B, k, z]. The Metrics' recon and kl are the ELBO's two terms (the recon averaged
  over the k samples, the KL analytic), so recon + kl estimates the negative ELBO from the
  same samples, and E[loss] <= E[recon + kl] (E[L_k] >= ELBO): the bound training
  tightens. For one set of samples the order can go either way, since the KL is the
  analytic one, not the samples' log q - log p.
  """
  lw, kl = log_weights(params, model, x, eps)
  sums = Metrics(jnp.sum(weight * -lw.log_px_z.mean(axis=-1)), jnp.sum(weight * kl),
                 jnp.sum(weight * -iwae_bound(lw.log_w)))
  return sums.loss, sums


def training_loss(config):
  """The `batch_loss`-like function `config.objective` names."""
  return iwae_batch_loss if config.objective == "iwae" else batch_loss
