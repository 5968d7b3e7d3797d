"""Matrix-product precision: one setting, carried by every product the programs compute.

On a GPU, JAX's default float32 product may round its inputs to ~10 bits (TF32-like);
`Config.matmul_precision` ("highest" by default: float32 as PyTorch computes it) is
set on the model's layers, so the forward and (through autodiff) backward products of
every program built from a config carry it. Checked on the lowered programs, so it
holds whatever the backend.
"""

import jax
import jax.numpy as jnp
import pytest

from vae_jax import Config, train
from vae_jax.model import VAE

N, B = 300, 64


def _dots(lowered) -> list[str]:
  return [line for line in lowered.as_text().splitlines() if "stablehlo.dot_general" in line]


def _programs(config):
  """The lowered epoch, evaluation and vmapped (stacked runs') epoch of `config`."""
  model, optimizer = VAE.from_config(config), train.make_optimizer(config)
  state = train.create_state(model, optimizer, jax.random.PRNGKey(0))
  images = jnp.zeros((N, 784), jnp.uint8)
  epoch = train.make_train_epoch(model, optimizer, num_examples=N, batch_size=B)
  stacked = jax.tree.map(lambda x: jnp.stack([x, x]), state)
  return {"epoch": jax.jit(epoch).lower(state, images, jax.random.PRNGKey(1)),
          "evaluate": jax.jit(train.make_evaluate(model)).lower(state.params, images),
          "stacked epoch": jax.jit(jax.vmap(epoch, in_axes=(0, None, 0))).lower(
              stacked, images, jax.random.split(jax.random.PRNGKey(1)))}


@pytest.mark.parametrize("precision", ["highest", "high", "default"])
def test_every_product_of_every_program_carries_the_chosen_precision(precision):
  for name, lowered in _programs(Config(hidden_dim=16, matmul_precision=precision)).items():
    dots = _dots(lowered)
    # 5 layers forward; backward, each layer's kernel gradient and (but fc1's) its
    # input's: 5 + 5 + 4 = 14 products in a training step, 5 in evaluation.
    assert len(dots) == (5 if name == "evaluate" else 14), (name, len(dots))
    for line in dots:
      if precision == "default":
        assert "precision" not in line or "precision = [DEFAULT, DEFAULT]" in line, line
      else:
        tag = precision.upper()
        assert f"precision = [{tag}, {tag}]" in line, (name, line)


def test_an_unknown_precision_is_refused():
  with pytest.raises(ValueError, match="`matmul_precision` must be one of"):
    Config(matmul_precision="float16")
