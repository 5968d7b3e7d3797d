"""vae-jax: the MNIST VAE of "PyTorch (11) Variational Autoencoder" (2018) in JAX, Flax and
Optax.

The lesson, in reading order: `config.py` (every hyper-parameter), `data.py` (MNIST on
the device), `model.py` (the VAE, the reparameterization), `losses.py` (the BCE, the
analytic KL, the loss), `train.py` (Adam, the compiled epoch, evaluation, fit). Built on
it: `extensions/` (the CVAE, Burda et al.'s model and schedule, IWAE and the likelihood,
beta and KL warm-up, binarization), `study/` (the gradient-flow study) and `app/` (the
command line, run directories, sweeps, the comparison with PyTorch).

Importing the package imports no JAX (the command line installs its Ctrl-C handler first):
`from vae_jax.model import VAE`.
"""

from vae_jax.config import Config

__all__ = ["Config"]
__version__ = "0.1.0"
