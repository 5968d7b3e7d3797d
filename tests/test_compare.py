"""The comparison's arithmetic: the summary over seeds, the settling epoch and the verdict."""

import json
from pathlib import Path

import numpy as np

from vae_jax.app import compare

KEYS = ("train_loss", "train_recon", "train_kl", "test_loss", "test_recon", "test_kl")


def _history(final_test_losses, epochs=3):
  """One history per seed whose last test loss is the given value (others: arbitrary)."""
  return [[{k: 200.0 - e + (v if (k == "test_loss" and e == epochs) else 0.0) for k in KEYS}
           for e in range(1, epochs + 1)] for v in final_test_losses]


def test_summarise_gives_mean_and_sample_std_over_seeds_at_an_epoch():
  values = [-50.0, -48.0, -53.0]  # final test losses 147, 149, 144
  s = compare.summarise(_history(values))
  expect = np.array(values) + 197.0
  assert s["test_loss"]["values"] == expect.tolist()
  assert s["test_loss"]["mean"] == np.mean(expect)
  assert s["test_loss"]["std"] == np.std(expect, ddof=1)  # the sample std, n - 1
  assert compare.summarise(_history(values), epoch=1)["test_loss"]["mean"] == 199.0
  assert compare.summarise(_history(values[:1]))["test_loss"]["std"] == 0.0  # one seed


def test_verdict_agrees_only_when_every_seed_is_inside_the_blogs_range():
  inside, one_out = [-48.0, -50.0], [-48.0, -30.0]  # 149, 147 | 149, 167 (z = 2: 145 to 155)
  for values, agrees in ((inside, True), (one_out, False)):
    report = {"main": {"2": {"final": compare.summarise(_history(values))}}}
    line = compare.verdict(report)[2]
    assert ("it agrees" in line) == agrees and ("does not agree" in line) == (not agrees), line
    assert f"{2 if agrees else 1} of 2 inside" in line


def test_settle_epoch():
  assert compare.settle_epoch([200, 150, 120, 101, 100.5, 100]) == 4  # 101 is within 1% of 100
  assert compare.settle_epoch([100, 100]) == 1
  assert compare.settle_epoch([100, 90, 100]) == 3  # left the band at epoch 2, back at 3


def test_its_runs_are_named_by_z_and_seed_however_many_it_lists(tmp_path):
  """A comparison whose sweep adds one z finds the runs of an earlier one: `--sweep 2 5`
  then `--sweep 2 5 10` both name z = 5's run `latent_dim=5,seed=1` (not `run`)."""
  from vae_jax.config import Config
  from vae_jax.app import sweep
  for zs in ([5], [5, 10]):
    p = sweep.plan(compare.grid(Config(), zs, [1], 1), tmp_path / "W", named_by=compare.NAMED_BY)
    assert p.members[0].name == "latent_dim=5,seed=1"


ROOT = Path(__file__).resolve().parent.parent


def test_the_committed_report_is_what_markdown_makes_of_its_json():
  # results/blog_comparison.md was written by `compare`; the same code must make it again.
  report = json.loads((ROOT / "results" / "blog_comparison.json").read_text())
  assert compare.markdown(report) == (ROOT / "results" / "blog_comparison.md").read_text()


def test_one_seed_shows_no_spread():
  report = json.loads((ROOT / "results" / "blog_comparison.json").read_text())
  for group in (*report["main"].values(), *report["sweep"].values()):
    group["seeds"] = group["seeds"][:1]
    for term in group["final"].values():
      term["values"], term["std"] = term["values"][:1], 0.0
      term["mean"] = term["values"][0]
  text = compare.markdown(report)
  assert "One seed: no spread over seeds to show." in text
  table = [line for line in text.splitlines() if line.startswith("| 2 |")]
  assert table and all("±" not in line for line in table), table
  assert "Our 1 seed ends at" in text and "Our 1 seeds" not in text
