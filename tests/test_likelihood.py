"""The importance-weighted estimator, checked against numerical quadrature and closed forms.

The models are small (12 pixels, z = 2) so that log p(x) = log of the integral of
p(x|z) N(z; 0, I) over the plane can be computed on a grid, in float64 NumPy, by
code that shares nothing with the package. Every statistical check uses fixed keys
and a tolerance of 5 standard errors, the standard error measured from R
independent repeats of the estimate.
"""

import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vae_jax import data, losses, train
from vae_jax.config import Config
from vae_jax.extensions import binarize, burda, iwae, likelihood, recipe
from vae_jax.extensions.burda import BurdaVAE
from vae_jax.model import VAE

D, Z, H = 12, 2, 16  # pixels, latent size, hidden width of the quadrature models
R = 10               # independent repeats of each estimate


def np_params(params):
  return {name: {k: np.asarray(v, np.float64) for k, v in layer.items()}
          for name, layer in params.items()}


def np_decode(p, z, arch):
  """Logits of p(x|z) in float64; z: [..., Z]. Written from the model's docstrings."""
  lin = lambda name, a: a @ p[name]["kernel"] + p[name]["bias"]
  if arch == "blog":
    return lin("fc4", np.maximum(lin("fc3", z), 0.0))
  return lin("fc6", np.tanh(lin("fc5", np.tanh(lin("fc4", z)))))


def np_encode(p, x, arch):
  lin = lambda name, a: a @ p[name]["kernel"] + p[name]["bias"]
  if arch == "blog":
    h = np.maximum(lin("fc1", x), 0.0)
    return lin("fc21", h), lin("fc22", h)
  h = np.tanh(lin("fc2", np.tanh(lin("fc1", x))))
  return lin("fc31", h), lin("fc32", h)


def np_log_bernoulli(logits, x):
  """sum_i x_i log s(l_i) + (1 - x_i) log(1 - s(l_i)), s the sigmoid, in float64."""
  return np.sum(x * -np.logaddexp(0.0, -logits) + (1 - x) * -np.logaddexp(0.0, logits), axis=-1)


def quadrature_log_px(p, x, arch, half_width=9.0, n=361):
  """log p(x) for each row of x [N, D] by the trapezoid rule over [-w, w]^2 (n^2 points)."""
  g = np.linspace(-half_width, half_width, n)
  z = np.stack(np.meshgrid(g, g, indexing="ij"), -1).reshape(-1, 2)    # [n^2, 2]
  log_prior = -0.5 * np.sum(z**2, -1) - math.log(2 * math.pi)           # [n^2]
  logits = np_decode(p, z, arch)                                        # [n^2, D]
  w = np.ones(n)
  w[[0, -1]] = 0.5
  log_cell = np.log(np.outer(w, w).reshape(-1) * (g[1] - g[0])**2)      # trapezoid weights
  log_s, log_1ms = -np.logaddexp(0.0, -logits), -np.logaddexp(0.0, logits)  # [n^2, D]
  f = x @ log_s.T + (1 - x) @ log_1ms.T + log_prior + log_cell                # [N, n^2]
  return np.logaddexp.reduce(f, axis=1)


@pytest.fixture(scope="module", params=["blog", "burda"])
def small_model(request):
  """A z = 2 model of 12 pixels, random weights, and 6 binary images drawn from it.

  The encoder's mean is shifted by 1.5 so that q(z|x) is a poor proposal and the bound
  L_k climbs visibly with k (a near-perfect q would make every L_k the same)."""
  arch = request.param
  model = (VAE if arch == "blog" else BurdaVAE)(latent_dim=Z, hidden_dim=H, data_dim=D)
  params = model.init_params(jax.random.PRNGKey(3))
  mu_layer = "fc21" if arch == "blog" else "fc31"
  params = {**params, mu_layer: {**params[mu_layer], "bias": params[mu_layer]["bias"] + 1.5}}
  k_z, k_x = jax.random.split(jax.random.PRNGKey(4))
  z = jax.random.normal(k_z, (6, Z))
  logits = model.apply({"params": params}, z, method="decode")
  x = jax.random.bernoulli(k_x, jax.nn.sigmoid(logits)).astype(jnp.uint8) * 255  # 0 / 255
  return arch, model, params, np.asarray(x)


