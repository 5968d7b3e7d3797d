"""The latent-space figures' z: the manifold grid and the interpolations (vae_jax/extensions/latent.py)."""

from statistics import NormalDist

import matplotlib.image
import numpy as np
import pytest

from vae_jax.extensions import latent


def test_the_grid_is_the_normal_quantiles_of_the_cell_centres():
  # Phi(value_i) = (i + 1/2) / n, to the accuracy of NormalDist (about 1e-15 here).
  n = 20
  values = latent.normal_quantiles(n)
  np.testing.assert_allclose([NormalDist().cdf(v) for v in values], (np.arange(n) + 0.5) / n,
                             rtol=0, atol=1e-12)
  np.testing.assert_allclose(values, -values[::-1], atol=1e-12)  # symmetric about 0
  assert np.all(np.diff(values) > 0)
  np.testing.assert_allclose(values[-1], 1.959963984540054, rtol=1e-12)  # Phi^-1(0.975)


def test_z2_manifold_is_row_major_with_up_the_larger_second_coordinate():
  n = 20
  mu = np.random.default_rng(0).normal(size=(50, 2))
  grid = latent.manifold_latents(mu, n)
  values = latent.normal_quantiles(n)
  assert grid.z.shape == (n * n, 2) and grid.z.dtype == np.float32 and grid.label == "z"
  np.testing.assert_array_equal(grid.axes, np.eye(2))  # z = 2: the coordinate axes, whatever mu
  for r, c in [(0, 0), (0, n - 1), (n - 1, 0), (7, 12)]:
    np.testing.assert_allclose(grid.z[r * n + c], [values[c], values[n - 1 - r]], rtol=1e-6)


def test_higher_z_manifold_lies_in_the_plane_of_the_first_two_principal_axes():
  # mu with known principal axes: independent coordinates of standard deviations
  # 3, 2, 1, 0.5, 0.1, rotated by a random orthogonal Q. The two largest-variance
  # directions are Q's first two rows, up to sign; with 20,000 samples the estimated
  # axes are within about sd / sqrt(N) / (gap) ~ 0.01 of them in angle, so |cos| > 0.999.
  rng = np.random.default_rng(1)
  q, _ = np.linalg.qr(rng.normal(size=(5, 5)))
  mu = (rng.normal(size=(20_000, 5)) * [3, 2, 1, 0.5, 0.1]) @ q.T + 4.0  # offset: PCA centres
  grid = latent.manifold_latents(mu, 8)
  np.testing.assert_allclose(grid.axes @ grid.axes.T, np.eye(2), atol=1e-12)  # orthonormal
  assert abs(grid.axes[0] @ q[:, 0]) > 0.999 and abs(grid.axes[1] @ q[:, 1]) > 0.999
  # Every grid point is a combination of the two axes, through 0: no part along the others.
  rest = grid.z - (grid.z @ grid.axes.T) @ grid.axes
  np.testing.assert_allclose(rest, 0, atol=1e-5)
  coords = grid.z @ grid.axes.T  # [64, 2]: the grid's own coordinates, as for z = 2
  values = latent.normal_quantiles(8)
  np.testing.assert_allclose(coords[3 * 8 + 5], [values[5], values[8 - 1 - 3]], rtol=1e-5)
  assert "principal axes" in grid.label


def test_z1_manifold_uses_its_one_axis():
  grid = latent.manifold_latents(np.zeros((3, 1)), 4)
  np.testing.assert_allclose(grid.z[:4, 0], latent.normal_quantiles(4), rtol=1e-6)


def test_interpolation_runs_from_one_mu_to_the_other_in_equal_steps():
  rng = np.random.default_rng(2)
  a, b = rng.normal(size=(3, 4)), rng.normal(size=(3, 4))
  z = latent.interpolation_latents(a, b, steps=5)  # [3, 5, 4]
  assert z.shape == (3, 5, 4)
  np.testing.assert_allclose(z[:, 0], a, rtol=1e-6)
  np.testing.assert_allclose(z[:, -1], b, rtol=1e-6)
  np.testing.assert_allclose(z[:, 2], (a + b) / 2, rtol=1e-6, atol=1e-7)
  np.testing.assert_allclose(np.diff(z, axis=1), np.repeat(((b - a) / 4)[:, None], 4, 1),
                             rtol=1e-5, atol=1e-6)


def test_interpolation_pairs_are_fixed_different_digits_and_fit_the_test_set():
  # On MNIST's test set the pairs join ten different digits (its first labels, below).
  labels = {0: 7, 1: 2, 2: 1, 3: 0, 4: 4, 7: 9, 8: 5, 11: 6, 18: 3, 61: 8}
  digits = [labels[i] for pair in latent.INTERPOLATION_PAIRS for i in pair]
  assert sorted(digits) == list(range(10))
  assert latent.interpolation_pairs(10_000) == latent.INTERPOLATION_PAIRS
  assert latent.interpolation_pairs(10) == ((0, 1), (2, 3), (4, 7))
  assert latent.interpolation_pairs(2) == ((0, 1),)
  with pytest.raises(ValueError, match="two test images"):
    latent.interpolation_pairs(1)


def test_a_run_draws_the_manifold_and_the_interpolations(tiny_data_dir, tmp_path):
  # z = 2 here; a z = 5 run draws them too in tests/test_beta.py.
  from vae_jax import Config
  from vae_jax.app import run

  config = Config(data_dir=str(tiny_data_dir), latent_dim=2, hidden_dim=16, epochs=1)
  run.train_and_evaluate(config, tmp_path / "run", progress=False)
  for name in ("manifold.png", "interpolation.png"):
    image = matplotlib.image.imread(tmp_path / "run" / name)
    assert image.ndim == 3 and min(image.shape[:2]) > 200, name  # drawn, not an empty file
