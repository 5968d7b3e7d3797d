"""Ctrl-C that a command cannot lose (`vae_jax.app.interrupt`).

Python raises Ctrl-C's KeyboardInterrupt in whatever code runs. Inside a gc callback
(JAX has one, and it runs often while JAX imports and compiles) Python prints the
exception and drops it. These tests send a real SIGINT from inside a gc callback, at a
known moment, so that the handler's KeyboardInterrupt is dropped there; the command
must stop all the same, from the handler's record.
"""

import gc
import signal
import subprocess
import sys
import threading
from pathlib import Path

import jax
import pytest

from vae_jax.app import cli, interrupt, weights
from vae_jax.extensions import recipe

ROOT = Path(__file__).resolve().parents[1]
# The Ctrl-Cs these tests drop in gc callbacks are what pytest would warn of.
pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")


@pytest.fixture(autouse=True)
def handler():
  """The command's handler, as `cli.main` installs it (a process that a non-interactive shell
  starts in the background inherits SIGINT ignored: `install` takes it all the same)."""
  old = signal.getsignal(signal.SIGINT)
  interrupt.install()
  yield
  interrupt.clear()
  signal.signal(signal.SIGINT, old)


def _ctrl_c_inside_gc(armed):
  """Registers a gc callback that sends SIGINT once, at the first collection in the main
  thread once `armed` (a list) holds something; returns it and the list of times it fired.
  The handler runs inside the callback (`signal.raise_signal` checks for signals before it
  returns), so its KeyboardInterrupt is raised there, and dropped."""
  fired = []

  def callback(phase, info):
    if (phase == "start" and armed and not fired
        and threading.current_thread() is threading.main_thread()):
      fired.append(True)
      signal.raise_signal(signal.SIGINT)

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


def test_python_drops_a_ctrl_c_raised_in_a_gc_callback_and_the_record_keeps_it(monkeypatch):
  """Why `check` exists: the KeyboardInterrupt goes to sys.unraisablehook and gc.collect()
  returns as if it had not come; the record does not forget."""
  seen = []
  monkeypatch.setattr(sys, "unraisablehook", lambda u: seen.append(u.exc_type))
  callback, fired = _ctrl_c_inside_gc([True])
  try:
    _collect(fired)  # returns: no KeyboardInterrupt here
  finally:
    gc.callbacks.remove(callback)
  assert fired and seen == [KeyboardInterrupt]
  assert interrupt.requested()
  with pytest.raises(KeyboardInterrupt):
    interrupt.check()


def test_the_dropped_ctrl_c_is_not_reported_and_other_lost_exceptions_are(monkeypatch):
  """The command's hook leaves out Python's "Exception ignored" traceback of a Ctrl-C it
  recorded (a learner would take it for a crash), and reports anything else as before."""
  reported = []
  monkeypatch.setattr(interrupt, "_report", lambda u: reported.append(u.exc_type))
  assert sys.unraisablehook is interrupt._unraisable  # installed by the fixture, as by the CLI
  callback, fired = _ctrl_c_inside_gc([True])
  try:
    _collect(fired)
  finally:
    gc.callbacks.remove(callback)
  assert fired and interrupt.requested() and reported == []

  class Finalised:
    def __del__(self):
      raise ValueError("not a Ctrl-C")

  Finalised()  # its __del__ raises where nothing can catch it
  assert reported == [ValueError]


def test_in_training_the_first_ctrl_c_asks_and_the_second_stops():
  with interrupt.stop_after_epoch():
    signal.raise_signal(signal.SIGINT)  # raises nothing: the loop reads the request
    assert interrupt.requested()
    with pytest.raises(KeyboardInterrupt):
      signal.raise_signal(signal.SIGINT)
  interrupt.clear()
  with pytest.raises(KeyboardInterrupt):  # outside training, the first raises at once
    signal.raise_signal(signal.SIGINT)


def test_an_import_stopped_by_ctrl_c_is_a_ctrl_c_not_a_missing_package(monkeypatch):
  def stopped(name):  # a compiled extension stopped while it loads: an ImportError
    interrupt._ctrl_c.set()
    raise ImportError("Encountered an error while initializing the extension.")

  monkeypatch.setattr(interrupt.importlib, "import_module", stopped)
  with pytest.raises(KeyboardInterrupt):
    interrupt.optional_import("torch")
  interrupt.clear()
  monkeypatch.setattr(interrupt.importlib, "import_module",
                      lambda name: (_ for _ in ()).throw(ModuleNotFoundError(name)))
  assert interrupt.optional_import("torch") is None


@pytest.mark.parametrize("where", ["load_data", "setup"])
def test_a_ctrl_c_that_jax_drops_before_training_stops_the_train_command(
    where, tiny_data_dir, tmp_path, monkeypatch, capsys):
  """The Ctrl-C lands in a gc callback while MNIST loads or the run is set up: the command
  stops with 130 before its first epoch, instead of training to the end, and says so."""
  real, armed = getattr(recipe, where), []
  callback, fired = _ctrl_c_inside_gc(armed)

  def collecting(*args, **kwargs):
    armed.append(True)
    _collect(fired)  # a collection while it runs, as happen there all the time
    return real(*args, **kwargs)

  monkeypatch.setattr(recipe, where, collecting)
  work = tmp_path / "run"
  argv = ["train", "--workdir", str(work), "--data-dir", str(tiny_data_dir), "--epochs", "2",
          "--no-progress", "--no-compile-cache"]
  try:
    code = cli.main(argv)
  finally:
    gc.callbacks.remove(callback)
  assert fired
  assert code == 130
  said = [line for line in capsys.readouterr().err.splitlines() if line.startswith("vae-jax")]
  assert said == ["vae-jax train: interrupted before the first epoch: nothing was trained; run "
                  "the same command again"]  # one line, not a second "interrupted"
  assert not (work / "params.msgpack").exists()
  assert not (work / "checkpoints").exists()
  monkeypatch.setattr(recipe, where, real)
  assert cli.main(argv) == 0  # as the line says
  assert (work / "params.msgpack").exists()


def test_a_ctrl_c_dropped_as_a_short_command_ends_still_stops_it(tiny_data_dir, tmp_path,
                                                                 monkeypatch, capsys):
  """Dropped in the last moments of `evaluate`: the command does not end as if it had not
  come (exit 0), but as interrupted (130)."""
  from vae_jax.config import Config
  params = recipe.make_model(Config()).init_params(jax.random.PRNGKey(0))
  path = tmp_path / "params.msgpack"
  weights.save_params(params, path)
  real, armed = recipe.load_data, []
  callback, fired = _ctrl_c_inside_gc(armed)

  def collecting(*args, **kwargs):
    out = real(*args, **kwargs)
    armed.append(True)
    _collect(fired)
    return out

  monkeypatch.setattr(recipe, "load_data", collecting)
  try:
    code = cli.main(["evaluate", "--weights", str(path), "--data-dir", str(tiny_data_dir),
                     "--no-compile-cache"])
  finally:
    gc.callbacks.remove(callback)
  assert fired and code == 130
  assert "vae-jax evaluate: interrupted" in capsys.readouterr().err


def test_the_command_line_imports_no_jax_before_it_can_take_ctrl_c():
  """`vae-jax` installs its handler before importing JAX: neither the package nor the command
  line imports it on import."""
  done = subprocess.run([sys.executable, "-c", "import sys, vae_jax, vae_jax.app.cli; "
                         "print('jax' in sys.modules, vae_jax.Config.__module__)"],
                        cwd=ROOT, capture_output=True, text=True, check=True)
  assert done.stdout.split() == ["False", "vae_jax.config"]
