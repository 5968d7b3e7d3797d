"""Command line: `vae-jax train | sweep | evaluate | likelihood | export | explore | data |
bench | compare | study`.

  vae-jax train --workdir runs/vae_2                   # the blog's run: z = 2, 100 epochs
  vae-jax train --workdir runs/vae_20 --latent-dim 20
  vae-jax train --workdir runs/vae_2 --resume          # go on from the last checkpoint
  vae-jax train --workdir runs/cvae_2 --model cvae     # the conditional VAE
  vae-jax sweep --workdir runs/sweep --latent-dim 2,20 --seed 1,2,3   # every combination
  vae-jax evaluate --weights vae.pth                   # test loss of saved weights (blog's too)
  vae-jax likelihood --weights runs/vae_2/params.msgpack --k 5000    # L_5000, ELBO, active units
  vae-jax export --weights runs/vae_2/params.msgpack --out vae.pth   # to the blog's layout
  vae-jax explore --weights runs/vae_2/params.msgpack --out explorer.html  # one page, any browser
  vae-jax data                                         # fetch and cache MNIST, print a check
  vae-jax bench --bench-epochs 3                       # seconds per epoch, JAX vs PyTorch
  vae-jax compare --out results --overwrite            # the blog's numbers over seeds (44 min)
  vae-jax study --out results/gradient_flow --overwrite   # the gradient-flow study (11 min)

(`python -m vae_jax ...` is the same.) Each subcommand takes only the flags it
reads: a flag it would ignore is an error, as is a bad value, in one line and
before anything long starts. `vae-jax <command> --help` lists them. Every field of
`Config` is a flag, `--latent-dim` for `latent_dim`, with the field's own help text;
the package's errors name a field in backquotes, which the messages here show as its flag.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import re
import shlex
import sys
import typing

from vae_jax.app import (COMPARE_DEFAULTS, STRATEGIES, SWEEP_SHARED, TORCH_LOOPS,  # no JAX
                         interrupt)
from vae_jax.config import Config
from vae_jax.study import EXPERIMENTS as STUDY_EXPERIMENTS

# The Config fields each subcommand reads (each becomes --field-name).
DATA = ("data_source", "data_dir")
FIELDS = {
    "train": tuple(f.name for f in dataclasses.fields(Config)),
    "evaluate": DATA + ("test_limit", "matmul_precision", "binarize"),
    "export": (),
    "explore": DATA + ("test_limit",),  # the test images mapped; matmul precision "highest"
    "data": DATA,
    "bench": ("latent_dim", "hidden_dim", "init", "batch_size", "learning_rate", "seed") + DATA
             + ("train_limit", "test_limit"),
    "likelihood": DATA + ("test_limit", "matmul_precision", "binarize", "seed"),
    "compare": DATA + ("train_limit", "test_limit"),
    "study": DATA + ("train_limit", "test_limit"),
    # every field but the reconstruction grids' (a sweep's members draw none), as comma lists
    "sweep": tuple(f.name for f in dataclasses.fields(Config) if f.name != "recon_every"),
}
# Where a subcommand reads a field otherwise than a run does: its own help, and default.
SCORED = ("the test images scored: none, grey (the blog's); dynamic, the one fixed "
          "binarization (the field's)", "the run's, from its config.json (none without one)")
HELP_FOR = {"likelihood": {"seed": ("the importance samples' PRNG seed", Config().seed),
                           "binarize": SCORED},
            "evaluate": {"binarize": SCORED},
            "explore": {"test_limit": ("the test images the page maps and ranks z's "
                                       "dimensions by: the first N (none: all)", None)}}
# The subcommands that compile, and so take --no-compile-cache.
COMPILES = ("train", "sweep", "evaluate", "likelihood", "bench", "compare", "study", "explore")


def flags_in(text: str) -> str:
  """A message of the package's, with each field it names in backquotes as its flag."""
  return re.sub(r"`([a-z_]+)`", lambda m: ("--" + m.group(1).replace("_", "-")
                                           if m.group(1) in Config.__dataclass_fields__
                                           else m.group(0)), str(text))


