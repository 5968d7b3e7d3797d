"""The model: PyTorch's layout and init, eval mode, and the reparameterization trick."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vae_jax import Config
from vae_jax.model import VAE, reparameterize

pytestmark = pytest.mark.fast  # the lesson's maths: `make test-fast`

TORCH_SHAPES = {  # the blog's state_dict, [out, in] for weights
    "fc1": (512, 784), "fc21": (2, 512), "fc22": (2, 512), "fc3": (512, 2), "fc4": (784, 512)}


def test_parameters_map_one_to_one_onto_the_blogs_state_dict():
  params = VAE.from_config(Config()).init_params(jax.random.PRNGKey(0))
  assert set(params) == set(TORCH_SHAPES)
  for name, (out, inp) in TORCH_SHAPES.items():
    assert params[name]["kernel"].shape == (inp, out)  # Flax kernel = weight.T
    assert params[name]["bias"].shape == (out,)


@pytest.mark.parametrize("name", ["fc1", "fc21", "fc22", "fc3", "fc4"])
def test_torch_init_is_uniform_with_bound_one_over_sqrt_fan_in(name):
  params = VAE.from_config(Config()).init_params(jax.random.PRNGKey(0))
  fan_in = TORCH_SHAPES[name][1]
  bound = 1 / np.sqrt(fan_in)
  w = np.asarray(params[name]["kernel"], np.float64).ravel()
  b = np.asarray(params[name]["bias"], np.float64)
  # U(-a, a): mean 0, variance a^2/3, fourth central moment a^4/5; weights and biases
  # alike. The moments are checked within 5 standard errors where there are enough
  # draws for them to say something (fc21's and fc22's biases have z = 2 entries).
  var = bound**2 / 3
  for values in (w, b):
    assert np.abs(values).max() <= bound
    if values.size >= 100:
      se_mean = np.sqrt(var / values.size)
      se_var = np.sqrt((bound**4 / 5 - var**2) / values.size)
      assert abs(values.mean()) < 5 * se_mean
      assert abs(values.var() - var) < 5 * se_var
  assert np.all(b != 0)  # not zeros, as Flax's default would be


def test_flax_init_option_uses_zero_biases():
  params = VAE.from_config(Config(init="flax")).init_params(jax.random.PRNGKey(0))
  assert all(float(jnp.abs(params[n]["bias"]).max()) == 0 for n in TORCH_SHAPES)


def test_eval_mode_decodes_mu_exactly():
  model = VAE()
  params = model.init_params(jax.random.PRNGKey(0))
  x = jax.random.uniform(jax.random.PRNGKey(1), (5, 784))
  out = model.apply({"params": params}, x)
  np.testing.assert_array_equal(out.z, out.mu)
  logits = model.apply({"params": params}, out.mu, method=VAE.decode)
  np.testing.assert_array_equal(out.logits, logits)
  # eps = 0 in train mode is the same computation.
  out0 = model.apply({"params": params}, x, jnp.zeros((5, 2)))
  np.testing.assert_array_equal(out0.logits, out.logits)


def test_reparameterized_samples_have_the_right_mean_and_variance():
  mu = jnp.array([0.0, 1.5, -3.0, 0.2])
  logvar = jnp.array([0.0, -4.0, 2.0, 1.0])
  n = 200_000
  eps = jax.random.normal(jax.random.PRNGKey(42), (n, 4))
  z = np.asarray(reparameterize(mu, logvar, eps), np.float64)  # [n, 4]
  var = np.exp(np.asarray(logvar, np.float64))
  # mean: SE = sigma / sqrt(n); variance: SE = sigma^2 sqrt(2 / (n - 1)) for a normal.
  assert np.all(np.abs(z.mean(0) - mu) < 5 * np.sqrt(var / n))
  assert np.all(np.abs(z.var(0, ddof=1) - var) < 5 * var * np.sqrt(2 / (n - 1)))


def test_pathwise_gradients_match_the_closed_form_for_a_quadratic():
  # f(z) = sum z^2: E f = sum mu^2 + exp(logvar), so dE/dmu = 2 mu, dE/dlogvar = exp(logvar).
  mu = jnp.array([0.5, -2.0, 0.0])
  logvar = jnp.array([0.0, -3.0, 1.5])
  n = 200_000
  eps = jax.random.normal(jax.random.PRNGKey(7), (n, 3))

  def f(mu, logvar, eps):  # one sample's integrand
    return jnp.sum(reparameterize(mu, logvar, eps) ** 2)

  g_mu, g_lv = jax.vmap(jax.grad(f, argnums=(0, 1)), in_axes=(None, None, 0))(mu, logvar, eps)
  g_mu, g_lv = np.asarray(g_mu, np.float64), np.asarray(g_lv, np.float64)  # [n, 3] each
  assert np.all(np.isfinite(g_mu)) and np.all(np.isfinite(g_lv))
  for g, exact in ((g_mu, 2 * np.asarray(mu)), (g_lv, np.exp(np.asarray(logvar, np.float64)))):
    se = g.std(0, ddof=1) / np.sqrt(n)
    assert np.all(np.abs(g.mean(0) - exact) < 5 * se + 1e-6), (g.mean(0), exact, se)


def test_reparameterize_gradient_per_sample_is_exact():
  # dz/dmu = 1 and dz/dlogvar = exp(logvar / 2) eps / 2, for any eps.
  mu, logvar, eps = jnp.array([0.3]), jnp.array([-1.2]), jnp.array([0.7])
  g_mu, g_lv = jax.grad(lambda m, l: reparameterize(m, l, eps).sum(), argnums=(0, 1))(mu, logvar)
  np.testing.assert_allclose(g_mu, [1.0])
  np.testing.assert_allclose(g_lv, np.exp(-0.6) * 0.7 / 2, rtol=1e-6)


@pytest.mark.parametrize("logvar", [-150.0, 150.0])
def test_reparameterize_is_exact_for_extreme_logvar(logvar):
  # exp(+-150) is inf / 0 in float32 but exp(+-75) is finite: sigma = exp(logvar / 2) gives
  # z and dz/dlogvar = sigma * eps / 2 to float32 rounding, where sqrt(exp(logvar)) would give
  # inf, or a NaN gradient (0 / 0).
  z, g = jax.value_and_grad(lambda l: reparameterize(jnp.array([1.0]), l, jnp.array([0.5])).sum())(
      jnp.array([logvar]))
  sigma = np.exp(logvar / 2)  # float64
  np.testing.assert_allclose(z, 1.0 + 0.5 * sigma, rtol=1e-6)
  np.testing.assert_allclose(g, [0.25 * sigma], rtol=1e-6)


def test_the_defaults_are_the_blogs_run():
  # The post: batch_size = 128, num_epochs = 100, seed = 1, Adam(lr=1e-3), 784-512-z with
  # z = 2 for its main run (`vae_2`), reconstructions at epochs 10 and 100, ToTensor inputs.
  c = Config()
  assert (c.latent_dim, c.hidden_dim, c.batch_size, c.epochs, c.learning_rate, c.seed) == (
      2, 512, 128, 100, 1e-3, 1)
  assert c.init == "torch" and c.train_limit is None and c.test_limit is None
  assert VAE.from_config(c).data_dim == 784


def _blog_forward_float64(params, x, eps):
  """The blog's forward pass in NumPy float64, written from its code (`F.relu(self.fc1(x))`,
  `self.fc21(h1), self.fc22(h1)`, `eps.mul(std).add_(mu)`, `F.relu(self.fc3(z))`, `self.fc4(h3)`,
  the sigmoid left to the loss): an independent check of the layers and their ReLUs."""
  p = {k: {n: np.asarray(v, np.float64) for n, v in layer.items()} for k, layer in params.items()}
  dense = lambda name, a: a @ p[name]["kernel"] + p[name]["bias"]
  h1 = np.maximum(dense("fc1", x), 0)
  mu, logvar = dense("fc21", h1), dense("fc22", h1)
  z = mu if eps is None else mu + np.exp(0.5 * logvar) * eps
  return dense("fc4", np.maximum(dense("fc3", z), 0)), mu, logvar, z


@pytest.mark.parametrize("mode", ["train", "eval"])
def test_the_forward_pass_is_the_blogs_equations(mode):
  """Every output of the model against the blog's equations in float64, within 1e-4. Float32
  rounding errs by about 2^-24 * sqrt(n) * sum|x_i w_i| for a product of length n (about 1e-6
  here: 4.4e-7 at most, measured on an AMD EPYC); a missing ReLU or swapped heads move the
  outputs by 0.1 and more."""
  model = VAE(latent_dim=2)
  params = model.init_params(jax.random.PRNGKey(0))
  x = np.asarray(jax.random.uniform(jax.random.PRNGKey(1), (64, 784)))
  eps = None if mode == "eval" else np.asarray(jax.random.normal(jax.random.PRNGKey(2), (64, 2)))
  out = model.apply({"params": params}, x, eps)
  want = _blog_forward_float64(params, x.astype(np.float64), eps)
  for name, got, expected in zip(out._fields, out, want):
    np.testing.assert_allclose(np.asarray(got, np.float64), expected, rtol=0, atol=1e-4,
                               err_msg=name)
