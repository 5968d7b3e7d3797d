"""Training: a compiled step learns, padding is exact, runs are deterministic, nothing
recompiles, and one CLI run writes every artifact."""

import json

import jax
import jax.numpy as jnp
import matplotlib.image
import numpy as np
import pytest
from jax import monitoring

from vae_jax import Config, data, losses, train
from vae_jax.app import cli, run
from vae_jax.model import VAE
from vae_jax.app import weights
from vae_jax.extensions import iwae

TINY = dict(hidden_dim=32, batch_size=64, epochs=3, recon_every=2)


@pytest.mark.fast
def test_compiled_train_step_lowers_the_loss_on_a_fixed_batch():
  config = Config(hidden_dim=64)
  model, optimizer = VAE.from_config(config), train.make_optimizer(config)
  state = train.create_state(model, optimizer, jax.random.PRNGKey(0))
  x = jax.random.uniform(jax.random.PRNGKey(1), (32, 784)) ** 4  # mostly dark, like MNIST
  eps = jax.random.normal(jax.random.PRNGKey(2), (32, 2))
  weight = jnp.ones(32)

  @jax.jit
  def step(state):
    (loss, _), grads = jax.value_and_grad(losses.batch_loss, has_aux=True)(
        state.params, model, x, eps, weight)
    updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
    return train.TrainState(jax.tree.map(jnp.add, state.params, updates), opt_state), loss

  seen = []
  for _ in range(50):
    state, loss = step(state)
    seen.append(float(loss))
  assert np.all(np.isfinite(seen))
  assert seen[-1] < 0.8 * seen[0], seen[::10]


@pytest.mark.fast
@pytest.mark.parametrize("loss_fn, eps_shape", [(losses.batch_loss, (8, 2)),
                                                (iwae.batch_loss, (8, 5, 2))],
                         ids=["elbo", "iwae-k5"])
def test_zero_weight_padding_leaves_loss_and_gradient_unchanged(loss_fn, eps_shape):
  # The last batch of an epoch is padded with weight-0 rows: it must equal the
  # partial batch alone (PyTorch's DataLoader with drop_last=False), for both objectives.
  config = Config(hidden_dim=16)
  model = VAE.from_config(config)
  params = train.create_state(model, train.make_optimizer(config), jax.random.PRNGKey(0)).params
  x = jax.random.uniform(jax.random.PRNGKey(1), (8, 784))
  eps = jax.random.normal(jax.random.PRNGKey(2), eps_shape)
  grad = jax.grad(loss_fn, has_aux=True)
  padded_w = jnp.array([1, 1, 1, 1, 1, 0, 0, 0], jnp.float32)
  g_pad, m_pad = grad(params, model, x.at[5:].set(0.3), eps, padded_w)
  g_cut, m_cut = grad(params, model, x[:5], eps[:5], jnp.ones(5))
  for pad, cut, name in zip(m_pad, m_cut, m_pad._fields):  # loss, recon and kl
    np.testing.assert_allclose(pad, cut, rtol=1e-6, err_msg=name)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6), g_pad, g_cut)


@pytest.mark.fast
def test_an_epoch_sums_every_example_exactly_once():
  # With logvar pinned at -100 (sigma = e^-50, so z = mu in float32) and a learning
  # rate of 1e-30 (params do not move), the epoch's summed training loss must equal
  # a plain evaluation of all n images: any example dropped, repeated, or any
  # padding row counted, would change the sum (the images all differ).
  n, b = 300, 64  # 5 batches, the last one 44 real + 20 padding rows
  config = Config(hidden_dim=16, batch_size=b, learning_rate=1e-30)
  model, optimizer = VAE.from_config(config), train.make_optimizer(config)
  params = train.create_state(model, optimizer, jax.random.PRNGKey(0)).params
  params["fc22"] = {"kernel": jnp.zeros_like(params["fc22"]["kernel"]),
                    "bias": jnp.full_like(params["fc22"]["bias"], -100.0)}
  state = train.TrainState(params, optimizer.init(params))
  images = jax.random.randint(jax.random.PRNGKey(1), (n, 784), 0, 256).astype(jnp.uint8)
  epoch = jax.jit(train.make_train_epoch(model, optimizer, num_examples=n, batch_size=b))
  _, trained = epoch(state, images, jax.random.PRNGKey(2))
  evaluated = train.make_evaluate(model)(params, images)
  for a, e in zip(trained, evaluated):
    np.testing.assert_allclose(a, e, rtol=1e-5)


