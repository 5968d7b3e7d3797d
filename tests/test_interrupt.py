"""Ctrl-C that a command cannot lose (`vae_jax.interrupt`).

Python raises Ctrl-C's KeyboardInterrupt in whatever code runs. Inside a gc callback
(JAX has one, and it runs often while JAX imports and compiles) Python prints the
exception and drops it. A gc callback that raises KeyboardInterrupt is exactly what a
Ctrl-C landing there does, so these tests raise one so, at a known moment; `recorded`
must then send the Ctrl-C again, to land where a Ctrl-C would have.
"""

import gc
import signal
import subprocess
import sys
import threading
from pathlib import Path

import jax
import pytest

from vae_jax import cli, interrupt

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def ctrl_c_raises():
  """SIGINT raises KeyboardInterrupt here, as in a terminal. A process that a non-interactive
  shell starts in the background (`make test &`, `nohup ... &`) inherits SIGINT ignored, and
  Python then installs no handler: a Ctrl-C, sent again or not, would do nothing at all."""
  old = signal.signal(signal.SIGINT, signal.default_int_handler)
  yield
  signal.signal(signal.SIGINT, old)


def _ctrl_c_inside_gc(armed):
  """Registers a gc callback that raises KeyboardInterrupt once, at the first collection in
  the main thread once `armed` (a list) holds something; returns it and the list of times it
  fired. The main thread only: Python runs a Ctrl-C's handler there and nowhere else, and a
  re-sent Ctrl-C from a thread that blocks SIGINT (as C++ thread pools do) would be lost."""
  fired = []

  def callback(phase, info):
    if (phase == "start" and armed and not fired
        and threading.current_thread() is threading.main_thread()):
      fired.append(True)
      raise KeyboardInterrupt

  gc.callbacks.append(callback)
  return callback, fired


def _collect(fired):
  """gc.collect() until the callback has fired: while another thread's collection runs
  (its finalizers can let the main thread in), gc.collect() returns at once and calls no
  callback."""
  for _ in range(10_000):
    gc.collect()
    if fired:
      return
  raise AssertionError("no collection ran the callback")


def test_python_drops_a_ctrl_c_raised_in_a_gc_callback(monkeypatch):
  """What `recorded` is for: outside it, the KeyboardInterrupt goes to sys.unraisablehook
  and gc.collect() returns as if it had not come."""
  seen = []
  monkeypatch.setattr(sys, "unraisablehook", lambda u: seen.append(u.exc_type))
  callback, fired = _ctrl_c_inside_gc([True])
  try:
    _collect(fired)  # returns: no KeyboardInterrupt here
  finally:
    gc.callbacks.remove(callback)
  assert fired and seen == [KeyboardInterrupt]


def test_a_ctrl_c_dropped_in_a_gc_callback_comes_again_inside_the_command():
  """Inside `recorded`, the dropped Ctrl-C is sent again and ends the command, whenever it
  lands: just after the collection, or as the command ends (a collection of a large heap can
  outlast AGAIN_S, so the test does not say which)."""
  before = sys.unraisablehook
  armed = []  # armed inside: a collection that Python starts before would take the Ctrl-C
  callback, fired = _ctrl_c_inside_gc(armed)
  try:
    with pytest.raises(KeyboardInterrupt):
      with interrupt.recorded():
        armed.append(True)
        _collect(fired)  # the KeyboardInterrupt is raised inside the callback, and dropped
  finally:
    gc.callbacks.remove(callback)
  assert fired
  assert sys.unraisablehook is before


def test_nested_commands_each_restore_their_hook_and_pass_other_errors_on(monkeypatch):
  seen = []
  monkeypatch.setattr(sys, "unraisablehook", lambda u: seen.append(u.exc_type))
  outer = sys.unraisablehook

  class Leaky:
    def __del__(self):
      raise ValueError("from __del__")

  with interrupt.recorded():
    with interrupt.recorded():  # e.g. scripts/train_phases.py around cli.main
      Leaky()  # dropped at once: __del__'s exception goes to the hook there was
    Leaky()
  assert seen == [ValueError, ValueError]
  assert sys.unraisablehook is outer


