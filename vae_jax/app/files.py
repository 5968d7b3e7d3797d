"""Files written whole or not at all, and the checks of a path before any work.

`atomic_write` is the one way the package writes a file (the MNIST cache, weights,
checkpoints, figures, reports): the bytes go to a temporary file in the same folder,
are flushed to the disk (fsync), and the file is renamed into place, so a crash or a
SIGKILL at any moment leaves the old file or the new one, never half of one. A write
that fails (a full disk, a folder made read-only) removes its temporary file and
raises the OSError, which names the file.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable


def atomic_write(path, data: bytes | Callable) -> None:
  """Writes `data` (bytes, or a function that writes to a binary file) to `path`, whole."""
  path = Path(path)
  tmp = path.with_name(f".{path.name}.tmp")
  try:
    with open(tmp, "wb") as f:
      data(f) if callable(data) else f.write(data)
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, path)
  except OSError as e:  # a full disk, a folder made read-only: no temporary file is left
    tmp.unlink(missing_ok=True)
    raise OSError(e.errno, e.strerror or str(e), str(path)) from None
  except BaseException:  # Ctrl-C
    tmp.unlink(missing_ok=True)
    raise
  dir_fd = os.open(path.parent, os.O_RDONLY)  # make the rename itself durable
  try:
    os.fsync(dir_fd)
  finally:
    os.close(dir_fd)


def check_directory(path, name: str, *, writable: bool = True) -> Path:
  """`path`, or the folder it would be made in, must be a directory (and writable, if
  asked): refused in one line naming `name` (a flag), before any work."""
  path = Path(path)
  for p in (path, *path.absolute().parents):
    if p.exists() or p.is_symlink():
      if not p.is_dir():
        what = "a link to nothing" if p.is_symlink() and not p.exists() else "a file"
        raise FileExistsError(f"{name} {path}: {p} is {what}, not a directory: choose a "
                              f"directory")
      if writable and not os.access(p, os.W_OK | os.X_OK):
        raise PermissionError(f"{name} {path}: {p} is not writable: choose another directory")
      break
  return path


def check_results_dir(path, flag: str, what: str) -> Path:
  """`check_directory`, and not a training run's folder (its config.json): `what`'s results
  would mix with the run's files, which train would then count as a user's."""
  path = check_directory(path, flag)
  if (path / "config.json").exists():
    raise FileExistsError(f"{flag} {path} holds a training run (config.json): give {what} a "
                          f"folder of its own")
  return path


def check_new_file(path, flag: str, suffix: str = "") -> Path:
  """`path` must not exist yet, and its folder must (writable): refused in one line naming
  `flag`, before any work."""
  path = Path(path)
  if path.is_dir():  # "delete it" would be advice to delete a folder, a run's perhaps
    raise IsADirectoryError(f"{flag} {path} is a directory: give a new file's name, such as "
                            f"{path.with_name(path.name + suffix)} beside it")
  if path.exists():
    raise FileExistsError(f"{flag} {path} exists: choose another {flag} or delete it")
  if path.is_symlink():  # writing would replace the link, or follow it to where it points
    raise FileExistsError(f"{flag} {path} is a link to nothing ({os.readlink(path)}): remove "
                          f"the link, or choose another {flag}")
  check_directory(path, flag)  # a file on the way, or a folder not writable
  if not path.parent.is_dir():
    raise FileNotFoundError(f"{flag} {path}: the folder {path.parent} does not exist: create "
                            f"it or choose another {flag}")
  return path
