"""The conditional VAE (`--model cvae`): its maths against NumPy, its labels through training,
and the run's artifacts."""

import json

import jax
import jax.numpy as jnp
import matplotlib.image
import numpy as np
import pytest

from vae_jax import Config, losses, train
from vae_jax.app import cli, weights
from vae_jax.extensions import recipe
from vae_jax.extensions.cvae import CVAE, WithLabels
from vae_jax.extensions.recipe import make_model
from vae_jax.model import VAE


def _cvae(z=3, hidden=16):
  model = make_model(Config(model="cvae", latent_dim=z, hidden_dim=hidden))
  return model, model.init_params(jax.random.PRNGKey(0))


def _numpy_cvae(params, x, eps, y):
  """The CVAE written out in float64 NumPy: one-hot joined to fc1's and fc3's inputs."""
  p = jax.tree.map(lambda a: np.asarray(a, np.float64), params)
  dense = lambda name, a: a @ p[name]["kernel"] + p[name]["bias"]
  onehot = np.eye(10)[y]                                          # [B, 10]
  h = np.maximum(dense("fc1", np.concatenate([x, onehot], 1)), 0)  # [B, 512]
  mu, logvar = dense("fc21", h), dense("fc22", h)
  z = mu + np.exp(0.5 * logvar) * eps
  logits = dense("fc4", np.maximum(dense("fc3", np.concatenate([z, onehot], 1)), 0))
  return logits, mu, logvar


def test_parameters_are_the_vaes_with_ten_more_input_rows_in_fc1_and_fc3():
  z, hidden = 3, 16
  _, cvae = _cvae(z, hidden)
  vae = make_model(Config(latent_dim=z, hidden_dim=hidden)).init_params(jax.random.PRNGKey(0))
  assert set(cvae) == set(vae) == {"fc1", "fc21", "fc22", "fc3", "fc4"}
  assert cvae["fc1"]["kernel"].shape == (784 + 10, hidden)
  assert cvae["fc3"]["kernel"].shape == (z + 10, hidden)
  for name in ("fc21", "fc22", "fc4"):
    jax.tree.map(lambda a, b: a.shape == b.shape or pytest.fail(name), cvae[name], vae[name])
  # nn.Linear's init with the wider fan-in: U(+-1/sqrt(794)) for fc1, U(+-1/sqrt(z + 10)) for
  # fc3. The largest of n uniform draws falls below 0.9 of the bound with probability 0.9^n:
  # about 3e-10 for fc3's 13 x 16 = 208 weights, far less for fc1's 794 x 16.
  for name, fan_in in (("fc1", 794), ("fc3", z + 10)):
    largest = float(jnp.abs(cvae[name]["kernel"]).max())
    assert 0.9 / np.sqrt(fan_in) < largest <= 1 / np.sqrt(fan_in), name


def test_forward_pass_equals_numpy_with_the_one_hot_joined():
  # Float32 against float64 through two 784-wide layers: 1e-4 relative is ~100 ulp of the
  # largest logit, far above rounding and far below the change one wrong row makes.
  model, params = _cvae()
  b = 12
  x = np.asarray(jax.random.uniform(jax.random.PRNGKey(1), (b, 784)))
  eps = np.asarray(jax.random.normal(jax.random.PRNGKey(2), (b, 3)))
  y = np.arange(b) % 10
  out = model.apply({"params": params}, x, eps, y=y)
  logits, mu, logvar = _numpy_cvae(params, x, eps, y)
  for got, want in ((out.logits, logits), (out.mu, mu), (out.logvar, logvar)):
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * np.abs(want).max())


def test_the_label_changes_the_code_and_the_image():
  model, params = _cvae()
  x = jnp.tile(jax.random.uniform(jax.random.PRNGKey(1), (1, 784)), (10, 1))  # one image, 10 labels
  mu, _ = model.apply({"params": params}, x, jnp.arange(10), method="encode")
  logits = model.apply({"params": params}, jnp.zeros((10, 3)), jnp.arange(10), method="decode")
  assert len(np.unique(np.asarray(mu[:, 0]))) == 10
  assert len(np.unique(np.asarray(logits[:, 0]))) == 10


def test_each_model_refuses_the_wrong_labels():
  # The CVAE's labels are a required keyword; the VAE's methods have no place for them.
  model, params = _cvae()
  x = jnp.zeros((2, 784))
  with pytest.raises(TypeError, match="'y'"):
    model.apply({"params": params}, x)
  vae = make_model(Config(hidden_dim=16))
  with pytest.raises(TypeError, match="'y'"):
    vae.apply({"params": vae.init_params(jax.random.PRNGKey(0))}, x, None, y=jnp.zeros(2, int))
  with pytest.raises(ValueError, match="`model` cvae is the blog's model"):
    Config(model="cvae", arch="burda")
  with pytest.raises(ValueError, match="`model` cvae is the blog's model"):
    Config(model="cvae", objective="iwae", k=5)
  assert isinstance(make_model(Config(model="cvae")), CVAE)
  assert type(make_model(Config())) is VAE


