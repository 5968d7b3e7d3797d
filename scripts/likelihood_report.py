"""The table of results/likelihood.md, from the JSON files the likelihood subcommand wrote.

  python scripts/likelihood_report.py results/likelihood        # prints a Markdown table

One row per JSON file, in name order: the model and how it was trained (from the run's
config.json and metrics.jsonl, as recorded when it was scored), then -L_k for each k,
the -ELBO and the active units. Nothing is typed in by hand.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def parse_args(argv=None) -> argparse.Namespace:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("folder",
                      help="folder of the JSON files the likelihood subcommand wrote (--json)")
  return parser.parse_args(argv)


def row(name: str, r: dict) -> str:
  c, run = r["config"], r.get("run") or {}
  model = (f"blog 784-{c['hidden_dim']}-{c['latent_dim']}" if c["arch"] == "blog"
           else f"Burda 784-{c['hidden_dim']}-{c['hidden_dim']}-{c['latent_dim']}")
  trained = "VAE" if c["objective"] == "elbo" else f"IWAE k={c['k']}"
  data = "binarized" if r["binarize"] == "dynamic" else "grey (no likelihood)"
  nll = r["nll"]
  cell = lambda k: f"{nll[k]:.2f}" if k in nll else ""
  top = str(r["k"])
  epochs = run.get("epochs", "?")
  minutes = f"{run['train_seconds'] / 60:.1f}" if "train_seconds" in run else "?"
  return (f"| {name} | {model} | {trained} | {data} | {epochs} | {minutes} | {cell('1')} | "
          f"{cell('5')} | {cell('50')} | {nll[top]:.2f} ± {r['mc_se']:.3f} (k={top}) | "
          f"{r['neg_elbo']:.2f} | {r['active_units']} | {r['n']} | {r['seconds'] / 60:.1f} | "
          f"{r['peak_rss_mb']:.0f} |")


def table(folder) -> str:
  lines = ["| run | model | trained with | test pixels | epochs | train min | -L_1 | -L_5 | "
           "-L_50 | -L_k ± MC s.e. | -ELBO | active units | test images | scoring min | "
           "peak MB |", "|" + "---|" * 15]
  for path in sorted(Path(folder).glob("*.json")):
    lines.append(row(path.stem, json.loads(path.read_text())))
  return "\n".join(lines)


def main(argv=None) -> int:
  folder = Path(parse_args(argv).folder)
  if not folder.is_dir() or not any(folder.glob("*.json")):  # one line, not an empty table
    print(f"likelihood_report.py: error: {folder} is not a folder of JSON files: give the "
          f"folder the likelihood subcommand's --json files went to", file=sys.stderr)
    return 2
  print(table(folder))
  return 0


if __name__ == "__main__":
  sys.exit(main())