def command_line() -> str:
  """How the user runs this program, for the commands the messages suggest: `vae-jax` when
  they ran it so, else this very Python (`make train` runs the one in .venv)."""
  if sys.argv and sys.argv[0].endswith("vae-jax"):
    return "vae-jax"
  return f"{shlex.quote(sys.executable)} -m vae_jax"


def _parse_value(kind, optional: bool = False):
  """`kind(text)`; for a field that may be None and is not text (the limits), "none" too.
  A text field keeps "none" as given: a choice (`--binarize none`) or a folder's name."""
  def parse(text: str):
    if optional and text.lower() == "none":
      return None
    return kind(text)
  parse.__name__ = kind.__name__  # argparse's message: "invalid int value: 'x'"
  return parse


def _parse_list(kind, choices, optional: bool = False):
  """A comma list of `kind` values, each one of `choices` when given: "2,5,10" -> [2, 5, 10]."""
  one = _parse_value(kind, optional)

  def parse(text: str) -> list:
    values = []
    for item in text.split(","):
      if not item.strip():
        raise argparse.ArgumentTypeError(f"an empty value in {text!r}: give a comma list "
                                         f"such as 2,5,10")
      try:
        value = one(item.strip())
      except ValueError:
        raise argparse.ArgumentTypeError(f"{item.strip()!r} is not "
                                         f"{'an integer' if kind is int else 'a number'}") from None
      if choices and value not in choices:
        raise argparse.ArgumentTypeError(f"invalid choice: {value!r} (choose from "
                                         f"{', '.join(map(str, choices))})")
      values.append(value)
    return values
  return parse


def add_config_flags(parser: argparse.ArgumentParser, names, lists: bool = False,
                     help_for: dict | None = None) -> None:
  """One flag per Config field in `names`, typed, with the field's help and default.

  A flag left out is left out of the parsed arguments too (argparse.SUPPRESS), so
  `config_from_args` knows which fields the user gave: `--resume` keeps the rest
  from the run, and `--redraw` refuses them. `lists`: each flag takes a comma list
  (the sweep subcommand).
  """
  hints = typing.get_type_hints(Config)
  for field in dataclasses.fields(Config):
    if field.name not in names:
      continue
    hint = hints[field.name]
    kind = next((t for t in (int, float, str) if t == hint or t in typing.get_args(hint)), str)
    choices = Config.choices(field.name)
    optional = kind is not str and type(None) in typing.get_args(hint)  # the limits
    flag = f"--{field.name.replace('_', '-')}"
    text, default = (help_for or {}).get(field.name, (Config.help(field.name), field.default))
    if lists and field.name not in SWEEP_SHARED:
      parser.add_argument(flag, dest=field.name, type=_parse_list(kind, choices, optional),
                          default=argparse.SUPPRESS, metavar="A,B,..",
                          help=flags_in(f"{text}; default: {field.default}")
                          + (f"; from {{{','.join(choices)}}}" if choices else ""))
      continue
    if default is None:  # "None" is not what one types: the limits take "none", a path nothing
      default = "none" if optional else "unset"
    parser.add_argument(flag, dest=field.name, type=_parse_value(kind, optional),
                        choices=choices, default=argparse.SUPPRESS,
                        help=flags_in(f"{text}; default: {default}"))


def config_from_args(args: argparse.Namespace, base: Config | None = None) -> Config:
  """`base` (default: a new run's config, `Config.with_presets`) with the Config fields the
  user gave. For `sweep`, whose flags are lists: the fields every member shares (the
  data's; the grid itself is `sweep_lists`)."""
  given = {f.name: getattr(args, f.name) for f in dataclasses.fields(Config)
           if hasattr(args, f.name)}
  if args.command == "sweep":  # the fields every member shares
    given = {k: v for k, v in given.items() if k in SWEEP_SHARED}
  return base.replace(**given) if base is not None else Config.with_presets(given)


def sweep_lists(args: argparse.Namespace) -> dict:
  """{field: [values]} of the Config flags given to `sweep`, in the order of Config's fields
  (the shared data fields, one value each, as a list of one)."""
  return {f.name: (lambda v: v if isinstance(v, list) else [v])(getattr(args, f.name))
          for f in dataclasses.fields(Config) if hasattr(args, f.name)}


