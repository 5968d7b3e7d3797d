"""Binarized MNIST (`--binarize dynamic`), as the likelihood literature trains and scores it.

* Training: each pixel of each batch is drawn afresh from Bernoulli(pixel / 255) inside the
  compiled epoch, with a key of its step (`recipe.epoch_plan`): `bernoulli_pixels`.
* Testing: one fixed binarization of the test set that every model is scored on
  (`fixed_test_images`), the same bits on every machine and backend.
"""

from __future__ import annotations

import jax
import numpy as np

TEST_BINARIZATION_SEED = 0


def bernoulli_pixels(key: jax.Array, x: jax.Array) -> jax.Array:
  """Dynamic binarization: each pixel ~ Bernoulli(x), drawn afresh. [B, 784] -> 0. / 1."""
  return jax.random.bernoulli(key, x).astype(x.dtype)


def fixed_test_images(images: np.ndarray, seed: int = TEST_BINARIZATION_SEED) -> np.ndarray:
  """The fixed binarization of a test set: pixel = 255 where u < k / 255, else 0.

  images: uint8 [N, ...] of all N test images (cut to a limit afterwards, so the first
  n images are binarized the same whatever the limit). u ~ U[0, 1) from NumPy's
  `default_rng(seed).random` in float64, one per pixel in C order. Kept uint8 (0 or 255)
  so `data.to_inputs` gives 0. or 1.
  """
  u = np.random.default_rng(seed).random(images.shape)
  return np.where(u < images / 255.0, 255, 0).astype(np.uint8)
