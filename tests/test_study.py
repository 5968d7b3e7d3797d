"""The gradient-flow study's pieces: loss variants, closed forms, and a smoke run."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vae_jax import Config, data, losses
from vae_jax.study import experiments as study, variants
from vae_jax.extensions.recipe import make_model

from conftest import synthetic_mnist

CONFIG = Config(hidden_dim=32)


def _batch():
  model = make_model(CONFIG)
  params = model.init_params(jax.random.PRNGKey(0))
  x = jax.random.uniform(jax.random.PRNGKey(1), (16, 784))
  eps = jax.random.normal(jax.random.PRNGKey(2), (16, 2))
  return model, params, x, eps, jnp.ones(16)


def test_reparam_logvar_variant_is_the_blogs_loss():
  model, params, x, eps, w = _batch()
  (a, ma), ga = jax.value_and_grad(losses.batch_loss, has_aux=True)(params, model, x, eps, w)
  (b, mb), gb = jax.value_and_grad(variants.make_loss(), has_aux=True)(params, model, x, eps, w)
  np.testing.assert_allclose(a, b, rtol=1e-6)
  jax.tree.map(lambda u, v: np.testing.assert_allclose(u, v, rtol=1e-5, atol=1e-6), ga, gb)


def test_stop_gradient_sampling_cuts_the_encoder_off_from_the_reconstruction():
  model, params, x, eps, w = _batch()
  def term(p, sampling, which):
    return variants.make_loss(sampling)(p, model, x, eps, w)[1]._asdict()[which]
  g_stop = jax.grad(term)(params, "stop_gradient", "recon")
  g_path = jax.grad(term)(params, "reparam", "recon")
  for layer in ("fc1", "fc21", "fc22"):  # the encoder: exactly nothing from the recon term
    assert all(float(jnp.abs(v).max()) == 0 for v in jax.tree.leaves(g_stop[layer]))
    assert any(float(jnp.abs(v).max()) > 0 for v in jax.tree.leaves(g_path[layer]))
  for layer in ("fc3", "fc4"):  # the decoder sees the same forward pass either way
    jax.tree.map(lambda u, v: np.testing.assert_allclose(u, v, rtol=1e-6), g_stop[layer],
                 g_path[layer])
  g_kl = jax.grad(term)(params, "stop_gradient", "kl")  # only the KL reaches the encoder
  assert float(jnp.abs(g_kl["fc21"]["kernel"]).max()) > 0


def test_raw_variance_goes_nan_when_the_head_goes_below_minus_one():
  model, params, x, eps, w = _batch()
  params = {**params, "fc22": {"kernel": jnp.zeros_like(params["fc22"]["kernel"]),
                               "bias": jnp.full((2,), -1.5)}}  # variance -0.5
  assert np.isnan(float(variants.make_loss("reparam", "raw_var")(params, model, x, eps, w)[0]))
  assert np.isfinite(float(variants.make_loss("reparam", "logvar")(params, model, x, eps, w)[0]))


def test_invalid_variant_names_are_refused():
  with pytest.raises(ValueError, match="sampling must be one of"):
    variants.make_loss("antithetic")
  with pytest.raises(ValueError, match="param must be one of"):
    variants.make_loss("reparam", "precision")


def _heads(v):
  """The head value h giving variance v under each parameterisation."""
  return {"logvar": np.log(v), "softplus_var": np.log(np.expm1(v)), "raw_var": v - 1.0,
          "raw_std": np.sqrt(v) - 1.0}


def _autodiff_scale(param, h):
  """(dv/dh, dKL/dh, d std/dh) of one dimension's KL by autodiff, at float64 heads h [...]."""
  def grad(f):
    return jnp.vectorize(jax.grad(f))(jnp.asarray(h, jnp.float64))
  return (grad(lambda hh: variants.variance_and_std(hh, param)[0]),
          grad(lambda hh: -0.5 * (1 + jnp.log(variants.variance_and_std(hh, param)[0])
                                  - variants.variance_and_std(hh, param)[0])),
          grad(lambda hh: variants.variance_and_std(hh, param)[1]))


def test_gradient_scale_closed_forms_match_autodiff():
  # In float64: both sides are a few operations on the same v, so they agree to a few
  # ulp (measured at most 5e-15 relative); rtol 1e-12. (In float32 the head h = v - 1
  # or sqrt(v) - 1 near v = 1e-3 keeps only ~1e-4 of v's digits, which is why the
  # bound used to be 2e-3.) A wrong factor of 2 or a missing chain-rule term misses
  # by far more.
  v = np.logspace(-3, 0, 7)
  closed = variants.gradient_scale(v)
  with jax.enable_x64(True):
    for param, h in _heads(v).items():
      _, dkl, dstd = _autodiff_scale(param, h)
      np.testing.assert_allclose(dkl, closed[param][0], rtol=1e-12)
      np.testing.assert_allclose(dstd, closed[param][1], rtol=1e-12)