def _given(args: argparse.Namespace, parser: argparse.ArgumentParser, names) -> list[str]:
  """The flags among `names` (dests) the user gave: a Config flag present at all, any other
  flag set to something other than its default."""
  def given(n):
    default = parser.get_default(n)
    return hasattr(args, n) if default == argparse.SUPPRESS else getattr(args, n) != default
  return [f"--{n.replace('_', '-')}" for n in names if given(n)]


class _Parser(argparse.ArgumentParser):
  """argparse, with every error on one line that says where the help is, and a negative
  number in scientific notation (`--learning-rate -1e-3`) read as a value, not a flag."""

  def __init__(self, *args, **kwargs):
    super().__init__(*args, **kwargs)
    self._negative_number_matcher = re.compile(r"^-(\d+\.?\d*|\.\d+)(e[-+]?\d+)?$", re.I)

  def error(self, message):
    self.exit(2, f"{self.prog}: error: {flags_in(message)} (see `{self.prog} --help`)\n")


def _path(text: str) -> str:
  """A path flag's value; an empty one (an unset shell variable) would mean the current
  directory, so it is refused."""
  if not text.strip():
    raise argparse.ArgumentTypeError("an empty path: name a file or directory")
  return text


def _seconds(text: str) -> float:
  value = float(text)
  if not 0 <= value < float("inf"):
    raise argparse.ArgumentTypeError(f"must be a finite number of seconds >= 0, got {text}")
  return value


def _host_port(text: str) -> str:
  """HOST:PORT (an IPv6 host in brackets), checked here: JAX's own parsing of a bad one
  ends in a traceback, or a crash."""
  host, colon, port = text.rpartition(":")
  if not colon or not host or not port.isdigit() or not 1 <= int(port) <= 65535:
    raise argparse.ArgumentTypeError(f"must be HOST:PORT with a port in 1 .. 65535 (e.g. "
                                     f"10.0.0.1:1234), got {text!r}")
  if host.startswith("[") != host.endswith("]") or ":" in host and not host.startswith("["):
    raise argparse.ArgumentTypeError(f"an IPv6 host goes in brackets ([::1]:1234), got {text!r}")
  return text


def _positive(text: str) -> int:
  value = int(text)
  if value < 1:
    raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
  return value


def _first_repeat(values: list):
  """The first value that `values` lists a second time, else None."""
  return next((v for i, v in enumerate(values) if v in values[:i]), None)


# --------------------------------------------------------------------------
# One function per subcommand: (args, config, parser) -> None.


def cmd_train(args, config, parser):
  from vae_jax.app import run
  from vae_jax.extensions import beta
  if beta.idle_warmup(config) and not args.resume:
    parser.error(beta.idle_warmup(config))
  if config.train_limit is not None and config.batch_size > config.train_limit:
    print(f"vae-jax: --batch-size {config.batch_size} is more than the --train-limit "
          f"{config.train_limit} images: an epoch is one step of them all", file=sys.stderr)
  run.train_and_evaluate(config, args.workdir, overwrite=args.overwrite, resume=args.resume,
                         checkpoint_every=args.checkpoint_every,
                         checkpoint_seconds=args.checkpoint_seconds, progress=not args.no_progress,
                         program=command_line())


def _scored_pixels(args, config, wconfig) -> str:
  """The test images evaluate and likelihood score: --binarize if given, else the run's."""
  return config.binarize if hasattr(args, "binarize") else wconfig.binarize


def _scored(args, config, wconfig):
  """The test images to score weights of `wconfig` on, and their model at --matmul-precision."""
  from vae_jax.extensions import recipe
  binarize = _scored_pixels(args, config, wconfig)
  d = recipe.load_data(config, with_train=False, binarized=binarize == "dynamic")
  return binarize, d, recipe.make_model(wconfig.replace(matmul_precision=config.matmul_precision))


