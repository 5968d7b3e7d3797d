"""The Markdown tables of the docs, from the files the runs and the likelihood subcommand wrote.

  python scripts/report.py beta RUN [RUN ...]        # docs/beta_cvae.md's tables
  python scripts/report.py cvae RUN [RUN ...]        # the VAE against the CVAE
  python scripts/report.py likelihood FOLDER         # results/likelihood.md's table

`beta` and `cvae` take run directories (the train subcommand's): each row is one run's
last epoch, from its config.json and metrics.jsonl (`cvae` also reads its weights).
`likelihood` takes the folder of the JSON files the likelihood subcommand wrote (its --json
files), one row each in name order. Nothing is typed in by hand.

* beta: beta, the blog's test loss (recon + KL at z = mu, whatever beta trained), its two
  parts, the objective the run minimised, the active units, the seconds of its epochs.
* cvae: the model, z, the test loss (for the CVAE, of log p(x|y)) and its parts, the
  seconds, and how much the latent code still says about the digit,

    eta^2 = sum_k n_k |mean_k(mu) - mean(mu)|^2 / sum_i |mu_i - mean(mu)|^2,

  the share of the variance of the test set's mu (encoded with each image's label for the
  CVAE) between the ten digits' means: 1 when mu is the digit alone, 0 when every digit's
  mu has the same mean. Each run is scored on the test images its config.json names.
* likelihood: the model and how it was trained (as recorded when it was scored), -L_k for
  each k, the -ELBO and the active units.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

NEEDS = {"beta": ("config.json", "metrics.jsonl"),
         "cvae": ("config.json", "metrics.jsonl", "params.msgpack")}  # what a row reads
HEADS = {
    "beta": ["beta", "epochs", "test loss (recon + KL)", "recon", "KL",
             "objective recon + beta KL", "active units", "dims with KL > 0.01", "seconds"],
    "cvae": ["model", "z", "epochs", "test loss", "recon", "KL", "eta^2 of mu by digit",
             "seconds"],
    "likelihood": ["run", "model", "trained with", "test pixels", "epochs", "train min", "-L_1",
                   "-L_5", "-L_50", "-L_k ± MC s.e.", "-ELBO", "active units", "test images",
                   "scoring min", "peak MB"]}


def parse_args(argv=None) -> argparse.Namespace:
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("table", choices=sorted(HEADS), help="which table")
  p.add_argument("paths", nargs="+", type=Path,
                 help="run directories (beta, cvae), or one folder of JSON files (likelihood)")
  return p.parse_args(argv)


def refused(table: str, paths: list) -> str | None:
  """Why the paths cannot make `table`, in one line, or None."""
  if table == "likelihood":
    folder = paths[0]
    if len(paths) > 1 or not folder.is_dir() or not any(folder.glob("*.json")):
      return (f"{folder} is not a folder of JSON files: give the folder the likelihood "
              f"subcommand's --json files went to")
    return None
  for run in paths:
    missing = [n for n in NEEDS[table] if not (run / n).is_file()]
    if missing:
      return (f"{run} is not a finished run's directory (no {', '.join(missing)}): give "
              f"directories the train subcommand wrote")
  return None


def _last(run: Path) -> tuple[dict, list]:
  return (json.loads((run / "config.json").read_text()),
          [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()])


def beta_row(run: Path) -> list:
  config, history = _last(run)
  last = history[-1]
  kl = last["test_kl_per_dim"]
  return [f"{config.get('beta', 1.0):g}", last["epoch"], f"{last['test_loss']:.2f}",
          f"{last['test_recon']:.2f}", f"{last['test_kl']:.2f}",
          f"{last.get('test_objective', last['test_loss']):.2f}",
          f"{last['active_units']} of {config['latent_dim']}", sum(1 for v in kl if v > 0.01),
          f"{sum(h['seconds'] for h in history):.0f}"]


def between_digit_share(mu: np.ndarray, labels: np.ndarray) -> float:
  """eta^2 of mu [N, z] by labels [N] (module docstring), in float64."""
  mu = np.asarray(mu, np.float64)
  mean = mu.mean(0)
  between = sum((labels == k).sum() * np.sum((mu[labels == k].mean(0) - mean) ** 2)
                for k in np.unique(labels))
  return float(between / np.sum((mu - mean) ** 2))


def cvae_row(run: Path) -> list:
  from vae_jax.app import weights
  from vae_jax.extensions import recipe
  params, config = weights.load_weights(run / "params.msgpack")
  test = recipe.load_data(config, with_train=False)  # the images the run was scored on
  mu = recipe.encode_mean(recipe.make_model(config), params, test.x_test,
                          *recipe.labels(config, test.y_test))
  history = _last(run)[1]
  last = history[-1]
  return [config.model.upper(), config.latent_dim, last["epoch"], f"{last['test_loss']:.2f}",
          f"{last['test_recon']:.2f}", f"{last['test_kl']:.2f}",
          f"{between_digit_share(np.asarray(mu), np.asarray(test.y_test)):.3f}",
          f"{sum(r.get('seconds', 0.0) for r in history):.0f}"]


def likelihood_row(path: Path) -> list:
  r = json.loads(path.read_text())
  c, run, nll = r["config"], r.get("run") or {}, r["nll"]
  model = (f"blog 784-{c['hidden_dim']}-{c['latent_dim']}" if c["arch"] == "blog"
           else f"Burda 784-{c['hidden_dim']}-{c['hidden_dim']}-{c['latent_dim']}")
  minutes = f"{run['train_seconds'] / 60:.1f}" if "train_seconds" in run else "?"
  return [path.stem, model, "VAE" if c["objective"] == "elbo" else f"IWAE k={c['k']}",
          "binarized" if r["binarize"] == "dynamic" else "grey (no likelihood)",
          run.get("epochs", "?"), minutes,
          *(f"{nll[k]:.2f}" if k in nll else "" for k in ("1", "5", "50")),
          f"{nll[str(r['k'])]:.2f} ± {r['mc_se']:.3f} (k={r['k']})", f"{r['neg_elbo']:.2f}",
          r["active_units"], r["n"], f"{r['seconds'] / 60:.1f}", f"{r['peak_rss_mb']:.0f}"]


def table(name: str, paths: list) -> str:
  rows = ([likelihood_row(p) for p in sorted(paths[0].glob("*.json"))] if name == "likelihood"
          else [(beta_row if name == "beta" else cvae_row)(run) for run in paths])
  return "\n".join(["| " + " | ".join(HEADS[name]) + " |", "|" + "---|" * len(HEADS[name])]
                   + ["| " + " | ".join(map(str, r)) + " |" for r in rows])


def main(argv=None) -> int:
  args = parse_args(argv)
  why = refused(args.table, args.paths)
  if why:  # one line, before any work
    print(f"report.py: error: {why}", file=sys.stderr)
    return 2
  print(table(args.table, args.paths))
  return 0


if __name__ == "__main__":
  sys.exit(main())
