"""The command line: each subcommand takes only the flags it reads, and every command the
README and docstrings show parses (the cheap ones also run, on the tiny fixture). The limits
and the study's and comparison's runs: tests/test_cli_limits.py."""

import re
import shlex
import shutil
import sys
from pathlib import Path

import pytest

from vae_jax.app import cli

from conftest import script_module

ROOT = Path(__file__).resolve().parents[1]

# What each subcommand offers, besides -h. A new flag must be added here on purpose.
CONFIG_FLAGS = {"--latent-dim", "--hidden-dim", "--batch-size", "--epochs", "--learning-rate",
                "--seed", "--init", "--data-source", "--data-dir", "--train-limit",
                "--test-limit", "--recon-every", "--matmul-precision", "--arch", "--binarize",
                "--objective", "--k", "--adam-eps", "--schedule", "--beta",
                "--kl-warmup-epochs", "--model"}
DATA = {"--data-source", "--data-dir"}
LIMITS = {"--train-limit", "--test-limit"}
CACHE = {"--no-compile-cache"}  # every subcommand that compiles
EXPECTED_FLAGS = {
    "train": CONFIG_FLAGS | CACHE | {"--workdir", "--overwrite", "--no-progress", "--resume",
                                     "--checkpoint-every", "--checkpoint-seconds"},
    "evaluate": DATA | CACHE | {"--test-limit", "--weights", "--matmul-precision", "--binarize"},
    "export": {"--weights", "--out"},
    "explore": DATA | CACHE | {"--test-limit", "--weights", "--out"},
    "likelihood": DATA | CACHE | {"--test-limit", "--matmul-precision", "--binarize", "--seed",
                                  "--weights", "--k", "--json", "--no-progress"},
    "data": DATA,
    "bench": DATA | LIMITS | CACHE | {"--latent-dim", "--hidden-dim", "--init", "--batch-size",
                                      "--learning-rate", "--seed", "--bench-epochs", "--no-torch",
                                      "--torch-loops"},
    "compare": DATA | LIMITS | CACHE | {"--out", "--seeds", "--epochs", "--sweep", "--sweep-seeds",
                                "--sweep-epochs", "--strategy", "--bench-epochs", "--overwrite",
                                "--redraw"},
    "study": DATA | LIMITS | CACHE | {"--out", "--only", "--quick", "--overwrite", "--redraw"},
    "sweep": (CONFIG_FLAGS - {"--recon-every"}) | CACHE | {
        "--workdir", "--strategy", "--figures", "--no-progress", "--coordinator",
        "--num-processes", "--process-id"},
}


def _subparsers():
  parser = cli.build_parser()
  return next(a for a in parser._actions if a.dest == "command").choices


def test_each_subcommand_offers_exactly_its_flags():
  subs = _subparsers()
  assert set(subs) == set(EXPECTED_FLAGS)
  for name, sub in subs.items():
    flags = {o for a in sub._actions for o in a.option_strings} - {"-h", "--help"}
    assert flags == EXPECTED_FLAGS[name], name


@pytest.mark.parametrize("argv", [
    ["bench", "--epochs", "3"],
    ["evaluate", "--weights", "W", "--epochs", "5"],
    ["data", "--learning-rate", "1"],
    ["evaluate", "--weights", "W", "--train-limit", "5"],
    ["export", "--weights", "W", "--out", "o.npz", "--latent-dim", "3"],
    ["study", "--latent-dim", "5"],
    ["compare", "--recon-every", "5"],
    ["data", "--no-compile-cache"],
    ["export", "--weights", "W", "--out", "o.npz", "--matmul-precision", "default"],
    ["sweep", "--workdir", "W", "--recon-every", "5"],
    ["explore", "--weights", "W", "--out", "o.html", "--matmul-precision", "high"],
])
def test_a_flag_the_subcommand_would_ignore_is_refused_in_one_line(argv, capsys):
  with pytest.raises(SystemExit) as exit_:
    cli.main(argv)
  assert exit_.value.code == 2
  err = capsys.readouterr().err.strip()
  assert len(err.splitlines()) == 1, err
  assert f"vae-jax {argv[0]}: error: unrecognized arguments" in err and argv[-2] in err


