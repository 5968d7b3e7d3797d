"""Mutation check: small bugs put into a copy of the package; the tests must fail on each.

  python scripts/mutation_check.py                 # every mutant (about an hour on 2 cores)
  python scripts/mutation_check.py --only kl_half  # one, by name
  python scripts/mutation_check.py --list          # the mutants and what each breaks
  python scripts/mutation_check.py --fast --only kl_half reparam_std   # against make test-fast

A test suite earns trust by failing. Each mutant (scripts/mutants.toml) is one
plausible bug: in the lesson (the model, the losses, the training loop, the data
scaling, the optimiser), an extension, or the application's guarantees (resume,
Ctrl-C, the lock, the refusals). For each, the repository is copied to a temporary
directory, the one edit is made there, and the tests that cover that code run
against the copy (`pytest -x`: the first failure kills the mutant); with --fast, the
lesson's fast tier instead. A mutant that no test kills "survives"; each survivor is
either killed by a new test or shown to be equivalent (the same numbers for every
input), and the list says which. Prints one line per mutant and the score: killed /
(all - equivalent).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
import tomllib
from pathlib import Path
from typing import NamedTuple

ROOT = Path(__file__).resolve().parent.parent
MUTANTS_FILE = Path(__file__).with_name("mutants.toml")  # the list: one table a mutant
TIMEOUT_S = 1800  # per mutant: the unmutated copy (all the tests) takes about 500 s on 2 cores
FAST = ("-m", "fast", "tests")  # --fast: the lesson's tier (make test-fast) for every mutant


class Mutant(NamedTuple):
  name: str
  path: str         # file in the repository
  old: str          # text that occurs exactly once in it
  new: str
  bug: str          # what it breaks, in words
  equivalent: str = ""  # why it cannot change any number, if it cannot
  tests: tuple = ()     # the tests that cover it: files, quick and strict ones first


def load_mutants(path=MUTANTS_FILE) -> list[Mutant]:
  """The mutants of `mutants.toml`, each with its tests: a group of its [tests] table, a list
  of files, or (none given) the lesson's group."""
  with open(path, "rb") as f:
    table = tomllib.load(f)
  groups = table["tests"]
  out = []
  for m in table["mutant"]:
    tests = m.get("tests", "lesson")
    out.append(Mutant(**{**m, "tests": tuple(groups[tests] if isinstance(tests, str) else tests)}))
  return out


MUTANTS = load_mutants()
UNMUTATED = Mutant("unmutated", "vae_jax/model.py", '"""', '"""', "nothing: the copy as it is")


def run_one(m: Mutant, tests: list[str], python: str) -> tuple[bool, str, float]:
  """(killed, the first failing test or "", seconds) for mutant `m`."""
  with tempfile.TemporaryDirectory(prefix=f"mutant_{m.name}_") as tmp:
    copy = Path(tmp) / "repo"
    shutil.copytree(ROOT, copy, ignore=shutil.ignore_patterns(
        ".venv", ".git", "runs", ".cache", "__pycache__", "*.egg-info"))  # results: read by tests
    target = copy / m.path
    text = target.read_text()
    if m is not UNMUTATED and text.count(m.old) != 1:
      raise SystemExit(f"mutant {m.name}: {m.old!r} occurs {text.count(m.old)} times in {m.path}")
    target.write_text(text.replace(m.old, m.new))
    env = {**os.environ, "PYTHONPATH": str(copy)}
    t0 = time.perf_counter()
    try:
      proc = subprocess.run([python, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider",
                             *tests], cwd=copy, env=env, capture_output=True, text=True,
                            timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:  # a mutant that hangs the tests is caught by them
      return True, f"a timeout ({TIMEOUT_S} s)", time.perf_counter() - t0
    failed = [line.split()[1] for line in proc.stdout.splitlines() if line.startswith("FAILED")]
    if proc.returncode == 2:  # the tests could not even be collected: the mutant broke import
      return True, "a collection error", time.perf_counter() - t0
    if proc.returncode not in (0, 1):
      raise SystemExit(f"mutant {m.name}: pytest exited {proc.returncode}\n{proc.stdout[-2000:]}")
    if m is UNMUTATED and proc.returncode == 1:  # the why, for the fix
      print(proc.stdout[-4000:], flush=True)
    return proc.returncode == 1, (failed[0] if failed else ""), time.perf_counter() - t0


def parse_args(argv=None) -> argparse.Namespace:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--only", nargs="+", metavar="NAME", help="run these mutants only")
  parser.add_argument("--list", action="store_true", help="list the mutants and exit")
  parser.add_argument("--fast", action="store_true",
                      help="run the fast tier (pytest -m fast) against each mutant, not its tests")
  parser.add_argument("--skip-unmutated", action="store_true",
                      help="skip the first run, of the copy with no mutation (it must pass)")
  args = parser.parse_args(argv)
  unknown = sorted(set(args.only or ()) - {m.name for m in MUTANTS})
  if unknown:
    parser.error(f"unknown mutant(s) {unknown}; --list shows them")
  return args


def main(argv=None) -> int:
  args = parse_args(argv)
  if args.list:
    for m in MUTANTS:
      print(f"{m.name:16s} {m.path:18s} {m.bug}")
    return 0
  chosen = [m for m in MUTANTS if not args.only or m.name in args.only]
  if not args.skip_unmutated:  # a failure here would make every kill meaningless
    needed = list(FAST if args.fast else dict.fromkeys(t for m in chosen for t in m.tests))
    failed, by, seconds = run_one(UNMUTATED, needed, sys.executable)
    if failed:
      print(f"the unmutated copy fails {by}: fix that first")
      return 2
    print(f"{'unmutated':16s} passes ({seconds:.0f} s)", flush=True)
  killed = equivalent = 0
  survivors = []
  for m in chosen:
    if m.equivalent:
      equivalent += 1
      print(f"{m.name:16s} equivalent: {m.equivalent}", flush=True)
      continue
    dead, by, seconds = run_one(m, list(FAST if args.fast else m.tests), sys.executable)
    killed += dead
    if not dead:
      survivors.append(m.name)
    print(f"{m.name:16s} {'killed by ' + by if dead else 'SURVIVED'} ({seconds:.0f} s)", flush=True)
  scored = len(chosen) - equivalent
  print(f"\nscore: {killed} / {scored} killed ({equivalent} equivalent, not scored)"
        + (f"; survivors: {', '.join(survivors)}" if survivors else ""))
  return 0 if not survivors else 1


if __name__ == "__main__":
  sys.exit(main())