def repeats(model, params, x, k, ks=None, r_count=R):
  """Independent estimates (keys 0, 1, ...) -> {name: [r_count] array of test averages}.

  4 images per chunk: the 6 images make a full chunk and a padded one."""
  ests = [likelihood.estimate(model, params, x, k, key=jax.random.PRNGKey(r), ks=ks,
                              image_chunk=4, sample_chunk=250) for r in range(r_count)]
  out = {f"L{j}": np.array([e.bounds[j] for e in ests]) for j in ests[0].bounds}
  out["elbo"] = np.array([e.elbo for e in ests])
  out["mc_se"] = np.array([e.mc_se for e in ests])
  out["elbo_se"] = np.array([e.elbo_se for e in ests])
  return out


def se(a):
  return np.std(a, ddof=1) / math.sqrt(len(a))


def test_quadrature_is_converged(small_model):
  """The grid is wide and fine enough: a finer, wider grid gives the same log p(x)."""
  arch, _, params, x = small_model
  p, xb = np_params(params), x / 255.0
  np.testing.assert_allclose(quadrature_log_px(p, xb, arch),
                             quadrature_log_px(p, xb, arch, half_width=11.0, n=881), atol=1e-6)


def test_log_weights_match_an_independent_float64_computation(small_model):
  """log p(x|z), log p(z), log q(z|x) of given eps, against NumPy from the docstrings."""
  arch, model, params, x = small_model
  xb = data.to_inputs(jnp.asarray(x))
  eps = jax.random.normal(jax.random.PRNGKey(5), (len(x), 7, Z))
  lw, kl = iwae.log_weights(params, model, xb, eps)
  p, xn, en = np_params(params), np.asarray(xb, np.float64), np.asarray(eps, np.float64)
  mu, logvar = np_encode(p, xn, arch)
  z = mu[:, None] + np.exp(0.5 * logvar)[:, None] * en
  log_px_z = np_log_bernoulli(np_decode(p, z, arch), xn[:, None])
  log_pz = np.sum(-0.5 * z**2 - 0.5 * math.log(2 * math.pi), -1)
  var = np.exp(logvar)[:, None]
  log_qz = np.sum(-0.5 * (z - mu[:, None])**2 / var - 0.5 * np.log(2 * math.pi * var), -1)
  for got, want in ((lw.log_px_z, log_px_z), (lw.log_pz, log_pz), (lw.log_qz, log_qz),
                    (lw.log_w, log_px_z + log_pz - log_qz)):
    np.testing.assert_allclose(np.asarray(got), want, rtol=2e-5, atol=2e-5)
  np.testing.assert_allclose(np.asarray(kl), np.sum(0.5 * (mu**2 + np.exp(logvar) - 1 - logvar),
                                                    -1), rtol=2e-5, atol=2e-5)
  # and the IWAE objective is -log mean_i w_i of those weights
  loss, m = iwae.batch_loss(params, model, xb, eps, jnp.ones(len(x)))
  lw64 = log_px_z + log_pz - log_qz
  want = -np.sum(np.logaddexp.reduce(lw64, axis=1) - math.log(7))
  np.testing.assert_allclose(float(loss), want, rtol=2e-5)
  np.testing.assert_allclose(float(m.recon), -np.sum(log_px_z.mean(1)), rtol=2e-5)


def test_L5000_matches_quadrature_and_Lk_grows_with_k(small_model):
  """E[L_1] < E[L_5] < E[L_50] < E[L_5000] ~ log p(x): each step up by more than 5 standard
  errors of the paired difference; L_5000 within 5 s.e. of the quadrature (its bias,
  about Var(w) / (2 k E[w]^2), is far below that here), and L_50 below it by more."""
  arch, model, params, x = small_model
  quad = quadrature_log_px(np_params(params), x / 255.0, arch).mean()
  r = repeats(model, params, x, 5000)
  for lo, hi in (("L1", "L5"), ("L5", "L50"), ("L50", "L5000")):
    diff = r[hi] - r[lo]
    assert diff.mean() > 5 * se(diff), (arch, lo, hi, diff.mean(), se(diff))
  assert abs(r["L5000"].mean() - quad) < 5 * se(r["L5000"]), (arch, r["L5000"].mean(), quad)
  assert r["L50"].mean() < quad - 5 * se(r["L50"]), (arch, r["L50"].mean(), quad)


def test_L1_is_the_analytic_elbo_in_expectation(small_model):
  """L_1 averaged over samples and the ELBO with the analytic KL differ by
  mean_i [log p(z_i) - log q(z_i|x)] + KL, whose expectation is 0: within 5 s.e."""
  _, model, params, x = small_model
  r = repeats(model, params, x, 200, ks=(1,))
  diff = r["L1"] - r["elbo"]
  assert abs(diff.mean()) < 5 * se(diff), (diff.mean(), se(diff))
  assert se(diff) > 0  # the two are different estimators, not one number twice


