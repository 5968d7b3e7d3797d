"""Learning, on the real MNIST: the blog's setting trained briefly must land where it should.

Every formula can be right and training still wrong (no shuffle, a wrong Adam constant,
a wrong learning rate or init, eval with sampled z): this test trains the blog's model
(z = 2, batch 128, Adam 1e-3, seed 1) for three epochs and checks each epoch's test loss
against a band around the mean of ten seeds, five standard deviations of the seed spread
wide. A different CPU rounds differently, and a run's path through training then parts
from ours like another seed's, so the seed spread is the right scale for the band.

The band was measured with `python tests/test_learning.py` (seeds 1 to 10), which prints
the constants below.
"""

import numpy as np
import pytest

from vae_jax import Config, train
from vae_jax.data import load_device_data

EPOCHS = 3
# Test loss per image after epochs 1, 2, 3 over seeds 1-10 on 2 cores of an AMD EPYC
# (x86_64, jax 0.10.2): mean and standard deviation (results/learning_band_amd.txt).
BAND_MEAN = [168.47, 162.453, 159.569]  # the ten seeds' runs: 167.4 to 170.0, 161.3 to
BAND_SD = [0.903, 0.812, 0.735]         # 163.6, 158.6 to 161.0 (seed 1: 168.6, 163.4, 161.0)


@pytest.mark.slow
def test_three_epochs_of_the_blogs_setting_land_in_the_seed_band():
  config = Config()  # the blog's setting, seed 1
  d = load_device_data(config)
  history = train.fit(train.setup(config, d), d, EPOCHS).history
  got = np.array([row["test_loss"] for row in history])
  print("test loss per epoch:", got.round(2), "band:", np.round(BAND_MEAN, 2), "+-",
        np.round(5 * np.array(BAND_SD), 2))
  np.testing.assert_array_less(np.abs(got - BAND_MEAN), 5 * np.array(BAND_SD))


def _measure_band(seeds=range(1, 11)):
  from vae_jax.app import multi
  config = Config(epochs=EPOCHS)
  d = load_device_data(config)
  result = multi.train_many(config, [multi.Member(s, config.learning_rate) for s in seeds],
                            d, strategy="sequential")
  losses = np.array([[row["test_loss"] for row in h] for h in result.histories])  # [S, E]
  print("per seed:\n", losses.round(3))
  print(f"BAND_MEAN = {losses.mean(0).round(3).tolist()}")
  print(f"BAND_SD = {losses.std(0, ddof=1).round(3).tolist()}")


if __name__ == "__main__":
  _measure_band()
