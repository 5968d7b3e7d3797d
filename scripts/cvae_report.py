"""VAE against CVAE, from the runs' own files: `python scripts/cvae_report.py RUN [RUN ...]`.

Each RUN is the directory of one training run (of the VAE, or of the CVAE: `--model cvae`).
Prints a Markdown table: the model, z, the last epoch's test loss (the negative ELBO at
z = mu; for the CVAE, of log p(x|y)) and its two parts, the seconds its epochs took, and how
much the latent code still says about the digit:

  eta^2 = sum_k n_k |mean_k(mu) - mean(mu)|^2 / sum_i |mu_i - mean(mu)|^2,

the share of the variance of the test set's mu (encoded with each image's label for the
CVAE) that lies between the ten digits' means: 1 when mu is the digit alone, 0 when every
digit's mu has the same mean. Each run is scored on the test images its config.json names
(its data source, cache, limit and binarization).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np


NEEDS = ("config.json", "metrics.jsonl", "params.msgpack")  # what a row reads


def not_a_run(run: Path) -> str | None:
  """Why `run` is not a finished run's directory, or None."""
  missing = [n for n in NEEDS if not (run / n).is_file()]
  return (f"{run} is not a finished run's directory (no {', '.join(missing)}): give "
          f"directories the train subcommand wrote" if missing else None)


def parse_args(argv=None) -> argparse.Namespace:
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("runs", nargs="+", type=Path, help="run directories")
  return p.parse_args(argv)


def between_digit_share(mu: np.ndarray, labels: np.ndarray) -> float:
  """eta^2 of mu [N, z] by labels [N] (module docstring), in float64."""
  mu = np.asarray(mu, np.float64)
  mean = mu.mean(0)
  between = sum((labels == k).sum() * np.sum((mu[labels == k].mean(0) - mean) ** 2)
                for k in np.unique(labels))
  return float(between / np.sum((mu - mean) ** 2))


def row(run: Path) -> str:
  from vae_jax.app import run as runs
  from vae_jax.app import weights
  from vae_jax.extensions import recipe

  params, config = weights.load_weights(run / "params.msgpack")
  test = recipe.load_data(config, with_train=False)  # the images the run was scored on
  mu = recipe.encode_mean(recipe.make_model(config), params, test.x_test,
                          *recipe.labels(config, test.y_test))
  rows = runs.read_metrics(run)
  last = rows[-1]
  return (f"| {config.model.upper()} | {config.latent_dim} | {last['epoch']} | "
          f"{last['test_loss']:.2f} | {last['test_recon']:.2f} | {last['test_kl']:.2f} | "
          f"{between_digit_share(np.asarray(mu), np.asarray(test.y_test)):.3f} | "
          f"{sum(r.get('seconds', 0.0) for r in rows):.0f} |")


def main(argv=None) -> int:
  args = parse_args(argv)
  bad = next(filter(None, map(not_a_run, args.runs)), None)
  if bad:  # one line, before any work
    print(f"cvae_report.py: error: {bad}", file=sys.stderr)
    return 2
  print("| model | z | epochs | test loss | recon | KL | eta^2 of mu by digit | seconds |")
  print("|---|---|---|---|---|---|---|---|")
  for run in args.runs:
    print(row(run))
  return 0


if __name__ == "__main__":
  sys.exit(main())
