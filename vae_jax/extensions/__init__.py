"""What this project builds on the blog's VAE, each in a module of its own that reuses the
lesson (`vae_jax/config.py`, `data.py`, `model.py`, `losses.py`, `train.py`):

  cvae.py        the conditional VAE (`--model cvae`): the digit joins both networks' inputs
  burda.py       Burda et al.'s two-tanh-layer model and learning-rate schedule
  binarize.py    dynamic binarization of the training pixels, and the fixed binarized test set
  iwae.py        importance weights and the IWAE objective (`--objective iwae --k K`)
  beta.py        the KL's weight in training: beta and a linear warm-up
  likelihood.py  the importance-weighted test log-likelihood, the ELBO, the active units
  latent.py      the latent points the manifold and interpolation figures decode
  recipe.py      the lesson with whatever extensions a config names: model, Adam, programs

At its defaults a config names none, and `recipe.setup` is the lesson's `train.setup`.
"""
