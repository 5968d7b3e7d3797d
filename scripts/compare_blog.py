"""Reproduces the blog's numbers with error bars: `python scripts/compare_blog.py --out results`.

Flags: --seeds 5 --epochs 100 --sweep-seeds 2 --sweep-epochs 50 --strategy auto.
"""
import argparse

from vae_jax import compare

p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
p.add_argument("--out", default="results")
p.add_argument("--seeds", type=int, default=5)
p.add_argument("--epochs", type=int, default=100)
p.add_argument("--sweep", type=int, nargs="+", default=[2, 5, 10, 20, 50])
p.add_argument("--sweep-seeds", type=int, default=2)
p.add_argument("--sweep-epochs", type=int, default=50)
p.add_argument("--strategy", choices=["auto", "vmap", "sequential"], default="auto")
p.add_argument("--bench-epochs", type=int, default=3)
p.add_argument("--rerender", action="store_true",
               help="only redraw figures and Markdown from OUT/blog_comparison.json")
a = p.parse_args()
if a.rerender:
  compare.rerender(a.out)
  raise SystemExit(0)
if min(a.seeds, a.epochs, a.sweep_seeds, a.sweep_epochs, a.bench_epochs, *a.sweep) < 1:
  p.error("every count must be >= 1")
compare.compare_blog(a.out, seeds=a.seeds, epochs=a.epochs, sweep=tuple(a.sweep),
                     sweep_seeds=a.sweep_seeds, sweep_epochs=a.sweep_epochs,
                     strategy=a.strategy, bench_epochs=a.bench_epochs)
