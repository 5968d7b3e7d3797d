"""--beta and --kl-warmup-epochs: the KL's weight in training, and what each epoch reports."""

import json

import jax
import matplotlib.image
import jax.numpy as jnp
import numpy as np
import pytest

from vae_jax import Config, data, losses, train
from vae_jax.app import cli, weights
from vae_jax.extensions import beta, recipe
from vae_jax.extensions.likelihood import latent_statistics
from vae_jax.extensions.recipe import make_model


def _batch(z=3, b=6):
  model = make_model(Config(latent_dim=z, hidden_dim=16))
  params = model.init_params(jax.random.PRNGKey(0))
  x = jax.random.uniform(jax.random.PRNGKey(1), (b, 784))
  eps = jax.random.normal(jax.random.PRNGKey(2), (b, z))
  return params, model, x, eps, jnp.ones(b)


def _term_grad(term, params, model, x, eps, weight):
  """The gradient of one term of the loss alone, written from the model's outputs."""
  def f(p):
    out = model.apply({"params": p}, x, eps)
    return jnp.sum(weight * getattr(losses.vae_loss(out.logits, x, out.mu, out.logvar), term))
  return jax.grad(f)(params)


@pytest.mark.parametrize("b", [0.0, 2.5])
def test_the_gradient_is_recon_plus_beta_times_kl_and_the_metrics_stay_true(b):
  # The objective sum recon + beta kl is linear in beta: its gradient must be the
  # reconstruction's gradient plus beta times the KL's, each computed on its own; at
  # beta = 0 the KL contributes nothing. Float32: the two sides add the same terms in
  # another order, so they agree to a few ulp of the largest gradient (1e-5 relative).
  args = _batch()
  (objective, sums), grads = jax.value_and_grad(beta.weighted_batch_loss, has_aux=True)(
      *args, jnp.float32(b))
  g_recon, g_kl = _term_grad("recon", *args), _term_grad("kl", *args)
  expected = jax.tree.map(lambda r, k: r + b * k, g_recon, g_kl)
  for (path, g), e in zip(jax.tree_util.tree_leaves_with_path(grads), jax.tree.leaves(expected)):
    np.testing.assert_allclose(g, e, rtol=1e-5, atol=1e-5 * float(jnp.abs(e).max()),
                               err_msg=str(path))
  if b == 0.0:  # the decoder's gradient has no KL part at all, and the encoder's is recon's
    jax.tree.map(lambda g, r: np.testing.assert_allclose(g, r, rtol=1e-6, atol=1e-7),
                 grads, g_recon)
  _, true = losses.batch_loss(*args)  # the metrics are the ELBO's, whatever the weight
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-7), sums, true)
  np.testing.assert_allclose(objective, sums.recon + b * sums.kl, rtol=1e-6)


