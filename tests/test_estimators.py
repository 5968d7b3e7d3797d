"""Gradient estimators against closed forms, within 5 standard errors."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vae_jax.study import estimators

MU = jnp.array([0.5, -1.0, 0.0])
LOGVAR = jnp.array([0.0, -2.0, 0.7])
N = 100_000

CASES = {
    "quadratic": estimators.quadratic(jnp.array([1.0, 0.0, -0.5])),
    "exponential": estimators.exponential(jnp.array([0.3, -0.5, 0.2])),
}


def _check(est, exact_mu, exact_lv, n):
  for per_sample, mean, exact in ((est.per_sample_mu, est.mu, exact_mu),
                                  (est.per_sample_logvar, est.logvar, exact_lv)):
    per_sample = np.asarray(per_sample, np.float64)
    se = per_sample.std(0, ddof=1) / np.sqrt(n)
    err = np.abs(np.asarray(mean, np.float64) - np.asarray(exact))
    assert np.all(err <= 5 * se + 1e-5 * np.abs(exact)), (mean, exact, se)


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("name", estimators.ESTIMATORS)
def test_estimators_are_unbiased_for_closed_form_integrands(case, name):
  f, exact = CASES[case]
  est = jax.jit(estimators.ESTIMATORS[name], static_argnums=(0, 4))(
      f, MU, LOGVAR, jax.random.PRNGKey(3), N)
  _check(est, *exact(MU, LOGVAR), N)


def test_pathwise_has_lower_variance_than_score_function_here():
  f, _ = CASES["quadratic"]
  key = jax.random.PRNGKey(0)
  var = {name: float(np.var(np.asarray(e(f, MU, LOGVAR, key, 10_000).per_sample_mu), 0).sum())
         for name, e in estimators.ESTIMATORS.items()}
  assert var["pathwise"] < var["score function + baseline"] < var["score function"], var


def test_stop_gradient_sampling_lets_nothing_through():
  f, _ = CASES["exponential"]
  est = estimators.stop_gradient_sampling(f, MU, LOGVAR, jax.random.PRNGKey(0), 64)
  assert np.all(np.asarray(est.per_sample_mu) == 0) and np.all(np.asarray(est.per_sample_logvar) == 0)


def test_baseline_needs_two_samples():
  f, _ = CASES["quadratic"]
  with pytest.raises(ValueError, match="n >= 2"):
    estimators.score_function(f, MU, LOGVAR, jax.random.PRNGKey(0), 1, baseline=True)


@pytest.mark.parametrize("name", estimators.ESTIMATORS)
def test_encoder_weight_gradient_is_the_estimator_through_an_identity_encoder(name):
  # With one image and encode(theta) = (theta_mu, theta_logvar), the gradient wrt the
  # "weights" is the estimator's gradient wrt (mu, logvar): same key, same eps, same terms.
  f, _ = CASES["exponential"]
  key, n = jax.random.PRNGKey(5), 4096
  theta = {"mu": MU, "logvar": LOGVAR}
  encode = lambda t: (t["mu"][None], t["logvar"][None])       # [1, d] each
  g = estimators.encoder_weight_gradient(name, encode, lambda z: jax.vmap(f)(z), theta, key, n)
  est = estimators.ESTIMATORS[name](f, MU, LOGVAR, key, n)
  np.testing.assert_allclose(g["mu"], est.mu, rtol=1e-4, atol=1e-6)
  np.testing.assert_allclose(g["logvar"], est.logvar, rtol=1e-4, atol=1e-6)
  with pytest.raises(ValueError, match="kind must be one of"):
    estimators.encoder_weight_gradient("antithetic", encode, f, theta, key, n)
