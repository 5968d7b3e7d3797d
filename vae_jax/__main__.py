import sys

from vae_jax.app.cli import main

sys.exit(main())
