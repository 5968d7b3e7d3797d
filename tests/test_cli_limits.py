"""The limits (--train-limit, --test-limit) reach every command that trains or evaluates, and
the study's and the comparison's command lines run end to end on the tiny fixture (the slow
half of the command-line tests, in a file of its own so that two test workers share them)."""

import json
import math

import pytest

from vae_jax.app import cli


def test_limits_reach_bench_and_study_and_evaluate(tiny_data_dir, tmp_path, capsys):
  common = ["--data-dir", str(tiny_data_dir)]
  assert cli.main(["bench", "--bench-epochs", "1", "--no-torch", "--hidden-dim", "16",
                   "--train-limit", "100", "--test-limit", "40", *common]) == 0
  printed = capsys.readouterr().out
  assert "100 train + 40 test images" in printed
  assert "torch" not in printed.split("machine: ")[1].splitlines()[0]  # no torch row: not named
  out = tmp_path / "study"
  assert cli.main(["study", "--out", str(out), "--only", "gradient_flow", "--quick",
                   "--train-limit", "100", *common]) == 0
  assert json.loads((out / "gradient_flow.json").read_text())["batch"] == 100  # min(1024, N)
  run = tmp_path / "run"
  assert cli.main(["train", "--workdir", str(run), "--epochs", "1", "--hidden-dim", "16",
                   "--no-progress", "--train-limit", "64", *common]) == 0
  # A batch of more images than there are is one step of them all, and the run says so.
  assert ("--batch-size 128 is more than the --train-limit 64 images: an epoch is one step "
          "of them all") in capsys.readouterr().err
  assert cli.main(["evaluate", "--weights", str(run / "params.msgpack"), "--test-limit", "30",
                   *common]) == 0
  assert "over 30 test images" in capsys.readouterr().out


def test_study_experiments_run_under_small_limits_and_redraw(tiny_data_dir, tmp_path, capsys):
  # The other three run in tests/test_study.py, on as few images.
  names = ["scalar_eps", "parameterisation", "variance"]
  out = tmp_path / "study"
  common = ["--out", str(out), "--data-dir", str(tiny_data_dir)]
  assert cli.main(["study", "--quick", "--only", *names, "--train-limit", "100",
                   "--test-limit", "50", *common]) == 0
  for name in names:
    assert (out / f"{name}.png").stat().st_size > 10_000
    (out / f"{name}.png").unlink()
  # Each finding's direction, even this small (synthetic images, a step or two).
  result = {name: json.loads((out / f"{name}.json").read_text()) for name in names}
  assert all(result[name]["setting"] == {"quick": True, "train_images": 100, "test_images": 50}
             for name in names)  # a smoke run says so in its numbers
  for z, runs in ((k, v) for k, v in result["scalar_eps"].items()
                  if k not in ("seconds", "setting")):
    # One shared eps puts z on a line: latent dimensions perfectly correlated, and the
    # smoothed KL grows without bound as the smoothing shrinks.
    assert runs["scalar_eps"]["posterior_corr_abs_offdiag_mean"] > 0.999, z
    assert runs["reparam"]["posterior_corr_abs_offdiag_mean"] < 0.5, z
    assert runs["scalar_eps"]["true_kl"] == "inf"
    kl = list(runs["scalar_eps"]["kl_with_isotropic_noise_delta"].values())  # delta falling
    assert kl == sorted(kl) and kl[-1] > kl[0] + 1, (z, kl)
  param = result["parameterisation"]
  assert param["summary"]["logvar"]["nan_rate"] == 0  # every logvar run stays finite
  assert all(math.isfinite(v) for runs in param["runs"]["logvar"].values() for v in runs)
  for stage in ("init", "trained"):
    # Score function > with a baseline > pathwise at every n, on the VAE's outputs
    # and on its weights.
    for curves in (result["variance"]["vae_output"][stage],
                   result["variance"]["vae_weights"][stage]):
      for sf, base, path in zip(curves["score function"], curves["score function + baseline"],
                                curves["pathwise"]):
        assert sf > base > path, (stage, sf, base, path)
  assert cli.main(["study", "--redraw", "--out", str(out)]) == 0
  assert sorted(p.stem for p in out.glob("*.png")) == sorted(names)