def cmd_evaluate(args, config, parser):
  import jax

  from vae_jax.app import weights
  from vae_jax.extensions import recipe
  params, wconfig = weights.load_weights(args.weights)  # sizes from the weights themselves
  binarize, d, model = _scored(args, config, wconfig)
  evaluate = jax.jit(recipe.make_evaluate(wconfig, model))
  m = evaluate(params, d.x_test, *recipe.labels(wconfig, d.y_test))
  n = len(d.x_test)
  what = ("CVAE, " if wconfig.model == "cvae" else "") + ("burda model, " if wconfig.arch ==
                                                          "burda" else "")
  if str(args.weights).lower().endswith(".msgpack") and not weights.config_beside(args.weights):
    what = "no config.json beside it: the blog's VAE by its shapes, "
  pixels = "grey" if binarize == "none" else "binarized once"
  if wconfig.binarize == "dynamic":  # the run's own setting (none: unknown or grey)
    pixels += (" (its run's --binarize dynamic)" if binarize == "dynamic" else
               " (its run trained on --binarize dynamic)")
  print(f"{args.weights} ({what}z={wconfig.latent_dim}): test loss {float(m.loss) / n:.4f} "
        f"(recon {float(m.recon) / n:.4f} + KL {float(m.kl) / n:.4f}) per image over {n} "
        f"test images, {pixels}, z = mu")


def cmd_likelihood(args, config, parser):
  import json
  from pathlib import Path

  import jax

  from vae_jax.app import run, weights
  from vae_jax.app.files import atomic_write, check_new_file
  from vae_jax.extensions import likelihood
  if args.json is not None:
    check_new_file(args.json, "--json", ".json")
  params, wconfig = weights.load_weights(args.weights)
  if wconfig.model != "vae":
    raise ValueError(f"--weights {args.weights} is a CVAE: the estimator scores "
                     f"log p(x) of the VAE, not log p(x|y) of the CVAE")
  binarize, d, model = _scored(args, config, wconfig)
  est = likelihood.estimate(model, params, d.x_test, args.samples,
                            key=jax.random.PRNGKey(config.seed), progress=not args.no_progress)
  if weights.config_beside(args.weights):
    trained = (f"trained with --objective {wconfig.objective}"
               + (f" --k {wconfig.k}" if wconfig.objective == "iwae" else "")
               + f", --binarize {wconfig.binarize}")
  else:  # a .pth / .npz, or weights without their run's config.json
    trained = "no config.json says how it was trained"
  print(f"{args.weights} ({wconfig.arch} model, z={wconfig.latent_dim}, {trained}; scored with "
        f"--binarize {binarize}, --seed {config.seed})")
  print(likelihood.describe(est, binarized=binarize == "dynamic", latent_dim=wconfig.latent_dim))
  if args.json is not None:
    rows = run.read_metrics(Path(args.weights).parent)  # what the run behind the weights did
    summary = {"epochs": rows[-1]["epoch"], "train_seconds": sum(r.get("seconds", 0.0)
                                                                 for r in rows),
               "last": {k: v for k, v in rows[-1].items() if k != "seconds"}} if rows else None
    report = {"weights": str(args.weights), "config": json.loads(wconfig.to_json()),
              "binarize": binarize, "seed": config.seed, **likelihood.to_json(est),
              "run": summary}
    atomic_write(Path(args.json), (json.dumps(report, indent=1) + "\n").encode())
    print(f"wrote {args.json}")


def cmd_export(args, config, parser):
  from vae_jax.app import weights
  from vae_jax.app.files import check_new_file
  out = check_new_file(args.out, "--out", ".pth")
  if out.suffix.lower() not in (".pth", ".pt", ".npz"):
    raise ValueError(f"--out {out}: use a .pth/.pt (PyTorch) or .npz (NumPy) name")
  if out.suffix.lower() != ".npz" and interrupt.optional_import("torch") is None:
    raise ValueError(f"--out {out}: writing a .pth needs PyTorch (pip install torch==2.13.0); "
                     f"or give a .npz name, which evaluate reads as well")
  params, wconfig = weights.load_weights(args.weights)
  if (wconfig.arch, wconfig.model) != ("blog", "vae"):
    what = "a CVAE" if wconfig.model == "cvae" else f"a {wconfig.arch} model"
    raise ValueError(f"--weights {args.weights} is {what}: only the blog's model (its VAE) has "
                     f"a PyTorch layout to export to")
  weights.export_state_dict(params, out)
  print(f"wrote {args.out} (z={wconfig.latent_dim}, the blog's state_dict layout)")


def cmd_explore(args, config, parser):
  from vae_jax.app import explore
  size = explore.write_page(args.weights, args.out, config)
  print(f"wrote {args.out} ({size / 1e6:.1f} MB): open it in a browser, no server needed")


