"""The blog's numbers with error bars: `python scripts/compare_blog.py --out results` (also `vae-jax compare ...`)."""
import sys

from vae_jax.cli import main

sys.exit(main(["compare", *sys.argv[1:]]))
