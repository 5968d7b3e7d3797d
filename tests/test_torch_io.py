"""The blog's state_dict layout without PyTorch: .npz export, import, evaluate, errors."""

import jax
import numpy as np
import pytest

from vae_jax import Config
from vae_jax.app import cli, weights
from vae_jax.model import VAE


def test_npz_round_trip_needs_no_torch(tmp_path):
  params = VAE.from_config(Config(latent_dim=5)).init_params(jax.random.PRNGKey(0))
  weights.export_state_dict(params, tmp_path / "vae.npz")
  state = weights.load_state_dict(tmp_path / "vae.npz")
  assert state["fc1.weight"].shape == (512, 784) and state["fc21.weight"].shape == (5, 512)
  back, config = weights.load_weights(tmp_path / "vae.npz")
  assert config.latent_dim == 5 and config.hidden_dim == 512
  jax.tree.map(np.testing.assert_array_equal, back, params)


def test_unexpected_key_and_wrong_shape_are_named():
  state = weights.state_dict_from_params(VAE.from_config(Config()).init_params(jax.random.PRNGKey(0)))
  with pytest.raises(ValueError, match=r"unexpected \['fc5.weight'\]"):
    weights.params_from_state_dict({**state, "fc5.weight": np.zeros(3)})
  with pytest.raises(ValueError, match=r"'fc3.bias' has shape \[511\], expected \[512\]"):
    weights.params_from_state_dict({**state, "fc3.bias": np.zeros(511)})


def test_cli_export_then_evaluate_reproduces_the_runs_test_loss(tmp_path, tiny_data_dir, capsys):
  run = tmp_path / "run"
  common = ["--data-dir", str(tiny_data_dir)]
  assert cli.main(["train", "--workdir", str(run), "--epochs", "1", "--no-progress", *common]) == 0
  capsys.readouterr()
  assert cli.main(["export", "--weights", str(run / "params.msgpack"),
                   "--out", str(tmp_path / "vae.npz")]) == 0
  assert cli.main(["evaluate", "--weights", str(tmp_path / "vae.npz"), *common]) == 0
  line = capsys.readouterr().out.strip().splitlines()[-1]
  test_loss = float(np.load(run / "test_loss_list.npy")[-1])
  assert f"test loss {test_loss:.4f}" in line
  # --binarize scores the binarized test set (exported weights carry no config.json).
  assert cli.main(["evaluate", "--weights", str(tmp_path / "vae.npz"), "--binarize", "dynamic",
                   *common]) == 0
  binarized = capsys.readouterr().out.strip().splitlines()[-1]
  assert "binarized once," in binarized and "its run" not in binarized  # no config.json
  assert float(binarized.split("test loss ")[1].split()[0]) != pytest.approx(test_loss, abs=1e-3)
  assert "grey" in line
  # A suffix in capitals is the same suffix.
  assert cli.main(["export", "--weights", str(run / "params.msgpack"),
                   "--out", str(tmp_path / "VAE.NPZ")]) == 0
  assert cli.main(["evaluate", "--weights", str(tmp_path / "VAE.NPZ"), *common]) == 0
  assert capsys.readouterr().out.strip().splitlines()[-1].split("): ")[1] == line.split("): ")[1]
  # The weights without their run's config.json: the same numbers, and it says so.
  alone = tmp_path / "alone" / "params.msgpack"
  alone.parent.mkdir()
  alone.write_bytes((run / "params.msgpack").read_bytes())
  assert cli.main(["evaluate", "--weights", str(alone), *common]) == 0
  said = capsys.readouterr().out.strip().splitlines()[-1]
  assert "(no config.json beside it: the blog's VAE by its shapes, z=2)" in said
  assert said.split("): ")[1] == line.split("): ")[1]
  # Exporting over an existing file is refused in one line.
  assert cli.main(["export", "--weights", str(run / "params.msgpack"),
                   "--out", str(tmp_path / "vae.npz")]) == 2
  assert "exists" in capsys.readouterr().err


def test_msgpack_sizes_come_from_its_arrays_and_must_agree_with_config_json(tmp_path):
  params = VAE.from_config(Config(latent_dim=5, hidden_dim=16)).init_params(jax.random.PRNGKey(0))
  weights.save_params(params, tmp_path / "params.msgpack")
  back, config = weights.load_weights(tmp_path / "params.msgpack")  # no config.json
  assert (config.latent_dim, config.hidden_dim) == (5, 16)
  jax.tree.map(np.testing.assert_array_equal, back, params)
  (tmp_path / "config.json").write_text(Config(latent_dim=2).to_json())
  with pytest.raises(ValueError, match=r"has shape \(16,\), the blog model of its config.json "
                                       r"needs \(512,\): they are not one run"):
    weights.load_weights(tmp_path / "params.msgpack")
  (tmp_path / "junk.msgpack").write_bytes(b"\x81\xa3abc\x01")  # a msgpack map, not parameters
  with pytest.raises(ValueError, match="does not hold the parameters of the blog model its "
                                       "config.json describes"):
    weights.load_weights(tmp_path / "junk.msgpack")