def cmd_data(args, config, parser):
  from vae_jax import data
  arrays = data.load_cached(config.data_source, config.data_dir)
  print(data.describe(arrays, data.cache_path(config.data_source, config.data_dir)))


def cmd_bench(args, config, parser):
  from vae_jax.app import bench
  loops = () if args.no_torch else args.torch_loops and tuple(args.torch_loops)
  device = bench.torch_device() if loops else None
  if loops and device is None:
    parser.error("--torch-loops times PyTorch loops, and PyTorch is not installed here: pip "
                 "install torch==2.13.0, or drop --torch-loops")
  if loops and "graphs" in loops and device != "cuda":
    parser.error("--torch-loops graphs times CUDA graphs, and torch sees no GPU here: drop it")
  bench.run(config, args.bench_epochs, torch_loops=loops)


COMPARE_COUNTS = ("seeds", "epochs", "sweep", "sweep_seeds", "sweep_epochs", "strategy",
                  "bench_epochs", "overwrite")  # what --redraw refuses


def cmd_compare(args, config, parser):
  from vae_jax.app import compare
  if args.redraw:
    given = _given(args, parser, COMPARE_COUNTS + FIELDS["compare"] + ("no_compile_cache",))
    if given:
      parser.error(f"--redraw draws from {args.out}/blog_comparison.json and takes no "
                   f"{', '.join(given)}")
    for path in compare.redraw(args.out):
      print(f"redrew {path}")
    return
  twice = _first_repeat(args.sweep)
  if twice is not None:
    parser.error(f"--sweep lists {twice} twice: give each latent size once")
  try:
    compare.compare_blog(args.out, seeds=args.seeds, epochs=args.epochs,
                         sweep=tuple(args.sweep), sweep_seeds=args.sweep_seeds,
                         sweep_epochs=args.sweep_epochs, strategy=args.strategy,
                         bench_epochs=args.bench_epochs, base=config, overwrite=args.overwrite)
  except KeyboardInterrupt:
    from vae_jax.app.run import RunStopped
    raise RunStopped(f"interrupted: the runs finished so far are kept in {args.out}/runs (a run "
                     f"is written whole or not at all); the same command trains the rest, a run "
                     f"in training from its last checkpoint, and writes the comparison", 130
                     ) from None


def cmd_sweep(args, config, parser):
  from vae_jax.app import sweep
  lists = sweep_lists(args)
  command = " ".join(["vae-jax", "sweep", "--workdir", shlex.quote(str(args.workdir))]
                     + [f"--{k.replace('_', '-')} {','.join(map(sweep._text, v))}"
                        for k, v in lists.items() if k not in sweep.WHERE_FROM]
                     + [f"--strategy {args.strategy}"] + ["--figures"] * args.figures)
  sweep.plan(lists, args.workdir, command)  # every refusal, before any work or connection
  if args.coordinator is not None:
    import jax
    jax.distributed.initialize(args.coordinator, args.num_processes, args.process_id)
  try:
    sweep.run(lists, args.workdir, strategy=args.strategy, figures=args.figures,
              progress=not args.no_progress, command=command)
  except KeyboardInterrupt:
    from vae_jax.app.run import RunStopped
    raise RunStopped("interrupted: the members finished so far are kept (a member is written "
                     "whole or not at all); the same command trains the rest, a member in "
                     "training from its last checkpoint", 130) from None


def cmd_study(args, config, parser):
  from vae_jax.study import experiments
  if args.redraw:
    given = _given(args, parser, ("quick", "overwrite", "no_compile_cache") + FIELDS["study"])
    if given:
      parser.error(f"--redraw draws from the JSON in {args.out} and takes no {', '.join(given)}")
    for name in experiments.redraw(args.out, args.only):
      print(f"redrew {args.out}/{name}.png")
    return
  experiments.run(args.out, args.only, args.quick, config=config, overwrite=args.overwrite)