def _run(tmp_path, name, data_dir, **overrides):
  config = Config(data_dir=str(data_dir), **{**TINY, **overrides})
  return run.train_and_evaluate(config, tmp_path / name, progress=False)


def test_same_seed_same_numbers_bit_for_bit(tmp_path, tiny_data_dir):
  a = _run(tmp_path, "a", tiny_data_dir)
  b = _run(tmp_path, "b", tiny_data_dir)
  strip = lambda h: [{k: v for k, v in row.items() if k != "seconds"} for row in h]
  assert strip(a.history) == strip(b.history)
  jax.tree.map(np.testing.assert_array_equal, a.params, b.params)
  c = _run(tmp_path, "c", tiny_data_dir, seed=2)
  assert strip(c.history) != strip(a.history)


@pytest.fixture
def no_persistent_cache():
  """Programs compiled, not loaded: the tests' shared persistent cache off for one test."""
  was = jax.config.jax_enable_compilation_cache
  jax.config.update("jax_enable_compilation_cache", False)
  yield
  jax.config.update("jax_enable_compilation_cache", was)


def test_nothing_compiles_after_the_first_epoch(tmp_path, tiny_data_dir, no_persistent_cache):
  compiles = []

  def listen(event, duration, **kwargs):
    if event == "/jax/core/compile/backend_compile_duration":
      compiles.append(event)

  monitoring.register_event_duration_secs_listener(listen)
  try:
    _run(tmp_path, "warm", tiny_data_dir, epochs=1)  # fills the caches of helpers
    assert compiles, "the listener saw no compilation: the event name has changed"
    compiles.clear()
    _run(tmp_path, "two", tiny_data_dir, epochs=2)
    two = len(compiles)
    compiles.clear()
    _run(tmp_path, "six", tiny_data_dir, epochs=6)
    six = len(compiles)
  finally:
    monitoring.clear_event_listeners()
  assert two > 0  # each run compiles its own epoch program ahead of time...
  assert two == six, (two, six)  # ...and four more epochs add zero compilations


def test_cli_run_writes_every_artifact_and_refuses_to_overwrite(tmp_path, tiny_data_dir, capsys):
  workdir = tmp_path / "run"
  argv = ["train", "--workdir", str(workdir), "--data-dir", str(tiny_data_dir), "--epochs", "3",
          "--recon-every", "2", "--hidden-dim", "32", "--no-progress"]
  assert cli.main(argv) == 0
  assert "z=2: 3 epochs, train loss" in capsys.readouterr().out  # the one-line summary
  expected = {"config.json", "metrics.jsonl", "loss_list.npy", "test_loss_list.npy",
              "learning_curves.png", "latent.png", "samples.png", "params.msgpack",
              "manifold.png", "interpolation.png", "reconstruction_1.png", "reconstruction_2.png", "reconstruction_3.png",
              "checkpoints"}
  assert {p.name for p in workdir.iterdir()} == expected
  config = Config.from_json((workdir / "config.json").read_text())
  assert config.epochs == 3 and config.hidden_dim == 32
  rows = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
  assert [r["epoch"] for r in rows] == [1, 2, 3]
  for r in rows:
    assert set(r) == {"epoch", "train_loss", "train_recon", "train_kl", "test_loss",
                      "test_recon", "test_kl", "seconds", "test_kl_per_dim", "active_units"}
    assert r["train_loss"] == pytest.approx(r["train_recon"] + r["train_kl"], rel=1e-5)
  np.testing.assert_allclose(np.load(workdir / "loss_list.npy"), [r["train_loss"] for r in rows])
  np.testing.assert_allclose(np.load(workdir / "test_loss_list.npy"), [r["test_loss"] for r in rows])
  recon = matplotlib.image.imread(workdir / "reconstruction_1.png")
  assert recon.shape[:2] == (2 * 30 + 2, 8 * 30 + 2)  # 2 rows of 8, 2-pixel padding
  assert matplotlib.image.imread(workdir / "samples.png").shape[:2] == (8 * 30 + 2,) * 2
  for fig in ("learning_curves.png", "latent.png"):
    assert matplotlib.image.imread(workdir / fig).std() > 0  # not blank
  # The checkpoint loads back and reproduces the final test loss.
  params, loaded = weights.load_weights(workdir / "params.msgpack")
  assert loaded == config  # the sizes off the arrays, the rest from config.json beside them
  test = data.load_mnist("test", data_dir=tiny_data_dir)
  m = train.make_evaluate(VAE.from_config(config))(params, data.flatten(test.images))
  assert float(m.loss) / len(test.labels) == pytest.approx(rows[-1]["test_loss"], rel=1e-5)

  # A second run into the same directory is refused in one line; nothing is lost.
  before = {p: p.read_bytes() for p in workdir.rglob("*") if p.is_file()}
  assert cli.main(argv) == 2
  err = capsys.readouterr().err.strip()
  assert len(err.splitlines()) == 1 and "--overwrite" in err
  assert {p: p.read_bytes() for p in workdir.rglob("*") if p.is_file()} == before
  assert cli.main(argv + ["--overwrite", "--epochs", "1"]) == 0
  assert "z=2: 1 epoch, train loss" in capsys.readouterr().out  # "1 epoch", not "1 epochs"
  assert not (workdir / "reconstruction_3.png").exists()  # the old run's grids are gone


