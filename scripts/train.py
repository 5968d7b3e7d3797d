"""Trains the blog's VAE: `python scripts/train.py --workdir runs/vae_2` (also `vae-jax train ...`)."""
import sys

from vae_jax.cli import main

sys.exit(main(["train", *sys.argv[1:]]))