@pytest.mark.parametrize("argv, expected", [
    (["train", "--workdir", "W", "--binarize", "none"], {"binarize": "none"}),
    (["likelihood", "--weights", "W", "--binarize", "none"], {"binarize": "none"}),
    (["sweep", "--workdir", "W", "--binarize", "none,dynamic"], {"binarize": ["none", "dynamic"]}),
    (["train", "--workdir", "W", "--data-dir", "none"], {"data_dir": "none"}),  # a folder
    (["train", "--workdir", "W", "--train-limit", "none", "--test-limit", "None"],
     {"train_limit": None, "test_limit": None}),  # all the images
])
def test_none_is_a_choice_or_a_name_and_means_no_limit_only_for_the_limits(argv, expected):
  args = cli.build_parser().parse_args(argv)
  assert {k: getattr(args, k) for k in expected} == expected


def test_redraw_says_which_figure_it_could_not_redraw(tmp_path, capsys):
  # A study folder missing one experiment's JSON: the others are redrawn, and one line says
  # which figure was not (and how to make it); the same for compare, each file it rewrote.
  shutil.copytree(ROOT / "results" / "gradient_flow", tmp_path / "gf")
  (tmp_path / "gf" / "variance.json").unlink()
  assert cli.main(["study", "--redraw", "--out", str(tmp_path / "gf")]) == 0
  out, err = capsys.readouterr()
  assert "variance.png not redrawn" in err and "--only variance" in err
  assert out.count("redrew ") == 5 and "variance" not in out
  (tmp_path / "cmp").mkdir()
  for f in (ROOT / "results").glob("blog_comparison*"):
    shutil.copy(f, tmp_path / "cmp" / f.name)
  assert cli.main(["compare", "--redraw", "--out", str(tmp_path / "cmp")]) == 0
  assert capsys.readouterr().out.count("redrew ") == 3
  assert sorted(p.name for p in (tmp_path / "cmp").iterdir()) == sorted(
      p.name for p in (ROOT / "results").glob("blog_comparison*"))  # no temporary folder left


@pytest.mark.parametrize("argv", [["study", "--redraw", "--quick"],
                                  ["compare", "--redraw", "--seeds", "2"],
                                  ["study", "--redraw", "--test-limit", "5"],
                                  ["study", "--redraw", "--no-compile-cache"],
                                  ["study", "--redraw", "--overwrite"],
                                  ["compare", "--redraw", "--no-compile-cache"]])
def test_redraw_refuses_the_flags_of_a_computation(argv, capsys):
  with pytest.raises(SystemExit) as exit_:
    cli.main(argv)
  assert exit_.value.code == 2
  err = capsys.readouterr().err.strip()
  assert len(err.splitlines()) == 1 and "--redraw" in err
  assert argv[-1] in err or argv[-2] in err  # the flag that was refused


def test_the_top_level_help_says_what_it_is_in_whole_sentences(capsys):
  with pytest.raises(SystemExit) as exit_:
    cli.main(["--help"])
  assert exit_.value.code == 0
  description = capsys.readouterr().out.split("\n\n")[1]  # after the usage lines
  assert "Variational Autoencoder" in description and description.rstrip().endswith("."), description


@pytest.mark.parametrize("command", list(EXPECTED_FLAGS))
def test_help_works_for_every_subcommand(command, capsys):
  with pytest.raises(SystemExit) as exit_:
    cli.main([command, "--help"])
  assert exit_.value.code == 0
  assert f"usage: vae-jax {command}" in capsys.readouterr().out


# --------------------------------------------------------------------------
# Every command the documentation shows.

OWN_PARSER = {"mutation_check.py", "checkpoint_cost.py", "report.py", "epoch_variants.py",
              "sweep_drift.py", "compile_cache_cost.py", "train_phases.py",
              "explorer_check.py"}  # scripts with a command line of their own
COMMAND = re.compile(r"(?:vae-jax|python -m vae_jax|python scripts/(\w+\.py)|make (train|bench))"
                     r"((?: [^\s`#|)]+)*)")