@pytest.mark.parametrize("flag, value", [("--epochs", "0"), ("--learning-rate", "-1"),
                                         ("--init", "xavier"), ("--batch-size", "two")])
def test_invalid_options_are_refused_before_any_work(tmp_path, flag, value, capsys):
  with pytest.raises(SystemExit) as exit_:
    cli.main(["train", "--workdir", str(tmp_path / "run"), flag, value])
  assert exit_.value.code == 2
  assert flag.lstrip("-").split("-")[0] in capsys.readouterr().err
  assert not (tmp_path / "run").exists()


def _reference_epoch(model, optimizer, state, images_u8, key, batch_size):
  """The epoch's contract, step by step in Python, independent of the compiled scan.

  The epoch's key splits into (perm_key, eps_key); the examples are visited once each,
  in the order of jax.random.permutation(perm_key, N), in batches of `batch_size` (the
  last one short); step i draws eps ~ N(0, I) [B, z] from split(eps_key, steps)[i]
  (a short batch uses its first rows); a batch is images[idx] / 255.
  """
  n = len(images_u8)
  perm_key, eps_key = jax.random.split(key)
  order = np.asarray(jax.random.permutation(perm_key, n))
  steps = -(-n // batch_size)
  step_keys = jax.random.split(eps_key, steps)
  grad_fn = jax.jit(jax.value_and_grad(losses.batch_loss, has_aux=True), static_argnums=1)
  params, opt_state, sums = state.params, state.opt_state, []
  for i in range(steps):
    idx = order[i * batch_size:(i + 1) * batch_size]
    x = np.asarray(images_u8)[idx].astype(np.float32) / 255
    eps = jax.random.normal(step_keys[i], (batch_size, model.latent_dim))[:len(idx)]
    (_, m), grads = grad_fn(params, model, x, eps, jnp.ones(len(idx)))
    updates, opt_state = optimizer.update(grads, opt_state, params)
    params = jax.tree.map(jnp.add, params, updates)
    sums.append(m)
  return train.TrainState(params, opt_state), losses.Metrics(*np.sum(np.array(sums), axis=0))


@pytest.mark.fast
def test_the_compiled_epoch_keeps_its_contract_over_two_epochs():
  # Shuffle by the epoch's permutation, a fresh eps every step, images / 255, the
  # short last batch: the compiled scan against the plain loop above, two epochs
  # (whose orders differ). Both do the same float32 operations in the same order of
  # steps; XLA may fuse them differently, a few roundings a step over 10 steps
  # (measured: sums 9.5e-8 apart, relative): rtol 1e-5. Each of these breaks it:
  # no shuffle (perm = arange), one eps key for every step, pixels / 256.
  n, b = 300, 64  # 5 steps an epoch, the last 44 images
  config = Config(hidden_dim=16, batch_size=b)
  run = train.setup(config)
  images = jax.random.randint(jax.random.PRNGKey(1), (n, 784), 0, 256).astype(jnp.uint8)
  epoch = jax.jit(train.make_train_epoch(run.model, run.optimizer, num_examples=n, batch_size=b))
  keys = [train.epoch_key(run.keys.train, e) for e in (1, 2)]
  orders = [np.asarray(jax.random.permutation(jax.random.split(k)[0], n)) for k in keys]
  assert not np.array_equal(orders[0], orders[1])
  compiled = reference = run.state
  for key in keys:
    compiled, got = epoch(compiled, images, key)
    reference, want = _reference_epoch(run.model, run.optimizer, reference, images, key, b)
    np.testing.assert_allclose(np.array(got), np.array(want), rtol=1e-5)
  jax.tree.map(lambda a, c: np.testing.assert_allclose(a, c, rtol=1e-5, atol=1e-7),
               compiled.params, reference.params)


@pytest.mark.fast
def test_the_epoch_plan_is_the_documented_permutation_and_noise_exactly():
  # `epoch_plan` is what the compiled epoch and the PyTorch parity test share, so its
  # contract is checked bit for bit: the order is jax.random.permutation of the first
  # half of the key (each example once), the last batch is padded with weight-0 rows,
  # and step s's eps is N(0, I) from the s-th key split from the second half.
  n, b, z = 300, 64, 3
  key = train.epoch_key(train.run_keys(0).train, 1)
  plan = train.epoch_plan(key, num_examples=n, batch_size=b, latent_dim=z)
  perm_key, eps_key = jax.random.split(key)
  assert plan.idx.shape == plan.weight.shape == (5, b) and plan.eps.shape == (5, b, z)
  flat_idx, flat_w = np.asarray(plan.idx).ravel(), np.asarray(plan.weight).ravel()
  np.testing.assert_array_equal(flat_idx[:n], jax.random.permutation(perm_key, n))
  np.testing.assert_array_equal(np.sort(flat_idx[flat_w > 0]), np.arange(n))
  np.testing.assert_array_equal(flat_w, np.arange(5 * b) < n)
  for s, step_key in enumerate(jax.random.split(eps_key, 5)):
    np.testing.assert_array_equal(plan.eps[s], jax.random.normal(step_key, (b, z)))
  assert len({float(e[0, 0]) for e in plan.eps}) == 5  # every step its own noise
  other = train.epoch_plan(train.epoch_key(train.run_keys(0).train, 2), num_examples=n,
                           batch_size=b, latent_dim=z)
  assert not np.array_equal(plan.idx, other.idx)  # a new order each epoch


@pytest.mark.fast
def test_the_optimizer_is_adam_with_pytorchs_constants_by_the_formula():
  # Kingma & Ba's Algorithm 1 written out in float64 NumPy, with torch.optim.Adam's
  # defaults (lr 1e-3, betas 0.9 and 0.999, eps 1e-8), against `make_optimizer` over
  # 10 steps of gradients of mixed scales (1e-9 to 1: around eps too). Float32 moments
  # against float64: each rounds by ~1e-7 relative a step, and where the first moment
  # cancels (gradients of both signs) the update's relative error grows; we bound it by
  # 1e-6 of lr a step, so atol 10 * 1e-6 * lr = 1e-8 on the summed steps (measured
  # 5.1e-9). beta2 = 0.99 and eps = 1e-7 each fail it (tried by hand). The parameters are
  # of order 1, not 0, so that a weight decay would show: AdamW's default (1e-4) would add
  # lr * 1e-4 * w a step, 1e-6 * |w| over the 10 steps.
  optimizer = train.make_optimizer(Config())
  rng = np.random.default_rng(0)
  params = {"w": jnp.asarray(rng.standard_normal(64), jnp.float32)}
  state = optimizer.init(params)
  m = v = np.zeros(64)
  ours, ref = np.zeros(64), np.zeros(64)
  for t in range(1, 11):
    g = rng.standard_normal(64) * 10.0 ** rng.integers(-9, 1, 64)
    updates, state = optimizer.update({"w": jnp.asarray(g, jnp.float32)}, state, params)
    ours += np.asarray(updates["w"], np.float64)
    m, v = 0.9 * m + 0.1 * g, 0.999 * v + 0.001 * g**2
    ref += -1e-3 * (m / (1 - 0.9**t)) / (np.sqrt(v / (1 - 0.999**t)) + 1e-8)
  np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-8)