def test_compare_honours_the_limits_and_redraws(tiny_data_dir, tmp_path, capsys):
  out = tmp_path / "cmp"
  argv = ["compare", "--out", str(out), "--seeds", "1", "--epochs", "2", "--sweep", "2", "3",
          "--sweep-seeds", "2", "--sweep-epochs", "1", "--strategy", "sequential",
          "--bench-epochs", "1", "--data-dir", str(tiny_data_dir), "--train-limit", "128"]
  (out).mkdir()
  (out / "blog_comparison.md").write_text("my notes")  # a user's: no comparison's JSON beside it
  assert cli.main(argv) == 2
  err = capsys.readouterr().err
  assert err.count("\n") == 1 and "holds blog_comparison.md but no blog_comparison.json" in err
  assert (out / "blog_comparison.md").read_text() == "my notes" and not (out / "runs").exists()
  (out / "blog_comparison.md").unlink()
  assert cli.main(argv) == 0
  report = json.loads((out / "blog_comparison.json").read_text())
  assert "128 train / 100 test images" in report["setting"]
  assert (report["runs"], report["runs_trained_before"]) == (6, 0)
  assert "Whole run: " in (out / "blog_comparison.md").read_text()
  assert len(report["main"]["2"]["histories"]) == 1 and set(report["sweep"]) == {"2", "3"}
  assert all(report["sweep"][z]["seeds"] == [1, 2] for z in ("2", "3"))  # more than the main's
  assert report["command"].startswith(f"vae-jax compare --out {out} --seeds 1 --epochs 2")
  (out / "blog_comparison.md").unlink()
  assert cli.main(["compare", "--out", str(out), "--redraw"]) == 0
  assert "128 train / 100 test images" in (out / "blog_comparison.md").read_text()
  # A finished comparison is not replaced without --overwrite: refused in one line, before
  # any training, every file as it was.
  files = {p: p.read_bytes() for p in out.glob("blog_comparison*")}
  capsys.readouterr()
  assert cli.main(argv) == 2
  err = capsys.readouterr().err
  assert "holds an earlier comparison's results: pass --overwrite" in err, err
  assert "finished already" not in err and {p: p.read_bytes() for p in files} == files
  with pytest.raises(SystemExit):  # --redraw replaces nothing it could refuse to
    cli.main(["compare", "--out", str(out), "--redraw", "--overwrite"])
  assert "takes no --overwrite" in capsys.readouterr().err
  # A run there of another setting is refused, naming it and compare's own flag.
  assert cli.main([*argv[:6], "3", *argv[7:], "--overwrite"]) == 2  # --epochs 3
  err = capsys.readouterr().err
  assert "holds a run with --epochs 2, not this member's 3" in err and "another --out" in err
  assert "--workdir" not in err and {p: p.read_bytes() for p in files} == files
  # The runs are sweeps in OUT/runs: a second comparison trains none of them again.
  assert cli.main([*argv, "--overwrite"]) == 0
  err = capsys.readouterr().err
  assert "2 members, 2 finished already" in err and "4 members, 4 finished already" in err
  again = json.loads((out / "blog_comparison.json").read_text())
  assert again["main"]["2"]["histories"] == report["main"]["2"]["histories"]
  # Its Markdown says its minutes are this command's, not the training's it reused.
  assert (again["runs"], again["runs_trained_before"]) == (6, 6)
  assert "; 6 of its 6 runs were trained by an earlier one" in (out / "blog_comparison.md"
                                                                ).read_text()


def test_compare_interrupted_says_what_is_kept_and_how_to_go_on(tiny_data_dir, tmp_path,
                                                                monkeypatch, capsys):
  from vae_jax.app import sweep

  def ctrl_c(*args, **kwargs):
    raise KeyboardInterrupt
  monkeypatch.setattr(sweep, "run", ctrl_c)
  out = tmp_path / "cmp"
  assert cli.main(["compare", "--out", str(out), "--seeds", "1", "--epochs", "1", "--sweep",
                   "2", "--sweep-seeds", "1", "--sweep-epochs", "1", "--data-dir",
                   str(tiny_data_dir)]) == 130
  err = capsys.readouterr().err.strip().splitlines()[-1]
  assert err == (f"vae-jax compare: interrupted: the runs finished so far are kept in {out}/runs "
                 f"(a run is written whole or not at all); the same command trains the rest, a "
                 f"run in training from its last checkpoint, and writes the comparison"), err