def test_kl_of_rank_one_posterior_plus_noise_matches_the_matrix_formula():
  rng = np.random.default_rng(0)
  mu, s = rng.normal(size=4), np.exp(rng.normal(size=4))
  for delta in (0.5, 1e-2):
    c = np.outer(s, s) + delta**2 * np.eye(4)
    ref = 0.5 * (np.trace(c) + mu @ mu - 4 - np.linalg.slogdet(c)[1])
    np.testing.assert_allclose(variants.kl_rank_one_plus_noise(mu, s, delta), ref, rtol=1e-10)


def test_smoke_run_writes_json_and_figures(tmp_path):
  a = synthetic_mnist(100, 50)  # fewer images than any experiment's own batch: all must cope
  d = data.device_data(data.Split(a["train_images"], a["train_labels"]),
                       data.Split(a["test_images"], a["test_labels"]))
  study.run(tmp_path, ["likelihood", "stop_gradient", "gradient_flow"], quick=True, d=d)
  for name in ("likelihood", "stop_gradient", "gradient_flow"):
    assert (tmp_path / f"{name}.png").stat().st_size > 10_000
    json.loads((tmp_path / f"{name}.json").read_text())
  lik = json.loads((tmp_path / "likelihood.json").read_text())
  assert lik["binary_max_rel_diff"] < 1e-6  # summed BCE == Bernoulli NLL on binary pixels
  flow = json.loads((tmp_path / "gradient_flow.json").read_text())
  assert flow["history"][0]["kl/fc4"] == 0.0 and flow["history"][0]["recon/fc4"] > 0
  with pytest.raises(ValueError, match="unknown experiment"):
    study.run(tmp_path, ["nope"], d=d)
  # A second study into the same folder is refused before any work, unless --overwrite.
  before = {p: p.read_bytes() for p in tmp_path.iterdir()}
  with pytest.raises(FileExistsError, match="stop_gradient.json holds an earlier study's"):
    study.run(tmp_path, ["stop_gradient", "likelihood"], quick=True, d=d)
  assert {p: p.read_bytes() for p in tmp_path.iterdir()} == before
  study.run(tmp_path, ["likelihood"], quick=True, d=d, overwrite=True)
  assert (tmp_path / "likelihood.json").read_bytes() != before[tmp_path / "likelihood.json"]
  assert json.loads((tmp_path / "likelihood.json").read_text())["setting"] == {
      "quick": True, "train_images": 100, "test_images": 50}


# The report's gradient-scale table (variants.gradient_scale_at) and the variance split.


def test_gradient_scale_table_matches_float64_autodiff_and_the_hand_values():
  # Hand values at v = 1e-4 (std = 0.01, dKL/dv = (1 - 1/v)/2 = -4999.5):
  hand = {"logvar": (-0.49995, 0.005),                   # (v - 1)/2, std/2
          "softplus_var": (-4999.5 * -np.expm1(-1e-4),   # dv/dh = 1 - e^-v
                           -np.expm1(-1e-4) / 0.02),
          "raw_std": (-99.99, 1.0),                       # dKL/dv 2 std, 1
          "raw_var": (-4999.5, 50.0)}                     # dKL/dv, 1/(2 std)
  table = variants.gradient_scale_at(1e-4)
  for param, (dkl, dstd) in hand.items():
    np.testing.assert_allclose(table[param]["dkl_dh"], dkl, rtol=1e-12)
    np.testing.assert_allclose(table[param]["dstd_dh"], dstd, rtol=1e-12)
  np.testing.assert_allclose(table["softplus_var"]["dkl_dh"], -0.499925, rtol=1e-8)

  with jax.enable_x64(True):  # float64: float32 cannot hold h = v - 1 near v = 0
    for v in (1e-6, 1e-4, 1e-2, 0.5, 3.0):
      table = variants.gradient_scale_at(v)
      for param, h in _heads(v).items():
        got = dict(zip(("dv_dh", "dkl_dh", "dstd_dh"), _autodiff_scale(param, h)))
        for name, value in got.items():
          np.testing.assert_allclose(float(value), table[param][name], rtol=1e-8)


def test_variance_curve_splits_the_average_by_group():
  scale = jnp.array([1.0, 2.0, 3.0, 4.0])
  def estimate(k, n):
    return jax.random.normal(k, (4,)) * scale / jnp.sqrt(n)
  key, ns = jax.random.PRNGKey(0), [2, 8]
  groups = {"a": np.array([True, True, False, False]), "b": np.array([False, False, True, True])}
  plain = study._variance_curve(estimate, ns, 50, key)
  total, split = study._variance_curve(estimate, ns, 50, key, groups)
  assert total == plain  # the overall average is unchanged by asking for groups
  np.testing.assert_allclose(total, [(u + v) / 2 for u, v in zip(split["a"], split["b"])],
                             rtol=1e-6)
  assert all(u < v for u, v in zip(split["a"], split["b"]))