@pytest.mark.fast
def test_evaluation_decodes_the_mean_and_sums_the_blogs_loss():
  # Eval mode by hand: encode, decode mu itself (no noise), recon + KL per image, summed.
  config = Config(hidden_dim=32)
  model = VAE.from_config(config)
  params = train.create_state(model, train.make_optimizer(config), jax.random.PRNGKey(0)).params
  images = jax.random.randint(jax.random.PRNGKey(1), (50, 784), 0, 256).astype(jnp.uint8)
  x = data.to_inputs(images)
  mu, logvar = model.apply({"params": params}, x, method=model.encode)
  logits = model.apply({"params": params}, mu, method=model.decode)
  want = losses.vae_loss(logits, x, mu, logvar)
  got = train.make_evaluate(model)(params, images)
  # The same operations on the same inputs, summed over 50 images: rtol 1e-6. Decoding
  # mu + sigma instead of mu moves the loss by several nats a image.
  np.testing.assert_allclose([got.recon, got.kl, got.loss],
                             [want.recon.sum(), want.kl.sum(), want.loss.sum()], rtol=1e-6)


@pytest.mark.fast
def test_a_run_has_three_independent_keys_from_its_seed():
  # Init, training and the prior samples each get their own key, split from the seed
  # (a key used twice correlates two streams that should be independent), and the
  # seed really reaches the initial weights.
  keys = train.run_keys(1)
  np.testing.assert_array_equal(np.stack(keys), jax.random.split(jax.random.PRNGKey(1), 3))
  assert len({tuple(np.asarray(k).tolist()) for k in keys}) == 3
  config = Config(hidden_dim=16)
  first = train.setup(config).state.params["fc1"]["kernel"]
  again = train.setup(config).state.params["fc1"]["kernel"]
  other = train.setup(config.replace(seed=2)).state.params["fc1"]["kernel"]
  np.testing.assert_array_equal(first, again)
  assert not np.array_equal(first, other)


