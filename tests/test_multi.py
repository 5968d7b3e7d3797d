"""Many runs at once: stacked runs compute what single runs compute."""

import jax
import numpy as np
import pytest

from vae_jax import Config, data, train
from vae_jax.experiments import multi

TINY = Config(hidden_dim=32, batch_size=64, epochs=2)


def _data(tiny_data_dir):
  return data.load_device_data(TINY.replace(data_dir=str(tiny_data_dir)))


def _single(config, seed, d):
  """A single run with `seed`: the setup and fit that `vae-jax train` uses."""
  result = train.fit(train.setup(config.replace(seed=seed), d), d, config.epochs)
  return result.params, [(h["train_loss"], h["test_loss"]) for h in result.history]


@pytest.mark.parametrize("strategy", ["vmap", "sequential"])
def test_stacked_runs_agree_with_single_runs(tiny_data_dir, strategy):
  d = _data(tiny_data_dir)
  seeds = [1, 2, 3]
  result = multi.train_many(TINY, [(s, TINY.learning_rate) for s in seeds], d,
                            strategy=strategy, progress=False)
  assert result.strategy == strategy
  for i, seed in enumerate(seeds):
    params, losses = _single(TINY, seed, d)
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
  d = _data(tiny_data_dir)
  rates = [1e-3, 3e-3]
  result = multi.train_many(TINY, [(1, lr) for lr in rates], d, strategy="vmap", progress=False)
  for i, lr in enumerate(rates):
    _, losses = _single(TINY.replace(learning_rate=lr), 1, d)
    np.testing.assert_allclose([(h["train_loss"], h["test_loss"]) for h in result.histories[i]],
                               losses, rtol=1e-4)
  assert result.histories[0][-1]["train_loss"] != result.histories[1][-1]["train_loss"]


def test_auto_picks_the_faster_strategy_it_measured(tiny_data_dir):
  d = _data(tiny_data_dir)
  result = multi.train_many(TINY.replace(epochs=1), [(1, 1e-3), (2, 1e-3)], d, progress=False)
  assert set(result.calibration) == {"vmap", "sequential"}
  assert result.strategy == min(result.calibration, key=result.calibration.get)


def test_invalid_strategy_is_refused():
  with pytest.raises(ValueError, match="strategy must be one of"):
    multi.train_many(TINY, [(1, 1e-3)], None, strategy="pmap")
