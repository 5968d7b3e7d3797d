"""Ctrl-C: one SIGINT handler for the whole command, installed before JAX is imported.

The handler records the Ctrl-C, then raises KeyboardInterrupt as Python's own does, so
that the work stops where it is. Where Python drops that exception (raised inside a
garbage-collection callback, which JAX runs often while it imports and compiles, it is
printed as "Exception ignored" and lost) or turns it into an ImportError (a compiled
extension stopped while it loads), the record stays: every phase of a command ends
with `check()`, which raises KeyboardInterrupt again once a Ctrl-C has come. The
"Exception ignored" report of such a dropped Ctrl-C is left out: it is not lost.

While a run trains, `stop_after_epoch()` makes the first Ctrl-C a request only: the
loop finishes the epoch in flight, checkpoints it and stops; a second Ctrl-C raises at
once. No JAX here: the command line installs this before it imports anything heavy.
"""

from __future__ import annotations

import contextlib
import importlib
import signal
import sys
import threading

_ctrl_c = threading.Event()  # a Ctrl-C came
_stop_after_epoch = False     # the first one only asks the training loop to stop
_report = sys.unraisablehook  # how Python reports an exception it cannot raise


def _handle(signum, frame):
  first = not _ctrl_c.is_set()
  _ctrl_c.set()
  if not (first and _stop_after_epoch):
    raise KeyboardInterrupt


def _unraisable(u) -> None:
  """Python's report of an exception it could not raise, but for a Ctrl-C that the handler
  recorded: `check` raises that one again, so its traceback would only alarm."""
  if not (issubclass(u.exc_type, KeyboardInterrupt) and _ctrl_c.is_set()):
    _report(u)


def install() -> None:
  """Takes SIGINT for this command (even where the shell started it with SIGINT ignored, as
  it does a background job: `kill -INT` then still stops a run cleanly)."""
  _ctrl_c.clear()
  sys.unraisablehook = _unraisable
  if threading.current_thread() is threading.main_thread():
    signal.signal(signal.SIGINT, _handle)


def requested() -> bool:
  return _ctrl_c.is_set()


def clear() -> None:
  """Forgets a Ctrl-C that the training loop has answered (it stopped, or had ended)."""
  _ctrl_c.clear()


def check() -> None:
  """Raises KeyboardInterrupt if a Ctrl-C came, whatever became of the one it raised."""
  if _ctrl_c.is_set():
    raise KeyboardInterrupt


@contextlib.contextmanager
def stop_after_epoch():
  """Inside, the first Ctrl-C sets the request (`requested()`) and raises nothing (the
  handler is put in place here too when a program calls the run without the command line)."""
  global _stop_after_epoch
  main = threading.current_thread() is threading.main_thread()
  old = signal.signal(signal.SIGINT, _handle) if main else None
  _stop_after_epoch = True
  try:
    yield
  finally:
    _stop_after_epoch = False
    if old is not None:
      signal.signal(signal.SIGINT, old)


def optional_import(name: str):
  """The module `name`, or None when it is not installed; an import that a Ctrl-C stopped
  is a Ctrl-C (`check`)."""
  try:
    return importlib.import_module(name)
  except ImportError:
    check()
    return None