@pytest.mark.fast
def test_the_history_gives_each_loss_per_image_of_its_own_split():
  # 300 training and 100 test images: the train loss is the epoch's sum / 300 (the
  # plain loop above gives the sum), the test loss the evaluation's sum / 100.
  n, b = 300, 64
  images = jax.random.randint(jax.random.PRNGKey(3), (n + 100, 784), 0, 256).astype(jnp.uint8)
  labels = jnp.zeros(n + 100, jnp.int32)
  d = data.DeviceData(images[:n], images[n:], labels[:n], labels[n:])
  run = train.setup(Config(hidden_dim=16, batch_size=b), d)
  result = train.fit(run, d, 1)
  row = result.history[0]
  _, want = _reference_epoch(run.model, run.optimizer, run.state, d.x_train,
                             train.epoch_key(run.keys.train, 1), b)
  np.testing.assert_allclose(row["train_loss"], want.loss / n, rtol=1e-5)  # as the contract test
  test = train.make_evaluate(run.model)(result.params, d.x_test)
  np.testing.assert_allclose(row["test_loss"], float(test.loss) / 100, rtol=1e-6)
  assert row["train_loss"] == pytest.approx(row["train_recon"] + row["train_kl"], rel=1e-6)


def test_a_limit_past_mnist_is_refused_and_an_old_record_of_one_reads_as_none(tmp_path):
  # Earlier versions took --train-limit 70000 and trained on all 60,000 images: the runs they
  # wrote still read (as no limit), and new configs refuse the value.
  with pytest.raises(ValueError, match="`train_limit` 60001 is more than MNIST's 60000"):
    Config(train_limit=60001)
  fields = {**json.loads(Config().to_json()), "train_limit": 70000, "test_limit": 10001}
  (tmp_path / "config.json").write_text(json.dumps(fields))
  assert Config.from_file(tmp_path / "config.json") == Config()
  assert Config.from_json(json.dumps(fields)) == Config()  # a checkpoint's copy of it
  kept = {**fields, "train_limit": 60000, "test_limit": 5}  # within the sizes: as recorded
  assert Config.from_json(json.dumps(kept)) == Config(train_limit=60000, test_limit=5)
