"""Ctrl-C that a command cannot lose.

Python turns Ctrl-C into a KeyboardInterrupt in whatever Python code runs. While JAX
imports and compiles, that is often its garbage-collection callback, and an exception
raised in a gc callback (or in a `__del__`) is printed as "Exception ignored in ..."
and dropped: the command would go on, and train for minutes. Inside `recorded()`,
around every command (`cli.main`), such a dropped Ctrl-C is sent again a moment
later, from outside the callback, so that it lands where a Ctrl-C would have: a
KeyboardInterrupt, or in the training loop its first-Ctrl-C handler (`run._CtrlC`).

A compiled extension that a Ctrl-C stops while Python imports it raises ImportError
instead, with the KeyboardInterrupt behind it: `raise_if_ctrl_c` and `optional_import`
tell the two apart where an ImportError means "not installed".

No JAX here: the command line sets this up before it imports anything heavy.
"""

from __future__ import annotations

import contextlib
import importlib
import signal
import sys
import threading

AGAIN_S = 0.01  # how long after it was dropped a Ctrl-C is sent again


@contextlib.contextmanager
def recorded():
  """For the duration of one command: a Ctrl-C that Python drops is sent again."""
  previous, timers = sys.unraisablehook, []

  def dropped(unraisable) -> None:  # sys.unraisablehook: Python is about to drop an exception
    if unraisable.exc_type is not None and issubclass(unraisable.exc_type, KeyboardInterrupt):
      timer = threading.Timer(AGAIN_S, signal.raise_signal, (signal.SIGINT,))
      timers.append(timer)
      timer.start()
    else:
      previous(unraisable)

  sys.unraisablehook = dropped
  try:
    yield
  finally:
    sys.unraisablehook = previous
    for timer in timers:  # a Ctrl-C still to come is taken here, inside the command
      timer.join()


def from_ctrl_c(error: BaseException) -> bool:
  """Whether `error` was raised because of a KeyboardInterrupt (its cause, or the exception
  being handled when it was raised, or theirs)."""
  seen = set()
  while error is not None and id(error) not in seen:
    if isinstance(error, KeyboardInterrupt):
      return True
    seen.add(id(error))
    error = error.__cause__ or error.__context__
  return False


def optional_import(name: str):
  """The module `name`, or None when it is not installed; a Ctrl-C during its import stops
  the command (`raise_if_ctrl_c`)."""
  try:
    return importlib.import_module(name)
  except ImportError as e:
    raise_if_ctrl_c(e)
    return None


def raise_if_ctrl_c(error: ImportError) -> None:
  """In an `except ImportError`: a Ctrl-C that stopped the import is a Ctrl-C, not a missing
  package."""
  if from_ctrl_c(error):
    raise KeyboardInterrupt from error