def documented_commands() -> list[tuple[str, list[str]]]:
  """(where, argv) of each command in README.md, docs/*.md and the docstrings of the code."""
  sources = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")),
             *sorted((ROOT / "vae_jax").rglob("*.py")), *sorted((ROOT / "scripts").glob("*.py"))]
  found = []
  for path in sources:
    for lineno, line in enumerate(path.read_text().splitlines(), start=1):
      for m in COMMAND.finditer(line):
        script, make, rest = m.groups()
        try:
          words = shlex.split(rest)
        except ValueError:  # an unbalanced quote: the command sits inside a string
          words = shlex.split(rest.replace('"', " ").replace("'", " "))
        if make:  # make train WORKDIR=... ARGS="...": the Makefile's own expansion
          workdir = next((w.split("=", 1)[1] for w in words if w.startswith("WORKDIR=")),
                         "runs/vae_2")
          args = [a for w in words if w.startswith("ARGS=") for a in shlex.split(w[5:])]
          words = [make] + (["--workdir", workdir] if make == "train" else []) + args
        elif script:
          words = [script] + words
        if (not words or any(c in w for w in words for c in ("<", "...", "{"))
            or line[m.end():m.end() + 2] == " |"):
          continue  # a placeholder (`vae-jax <command>`, `train ...`, `{name}`) or a list of names
        found.append((f"{path.relative_to(ROOT)}:{lineno}", words))
  return found


def test_the_documentation_shows_commands():
  found = {argv[0] for _, argv in documented_commands()}
  assert {"train", "sweep", "evaluate", "likelihood", "export", "data", "bench", "compare",
          "study"} <= found


@pytest.mark.parametrize("where, argv", documented_commands(), ids=lambda v: str(v))
def test_documented_command_parses(where, argv, tmp_path):
  if argv[0] in OWN_PARSER:
    module = script_module(argv[0])
    module.parse_args(argv[1:])  # exits 2 on a broken example
    return
  parser = cli.build_parser()
  try:
    args, extra = parser.parse_known_args(argv)
  except SystemExit as e:  # --help exits 0; anything else is a broken example
    assert e.code == 0, f"{where}: {' '.join(argv)}"
    return
  assert not extra, f"{where}: {' '.join(argv)}: unrecognized {extra}"
  cli.config_from_args(args)  # and its values make a valid Config
  if argv[0] == "sweep":  # every member of the grid does
    from vae_jax.app import sweep
    sweep.plan(cli.sweep_lists(args), tmp_path / "sweep")


def test_every_mutant_applies_to_exactly_one_place():
  # scripts/mutation_check.py stops at a mutant whose text is gone or ambiguous: an edit to
  # the package must move the mutant with it.
  mutants = script_module("mutation_check.py").MUTANTS
  counts = {m.name: (ROOT / m.path).read_text().count(m.old) for m in mutants}
  assert {name: n for name, n in counts.items() if n != 1} == {}
  assert len({m.name for m in mutants}) == len(mutants)


def test_every_script_has_a_command_line_of_its_own():
  assert {p.name for p in (ROOT / "scripts").glob("*.py")} == OWN_PARSER


CHEAP = ("train", "export", "evaluate", "likelihood", "data", "bench")  # each feeds the next
VALUE_ONLY = {"--bench-epochs", "--k"}  # a count: another value runs the same code


