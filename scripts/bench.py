"""Seconds per epoch, JAX vs the blog's PyTorch loop: `python scripts/bench.py --bench-epochs 3` (also `vae-jax bench ...`)."""
import sys

from vae_jax.cli import main

sys.exit(main(["bench", *sys.argv[1:]]))