def test_delta_method_standard_error_matches_the_spread_of_repeats(small_model):
  """`mc_se` (one estimate's delta-method s.e.) against the sd of 60 repeats of L_5000: the
  sample sd of n values has a relative s.e. of 1 / sqrt(2 (n - 1)) = 9.2%, so the ratio
  must lie within 1 +- 5 x 9.2%."""
  _, model, params, x = small_model
  n = 60
  r = repeats(model, params, x, 5000, ks=(5000,), r_count=n)
  ratio = np.std(r["L5000"], ddof=1) / r["mc_se"].mean()
  assert abs(ratio - 1) < 5 / math.sqrt(2 * (n - 1)), ratio


def test_the_elbos_standard_error_matches_the_spread_of_repeats(small_model):
  """`elbo_se` (from each image's k terms) against the sd of 200 repeats of the ELBO at
  k = 20: the sample sd of n values has a relative s.e. of 1 / sqrt(2 (n - 1)) = 5.0%, so the
  ratio must lie within 1 +- 5 x 5.0%. At k = 1 there is no s.e. to give."""
  _, model, params, x = small_model
  n = 200
  r = repeats(model, params, x, 20, ks=(1,), r_count=n)
  ratio = np.std(r["elbo"], ddof=1) / r["elbo_se"].mean()
  assert abs(ratio - 1) < 5 / math.sqrt(2 * (n - 1)), ratio
  one = likelihood.estimate(model, params, x, 1, key=jax.random.PRNGKey(0), ks=(1,))
  assert one.elbo_se is None and likelihood.to_json(one)["neg_elbo_mc_se"] is None


def test_active_units():
  """Active units count Var_x(mu_u) > 0.01 over the images, whatever the chunking."""
  model = VAE(latent_dim=3, hidden_dim=8, data_dim=D)
  params = model.init_params(jax.random.PRNGKey(0))
  x = np.asarray(jax.random.bernoulli(jax.random.PRNGKey(1), 0.5, (40, D)), np.uint8) * 255
  # dimension 0 reads the image (variance above 0.01); dimension 1 the same, scaled to a
  # variance of 0.004, just under the threshold; dimension 2 reads nothing
  def with_kernel(c1):
    kernel = np.zeros((8, 3), np.float32)
    kernel[:, 0], kernel[:, 1] = 1.0, c1
    return {**params, "fc21": {"kernel": jnp.asarray(kernel), "bias": jnp.zeros(3)}}
  def mu_var(p):
    mu, _ = model.apply({"params": p}, data.to_inputs(jnp.asarray(x)), method="encode")
    return np.var(np.asarray(mu, np.float64), axis=0)
  var0 = mu_var(with_kernel(0.0))[0]
  params = with_kernel(math.sqrt(0.004 / var0))
  est = likelihood.estimate(model, params, x, 10, key=jax.random.PRNGKey(2), image_chunk=7)
  want = mu_var(params)
  np.testing.assert_allclose(est.mu_variance, want, rtol=1e-5)
  assert want[0] > 0.01 and 0.001 < want[1] < 0.01 and want[2] == 0, want
  assert est.active_units == 1 and est.n == 40 and set(est.bounds) == {1, 5, 10}


def test_chunk_sizes_change_no_number(small_model):
  """Image i's samples come from fold_in(key, i): other image and sample chunks (with and
  without a padded last chunk) give the same estimates, to float32 rounding."""
  _, model, params, x = small_model
  key = jax.random.PRNGKey(7)
  a = likelihood.estimate(model, params, x, 500, key=key, image_chunk=4, sample_chunk=50)
  b = likelihood.estimate(model, params, x, 500, key=key, image_chunk=6, sample_chunk=500)
  for j in a.bounds:
    assert a.bounds[j] == pytest.approx(b.bounds[j], rel=1e-6, abs=1e-5), j
  assert a.elbo == pytest.approx(b.elbo, rel=1e-6) and a.mc_se == pytest.approx(b.mc_se, rel=1e-4)
  # a different key is a different draw
  c = likelihood.estimate(model, params, x, 500, key=jax.random.PRNGKey(8), image_chunk=4)
  assert c.bounds[1] != a.bounds[1]
  # one sample leaves the weights' variance, and so the delta-method s.e., undefined
  one = likelihood.estimate(model, params, x, 1, key=key, image_chunk=4)
  assert one.mc_se is None and likelihood.to_json(one)["mc_se"] is None
  assert "no Monte Carlo s.e. from k = 1" in likelihood.describe(one, binarized=True,
                                                                  latent_dim=2)


