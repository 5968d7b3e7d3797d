"""Looking inside the latent space: which z to decode for the manifold and the interpolations.

Pure NumPy; `run.py` decodes these z with the trained decoder and `plots.py` draws them.

* The manifold (Kingma and Welling 2014, Fig. 4): the decoder's mean on an n x n grid
  z = (Phi^-1(u_1), Phi^-1(u_2)), with u evenly spaced on (0, 1)^2, u_i = (i + 1/2) / n, and
  Phi the standard normal CDF. Neighbouring points are 1/n of prior mass apart, so the grid
  covers the prior N(0, I) as it weighs z, not a box. For z > 2 the grid lies in the plane
  through 0 spanned by the first two principal axes of the test set's mu (unit vectors), so
  its coordinates stay in units of z, and z is 0 along every other principal axis.
* Interpolation: z_t = (1 - t) mu_a + t mu_b for t = 0, 1/(s - 1), ..., 1, between the
  posterior means of two test images of different digits.
"""

from __future__ import annotations

from statistics import NormalDist
from typing import NamedTuple

import numpy as np

MANIFOLD_SIZE = 20       # a 20 x 20 grid, as Kingma and Welling's Fig. 4
INTERPOLATION_STEPS = 10
# Test images (MNIST's order) whose mu are joined: digits 7-2, 1-0, 4-9, 5-6, 3-8.
INTERPOLATION_PAIRS = ((0, 1), (2, 3), (4, 7), (8, 11), (18, 61))


class Manifold(NamedTuple):
  z: np.ndarray       # [n * n, latent]: row r, column c at index r * n + c (row 0 at the top)
  values: np.ndarray  # [n]: the grid's coordinates along each axis, Phi^-1((i + 1/2) / n)
  axes: np.ndarray    # [2, latent]: the unit vectors of the horizontal and vertical axes
  label: str          # what the axes are, for the figure


def normal_quantiles(n: int) -> np.ndarray:
  """Phi^-1((i + 1/2) / n) for i = 0..n-1: [n], increasing, symmetric about 0."""
  return np.array([NormalDist().inv_cdf((i + 0.5) / n) for i in range(n)])


def principal_axes(mu: np.ndarray) -> np.ndarray:
  """The first two principal axes of the rows of mu [N, z] as unit vectors [2, z] (largest
  variance first). z = 2: the coordinate axes themselves; z = 1: the axis and a zero vector."""
  mu = np.asarray(mu, np.float64)
  latent = mu.shape[1]
  if latent <= 2:
    return np.eye(2, latent)
  _, _, vt = np.linalg.svd(mu - mu.mean(0), full_matrices=False)  # vt: [min(N, z), z]
  return np.pad(vt[:2], ((0, 2 - len(vt[:2])), (0, 0)))            # too few images: zero rows


def manifold_latents(mu: np.ndarray, n: int = MANIFOLD_SIZE) -> Manifold:
  """The z of the decoded manifold, in the plane of `principal_axes(mu)` (module docstring)."""
  latent = np.asarray(mu).shape[1]
  values = normal_quantiles(n)
  axes = principal_axes(mu)
  horizontal, vertical = np.meshgrid(values, values[::-1])  # [n, n]: up is the larger value
  z = horizontal.reshape(-1, 1) * axes[0] + vertical.reshape(-1, 1) * axes[1]
  label = ("z" if latent <= 2 else
           f"z along the principal axes of the test set's mu (z = {latent})")
  return Manifold(z.astype(np.float32), values, axes, label)


def interpolation_pairs(n_test: int) -> tuple[tuple[int, int], ...]:
  """`INTERPOLATION_PAIRS` that index into a test set of `n_test` images; (0, 1) if none does."""
  pairs = tuple(p for p in INTERPOLATION_PAIRS if max(p) < n_test)
  if not pairs and n_test < 2:
    raise ValueError(f"an interpolation needs two test images; there is {n_test}")
  return pairs or ((0, 1),)


def interpolation_latents(mu_a: np.ndarray, mu_b: np.ndarray,
                          steps: int = INTERPOLATION_STEPS) -> np.ndarray:
  """[P, z] and [P, z] -> [P, steps, z]: z_t = (1 - t) mu_a + t mu_b, t from 0 to 1."""
  t = np.linspace(0.0, 1.0, steps)[None, :, None]                      # [1, steps, 1]
  return ((1 - t) * mu_a[:, None, :] + t * mu_b[:, None, :]).astype(np.float32)