def test_an_import_stopped_by_ctrl_c_is_a_ctrl_c_not_a_missing_package(monkeypatch):
  try:
    try:
      raise KeyboardInterrupt
    except KeyboardInterrupt as e:
      raise ImportError("Encountered an error while initializing the extension.") from e
  except ImportError as e:
    wrapped = e
  assert interrupt.from_ctrl_c(wrapped)
  assert not interrupt.from_ctrl_c(ImportError("No module named 'tensorflow'"))
  with pytest.raises(KeyboardInterrupt):
    interrupt.raise_if_ctrl_c(wrapped)
  interrupt.raise_if_ctrl_c(ImportError("No module named 'tensorflow'"))  # not installed

  def stopped(name):
    raise wrapped

  monkeypatch.setattr(interrupt.importlib, "import_module", stopped)
  with pytest.raises(KeyboardInterrupt):
    interrupt.optional_import("torch")
  monkeypatch.setattr(interrupt.importlib, "import_module",
                      lambda name: (_ for _ in ()).throw(ModuleNotFoundError(name)))
  assert interrupt.optional_import("torch") is None


@pytest.mark.parametrize("where", ["data.load_device_data", "train.setup"])
def test_a_ctrl_c_that_jax_drops_before_training_stops_the_train_command(
    where, tiny_data_dir, tmp_path, monkeypatch, capsys):
  """The Ctrl-C lands in a gc callback while MNIST loads or the run is set up: the command
  stops with 130 before its first epoch, instead of training to the end, and says so."""
  from vae_jax import data, train
  module, name = {"data": data, "train": train}[where.split(".")[0]], where.split(".")[1]
  real, armed = getattr(module, name), []
  callback, fired = _ctrl_c_inside_gc(armed)

  def collecting(*args, **kwargs):
    armed.append(True)
    _collect(fired)  # a collection while it runs, as happen there all the time
    return real(*args, **kwargs)

  monkeypatch.setattr(module, name, collecting)
  work = tmp_path / "run"
  argv = ["train", "--workdir", str(work), "--data-dir", str(tiny_data_dir), "--epochs", "2",
          "--no-progress", "--no-compile-cache"]
  try:
    code = cli.main(argv)
  finally:
    gc.callbacks.remove(callback)
  assert fired
  assert code == 130
  assert ("vae-jax train: interrupted before the first epoch: nothing was trained; run the "
          "same command again") in capsys.readouterr().err
  assert not (work / "params.msgpack").exists()
  assert not (work / "checkpoints").exists()
  monkeypatch.setattr(module, name, real)
  assert cli.main(argv) == 0  # as the line says
  assert (work / "params.msgpack").exists()


def test_a_ctrl_c_dropped_as_a_short_command_ends_still_stops_it(tiny_data_dir, tmp_path,
                                                                 monkeypatch, capsys):
  """Dropped in the last moments of `evaluate`: the command does not end as if it had not
  come (exit 0), but as interrupted (130)."""
  from vae_jax import checkpoint, data, model
  from vae_jax.config import Config
  params = model.init_params(model.make_model(Config()), jax.random.PRNGKey(0))
  weights = tmp_path / "params.msgpack"
  checkpoint.save_params(params, weights)
  real, armed = data.load_device_data, []
  callback, fired = _ctrl_c_inside_gc(armed)

  def collecting(*args, **kwargs):
    out = real(*args, **kwargs)
    armed.append(True)
    _collect(fired)
    return out

  monkeypatch.setattr(data, "load_device_data", collecting)
  try:
    code = cli.main(["evaluate", "--weights", str(weights), "--data-dir", str(tiny_data_dir),
                     "--no-compile-cache"])
  finally:
    gc.callbacks.remove(callback)
  assert fired and code == 130
  assert "vae-jax evaluate: interrupted" in capsys.readouterr().err


def test_the_command_line_imports_no_jax_before_it_can_take_ctrl_c():
  """`vae-jax` parses its flags and sets up `interrupt.recorded` before importing JAX."""
  done = subprocess.run([sys.executable, "-c",
                         "import sys, vae_jax.cli; print('jax' in sys.modules)"],
                        cwd=ROOT, capture_output=True, text=True, check=True)
  assert done.stdout.strip() == "False"


def test_the_package_names_load_on_first_use():
  """The lazy package (for the test above) still offers what it did: its names, its
  submodules as attributes, dir(), and an AttributeError for what it lacks."""
  import vae_jax
  from vae_jax import losses, model
  from vae_jax.config import Config
  assert vae_jax.Config is Config and vae_jax.VAE is model.VAE
  assert vae_jax.vae_loss is losses.vae_loss and vae_jax.losses is losses
  assert set(vae_jax.__all__) <= set(dir(vae_jax))
  with pytest.raises(AttributeError, match="no attribute 'nonesuch'"):
    vae_jax.nonesuch