# --------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
  parser = _Parser(prog="vae-jax", description="The MNIST VAE of the blog post \"PyTorch (11) "
                   "Variational Autoencoder\", in JAX: train it, sweep it, evaluate, compare and "
                   "time it. Each command's --help lists its flags.")
  sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

  def command(name, func, help_):
    p = sub.add_parser(name, help=help_, description=help_)
    p.set_defaults(func=func, subparser=p)
    return p

  t = command("train", cmd_train, "train the VAE (or the CVAE) and write every figure into "
              "--workdir")
  t.add_argument("--workdir", required=True, type=_path,
                 help="run directory (created if missing)")
  t.add_argument("--overwrite", action="store_true",
                 help="replace the results in --workdir, once the new run has finished (it is "
                      "written to WORKDIR.new until then)")
  t.add_argument("--resume", action="store_true",
                 help="continue the run in --workdir from its last checkpoint (its config.json "
                      "gives every flag not given; only --epochs, upwards, and --data-dir may "
                      "change)")
  every = t.add_mutually_exclusive_group()
  every.add_argument("--checkpoint-seconds", type=_seconds, default=1.0, metavar="S",
                     help="write a checkpoint after each epoch that ends S seconds or more "
                          "after the last checkpoint (or the start; 0: every epoch), and after "
                          "the last epoch (a kill loses the epochs since the last checkpoint); "
                          "default: %(default)g")
  every.add_argument("--checkpoint-every", type=_positive, default=None, metavar="N",
                     help="write a checkpoint every N epochs instead (and after the last)")
  t.add_argument("--no-progress", action="store_true", help="no progress bar")

  w = command("sweep", cmd_sweep, "train every combination of comma-listed settings (x seeds), "
              "stacked by shape and sharded over the devices; a table and a figure into "
              "--workdir")
  w.add_argument("--workdir", required=True, type=_path,
                 help="one directory per member below it, and sweep.md / .json / .png; a rerun "
                      "skips the members already finished")
  w.add_argument("--strategy", choices=STRATEGIES, default="auto",
                 help="how each group of members trains: one vmapped program sharded over the "
                      "devices, one after another, or auto (measure both); default: auto")
  w.add_argument("--figures", action="store_true",
                 help="also write each member's figures (a single run's, less the "
                      "reconstruction grids)")
  w.add_argument("--no-progress", action="store_true", help="no progress bars")
  w.add_argument("--coordinator", type=_host_port, default=None, metavar="HOST:PORT",
                 help="HOST:PORT of process 0, to share the members among several processes "
                      "(jax.distributed.initialize; docs/sweeps.md); with --num-processes and "
                      "--process-id")
  w.add_argument("--num-processes", type=_positive, default=None,
                 help="how many processes share the sweep (with --coordinator)")
  w.add_argument("--process-id", type=int, default=None,
                 help="this process's number, 0 .. N - 1 (with --coordinator)")

  e = command("evaluate", cmd_evaluate,
              "test loss (z = mu) of saved weights: ours or a PyTorch vae.pth")
  e.add_argument("--weights", type=_path, required=True,
                 help="params.msgpack, vae.pth/.pt or .npz state dict; the model's sizes are "
                      "read off the weights")

  x = command("export", cmd_export, "write weights in the blog's state_dict layout (.pth or .npz)")
  x.add_argument("--weights", type=_path, required=True,
                 help="params.msgpack (or a .pth/.npz to convert)")
  x.add_argument("--out", type=_path, required=True, help="vae.pth (needs torch) or vae.npz")

  lk = command("likelihood", cmd_likelihood,
               "importance-weighted test log-likelihood (L_k, Burda et al.), ELBO and active "
               "units of saved weights")
  lk.add_argument("--weights", type=_path, required=True,
                  help="params.msgpack of a run (its config.json gives the model and "
                       "--binarize), or the blog's vae.pth/.npz")
  lk.add_argument("--k", dest="samples", type=_positive, default=5000,
                  help="importance samples per test image; default: 5000 (the field's)")
  lk.add_argument("--json", type=_path, default=None,
                  help="also write the numbers to this JSON file")
  lk.add_argument("--no-progress", action="store_true", help="no progress bar")

  xp = command("explore", cmd_explore, "one self-contained HTML page to explore saved weights in "
               "a browser: the latent map, drawing, sampling, sliders (docs/explorer.md)")
  xp.add_argument("--weights", type=_path, required=True,
                  help="params.msgpack of a run (its config.json gives the model), or the "
                       "blog's vae.pth/.npz")
  xp.add_argument("--out", type=_path, required=True, help="the page to write, a new .html file")

  command("data", cmd_data, "fetch, convert and cache MNIST; print its checks")
  b = command("bench", cmd_bench, "seconds per epoch: this JAX trainer vs the blog's PyTorch loop")
  b.add_argument("--bench-epochs", type=_positive, default=3,
                 help="epochs timed per loop (median); default: 3")
  b.add_argument("--no-torch", action="store_true", help="skip the PyTorch rows")
  b.add_argument("--torch-loops", nargs="+", choices=TORCH_LOOPS, default=None,
                 help="which PyTorch loops to time; default: all that run here (graphs "
                      "needs CUDA; compiled takes about a minute to compile on a small CPU)")

  c = command("compare", cmd_compare,
              "the blog's numbers with error bars: z = 2 and 20 over seeds, a sweep over z, "
              "timings; JSON, Markdown and figures into --out")
  defaults = COMPARE_DEFAULTS
  c.add_argument("--out", type=_path, default=defaults["out"],
                 help="output directory; default: results")
  for flag, help_ in (("seeds", "seeds of the z = 2 and 20 runs"),
                      ("epochs", "epochs of the z = 2 and 20 runs"),
                      ("sweep-seeds", "seeds per sweep point"),
                      ("sweep-epochs", "epochs per sweep point"),
                      ("bench-epochs", "epochs of the timing rows")):
    default = defaults[flag.replace("-", "_")]
    c.add_argument(f"--{flag}", type=_positive, default=default,
                   help=f"{help_}; default: {default}")
  c.add_argument("--sweep", type=_positive, nargs="+", default=list(defaults["sweep"]),
                 help="latent sizes of the sweep; default: 2 5 10 20 50")
  c.add_argument("--strategy", choices=STRATEGIES, default=defaults["strategy"],
                 help="how the seeds of a group train (app/multi.py); default: auto")
  c.add_argument("--overwrite", action="store_true",
                 help="replace an earlier comparison's JSON, Markdown and figures in --out (its "
                      "runs in OUT/runs are reused where their setting is the same; a run there "
                      "of another setting, such as another --epochs, is refused, naming it)")
  c.add_argument("--redraw", action="store_true",
                 help="only redraw the figures and Markdown from OUT/blog_comparison.json")

  s = command("study", cmd_study, "the gradient-flow study: six experiments, JSON and figures "
              "into --out (docs/gradient_flow.md)")
  s.add_argument("--out", type=_path, default="results/gradient_flow",
                 help="output directory; default: results/gradient_flow")
  s.add_argument("--only", nargs="+", choices=STUDY_EXPERIMENTS, help="run only these")
  s.add_argument("--quick", action="store_true", help="shrink every experiment (a smoke run)")
  s.add_argument("--overwrite", action="store_true",
                 help="replace the results of experiments already in --out (each once its "
                      "new numbers are in)")
  s.add_argument("--redraw", action="store_true",
                 help="only redraw the figures from the JSON already in --out, in seconds")

  for name, p in sub.choices.items():
    add_config_flags(p, FIELDS[name], lists=name == "sweep", help_for=HELP_FOR.get(name))
    if name in COMPILES:
      p.add_argument("--no-compile-cache", action="store_true",
                     help="compile every program afresh (by default compiled programs are "
                          "kept beside the MNIST cache, in jax_compile_cache/)")
  return parser


