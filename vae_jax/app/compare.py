"""The blog's table, reproduced with error bars: z = 2 and z = 20 over several seeds,
a latent-size sweep, the PyTorch timing, written as JSON + Markdown + figures.

  vae-jax compare --out results --overwrite   # about 45 minutes on 2 CPU cores
  vae-jax compare --out results --redraw      # figures and Markdown again, from the JSON

Every run is the blog's setting (784-512-z, Adam 1e-3, batch 128, continuous MNIST),
trained as a sweep (app/sweep.py, the sweep subcommand) into OUT/runs/main (z = 2
and 20) and OUT/runs/sweep (the other latent sizes): each run keeps its directory,
the seeds of one z train as one stack (vmap or one after another, whichever measured
faster), and a rerun of the comparison trains only the runs not yet finished. A finished
comparison's files (its JSON, written last) are replaced only with --overwrite.
"""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.ticker  # noqa: E402
import numpy as np  # noqa: E402

from vae_jax import data  # noqa: E402
from vae_jax.app import COMPARE_DEFAULTS as DEFAULTS  # noqa: E402
from vae_jax.app import bench, count, multi, plots  # noqa: E402
from vae_jax.app import sweep as sweeps  # noqa: E402  (`sweep`: compare_blog's z list)
from vae_jax.app.files import atomic_write, check_results_dir  # noqa: E402
from vae_jax.app.run import read_metrics  # noqa: E402
from vae_jax.config import Config  # noqa: E402

# What the blog reports (aidiary 2018, its own single PyTorch run): words, not a table.
BLOG_SAYS = {2: "test loss converges around 150", 20: "test loss falls into the 90s"}
BLOG_RANGE = {2: (145.0, 155.0), 20: (90.0, 100.0)}  # our reading of those words


def settle_epoch(losses, tol: float = 0.01) -> int:
  """The first epoch (1-based) from which the loss stays within `tol` of its final value."""
  losses = np.asarray(losses, np.float64)
  inside = np.abs(losses - losses[-1]) <= tol * abs(losses[-1])
  outside = np.flatnonzero(~inside)
  return int(outside[-1] + 2) if len(outside) else 1


def summarise(histories, epoch: int | None = None) -> dict:
  """Mean and std over seeds of every metric at `epoch` (default: the last)."""
  rows = [h[(epoch or len(h)) - 1] for h in histories]
  out = {}
  for key in ("train_loss", "train_recon", "train_kl", "test_loss", "test_recon", "test_kl"):
    v = np.array([r[key] for r in rows])
    out[key] = {"mean": float(v.mean()), "std": float(v.std(ddof=1)) if len(v) > 1 else 0.0,
                "values": v.tolist()}
  return out


def grid(base: Config, zs, seeds, epochs: int) -> dict:
  """The sweep of latent sizes `zs` x `seeds`, `epochs` each, every other field `base`'s."""
  same = {f.name: [getattr(base, f.name)] for f in dataclasses.fields(Config)
          if f.name not in ("latent_dim", "epochs", "seed")}
  return {**same, "latent_dim": list(zs), "epochs": [epochs], "seed": list(seeds)}


# Every run is named by its z and seed, however many the command lists: a comparison with
# another --sweep or --seeds finds the runs it shares with an earlier one.
NAMED_BY = ("latent_dim", "seed")


