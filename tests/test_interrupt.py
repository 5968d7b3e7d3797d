"""Ctrl-C that a command cannot lose (`vae_jax.interrupt`).

Python raises Ctrl-C's KeyboardInterrupt in whatever code runs. Inside a gc callback
(JAX has one, and it runs often while JAX imports and compiles) Python prints the
exception and drops it. A gc callback that raises KeyboardInterrupt is exactly what a
Ctrl-C landing there does, so these tests raise one so, at a known moment.
"""

import gc
import subprocess
import sys
from pathlib import Path

import pytest

from vae_jax import cli, interrupt

ROOT = Path(__file__).resolve().parents[1]


def _ctrl_c_inside_gc(armed=(True,)):
  """Registers a gc callback that raises KeyboardInterrupt once, at the first collection
  once `armed` (a list) holds something."""
  fired = []

  def callback(phase, info):
    if phase == "start" and armed and not fired:
      fired.append(True)
      raise KeyboardInterrupt

  gc.callbacks.append(callback)
  return callback, fired


def test_a_ctrl_c_dropped_in_a_gc_callback_is_remembered_and_raised_by_check():
  callback, fired = _ctrl_c_inside_gc()
  try:
    with interrupt.recorded():
      gc.collect()  # the KeyboardInterrupt is raised inside the callback, and dropped
      assert fired and interrupt.REQUESTED.is_set()
      with pytest.raises(KeyboardInterrupt):
        interrupt.check()
    assert not interrupt.REQUESTED.is_set()  # one command's Ctrl-C is not the next one's
    assert sys.unraisablehook is not interrupt._dropped
    interrupt.check()  # outside a command: nothing to raise
  finally:
    gc.callbacks.remove(callback)


def test_other_dropped_exceptions_still_reach_the_previous_hook(monkeypatch):
  seen = []
  monkeypatch.setattr(sys, "unraisablehook", lambda u: seen.append(u.exc_type))

  class Leaky:
    def __del__(self):
      raise ValueError("from __del__")

  with interrupt.recorded():
    Leaky()  # dropped at once: __del__'s exception goes to the hook
    assert not interrupt.REQUESTED.is_set()
  assert seen == [ValueError]


def test_from_ctrl_c_follows_the_chain_of_causes():
  try:
    try:
      raise KeyboardInterrupt
    except KeyboardInterrupt as e:
      raise ImportError("Encountered an error while initializing the extension.") from e
  except ImportError as e:
    wrapped = e
  assert interrupt.from_ctrl_c(wrapped)
  assert not interrupt.from_ctrl_c(ImportError("no module named tensorflow"))


def test_a_ctrl_c_that_jax_drops_before_training_stops_the_train_command(
    tiny_data_dir, tmp_path, monkeypatch, capsys):
  """The Ctrl-C lands in a gc callback while the run sets up: the command stops with 130,
  before its first epoch, instead of training to the end."""
  from vae_jax import train
  real_setup, armed = train.setup, []
  callback, fired = _ctrl_c_inside_gc(armed)

  def setup(*args, **kwargs):
    armed.append(True)
    gc.collect()  # a collection while the run is set up, as happen there all the time
    return real_setup(*args, **kwargs)

  monkeypatch.setattr(train, "setup", setup)
  work = tmp_path / "run"
  argv = ["train", "--workdir", str(work), "--data-dir", str(tiny_data_dir), "--epochs", "2",
          "--no-progress", "--no-compile-cache"]
  try:
    code = cli.main(argv)
  finally:
    gc.callbacks.remove(callback)
  assert fired
  assert code == 130
  assert ("vae-jax train: interrupted before the first epoch: nothing was trained; the same "
          "command starts again") in capsys.readouterr().err
  assert not (work / "params.msgpack").exists()
  assert not (work / "checkpoints").exists()
  monkeypatch.setattr(train, "setup", real_setup)
  assert cli.main(argv) == 0  # as the line says: the same command starts again
  assert (work / "params.msgpack").exists()


def test_the_command_line_imports_no_jax_before_it_can_take_ctrl_c():
  """`vae-jax` parses its flags and sets up `interrupt.recorded` before importing JAX."""
  done = subprocess.run([sys.executable, "-c",
                         "import sys, vae_jax.cli; print('jax' in sys.modules)"],
                        cwd=ROOT, capture_output=True, text=True, check=True)
  assert done.stdout.strip() == "False"
