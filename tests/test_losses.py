"""The two loss terms against closed forms, Monte Carlo and PyTorch's semantics."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vae_jax import losses

pytestmark = pytest.mark.fast  # the lesson's maths: `make test-fast`

# (mu, logvar) pairs, extremes included: tiny and huge variances, far-off means.
MU = np.array([0.0, 0.5, -1.0, 3.0, -8.0, 10.0, 0.0, 2.0, 0.0, -0.3])
LOGVAR = np.array([0.0, -1.0, 1.0, -5.0, 2.0, 0.0, -10.0, 3.0, 4.0, -0.1])


def kl_general_gaussians(m1, s1, m2, s2):
  """KL(N(m1, s1^2) || N(m2, s2^2)) = log(s2/s1) + (s1^2 + (m1-m2)^2) / (2 s2^2) - 1/2."""
  return np.log(s2 / s1) + (s1**2 + (m1 - m2) ** 2) / (2 * s2**2) - 0.5


def test_kl_matches_general_gaussian_kl_closed_form():
  # Independent formula, in float64, written with sigma rather than logvar.
  ours = np.asarray(losses.kl_standard_normal(MU[:, None], LOGVAR[:, None]))  # [10], float32
  ref = kl_general_gaussians(MU, np.exp(0.5 * LOGVAR), 0.0, 1.0)
  np.testing.assert_allclose(ours, ref, rtol=1e-5, atol=1e-6)


def test_kl_matches_multivariate_closed_form_with_trace_and_logdet():
  # KL(N(mu, S) || N(0, I)) = 1/2 (tr S + mu^T mu - k - log det S), S diagonal here.
  rng = np.random.default_rng(0)
  mu, logvar = rng.normal(size=(5, 4)), rng.normal(size=(5, 4))
  ours = np.asarray(losses.kl_standard_normal(mu, logvar))
  for b in range(5):
    s = np.diag(np.exp(logvar[b]))
    ref = 0.5 * (np.trace(s) + mu[b] @ mu[b] - 4 - np.linalg.slogdet(s)[1])
    np.testing.assert_allclose(ours[b], ref, rtol=1e-5)


def test_kl_matches_monte_carlo_within_5_standard_errors():
  # KL = E_q[log q(z) - log p(z)]; per sample, with z = mu + sigma eps,
  # log q(z) - log p(z) = -logvar/2 - eps^2/2 + z^2/2 (the 2 pi terms cancel).
  n = 400_000
  eps = np.random.default_rng(1).standard_normal((n, len(MU)))
  z = MU + np.exp(0.5 * LOGVAR) * eps
  samples = -0.5 * LOGVAR - 0.5 * eps**2 + 0.5 * z**2  # [n, 10]
  mc, se = samples.mean(0), samples.std(0, ddof=1) / np.sqrt(n)
  ours = np.asarray(losses.kl_standard_normal(MU[:, None], LOGVAR[:, None]), np.float64)
  # 5 standard errors, plus float32 rounding of the analytic value.
  assert np.all(np.abs(ours - mc) <= 5 * se + 1e-6 * np.abs(ours)), (ours, mc, se)


def test_kl_gradients_are_the_analytic_ones():
  # dKL/dmu = mu, dKL/dlogvar = (exp(logvar) - 1) / 2.
  g_mu, g_lv = jax.grad(lambda m, l: losses.kl_standard_normal(m, l).sum(), argnums=(0, 1))(
      jnp.asarray(MU, jnp.float32), jnp.asarray(LOGVAR, jnp.float32))
  np.testing.assert_allclose(g_mu, MU, rtol=1e-6)
  np.testing.assert_allclose(g_lv, 0.5 * (np.exp(LOGVAR) - 1), rtol=1e-5, atol=1e-7)


def test_kl_is_zero_at_the_prior_and_positive_elsewhere():
  assert float(losses.kl_standard_normal(jnp.zeros((1, 3)), jnp.zeros((1, 3)))[0]) == 0.0
  assert np.all(np.asarray(losses.kl_standard_normal(MU[:, None], LOGVAR[:, None]))[1:] > 0)


def test_bce_from_logits_is_the_bernoulli_negative_log_likelihood():
  rng = np.random.default_rng(2)
  logits = rng.normal(scale=4, size=(6, 50)).astype(np.float32)
  p = 1 / (1 + np.exp(-logits.astype(np.float64)))
  x_bin = rng.integers(0, 2, size=(6, 50)).astype(np.float32)
  # Binary x: -log prod_i p_i^x_i (1 - p_i)^(1 - x_i), the likelihood itself.
  nll = -np.log(np.prod(np.where(x_bin == 1, p, 1 - p), axis=1))
  np.testing.assert_allclose(losses.bernoulli_nll(logits, x_bin), nll, rtol=1e-5)
  # Continuous x in [0, 1] (the blog's pixels): the cross-entropy -sum x log p + (1-x) log(1-p).
  x = rng.uniform(size=(6, 50)).astype(np.float32)
  ce = -np.sum(x * np.log(p) + (1 - x) * np.log1p(-p), axis=1)
  np.testing.assert_allclose(losses.bernoulli_nll(logits, x), ce, rtol=1e-5)


def test_bce_matches_pytorch_style_clamped_bce_where_the_clamp_is_inactive():
  rng = np.random.default_rng(3)
  logits = jnp.asarray(rng.uniform(-8, 8, size=(4, 784)), jnp.float32)
  x = jnp.asarray(rng.uniform(size=(4, 784)), jnp.float32)
  clamped = losses.torch_bce(jax.nn.sigmoid(logits), x).sum(-1)
  # float32 1 - sigmoid(8) keeps ~4 digits: 1e-4 relative covers it.
  np.testing.assert_allclose(losses.bernoulli_nll(logits, x), clamped, rtol=1e-4)


def test_bce_differs_from_pytorch_where_the_clamp_bites():
  # A confidently wrong pixel: logit 30, target 0. The true NLL is
  # -log(1 - sigmoid(30)) = 30 + log1p(exp(-30)); float32 sigmoid(30) rounds to 1,
  # so PyTorch's log(1 - p) is -inf and clamps to -100.
  logits, x = jnp.array([[30.0]]), jnp.array([[0.0]])
  np.testing.assert_allclose(losses.bernoulli_nll(logits, x), [30.0], rtol=1e-6)
  np.testing.assert_allclose(losses.torch_bce(jax.nn.sigmoid(logits), x).sum(-1), [100.0])


def test_pytorch_binary_cross_entropy_agrees_when_installed():
  torch = pytest.importorskip("torch")
  rng = np.random.default_rng(4)
  logits = rng.uniform(-8, 8, size=(4, 784)).astype(np.float32)
  x = rng.uniform(size=(4, 784)).astype(np.float32)
  # Both sides get the same probabilities p: a backend's sigmoid may differ from
  # PyTorch's by an ulp, and log(1 - p) magnifies that by p / (1 - p), up to 3e3 at
  # |logit| = 8 (1.9e-5 relative on a GPU). On the same p, only the logs' rounding differs.
  p = np.asarray(jax.nn.sigmoid(logits))
  ref = torch.nn.functional.binary_cross_entropy(
      torch.from_numpy(p), torch.from_numpy(x), reduction="none")
  np.testing.assert_allclose(losses.torch_bce(p, x), ref.numpy(), rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(losses.bernoulli_nll(logits, x), ref.numpy().sum(-1), rtol=1e-4)
  # Where the clamp bites, our torch_bce reproduces PyTorch exactly.
  big = torch.tensor([[30.0, -30.0]])
  ref = torch.nn.functional.binary_cross_entropy(torch.sigmoid(big), torch.tensor([[0.0, 1.0]]),
                                                 reduction="none")
  np.testing.assert_allclose(losses.torch_bce(jax.nn.sigmoid(big.numpy()), np.array([[0.0, 1.0]])),
                             ref.numpy())


@pytest.mark.parametrize("logit", [1e4, -1e4])
def test_bce_and_its_gradient_are_finite_for_huge_logits(logit):
  logits = jnp.full((1, 3), logit)
  x = jnp.array([[0.0, 0.5, 1.0]])
  value, grad = jax.value_and_grad(lambda l: losses.bernoulli_nll(l, x).sum())(logits)
  assert np.isfinite(value) and np.all(np.isfinite(grad))
  # Two of the three pixels are wrong by |logit|/2 or |logit|: the loss is 1.5 |logit|.
  np.testing.assert_allclose(value, 1.5 * abs(logit), rtol=1e-6)
  # d/dl = sigmoid(l) - x, exactly, even here.
  np.testing.assert_allclose(grad, (logit > 0) - x, atol=1e-6)


def test_vae_loss_is_recon_plus_kl_under_jit():
  rng = np.random.default_rng(5)
  logits, x = rng.normal(size=(3, 784)), rng.uniform(size=(3, 784))
  mu, logvar = rng.normal(size=(3, 2)), rng.normal(size=(3, 2))
  logits, x, mu, logvar = (a.astype(np.float32) for a in (logits, x, mu, logvar))
  terms = jax.jit(losses.vae_loss)(logits, x, mu, logvar)
  np.testing.assert_allclose(terms.recon, losses.bernoulli_nll(logits, x), rtol=1e-6)
  np.testing.assert_allclose(terms.kl, losses.kl_standard_normal(mu, logvar), rtol=1e-6)
  np.testing.assert_allclose(terms.loss, terms.recon + terms.kl, rtol=1e-6)
