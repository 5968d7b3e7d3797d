"""vae-jax: the MNIST VAE of "PyTorch (11) Variational Autoencoder" (2018) in JAX, Flax and
Optax."""

from vae_jax.config import Config
from vae_jax.losses import LossTerms, bernoulli_nll, kl_standard_normal, vae_loss
from vae_jax.model import VAE, VAEOutput, reparameterize

__all__ = ["Config", "LossTerms", "VAE", "VAEOutput", "bernoulli_nll", "kl_standard_normal",
           "reparameterize", "vae_loss"]
__version__ = "0.1.0"
