"""The VAE objective, per example: reconstruction + KL = the negative ELBO.

For one image x (784 pixels in [0, 1]) with q(z|x) = N(mu, diag(exp(logvar))):

  loss(x) = recon(x) + kl(x)
  recon(x) = -sum_i [x_i log p_i + (1 - x_i) log(1 - p_i)],  p = sigmoid(logits)
           = the binary cross-entropy; -log p(x|z) of a Bernoulli decoder when x is 0/1
             (on the blog's grey pixels no density: docs/gradient_flow.md, question 4)
  kl(x)    = KL(N(mu, sigma^2) || N(0, I)) = -1/2 sum_k (1 + logvar_k - mu_k^2 - exp(logvar_k))

With z sampled from q(z|x) (training), loss(x) is a one-sample estimate of the negative
ELBO; with z = mu (the blog's eval mode, its test loss) it is a plug-in value and no bound
of anything (docs/likelihood.md). Each function returns one value per example; the caller
reduces. The blog's reported loss is sum over the split / split size ("loss per image").

How this differs from the blog's `F.binary_cross_entropy(sigmoid(logits), x)`:
PyTorch takes the logs of probabilities and clamps each at -100. We work from
logits: log p = log_sigmoid(l) and log(1 - p) = log_sigmoid(-l), exact for any
logit. The two agree wherever the clamp is inactive and float32 can represent
1 - p (|l| below about 17); where a pixel is confidently wrong (say l = 30, x = 0)
PyTorch's term saturates at 100 while ours is the true 30 (`torch_bce`, tests/test_losses.py).
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


class Metrics(NamedTuple):
  """Sums over a batch or a split (divide by its size for the blog's "loss per image")."""
  recon: jax.Array
  kl: jax.Array
  loss: jax.Array


def batch_loss(params, model, x, eps, weight) -> tuple[jax.Array, Metrics]:
  """Sum over the batch of weight * (recon + kl): the blog's `size_average=False`.

  model: a `VAE`; x: [B, 784] in [0, 1]; eps: [B, z] (zeros: z = mu, eval mode);
  weight: [B] (1 a real example, 0 padding). Returns (loss, Metrics of the batch sums).
  """
  out = model.apply({"params": params}, x, eps)
  terms = vae_loss(out.logits, x, out.mu, out.logvar)  # each [B]
  sums = Metrics(*(jnp.sum(weight * t) for t in terms))
  return sums.loss, sums


def torch_bce(probs: jax.Array, x: jax.Array) -> jax.Array:
  """PyTorch's `F.binary_cross_entropy(probs, x, reduction='none')`, for comparison only.

  -(x * max(log p, -100) + (1 - x) * max(log(1 - p), -100)), elementwise.
  """
  log_p = jnp.maximum(jnp.log(probs), -100.0)
  log_1mp = jnp.maximum(jnp.log1p(-probs), -100.0)
  return -(x * log_p + (1.0 - x) * log_1mp)
