"""Many runs at once: stacked runs compute what single runs compute."""

import jax
import numpy as np
import pytest

from vae_jax import Config, data, train
from vae_jax.app import multi
from vae_jax.extensions import recipe

TINY = Config(hidden_dim=32, batch_size=64, epochs=2)


def _data(tiny_data_dir):
  return data.load_device_data(TINY.replace(data_dir=str(tiny_data_dir)))


def _single(config, seed, d):
  """A single run with `seed`: the setup and fit that `vae-jax train` uses."""
  result = train.fit(recipe.setup(config.replace(seed=seed), d), d, config.epochs)
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
    else:
      # Batched matrix products may sum in another order. As in the PyTorch parity
      # test: an epoch's loss sums ~300 * 784 float32 terms, so its rounding is of order
      # sqrt(300 * 784) u = 2.9e-5 relative (u = 2^-24); a weight moved by 10 Adam steps
      # of gradients off by <= 1e-4 relative stays within 10 lr 1e-4 = 1e-6, but for
      # the odd one whose gradient sits within rounding of zero (at most 0.1%).
      # Measured on an AMD EPYC: losses identical, weights at most 6e-8 apart.
      np.testing.assert_allclose(got, losses, rtol=np.sqrt(300 * 784) * 2.0**-24)
      for a, b in zip(jax.tree.leaves(jax.tree.map(lambda x: x[i], result.params)),
                      jax.tree.leaves(params)):
        err = np.abs(np.asarray(a) - np.asarray(b))
        assert np.all(np.isfinite(err)) and np.mean(err > 1e-6) <= 1e-3
        assert err.max() < 2 * 10 * 1.03 * TINY.learning_rate  # 1.03 lr: one early Adam step
  # Different seeds really are different runs.
  assert result.histories[0] != result.histories[1]


def test_vmapped_learning_rates_match_single_runs_with_those_rates(tiny_data_dir):
  d = _data(tiny_data_dir)
  rates = [1e-3, 3e-3]
  result = multi.train_many(TINY, [(1, lr) for lr in rates], d, strategy="vmap", progress=False)
  for i, lr in enumerate(rates):
    _, losses = _single(TINY.replace(learning_rate=lr), 1, d)
    np.testing.assert_allclose([(h["train_loss"], h["test_loss"]) for h in result.histories[i]],
                               losses, rtol=np.sqrt(300 * 784) * 2.0**-24)  # as above
  assert result.histories[0][-1]["train_loss"] != result.histories[1][-1]["train_loss"]


def test_auto_picks_the_faster_strategy_it_measured(tiny_data_dir):
  d = _data(tiny_data_dir)
  result = multi.train_many(TINY.replace(epochs=1), [(1, 1e-3), (2, 1e-3)], d, progress=False)
  assert set(result.calibration) == {"vmap", "sequential"}
  assert result.strategy == min(result.calibration, key=result.calibration.get)


def test_invalid_strategy_is_refused():
  with pytest.raises(ValueError, match="strategy must be one of"):
    multi.train_many(TINY, [(1, 1e-3)], None, strategy="pmap")


def test_vmapped_cvae_runs_match_single_runs(tiny_data_dir):
  """The CVAE stacks too: the labels go to every member whole, each step gathers its own."""
  d, config = _data(tiny_data_dir), TINY.replace(model="cvae")
  result = multi.train_many(config, [(1, 1e-3), (2, 1e-3)], d, strategy="vmap", progress=False)
  for i, seed in enumerate((1, 2)):
    _, losses = _single(config, seed, d)
    np.testing.assert_allclose([(h["train_loss"], h["test_loss"]) for h in result.histories[i]],
                               losses, rtol=np.sqrt(300 * 784) * 2.0**-24)  # as above


def test_a_save_comes_every_save_every_s_of_device_time(monkeypatch):
  """`_epochs` hands `save` an epoch once SAVE_EVERY_S seconds have passed since the last
  save, timed by the host's waits for the device, not by dispatch (which runs ahead).

  A fake device: dispatching an epoch costs no time, and waiting for one costs 12 s of a
  fake clock. The host waits for epoch e - 1 while epoch e is dispatched, so the clock
  reads 12 (e - 1) s then; with saves every 30 s they come at epochs 3, 6 and 9 of 10
  (36, 72, 108 s), each with the sums of the epochs before it."""
  clock = [0.0]
  waited = []

  def wait(x):  # the host waits for the device: an epoch's 12 s pass
    waited.append(int(x))
    clock[0] += 12.0
    return x

  def run_epochs(run, d, epochs, state, first):  # dispatch only: no time passes
    for epoch in range(first, epochs + 1):
      yield epoch, np.int32(epoch), f"train {epoch}", f"test {epoch}"

  monkeypatch.setattr(multi, "SAVE_EVERY_S", 30.0)
  monkeypatch.setattr(multi.time, "perf_counter", lambda: clock[0])
  monkeypatch.setattr(multi.jax, "block_until_ready", wait)
  monkeypatch.setattr(multi.train, "run_epochs", run_epochs)
  saves, ticks = [], []
  state, per_epoch = multi._epochs(None, None, 10, None, 1,
                                   save=lambda e, s, sums: saves.append((e, int(s), list(sums))),
                                   tick=lambda: ticks.append(clock[0]))
  assert [(e, s) for e, s, _ in saves] == [(3, 3), (6, 6), (9, 9)]
  for e, _, sums in saves:  # the sums of epochs 1..e, in order
    assert sums == [(f"train {k}", f"test {k}") for k in range(1, e + 1)]
  assert waited == list(range(1, 10))  # each epoch but the last, while the next is in flight
  assert int(state) == 10 and len(per_epoch) == 10 and len(ticks) == 10
  # Without `save` the loop never waits: the caller reads the sums when it likes.
  waited.clear()
  multi._epochs(None, None, 10, None, 1)
  assert waited == []


@pytest.mark.parametrize("strategy, per_epoch", [("sequential", 10.0), ("vmap", 5.0)])
def test_saved_rows_carry_the_seconds_per_epoch_of_the_call(tiny_data_dir, strategy, per_epoch,
                                                            monkeypatch):
  """A fake clock moves 10 s each time the host waits for an epoch, and at no other time:
  each saved row of a member trained alone then holds 10 s, of one of two stacked members
  half of that (its share), however many epochs the save holds."""
  d = _data(tiny_data_dir)
  clock, real_wait = [0.0], jax.block_until_ready

  def wait(x):
    clock[0] += 10.0
    return real_wait(x)

  monkeypatch.setattr(multi, "SAVE_EVERY_S", 0.0)  # a save every epoch
  monkeypatch.setattr(multi.time, "perf_counter", lambda: clock[0])
  monkeypatch.setattr(multi.jax, "block_until_ready", wait)
  saved = []
  multi.train_many(TINY.replace(epochs=4), [(1, TINY.learning_rate), (2, TINY.learning_rate)],
                   d, strategy=strategy, progress=False,
                   on_progress=lambda i, p: saved.append((i, p.epoch, p.history)))
  assert sorted((i, e) for i, e, _ in saved) == [(i, e) for i in (0, 1) for e in (1, 2, 3)]
  for _, epoch, rows in saved:
    assert [r["epoch"] for r in rows] == list(range(1, epoch + 1))
    assert [r["seconds"] for r in rows] == [per_epoch] * epoch, rows
