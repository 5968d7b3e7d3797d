"""The gradient-flow study: `python scripts/gradient_study.py --out results/gradient_flow --overwrite` (also `vae-jax study ...`)."""
import sys

from vae_jax.cli import main

sys.exit(main(["study", *sys.argv[1:]]))
