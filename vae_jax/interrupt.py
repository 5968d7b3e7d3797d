"""Ctrl-C that a command cannot lose.

Python turns Ctrl-C into a KeyboardInterrupt in whatever code is running. While JAX
imports and compiles, that is often its garbage-collection callback, and an exception
raised in a gc callback (or in a `__del__`) is printed as "Exception ignored in ..."
and dropped: the command would go on, and train for minutes. `recorded()`, around
every command (`cli.main`), catches such a dropped KeyboardInterrupt and remembers it;
`check()` raises it again where the long commands start their work (loading MNIST,
setting up a run, the first epoch), so the command stops there, as interrupted. A
compiled extension that a Ctrl-C stops while Python imports it raises ImportError, the
KeyboardInterrupt behind it (`from_ctrl_c`).

No JAX here: the command line installs this before it imports anything heavy.
"""

from __future__ import annotations

import contextlib
import sys
import threading

REQUESTED = threading.Event()  # a Ctrl-C came, and a KeyboardInterrupt of it was dropped


def _dropped(unraisable) -> None:
  """sys.unraisablehook: a KeyboardInterrupt that Python would drop is remembered, silently;
  anything else goes to the hook there was."""
  if unraisable.exc_type is not None and issubclass(unraisable.exc_type, KeyboardInterrupt):
    REQUESTED.set()
    return
  _previous[-1](unraisable)


_previous: list = []  # the hooks `recorded` replaced, innermost last


@contextlib.contextmanager
def recorded():
  """For the duration of one command: dropped Ctrl-Cs are remembered (`REQUESTED`), from none."""
  REQUESTED.clear()
  _previous.append(sys.unraisablehook)
  sys.unraisablehook = _dropped
  try:
    yield
  finally:
    sys.unraisablehook = _previous.pop()
    REQUESTED.clear()


def check() -> None:
  """Raises the KeyboardInterrupt of a Ctrl-C that was dropped (`recorded`), if one was."""
  if REQUESTED.is_set():
    raise KeyboardInterrupt


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