def test_cheap_documented_commands_run_on_the_tiny_fixture(tiny_data_dir, tmp_path, monkeypatch,
                                                           capsys):
  """Each command as written (a train shortened to 2 epochs), in a scratch directory.
  Commands that differ only in the value of a flag of VALUE_ONLY (`bench --bench-epochs 3`
  and `5`) run once: every value is checked by test_documented_command_parses."""
  monkeypatch.setenv("VAE_JAX_DATA_DIR", str(tiny_data_dir))
  monkeypatch.chdir(tmp_path)
  shutil.copytree(ROOT / "results" / "gradient_flow", tmp_path / "results" / "gradient_flow")
  runs = sorted({tuple(argv) for _, argv in documented_commands()
                 if argv[0] in CHEAP and "--help" not in argv},
                key=lambda argv: (CHEAP.index(argv[0]), argv))
  runs.append(("study", "--out", "results/gradient_flow", "--redraw"))  # from the stored JSON
  assert any(a[0] == "evaluate" for a in runs) and any(a[0] == "export" for a in runs)
  ran = set()
  for argv in runs:
    argv = list(argv) + (["--epochs", "2", "--hidden-dim", "32", "--no-progress"]
                         if argv[0] == "train" else [])
    if argv[0] == "likelihood":
      argv += ["--k", "20", "--no-progress"]
    if argv[0] == "bench" and "--no-torch" not in argv and "--torch-loops" not in argv:
      argv += ["--torch-loops", "blog", "tensor"]  # the compiled loop: tests/test_bench.py
    if argv[0] == "export" and Path(argv[argv.index("--out") + 1]).exists():
      continue  # the same export shown twice
    same = tuple(a for i, a in enumerate(argv) if a not in VALUE_ONLY
                 and (i == 0 or argv[i - 1] not in VALUE_ONLY))  # the command less those values
    if same in ran:
      continue
    ran.add(same)
    assert cli.main(argv) == 0, " ".join(argv)
  out = capsys.readouterr().out
  assert "train pixel mean" in out and "test loss" in out and "redrew" in out


def test_bench_refuses_torch_loops_it_would_not_run(capsys):
  with pytest.raises(SystemExit) as exit_:
    cli.main(["bench", "--no-torch", "--torch-loops", "blog"])
  assert exit_.value.code == 2
  err = capsys.readouterr().err.strip()
  assert len(err.splitlines()) == 1 and "--no-torch runs no PyTorch loop" in err


def test_bench_refuses_torch_loops_without_pytorch(monkeypatch, capsys):
  from vae_jax.app import bench
  monkeypatch.setattr(bench, "torch_device", lambda: None)  # as where torch is not installed
  with pytest.raises(SystemExit) as exit_:
    cli.main(["bench", "--torch-loops", "graphs"])
  assert exit_.value.code == 2
  err = capsys.readouterr().err.strip()
  assert len(err.splitlines()) == 1 and "PyTorch is not installed here: pip install" in err


def test_export_to_pth_without_pytorch_is_one_line_before_reading_the_weights(
    monkeypatch, tmp_path, capsys):
  monkeypatch.setitem(sys.modules, "torch", None)  # `import torch` raises ImportError
  out = tmp_path / "vae.pth"
  assert cli.main(["export", "--weights", str(tmp_path / "none.msgpack"), "--out", str(out)]) == 2
  err = capsys.readouterr().err.strip()
  assert len(err.splitlines()) == 1 and "writing a .pth needs PyTorch" in err, err
  assert "or give a .npz name" in err and not out.exists()


def test_every_python_file_compiles_without_a_warning():
  # A SyntaxWarning is Python's word for a bug such as two literals with no operator between
  # them ("..." ("..." if a else "...") calls a string): it raised only when the line ran.
  import warnings
  for path in sorted([*ROOT.glob("vae_jax/**/*.py"), *ROOT.glob("scripts/*.py"),
                      *ROOT.glob("tests/*.py")]):
    with warnings.catch_warnings():
      warnings.simplefilter("error")
      compile(path.read_text(), str(path), "exec")


def test_the_console_script_is_the_cli():
  """`vae-jax`, as pyproject.toml declares it, is `cli.main`; and the installed script beside
  this Python (pip's, from that declaration) runs it."""
  import importlib
  import subprocess
  import tomllib
  target = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]["vae-jax"]
  module, _, name = target.partition(":")
  assert getattr(importlib.import_module(module), name) is cli.main
  script = Path(sys.executable).with_name("vae-jax")
  if not script.exists():
    pytest.skip(f"no {script}: the package is not installed in this environment")
  done = subprocess.run([str(script), "--help"], capture_output=True, text=True)
  assert done.returncode == 0, done.stderr
  assert "explore" in done.stdout and "train" in done.stdout