def test_grouped_bound_against_numpy():
  """L_j averaged over the k // j groups of j consecutive samples (the rest unused)."""
  log_w = np.random.default_rng(0).normal(-50.0, 3.0, (4, 23))
  for j in (1, 5, 7, 23):
    groups = log_w[:, :(23 // j) * j].reshape(4, 23 // j, j)
    want = (np.logaddexp.reduce(groups, axis=-1) - math.log(j)).mean(-1)
    np.testing.assert_allclose(np.asarray(likelihood.grouped_bound(jnp.asarray(log_w), j)),
                               want, rtol=1e-5)


def test_reported_ks():
  assert likelihood.reported_ks(5000) == (1, 5, 50, 5000)
  assert likelihood.reported_ks(100) == (1, 5, 50, 100)
  assert likelihood.reported_ks(1) == (1,)


# --------------------------------------------------------------------------
# Binarized MNIST


def test_test_set_binarization_is_fixed_and_has_the_pixel_means():
  # 6,000 images, 4.7M pixels: enough that a rate of k / 256 instead of k / 255 (a shift of
  # sum(k) / (255 * 256), about N / 512 ones) lies 10 binomial s.e. (sqrt(N / 6)) away.
  images = np.asarray(data.flatten(synthetic_images := np.random.default_rng(0).integers(
      0, 256, (6000, 28, 28)).astype(np.uint8)))
  a, b = binarize.fixed_test_images(images), binarize.fixed_test_images(images)
  np.testing.assert_array_equal(a, b)
  assert set(np.unique(a)) <= {0, 255}
  # the end points are certain: a pixel of 255 is always on, one of 0 always off
  ends = np.concatenate([np.full((50, 784), 255, np.uint8), np.zeros((50, 784), np.uint8)])
  np.testing.assert_array_equal(binarize.fixed_test_images(ends), ends)
  # the first n images binarize the same whatever follows them (limits cut afterwards)
  np.testing.assert_array_equal(binarize.fixed_test_images(images[:50]), a[:50])
  # P(pixel on) = k / 255: the count of ones against its mean, 5 binomial s.e.
  p = images / 255.0
  ones = (a == 255).sum()
  assert abs(ones - p.sum()) < 5 * math.sqrt((p * (1 - p)).sum())
  del synthetic_images


def test_dynamic_binarization_inside_the_compiled_epoch(monkeypatch):
  """Each step sees 0/1 pixels, on with probability pixel / 255, new ones every epoch."""
  n, b = 64, 16
  images = jnp.asarray(np.random.default_rng(1).integers(0, 256, (n, D)), jnp.uint8)

  tag = jax.random.uniform(jax.random.PRNGKey(9), (D,))  # loss: sum x * tag, a batch's print

  def spy(params, model, x, eps, weight):  # recon: sum x(1 - x) (0 iff binary), kl: sum x
    m = losses.Metrics(jnp.sum(x * (1 - x)), jnp.sum(x), jnp.sum(x * tag))
    return m.loss + 0.0 * sum(jnp.sum(v) for v in jax.tree.leaves(params)), m

  model = VAE(latent_dim=Z, hidden_dim=4, data_dim=D)
  config = Config(latent_dim=Z, hidden_dim=4, batch_size=b, binarize="dynamic")
  opt = recipe.make_optimizer(config, n // b)
  state = train.create_state(model, opt, jax.random.PRNGKey(0))
  monkeypatch.setattr(losses, "batch_loss", spy)  # the loss the recipe's step calls
  epoch = jax.jit(recipe.functions(config, model, opt, n)[0])
  totals = []
  for e in (1, 2):
    _, m = epoch(state, images, jax.random.PRNGKey(e))
    assert float(m.recon) == 0.0
    totals.append(float(m.kl))
  p = np.asarray(images) / 255.0
  for t in totals:
    assert abs(t - p.sum()) < 5 * math.sqrt((p * (1 - p)).sum())
  assert totals[0] != totals[1]  # drawn afresh
  plan = recipe.epoch_plan(config, jax.random.PRNGKey(1), n, Z)
  assert plan.binarize.shape[0] == n // b
  # every step its own draw: grey images all alike, yet each step's batch binarizes apart
  grey = data.to_inputs(jnp.full((b, D), 128, jnp.uint8))
  sums = {float(jnp.sum(binarize.bernoulli_pixels(k, grey) * tag)) for k in plan.binarize}
  assert len(sums) == n // b


# --------------------------------------------------------------------------
# Burda et al.'s recipe


def test_burda_schedule_rates_per_epoch():
  """Stage i = 0..7 lasts 3^i epochs at 1e-3 * 10^(-i/7): written out from the definition."""
  want = np.concatenate([np.full(3**i, 1e-3 * 10 ** (-i / 7)) for i in range(8)])
  assert len(want) == 3280
  got = np.asarray(burda.learning_rate(1e-3, np.arange(3280)))
  np.testing.assert_allclose(got, want, rtol=1e-6)


def test_burda_schedule_in_the_optimizer_follows_the_step_count():
  """With 3 steps per epoch, Adam's update u (1-based) uses the rate of epoch (u - 1) // 3."""
  config = Config(schedule="burda", epochs=13)
  opt = recipe.make_optimizer(config, steps_per_epoch=3)
  p = {"a": jnp.zeros(2)}
  state = opt.init(p)
  for u in range(1, 3 * 13 + 1):
    _, state = opt.update({"a": jnp.ones(2)}, state, p)
    want = 1e-3 * 10 ** (-[0, 1, 1, 1, 2, 2, 2, 2, 2, 2, 2, 2, 2][(u - 1) // 3] / 7)
    assert float(state.hyperparams["learning_rate"]) == pytest.approx(want, rel=1e-6), u
  assert float(state.hyperparams["eps"]) == pytest.approx(1e-8)


def test_presets_and_their_overrides():
  c = Config.with_presets({"arch": "burda", "schedule": "burda"})
  assert (c.hidden_dim, c.latent_dim, c.batch_size, c.adam_eps, c.epochs) == (
      200, 50, 20, 1e-4, 3280)
  c = Config.with_presets({"arch": "burda", "latent_dim": 5, "schedule": "burda",
                           "epochs": 121, "batch_size": 100})
  assert (c.hidden_dim, c.latent_dim, c.batch_size, c.epochs) == (200, 5, 100, 121)
  assert Config.with_presets({"arch": "burda"}).batch_size == 128  # the model only
  # a resumed run's config already holds what the presets brought: the flags given replace
  base = Config(arch="burda", hidden_dim=100)
  from vae_jax.app import cli
  args = cli.build_parser().parse_args(["train", "--workdir", "W", "--arch", "burda"])
  assert cli.config_from_args(args, base).hidden_dim == 100
  assert cli.config_from_args(args).hidden_dim == 200


def test_burda_model_shapes_and_optimizer_eps():
  model = BurdaVAE(latent_dim=50, hidden_dim=200)
  shapes = jax.tree.map(lambda a: a.shape, model.init_params(jax.random.PRNGKey(0)))
  assert shapes == {"fc1": {"kernel": (784, 200), "bias": (200,)},
                    "fc2": {"kernel": (200, 200), "bias": (200,)},
                    "fc31": {"kernel": (200, 50), "bias": (50,)},
                    "fc32": {"kernel": (200, 50), "bias": (50,)},
                    "fc4": {"kernel": (50, 200), "bias": (200,)},
                    "fc5": {"kernel": (200, 200), "bias": (200,)},
                    "fc6": {"kernel": (200, 784), "bias": (784,)}}
  opt = recipe.make_optimizer(Config(adam_eps=1e-4), steps_per_epoch=1)
  assert float(opt.init({"a": jnp.zeros(1)}).hyperparams["eps"]) == pytest.approx(1e-4)


# --------------------------------------------------------------------------
# The command line


def test_likelihood_command_on_binarized_and_continuous_runs(tiny_data_dir, tmp_path, capsys):
  """A Burda-model IWAE run on binarized pixels is scored as a likelihood; the blog's model on
  grey pixels is scored too, and the output says it is no likelihood. --json keeps the numbers
  and refuses to overwrite them."""
  from vae_jax.app import cli
  common = ["--data-dir", str(tiny_data_dir)]
  burda, blog = tmp_path / "burda", tmp_path / "blog"
  assert cli.main(["train", "--workdir", str(burda), "--arch", "burda", "--hidden-dim", "16",
                   "--latent-dim", "3", "--binarize", "dynamic", "--objective", "iwae", "--k", "3",
                   "--schedule", "burda", "--epochs", "2", "--no-progress", *common]) == 0
  assert cli.main(["train", "--workdir", str(blog), "--hidden-dim", "16", "--epochs", "1",
                   "--no-progress", *common]) == 0
  config = json.loads((burda / "config.json").read_text())
  assert (config["batch_size"], config["adam_eps"], config["k"]) == (20, 1e-4, 3)
  capsys.readouterr()
  out_json = tmp_path / "burda.json"
  assert cli.main(["likelihood", "--weights", str(burda / "params.msgpack"), "--k", "50",
                   "--json", str(out_json), "--no-progress", *common]) == 0
  out = capsys.readouterr().out
  assert "test NLL" in out and "-L_50" in out and "-L_5 " in out and "active units" in out
  report = json.loads(out_json.read_text())
  assert report["binarize"] == "dynamic" and report["n"] == 100 and set(report["nll"]) == {
      "1", "5", "50"}
  # The same 50 draws per image make L_1, L_5 and L_50 (groups of 1, 5, 50) ordered exactly,
  # by Jensen's inequality (a mean of logs <= the log of the mean): -L_1 >= -L_5 >= -L_50,
  # up to float32 rounding of the log-sum-exp (1e-5 relative allows it).
  nll = report["nll"]
  slack = 1e-5 * abs(nll["50"])
  assert nll["1"] >= nll["5"] - slack and nll["5"] >= nll["50"] - slack, nll
  assert cli.main(["likelihood", "--weights", str(burda / "params.msgpack"), "--json",
                   str(out_json), *common]) == 2
  assert "exists" in capsys.readouterr().err
  assert cli.main(["likelihood", "--weights", str(blog / "params.msgpack"), "--k", "5",
                   "--test-limit", "30", "--no-progress", *common]) == 0
  out = capsys.readouterr().out
  assert "NOT a log-likelihood" in out and "30 test images" in out
  # evaluate reads the Burda run's model and binarization from its config.json
  assert cli.main(["evaluate", "--weights", str(burda / "params.msgpack"), *common]) == 0
  line = capsys.readouterr().out
  assert "burda model, z=3" in line and "binarized once (its run's --binarize dynamic)" in line
  # --binarize overrides the run's config.json, and the line says the run trained otherwise.
  assert cli.main(["evaluate", "--weights", str(burda / "params.msgpack"), "--binarize", "none",
                   *common]) == 0
  grey = capsys.readouterr().out
  assert "grey (its run trained on --binarize dynamic)" in grey
  assert float(grey.split("test loss ")[1].split()[0]) != float(line.split("test loss ")[1].split()[0])
  assert cli.main(["export", "--weights", str(burda / "params.msgpack"), "--out",
                   str(tmp_path / "b.npz")]) == 2
  assert "only the blog's model" in capsys.readouterr().err


def test_the_iwae_objective_trains_a_tighter_bound(tiny_data_dir):
  """One epoch with --objective iwae --k 5: the epoch's -L_5 lies below the -ELBO of the same
  samples (recon averaged over the 5, analytic KL); at the initial weights, on draws of our
  own, the per-image gap is more than 5 of its standard errors; with the ELBO objective,
  loss = recon + KL exactly."""
  config = Config(hidden_dim=16, latent_dim=3, batch_size=32, data_dir=str(tiny_data_dir),
                  objective="iwae", k=5, binarize="dynamic")
  d = recipe.load_data(config)
  run = recipe.setup(config, d)
  params = run.state.params
  _, sums = run.programs.train_epoch(run.state, d.x_train, jax.random.PRNGKey(0))
  assert float(sums.loss) < float(sums.recon + sums.kl)
  # the per-image gap, at the initial weights, for its standard error
  x = binarize.bernoulli_pixels(jax.random.PRNGKey(1), data.to_inputs(d.x_train))
  eps = jax.random.normal(jax.random.PRNGKey(2), (len(x), 5, 3))
  lw, kl = iwae.log_weights(params, run.model, x, eps)
  gap = np.asarray(-lw.log_px_z.mean(-1) + kl + iwae.iwae_bound(lw.log_w))  # -ELBO - (-L_5)
  assert gap.mean() > 5 * gap.std(ddof=1) / math.sqrt(len(gap))
  elbo_run = recipe.setup(config.replace(objective="elbo", k=1), d)
  _, sums = elbo_run.programs.train_epoch(elbo_run.state, d.x_train, jax.random.PRNGKey(0))
  assert float(sums.loss) == pytest.approx(float(sums.recon + sums.kl), rel=1e-6)