def run_group(lists: dict, out: Path, strategy: str) -> dict:
  """The sweep `lists` (`grid`) in `out` (the sweep subcommand: one directory a run; a rerun
  skips the finished ones); per z, what the comparison reports of its runs."""
  p = sweeps.run(lists, out, strategy=strategy, named_by=NAMED_BY)
  groups = json.loads((out / "sweep.json").read_text())["groups"]
  zs, seeds, epochs = lists["latent_dim"], lists["seed"], lists["epochs"][0]
  keys = ("epoch", "train_loss", "train_recon", "train_kl", "test_loss", "test_recon", "test_kl")
  report = {}
  for z in zs:
    names = {m.name for m in p.members if m.config.latent_dim == z}
    trained = [g for g in groups if set(g["members"]) & names]
    histories = [[{k: r[k] for k in keys} for r in read_metrics(out / m.name)]
                 for m in p.members if m.name in names]
    report[z] = {"latent_dim": z, "epochs": epochs, "seeds": list(seeds),
                 "strategy": "+".join(sorted({g["strategy"] for g in trained})) or "unknown",
                 "calibration_s_per_step": trained[0]["calibration_s_per_step"] if trained else {},
                 **{k: sum(g[k] for g in trained) for k in ("compile_s", "train_s")},
                 "histories": histories,
                 "settle_epoch": [settle_epoch([r["test_loss"] for r in h]) for h in histories],
                 "final": summarise(histories)}
  return report