def test_warmup_weight_of_every_epoch_as_stated():
  # beta * min(1, (epoch - 1) / N): 0 in epoch 1, beta from epoch N + 1 on; inside the
  # compiled step the same value comes from Adam's step count, at every step of the epoch.
  on_host = [beta.kl_weight(2.0, 4, e - 1) for e in range(1, 8)]
  assert on_host == [0.0, 0.5, 1.0, 1.5, 2.0, 2.0, 2.0]
  steps = 7
  weight = jax.jit(lambda count: beta.kl_weight(2.0, 4, count // steps))  # as the step's
  for epoch in range(1, 8):
    for step in (0, 3, steps - 1):
      np.testing.assert_allclose(weight(jnp.int32((epoch - 1) * steps + step)),
                                 on_host[epoch - 1], rtol=1e-7)
  assert beta.kl_weight(0.5, 0, 0) == 0.5  # no warm-up: beta from the start
  assert not beta.weighs_kl(Config()) and beta.weighs_kl(Config(kl_warmup_epochs=1))


def test_the_first_warmup_epoch_trains_the_reconstruction_alone():
  # Epoch 1 of a warm-up has weight 0: its Adam steps are those of beta = 0, bit for bit.
  n = 256
  images = jax.random.randint(jax.random.PRNGKey(3), (n, 784), 0, 256).astype(jnp.uint8)
  results = []
  for config in (Config(hidden_dim=16, batch_size=64, kl_warmup_epochs=3),
                 Config(hidden_dim=16, batch_size=64, beta=0.0),
                 Config(hidden_dim=16, batch_size=64)):
    model = make_model(config)
    optimizer = recipe.make_optimizer(config, recipe.steps_per_epoch(config, n))
    state = train.create_state(model, optimizer, jax.random.PRNGKey(0))
    epoch = jax.jit(recipe.functions(config, model, optimizer, n)[0])
    results.append(epoch(state, images, jax.random.PRNGKey(4))[0].params)
  warm, zero, elbo = results
  jax.tree.map(np.testing.assert_array_equal, warm, zero)
  assert not np.array_equal(warm["fc21"]["kernel"], elbo["fc21"]["kernel"])  # the KL matters


def test_a_run_s_programs_count_its_own_steps_per_epoch_for_the_warmup_and_the_schedule():
  # recipe.setup builds the KL weight and Burda's rate from the step count of *its data*:
  # 256 images in batches of 64 are 4 steps an epoch. With 469 (MNIST's) the warm-up's
  # epoch 2 would still train at weight 0, and with 1 the schedule would leave stage 1.
  n, b = 256, 64
  x = jax.random.randint(jax.random.PRNGKey(3), (n, 784), 0, 256).astype(jnp.uint8)
  y = jnp.zeros(n, jnp.int32)
  d = data.DeviceData(x, x[:64], y, y[:64])
  config = Config(hidden_dim=16, batch_size=b, kl_warmup_epochs=2)
  fit = train.fit(recipe.setup(config, d), d, 2)
  run = recipe.setup(config)  # the same model, Adam and keys; programs built here by hand
  state = run.state
  for epoch in (1, 2):  # the warm-up's weights, 0 then 0.5, as constants
    w = beta.kl_weight(config.beta, config.kl_warmup_epochs, epoch - 1)
    program = jax.jit(train.make_train_epoch(
        run.model, run.optimizer, num_examples=n, batch_size=b,
        loss_fn=lambda *args, w=w: beta.weighted_batch_loss(*args, jnp.float32(w))))
    state, _ = program(state, x, train.epoch_key(run.keys.train, epoch))
  jax.tree.map(lambda a, e: np.testing.assert_allclose(a, e, rtol=1e-5, atol=1e-7),
               fit.params, state.params)
  burda = train.fit(recipe.setup(Config(hidden_dim=16, batch_size=b, schedule="burda"), d), d, 2)
  # The rate of the last of 8 steps (Adam's count 7): epoch index 7 // 4 = 1, stage 1.
  np.testing.assert_allclose(burda.state.opt_state.hyperparams["learning_rate"],
                             1e-3 * 10 ** (-1 / 7), rtol=1e-6)


def test_a_run_reports_the_true_loss_the_objective_and_the_latent_statistics(tiny_data_dir,
                                                                            tmp_path):
  workdir = tmp_path / "beta"
  assert cli.main(["train", "--workdir", str(workdir), "--data-dir", str(tiny_data_dir),
                   "--epochs", "3", "--hidden-dim", "16", "--latent-dim", "5", "--beta", "2",
                   "--kl-warmup-epochs", "2", "--no-progress"]) == 0
  rows = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
  assert [r["kl_weight"] for r in rows] == [0.0, 1.0, 2.0]
  for r in rows:
    np.testing.assert_allclose(r["test_loss"], r["test_recon"] + r["test_kl"], rtol=1e-6)
    np.testing.assert_allclose(r["train_objective"], r["train_recon"] + r["kl_weight"]
                               * r["train_kl"], rtol=1e-12)
    # The per-dimension KL sums to the test KL per image (float32 sums in another order).
    assert len(r["test_kl_per_dim"]) == 5
    np.testing.assert_allclose(sum(r["test_kl_per_dim"]), r["test_kl"], rtol=1e-5, atol=1e-6)
  # The last row's statistics, recomputed from the saved weights: Var_x(mu_u) > 0.01.
  params, _ = weights.load_weights(workdir / "params.msgpack")
  x_test = data.load_device_data(Config(data_dir=str(tiny_data_dir)), with_train=False).x_test
  kl, var = latent_statistics(params, make_model(Config(latent_dim=5, hidden_dim=16)),
                              data.to_inputs(x_test))
  assert rows[-1]["active_units"] == int((np.asarray(var) > 0.01).sum())
  np.testing.assert_allclose(rows[-1]["test_kl_per_dim"], kl, rtol=1e-5, atol=1e-7)
  for name in ("kl_per_dim.png", "manifold.png", "interpolation.png"):  # z > 2: PCA plane
    image = matplotlib.image.imread(workdir / name)
    assert image.ndim == 3 and min(image.shape[:2]) > 200, name
  assert json.loads((workdir / "config.json").read_text())["beta"] == 2.0


def test_active_units_count_the_dimensions_whose_mean_moves_over_the_images():
  # An encoder whose mu_u = h(x) . w_u with w_u zero for u >= 2 and 20 times its initial
  # size for u < 2: two dimensions vary with the image (variance 400 times the initial
  # ~0.004, far above 0.01), the others are constant (variance 0).
  model = make_model(Config(latent_dim=4, hidden_dim=16))
  params = model.init_params(jax.random.PRNGKey(0))
  params["fc21"]["kernel"] = params["fc21"]["kernel"].at[:, 2:].set(0.0).at[:, :2].multiply(20.0)
  params["fc21"]["bias"] = params["fc21"]["bias"].at[2:].set(0.5)
  x = jax.random.uniform(jax.random.PRNGKey(1), (500, 784))
  kl, var = latent_statistics(params, model, x)
  mu, logvar = model.apply({"params": params}, x, method="encode")
  np.testing.assert_allclose(var, np.var(np.asarray(mu, np.float64), axis=0), rtol=1e-4,
                             atol=1e-9)
  np.testing.assert_allclose(kl, np.mean(np.asarray(losses.kl_standard_normal(mu[:, :, None],
                                                                              logvar[:, :, None]),
                                                    np.float64), axis=0), rtol=1e-5)
  assert np.all(np.asarray(var[2:]) == 0) and np.all(np.asarray(var[:2]) > 0.01)


@pytest.mark.parametrize("fields, message", [
    ({"beta": -1.0}, "`beta` must be a finite number >= 0"),
    ({"beta": float("nan")}, "`beta` must be a finite number >= 0"),
    ({"kl_warmup_epochs": -1}, "`kl_warmup_epochs` must be an integer >= 0"),
    ({"objective": "iwae", "k": 5, "beta": 2.0}, "the IWAE objective has none"),
])
def test_invalid_weights_are_refused(fields, message):
  with pytest.raises(ValueError, match=message):
    Config(**fields)