def main(argv=None) -> int:
  interrupt.install()  # first: a Ctrl-C from here on stops the command, whatever it is doing
  parser = build_parser()
  args, extra = parser.parse_known_args(argv)
  sub = args.subparser
  if extra:  # a flag this subcommand does not take, though another may
    sub.error(f"unrecognized arguments: {' '.join(extra)}")
  try:
    config = config_from_args(args)  # every value given is checked, before anything else
  except ValueError as e:
    sub.error(str(e))
  twice = _first_repeat(getattr(args, "torch_loops", None) or [])
  if twice:
    sub.error(f"--torch-loops lists {twice} twice: give each loop once")
  if args.command == "bench" and args.no_torch and args.torch_loops is not None:
    sub.error("--no-torch runs no PyTorch loop: drop --torch-loops or --no-torch")
  if args.command == "sweep":
    hosts = (args.coordinator, args.num_processes, args.process_id)
    if any(v is not None for v in hosts) and any(v is None for v in hosts):
      sub.error("--coordinator, --num-processes and --process-id go together: give all three "
                "or none")
    if args.process_id is not None and not 0 <= args.process_id < args.num_processes:
      sub.error(f"--process-id must be in 0 .. {args.num_processes - 1}, got {args.process_id}")
  try:
    code = _run(args, config, sub)
    if code == 0:  # (a command that stopped has said why, a Ctrl-C's stop included)
      interrupt.check()  # a Ctrl-C that Python dropped on the way still stops the command
    return code
  except KeyboardInterrupt:
    print(f"{sub.prog}: interrupted", file=sys.stderr)
    return 130


