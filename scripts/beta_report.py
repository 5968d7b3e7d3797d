"""The beta study's table, from the runs' own files: `python scripts/beta_report.py RUN [RUN ...]`.

Each RUN is the directory of one training run; its config.json gives beta and its
metrics.jsonl the last epoch: the blog's test loss, recon + KL at z = mu (beta = 1,
whatever beta trained), its two parts, the objective that run minimised, the
active units, and the seconds its epochs took. Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


NEEDS = ("config.json", "metrics.jsonl")  # what a row reads


def not_a_run(run: Path) -> str | None:
  """Why `run` is not a finished run's directory, or None."""
  missing = [n for n in NEEDS if not (run / n).is_file()]
  return (f"{run} is not a finished run's directory (no {', '.join(missing)}): give "
          f"directories the train subcommand wrote" if missing else None)


def parse_args(argv=None) -> argparse.Namespace:
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("runs", nargs="+", type=Path, help="run directories")
  return p.parse_args(argv)


def row(run: Path) -> str:
  config = json.loads((run / "config.json").read_text())
  history = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
  last = history[-1]
  beta = config.get("beta", 1.0)
  objective = last.get("test_objective", last["test_loss"])
  kl = sorted(last["test_kl_per_dim"], reverse=True)
  return (f"| {beta:g} | {last['epoch']} | {last['test_loss']:.2f} | {last['test_recon']:.2f} | "
          f"{last['test_kl']:.2f} | {objective:.2f} | {last['active_units']} of "
          f"{config['latent_dim']} | {sum(1 for v in kl if v > 0.01)} | "
          f"{sum(h['seconds'] for h in history):.0f} |")


def main(argv=None) -> int:
  args = parse_args(argv)
  bad = next(filter(None, map(not_a_run, args.runs)), None)
  if bad:  # one line, before any work
    print(f"beta_report.py: error: {bad}", file=sys.stderr)
    return 2
  print("| beta | epochs | test loss (recon + KL) | recon | KL | objective recon + beta KL | "
        "active units | dims with KL > 0.01 | seconds |")
  print("|---|---|---|---|---|---|---|---|---|")
  for run in args.runs:
    print(row(run))
  return 0


if __name__ == "__main__":
  sys.exit(main())
