"""The measuring scripts: they must see the package's own calls and build its own maths.

scripts/train_phases.py wraps functions of the package by name; were the run to stop
calling one of them through its module (renamed, imported another way), its row would
silently read zero. Run here on the tiny fixture, its counts must be the run's own.
scripts/epoch_variants.py's forward passes must be the model's function, built otherwise.
"""

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import script_module

ROOT = Path(__file__).resolve().parents[1]


def _rows(out: str) -> dict:
  """The printed table: {phase: (calls, seconds)}."""
  rows = {}
  for line in out.splitlines():
    cells = [c.strip() for c in line.strip("|").split("|")]
    if len(cells) == 4 and cells[1].isdigit():
      rows[cells[0]] = (int(cells[1]), float(cells[2]))
  return rows


def test_train_phases_counts_the_runs_checkpoints_grids_and_epochs(tiny_data_dir, tmp_path,
                                                                  capsys):
  from vae_jax.app import run
  from vae_jax.config import Config
  phases = script_module("train_phases.py")
  argv = ["--workdir", str(tmp_path / "run"), "--data-dir", str(tiny_data_dir), "--epochs", "5",
          "--hidden-dim", "32", "--recon-every", "2", "--checkpoint-every", "2"]
  assert phases.main(argv) == 0
  rows = _rows(capsys.readouterr().out)
  assert rows["... of which: checkpoints"][0] == 3  # epochs 2, 4 and the last
  grids = run.grid_epochs(Config(epochs=5, recon_every=2))  # 1, 2, 4, 5
  assert rows["... of which: reconstruction grids"][0] == len(grids) == 4
  assert rows["the 5 epochs (metrics.jsonl's seconds)"][0] == 5
  assert rows["load MNIST onto the device"][0] == 1
  assert rows["the end: weights, loss arrays, figures"][0] == 1
  assert (tmp_path / "run" / "params.msgpack").exists()


@pytest.mark.parametrize("flag", ["--resume", "--overwrite"])
def test_train_phases_times_only_a_new_run(flag, tmp_path, capsys):
  with pytest.raises(SystemExit) as exit_:
    script_module("train_phases.py").parse_args(["--workdir", str(tmp_path), flag])
  assert exit_.value.code == 2 and "new run" in capsys.readouterr().err


def _forward_case(dtype):
  """The blog VAE's parameters, a batch of 16 images in [0, 1] and its eps, in `dtype`."""
  from vae_jax import Config
  from vae_jax.model import VAE
  config = Config()
  vae = VAE.from_config(config)
  rng = np.random.default_rng(0)
  x = rng.uniform(size=(16, 784)).astype(dtype)
  eps = rng.normal(size=(16, config.latent_dim)).astype(dtype)
  params = vae.init(jax.random.PRNGKey(0), jnp.asarray(x), jnp.asarray(eps))["params"]
  return vae, jax.tree.map(lambda p: jnp.asarray(p, dtype), params), x, eps


def test_epoch_variants_pure_forward_is_the_model_bit_for_bit():
  """`fwd:pure` is the control of the forward variants: in float32 its loss and gradients
  are the model's (`losses.batch_loss`) bit for bit, so any change a form makes is its own."""
  from vae_jax import losses
  variants = script_module("epoch_variants.py")
  vae, params, x, eps = _forward_case(np.float32)
  weight = jnp.ones(len(x))
  ref = jax.value_and_grad(losses.batch_loss, has_aux=True)(params, vae, x, eps, weight)
  got = jax.value_and_grad(variants.forward_loss("pure", "highest"), has_aux=True)(
      params, vae, x, eps, weight)
  jax.tree.map(np.testing.assert_array_equal, got, ref)


@pytest.mark.parametrize("form", ["fused-heads", "latent-reduce"])
def test_epoch_variants_forward_forms_are_the_same_function(form):
  """In float64 each form computes the model's loss and gradients: the forms only sum the
  same products in another order (at most 512 terms a sum), a relative difference of order
  512 * 2^-53 = 5.7e-14 times the sum's condition (sum |terms| / |sum|); rtol 1e-10 leaves a
  margin of 10^3 or more for that. A wrong kernel, bias or split misses by O(1)."""
  from vae_jax import losses
  variants = script_module("epoch_variants.py")
  with jax.enable_x64(True):
    vae, params, x, eps = _forward_case(np.float64)
    weight = jnp.ones(len(x))
    (ref_loss, ref_sums), ref_grads = jax.value_and_grad(losses.batch_loss, has_aux=True)(
        params, vae, x, eps, weight)
    (loss, sums), grads = jax.value_and_grad(variants.forward_loss(form, "highest"),
                                             has_aux=True)(params, vae, x, eps, weight)
    np.testing.assert_allclose(loss, ref_loss, rtol=1e-10)
    np.testing.assert_allclose(np.array(sums), np.array(ref_sums), rtol=1e-10)
    for g, r in zip(jax.tree.leaves(grads), jax.tree.leaves(ref_grads)):
      np.testing.assert_allclose(g, r, rtol=1e-10, atol=1e-10 * float(np.max(np.abs(r))))


@pytest.mark.parametrize("table, what", [("cvae", "no config.json, metrics.jsonl, params.msgpack"),
                                         ("beta", "no config.json, metrics.jsonl"),
                                         ("likelihood", "not a folder of JSON files")])
def test_a_report_of_a_missing_run_is_one_line_exit_2(table, what, tmp_path, capsys):
  (tmp_path / "empty").mkdir()
  for missing in (tmp_path / "nonexistent", tmp_path / "empty"):
    assert script_module("report.py").main([table, str(missing)]) == 2
    captured = capsys.readouterr()
    assert not captured.out and captured.err.count("\n") == 1, captured
    assert f"report.py: error: {missing}" in captured.err and what in captured.err


def test_the_reports_make_the_committed_tables():
  """results/likelihood.md's table is what the report makes of the JSON beside it."""
  table = script_module("report.py").table("likelihood", [ROOT / "results" / "likelihood"])
  assert table in (ROOT / "results" / "likelihood.md").read_text()