def _error(sub, e) -> int:
  interrupt.check()  # an error that a Ctrl-C caused (an import it stopped) is a Ctrl-C
  print(f"{sub.prog}: error: {flags_in(e)}", file=sys.stderr)
  return 2


def _run(args, config: Config, sub) -> int:
  """The command, once its flags are checked: what imports JAX and does the work."""
  from vae_jax import data
  from vae_jax.app import files, rundir
  try:
    if args.command == "train" and args.resume:  # the run's own config, then the flags given
      rundir.check_free(args.workdir)
      config = config_from_args(args, rundir.saved_config(args.workdir, args.overwrite))
    if args.command in COMPILES or args.command == "data":
      check_data_dir(config)  # before any fetch
  except (ValueError, data.DataError, OSError) as e:
    return _error(sub, e)

  if args.command in COMPILES and not args.no_compile_cache and not getattr(args, "redraw", False):
    cache = compile_cache_dir(config.data_dir)
    try:
      files.check_directory(cache, "the compilation cache")
      enable_compile_cache(cache)
    except OSError:  # a read-only data directory: JAX would warn at every program it loads
      print(f"vae-jax: {cache} cannot be written: compiling every program afresh "
            f"(--no-compile-cache does so without this line)", file=sys.stderr)
  from vae_jax.app.run import RunStopped
  try:
    args.func(args, config, sub)
  except RunStopped as e:  # diverged (3), a write failed (1) or Ctrl-C (130): the rest is kept
    print(f"{sub.prog}: {flags_in(e)}", file=sys.stderr)
    return e.exit_code
  except (data.DataError, ValueError, OSError) as e:  # OSError: FileExists, Permission, ...
    return _error(sub, e)
  return 0


def check_data_dir(config: Config):
  """The data directory, refused in one line before any fetch: a file on its way, a folder
  not writable where the cache is still to be written, or a --data-dir (or
  $VAE_JAX_DATA_DIR) whose parent folder does not exist (a mistyped path would fetch
  MNIST again into a new folder; the default, ~/.cache/vae_jax, is made with its parents)."""
  from vae_jax import data
  from vae_jax.app.files import check_directory
  root, name = data.data_root(config.data_dir), flags_in(data.data_dir_name(config.data_dir))
  chosen = config.data_dir is not None or os.environ.get("VAE_JAX_DATA_DIR")
  if chosen and not root.exists() and not root.is_symlink() and not root.parent.is_dir():
    check_directory(root, name)  # a file on the way says so first
    raise FileNotFoundError(f"{name} {root}: the folder {root.parent} does not exist: create "
                            f"it, or choose another {name}")
  must_write = not data.cache_path(config.data_source, config.data_dir).exists()
  check_directory(root, name, writable=must_write)


def compile_cache_dir(data_dir):
  """Where the compiled programs are kept: beside the MNIST cache."""
  from vae_jax import data
  return data.data_root(data_dir) / "jax_compile_cache"


def enable_compile_cache(directory) -> None:
  """Keeps every compiled program in `directory` (JAX's persistent compilation cache).

  A second process with the same shapes, config and JAX version then loads the epoch and
  evaluation programs instead of compiling them again, and also the forty-odd small
  programs of the eager operations around them (figures, checkpoints), each of which
  compiles in a few hundredths of a second (results/compile_cache_amd.txt).
  """
  import jax
  jax.config.update("jax_compilation_cache_dir", str(directory))
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
  jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


if __name__ == "__main__":
  sys.exit(main())
