"""Many runs at once: stacked runs compute what single runs compute."""

import jax
import numpy as np
import pytest

from vae_jax import Config, data, multi, train

TINY = Config(hidden_dim=32, batch_size=64, epochs=2)


def _data(tiny_data_dir):
  tr = data.load_mnist("train", data_dir=tiny_data_dir)
  te = data.load_mnist("test", data_dir=tiny_data_dir)
  return train.flatten(tr.images), train.flatten(te.images)


def _single(config, seed, x_train, x_test):
  """A single run with `seed`, through the same building blocks as train_and_evaluate."""
  model, optimizer = train.make_model(config), train.make_optimizer(config)
  keys = train.run_keys(seed)
  state = train.create_state(model, optimizer, keys.init)
  epoch = jax.jit(train.make_train_epoch(model, optimizer, num_examples=len(x_train),
                                         batch_size=config.batch_size))
  evaluate = jax.jit(train.make_evaluate(model))
  losses = []
  for e in range(1, config.epochs + 1):
    state, m = epoch(state, x_train, train.epoch_key(keys.train, e))
    losses.append((float(m.loss) / len(x_train), float(evaluate(state.params, x_test).loss)
                   / len(x_test)))
  return state.params, losses


@pytest.mark.parametrize("strategy", ["vmap", "sequential"])
def test_stacked_runs_agree_with_single_runs(tiny_data_dir, strategy):
  x_train, x_test = _data(tiny_data_dir)
  seeds = [1, 2, 3]
  result = multi.train_many(TINY, [(s, TINY.learning_rate) for s in seeds], x_train, x_test,
                            strategy=strategy, progress=False)
  assert result.strategy == strategy
  for i, seed in enumerate(seeds):
    params, losses = _single(TINY, seed, x_train, x_test)
    got = [(h["train_loss"], h["test_loss"]) for h in result.histories[i]]
    if strategy == "sequential":  # the very same compiled program: bit for bit
      assert got == losses
      jax.tree.map(np.testing.assert_array_equal, jax.tree.map(lambda x: x[i], result.params),
                   params)
    else:  # batched matrix products round differently: float32 agreement
      np.testing.assert_allclose(got, losses, rtol=1e-4)
      jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-4),
                   jax.tree.map(lambda x: x[i], result.params), params)
  # Different seeds really are different runs.
  assert result.histories[0] != result.histories[1]


def test_vmapped_learning_rates_match_single_runs_with_those_rates(tiny_data_dir):
  x_train, x_test = _data(tiny_data_dir)
  rates = [1e-3, 3e-3]
  result = multi.train_many(TINY, [(1, lr) for lr in rates], x_train, x_test, strategy="vmap",
                            progress=False)
  for i, lr in enumerate(rates):
    _, losses = _single(TINY.replace(learning_rate=lr), 1, x_train, x_test)
    np.testing.assert_allclose([(h["train_loss"], h["test_loss"]) for h in result.histories[i]],
                               losses, rtol=1e-4)
  assert result.histories[0][-1]["train_loss"] != result.histories[1][-1]["train_loss"]


def test_auto_picks_the_faster_strategy_it_measured(tiny_data_dir):
  x_train, x_test = _data(tiny_data_dir)
  result = multi.train_many(TINY.replace(epochs=1), [(1, 1e-3), (2, 1e-3)], x_train, x_test,
                            progress=False)
  assert set(result.calibration) == {"vmap", "sequential"}
  assert result.strategy == min(result.calibration, key=result.calibration.get)


def test_invalid_strategy_is_refused():
  with pytest.raises(ValueError, match="strategy must be one of"):
    multi.train_many(TINY, [(1, 1e-3)], None, None, strategy="pmap")


def test_settle_epoch():
  assert multi.settle_epoch([200, 150, 120, 101, 100.5, 100]) == 4  # 101 is within 1% of 100
  assert multi.settle_epoch([100, 100]) == 1
  assert multi.settle_epoch([100, 90, 100]) == 3  # left the band at epoch 2, back at 3