def test_each_train_step_sees_the_labels_of_its_images():
  # Two Adam steps of the compiled loop against the same steps written by hand, with the
  # labels gathered by the plan's indices. Training with the labels shuffled gives other
  # parameters, so the check would fail if the loop dropped or misaligned them.
  config = Config(model="cvae", latent_dim=3, hidden_dim=16, batch_size=8)
  model = make_model(config)
  n = 16
  optimizer = recipe.make_optimizer(config, recipe.steps_per_epoch(config, n))
  state = train.create_state(model, optimizer, jax.random.PRNGKey(0))
  images = jax.random.randint(jax.random.PRNGKey(3), (n, 784), 0, 256).astype(jnp.uint8)
  labels = jax.random.randint(jax.random.PRNGKey(4), (n,), 0, 10)
  key = jax.random.PRNGKey(5)
  epoch = jax.jit(recipe.functions(config, model, optimizer, n)[0])
  got, sums = epoch(state, images, key, labels)

  plan = recipe.epoch_plan(config, key, n, 3)  # the epoch's: the lesson's shuffle and noise
  params, opt_state = state
  grad_fn = jax.grad(losses.batch_loss, has_aux=True)
  total = 0.0
  for s in range(2):
    x = images[plan.idx[s]].astype(jnp.float32) / 255
    grads, batch = grad_fn(params, WithLabels(model, labels[plan.idx[s]]), x, plan.eps[s],
                           plan.weight[s])
    total += batch.loss
    updates, opt_state = optimizer.update(grads, opt_state, params)
    params = jax.tree.map(lambda p, u: p + u, params, updates)
  np.testing.assert_allclose(total, sums.loss, rtol=1e-6)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7),
               got.params, params)
  shuffled, _ = epoch(state, images, key, jnp.roll(labels, 1))
  assert not np.allclose(shuffled.params["fc1"]["kernel"][784:], got.params["fc1"]["kernel"][784:])


def test_a_cvae_run_writes_its_digits_and_latent_map_and_evaluates_as_trained(
    tiny_data_dir, tmp_path, capsys, monkeypatch):
  from vae_jax.app import plots
  drawn = []
  save_digits = plots.save_digits
  monkeypatch.setattr(plots, "save_digits", lambda images, path: (drawn.append(images),
                                                                  save_digits(images, path)))
  workdir = tmp_path / "cvae"
  assert cli.main(["train", "--workdir", str(workdir), "--data-dir", str(tiny_data_dir),
                   "--model", "cvae", "--epochs", "2", "--hidden-dim", "16",
                   "--no-progress"]) == 0
  for name in ("digits.png", "latent.png", "learning_curves.png", "reconstruction_1.png"):
    image = matplotlib.image.imread(workdir / name)
    assert image.ndim == 3 and min(image.shape[:2]) > 50, name
  for name in ("samples.png", "manifold.png", "interpolation.png"):  # they need one label per z
    assert not (workdir / name).exists(), name
  params, config = weights.load_weights(workdir / "params.msgpack")
  assert config.model == "cvae" and params["fc1"]["kernel"].shape == (794, 16)
  # digits.png: row y is the decoder's mean for label y at the ten z of the run's sample key.
  model = make_model(config)
  z = jax.random.normal(train.run_keys(config.seed).sample, (10, config.latent_dim))
  (images,) = drawn
  for y in range(10):
    want = jax.nn.sigmoid(model.apply({"params": params}, z, y=jnp.full(10, y), method="decode"))
    np.testing.assert_allclose(images[10 * y:10 * (y + 1)], want, rtol=1e-5, atol=1e-6)
  last = json.loads((workdir / "metrics.jsonl").read_text().splitlines()[-1])
  capsys.readouterr()
  assert cli.main(["evaluate", "--weights", str(workdir / "params.msgpack"),
                   "--data-dir", str(tiny_data_dir)]) == 0
  printed = capsys.readouterr().out
  assert "CVAE" in printed and f"test loss {last['test_loss']:.4f}" in printed
  link = tmp_path / "elsewhere" / "params.msgpack"  # its config.json is beside the link's target
  link.parent.mkdir()
  link.symlink_to(workdir / "params.msgpack")
  assert cli.main(["evaluate", "--weights", str(link), "--data-dir", str(tiny_data_dir)]) == 0
  assert f"CVAE, z=2): test loss {last['test_loss']:.4f}" in capsys.readouterr().out
  assert cli.main(["likelihood", "--weights", str(workdir / "params.msgpack"),
                   "--data-dir", str(tiny_data_dir), "--k", "2"]) == 2
  assert "log p(x|y) of the CVAE" in capsys.readouterr().err
  assert cli.main(["export", "--weights", str(workdir / "params.msgpack"),
                   "--out", str(tmp_path / "cvae.pth")]) == 2
  assert "is a CVAE: only the blog's model" in capsys.readouterr().err


def test_the_reports_between_digit_share_is_one_for_the_digit_alone_and_zero_without_it():
  import importlib.util
  from pathlib import Path
  spec = importlib.util.spec_from_file_location(
      "report", Path(__file__).resolve().parent.parent / "scripts" / "report.py")
  report = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(report)
  rng = np.random.default_rng(0)
  labels = np.repeat(np.arange(10), 50)
  centres = rng.normal(size=(10, 3))
  assert report.between_digit_share(centres[labels], labels) == pytest.approx(1.0, abs=1e-12)
  same = np.tile(rng.normal(size=(50, 3)), (10, 1))  # every digit: the same 50 points
  assert report.between_digit_share(same, labels) == pytest.approx(0.0, abs=1e-12)
  # Between-class variance / total variance, as a one-way ANOVA computes it.
  mu = centres[labels] + rng.normal(size=(500, 3))
  ss_total = np.sum((mu - mu.mean(0)) ** 2)
  ss_within = sum(np.sum((mu[labels == k] - mu[labels == k].mean(0)) ** 2) for k in range(10))
  assert report.between_digit_share(mu, labels) == pytest.approx(1 - ss_within / ss_total,
                                                                 rel=1e-12)