def compare_blog(out: str | Path = DEFAULTS["out"], *, seeds: int = DEFAULTS["seeds"],
                 epochs: int = DEFAULTS["epochs"], sweep: tuple = DEFAULTS["sweep"],
                 sweep_seeds: int = DEFAULTS["sweep_seeds"],
                 sweep_epochs: int = DEFAULTS["sweep_epochs"], strategy: str = DEFAULTS["strategy"],
                 bench_epochs: int = DEFAULTS["bench_epochs"], base: Config = Config(),
                 overwrite: bool = False) -> dict:
  out = check_results_dir(out, "--out", "the comparison")
  if (out / "blog_comparison.json").exists() and not overwrite:  # written last: a finished one
    raise FileExistsError(f"{out}/blog_comparison.json holds an earlier comparison's results: "
                          f"pass --overwrite to replace them, or choose another --out")
  drawn = [name for name in DRAWN if (out / name).exists()]
  if drawn and not (out / "blog_comparison.json").exists() and not overwrite:
    raise FileExistsError(f"{out} holds {', '.join(drawn)} but no blog_comparison.json, so "
                          f"not a comparison's, and the comparison would replace them: move "
                          f"them out, choose another --out, or pass --overwrite")
  t_start = time.perf_counter()
  d = data.load_device_data(base)
  seed_list = list(range(1, seeds + 1))
  sweep_list = list(range(1, sweep_seeds + 1))
  limits = "".join(f" --{k.replace('_', '-')} {v}" for k, v in
                   (("train_limit", base.train_limit), ("test_limit", base.test_limit)) if v)
  command = (f"vae-jax compare --out {out} --seeds {seeds} --epochs {epochs} --sweep "
             f"{' '.join(map(str, sweep))} --sweep-seeds {sweep_seeds} --sweep-epochs "
             f"{sweep_epochs} --strategy {strategy} --bench-epochs {bench_epochs}{limits}")

  report = {"machine": bench.describe_machine(), "setting": setting(base, d), "command": command,
            "blog_says": BLOG_SAYS, "main": {}, "sweep": {}, "timing": {}}
  # The sweep: `sweep_seeds` seeds, `sweep_epochs` epochs. For z already in the main
  # runs, their first `sweep_epochs` epochs are exactly a shorter run (an epoch's keys
  # depend on its number only), so they are reused.
  reused = [z for z in sweep if z in (2, 20) and sweep_epochs <= epochs and sweep_seeds <= seeds]
  fresh = [z for z in sweep if z not in reused]
  main_grid = grid(base, (2, 20), seed_list, epochs)
  sweep_grid = grid(base, fresh, sweep_list, sweep_epochs) if fresh else None
  try:  # both refused or accepted before any training; the flag to change is --out
    plans = [sweeps.plan(main_grid, out / "runs" / "main", named_by=NAMED_BY)]
    if sweep_grid:
      plans.append(sweeps.plan(sweep_grid, out / "runs" / "sweep", named_by=NAMED_BY))
  except (ValueError, OSError) as e:
    raise type(e)(str(e).replace("another --workdir", "another --out")) from None
  report["runs"] = sum(len(p.members) for p in plans)
  report["runs_trained_before"] = sum(len(p.members) - len(p.todo) for p in plans)
  out.mkdir(parents=True, exist_ok=True)  # once nothing is refused
  report["main"] = run_group(main_grid, out / "runs" / "main", strategy)
  groups = run_group(sweep_grid, out / "runs" / "sweep", strategy) if fresh else {}
  for z in sweep:
    if z in reused:
      hist = [h[:sweep_epochs] for h in report["main"][z]["histories"][:sweep_seeds]]
      report["sweep"][z] = {"final": summarise(hist), "reused_from_main": True}
    else:
      report["sweep"][z] = {"final": groups[z]["final"], "reused_from_main": False,
                            "train_s": groups[z]["train_s"]}
    report["sweep"][z].update(seeds=sweep_list, epochs=sweep_epochs)

  # Timing: one full epoch of the main runs' seeds both ways, then JAX vs PyTorch.
  members = [(s, base.learning_rate) for s in seed_list]
  steps = -(-len(d.x_train) // base.batch_size)
  per_step = multi.calibrate(base, members, d, steps=steps)
  report["timing"]["seeds_one_epoch_s"] = {k: v * steps for k, v in per_step.items()}
  report["timing"]["single_seed_epoch_s"] = bench.bench_jax(base, d, 2)["train_s"]
  report["timing"]["bench"] = [bench.bench_jax(base, d, bench_epochs)]
  if bench.torch_device() is not None:
    report["timing"]["bench"] += [bench.bench_torch(base, d, bench_epochs, loop)
                                  for loop in ("blog", "tensor")]
  report["wall_s"] = time.perf_counter() - t_start

  atomic_write(out / "blog_comparison.json", json.dumps(report, indent=1).encode())
  redraw(out)
  return report


def setting(config: Config, d: data.DeviceData) -> str:
  """The setting every run of the comparison shares, in words."""
  return (f"784-{config.hidden_dim}-z, Adam {config.learning_rate:g}, batch {config.batch_size}, "
          f"continuous MNIST (uint8/255, {len(d.x_train)} train / {len(d.x_test)} test images), "
          f"{'PyTorch nn.Linear' if config.init == 'torch' else 'Flax default'} init")


def plot_curves(report: dict, path) -> None:
  fig, axes = plt.subplots(1, 2, figsize=(11, 4))
  for ax, (z, g) in zip(axes, report["main"].items()):
    for key, label in (("train_loss", "train (sampled z)"), ("test_loss", "test (z = mu)")):
      v = np.array([[r[key] for r in h] for h in g["histories"]])  # [seeds, epochs]
      e = np.arange(1, v.shape[1] + 1)
      ax.plot(e, v.mean(0), label=f"{label}, mean of {count(len(v), 'seed')}")
      ax.fill_between(e, v.min(0), v.max(0), alpha=0.3, label=f"{label}, min to max")
    lo, hi = BLOG_RANGE[int(z)]
    ax.axhspan(lo, hi, color="grey", alpha=0.12, label=f"blog: {BLOG_SAYS[int(z)]}")
    ax.set(xlabel="epoch", ylabel="loss per image (nats)", title=f"z = {z}",
           ylim=(lo - 10, v.mean(0)[min(1, v.shape[1] - 1)] + 10))  # from epoch 2 down
    ax.grid(True)
    ax.legend(fontsize=8)
  plots.save_figure(fig, path)


def plot_sweep(report: dict, path) -> None:
  zs = sorted(report["sweep"], key=int)
  fig, ax = plt.subplots(figsize=(6, 4))
  for key, label in (("test_loss", "test loss"), ("test_recon", "test reconstruction"),
                     ("test_kl", "test KL")):
    m = [report["sweep"][z]["final"][key]["mean"] for z in zs]
    s = [report["sweep"][z]["final"][key]["std"] for z in zs]
    ax.errorbar([int(z) for z in zs], m, yerr=s, marker="o", capsize=3, label=label)
  any_z = report["sweep"][zs[0]]
  ax.set(xscale="log", xlabel="latent size z", ylabel="nats per image",
         title=f"after {count(any_z['epochs'], 'epoch')}, "
               + (f"mean +- std of {count(len(any_z['seeds']), 'seed')}"
                  if len(any_z["seeds"]) > 1 else "one seed"))
  ax.set_xticks([int(z) for z in zs], [str(z) for z in zs])
  ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
  ax.grid(True)
  ax.legend()
  plots.save_figure(fig, path)


def _ms(d, key):
  """mean ± std over the seeds; one seed has no spread to show."""
  if len(d[key]["values"]) == 1:
    return f"{d[key]['mean']:.2f}"
  return f"{d[key]['mean']:.2f} ± {d[key]['std']:.2f}"


def verdict(report: dict) -> list[str]:
  """Where the reproduction agrees with the blog's words, and why it may not, from the numbers."""
  out = ["## Against the blog", ""]
  for z, g in report["main"].items():
    m, sd = g["final"]["test_loss"]["mean"], g["final"]["test_loss"]["std"]
    lo, hi = BLOG_RANGE[int(z)]
    vals = g["final"]["test_loss"]["values"]
    inside = sum(lo <= v <= hi for v in vals)
    out.append(f"* z = {z}: the blog says \"{BLOG_SAYS[int(z)]}\"; we read that as {lo:g} to "
               f"{hi:g}. Our {count(len(vals), 'seed')} end{'s' if len(vals) == 1 else ''} at "
               f"{m:.2f}" + (f" ± {sd:.2f}" if len(vals) > 1 else "")
               + f", {inside} of {len(vals)} inside that range: "
               + ("it agrees." if inside == len(vals) else "it does not agree."))
  out += ["", "The blog gives words, not a table, from one PyTorch run; its exact final numbers "
          "are not known, so agreement can only be to its own precision. Where a single run of "
          "ours could differ from its run: the random streams (JAX's, not PyTorch's seed 1), "
          "the BCE (from logits here; PyTorch clamps log-probabilities at -100, which matters "
          "only for pixels predicted wrongly with |logit| > ~17), and the order of the test "
          "batches (irrelevant to a sum). The spread over seeds above is the size of the first "
          "of these. Train loss sits above test loss for z = 20 because it is measured with "
          "sampled z, the test loss with z = mu.", ""]
  return out


def _wall(report: dict) -> str:
  """The command's wall time, and whether it is the whole comparison's."""
  minutes, before = report["wall_s"] / 60, report.get("runs_trained_before", 0)
  if not before:
    return f"Whole run: {minutes:.1f} minutes"
  return (f"This command: {minutes:.1f} minutes; {before} of its {report['runs']} runs were "
          f"trained by an earlier one, not counted here (the training seconds below count "
          f"them)")


def markdown(report: dict) -> str:
  first = next(iter(report["main"].values()))
  lines = ["# The blog's numbers, reproduced", "",
           f"Machine: {report['machine']}. {_wall(report)} "
           f"(`{report.get('command', 'vae-jax compare --out results')}`).", "",
           f"Setting: {report['setting']}. Losses are nats per image (sum over the split / its "
           "size); train with sampled z, test with z = mu (the blog's `model.eval()`). "
           + ("Mean ± standard deviation over seeds." if len(first["seeds"]) > 1 else
              "One seed: no spread over seeds to show."), "",
           f"## z = 2 and z = 20, {count(first['epochs'], 'epoch')}", "",
           "| z | seeds | train loss | test loss | test recon | test KL | blog reports | "
           "epoch within 1% of final (per seed) |",
           "|---|---|---|---|---|---|---|---|"]
  for z, g in report["main"].items():
    f = g["final"]
    lines.append(f"| {z} | {len(g['seeds'])} | {_ms(f, 'train_loss')} | "
                 f"**{_ms(f, 'test_loss')}** | {_ms(f, 'test_recon')} | {_ms(f, 'test_kl')} | "
                 f"{BLOG_SAYS[int(z)]} | "
                 f"{', '.join(map(str, g['settle_epoch']))} |")
  lines += ["", "Per seed, final test loss: " + "; ".join(
      f"z = {z}: " + ", ".join(f"{v:.2f}" for v in g["final"]["test_loss"]["values"])
      for z, g in report["main"].items()),
      "", "\"Within 1% of final\": the first epoch from which the test loss stays within 1% of "
      f"its epoch-{first['epochs']} value.", "",
      "![test loss over epochs, band over seeds](blog_comparison_curves.png)", "",
      *verdict(report), "## Latent size sweep", ""]
  any_z = next(iter(report["sweep"].values()))
  n, shorter = count(any_z["epochs"], "epoch"), any_z["epochs"] < first["epochs"]
  reused = [z for z, g in report["sweep"].items() if g.get("reused_from_main")]
  lines += [f"Seeds {any_z['seeds']}, {n} each"
            + (" (fewer than the main runs, to fit the time)." if shorter else ".")
            + (f" For z = {' and '.join(map(str, reused))} these are the first {n} of the main "
               "runs with those seeds: an epoch's random keys depend only on its number, so "
               f"they are exactly such {'shorter ' if shorter else ''}runs." if reused else ""),
            "",
            "| z | train loss | test loss | test recon | test KL |", "|---|---|---|---|---|"]
  for z in sorted(report["sweep"], key=int):
    f = report["sweep"][z]["final"]
    lines.append(f"| {z} | {_ms(f, 'train_loss')} | {_ms(f, 'test_loss')} | "
                 f"{_ms(f, 'test_recon')} | {_ms(f, 'test_kl')} |")
  lines += ["", "![sweep over z](blog_comparison_sweep.png)", "", "## Time", ""]
  t = report["timing"]
  seeds = t["seeds_one_epoch_s"]
  lines += [f"Many seeds at once, one full training epoch of {len(first['seeds'])} "
            f"seeds: vmap {seeds['vmap']:.2f} s, one after another {seeds['sequential']:.2f} s "
            f"(a single seed: {t['single_seed_epoch_s']:.2f} s). The runner chose: "
            + ", ".join(f"z = {z}: {g['strategy']} ({g['train_s']:.0f} s for "
                        f"{len(g['seeds'])} x {count(g['epochs'], 'epoch')})"
                        for z, g in report["main"].items()) + ".", "",
            bench.format_table(t["bench"])]
  return "\n".join(lines) + "\n"


DRAWN = ("blog_comparison_curves.png", "blog_comparison_sweep.png", "blog_comparison.md")


def redraw(out: str | Path = "results") -> list[Path]:
  """Redraws the figures and the Markdown from an existing blog_comparison.json; returns
  the files written. All three are made first, beside the old ones, and replace them only
  when each was made: a JSON that cannot be read changes nothing."""
  out = Path(out)
  path = out / "blog_comparison.json"
  if not path.is_file():
    raise FileNotFoundError(f"{out} holds no blog_comparison.json to redraw from: run "
                            f"`vae-jax compare --out {out}` first")
  again = f"run `vae-jax compare --out {out} --overwrite` to compute it again"
  made = dict(zip(DRAWN, (plot_curves, plot_sweep, lambda r, p: p.write_text(markdown(r)))))
  with tempfile.TemporaryDirectory(prefix=".redraw_", dir=out) as tmp:
    try:
      report = json.loads(path.read_text())
      for name, make in made.items():
        make(report, Path(tmp) / name)
    except json.JSONDecodeError as e:
      raise ValueError(f"{path} is not valid JSON ({e}): {again}") from None
    except (KeyError, TypeError, IndexError) as e:
      raise ValueError(f"{path} lacks what its figures need ({type(e).__name__}: {e}): it was "
                       f"edited or written by another version; {again}") from None
    for name in made:
      os.replace(Path(tmp) / name, out / name)
  return [out / name for name in made]
