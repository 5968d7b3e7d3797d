"""Mutation check: small bugs put into a copy of the package; the tests must fail on each.

  python scripts/mutation_check.py                 # every mutant (about 30 min on 2 cores)
  python scripts/mutation_check.py --only kl_half  # one, by name
  python scripts/mutation_check.py --list          # the mutants and what each breaks

A test suite earns trust by failing. Each mutant below is one plausible bug in the
lesson's code (the model, the losses, the training loop, the data scaling, the
optimiser and its set-up). For each, the repository is copied to a temporary
directory, the one edit is made there, and the tests that cover that code run
against the copy (`pytest -x`: the first failure kills the mutant). A mutant that
no test kills "survives"; each survivor is either killed by a new test or shown to
be equivalent (the same numbers for every input), and the list says which.
Prints one line per mutant and the score: killed / (all - equivalent).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import NamedTuple

ROOT = Path(__file__).resolve().parent.parent
# The tests that cover the mutated code, quick and strict ones first (-x stops at the
# first failure).
TESTS = ["tests/test_losses.py", "tests/test_model.py", "tests/test_parity.py",
         "tests/test_train.py", "tests/test_bench.py", "tests/test_multi.py",
         "tests/test_learning.py"]


RUN_TESTS = ("tests/test_resume.py", "tests/test_bad_input.py")  # run.py, checkpoint.py
LIKELIHOOD_TESTS = ("tests/test_likelihood.py",)  # likelihood.py, the IWAE terms, binarizing
LATENT_TESTS = ("tests/test_beta.py", "tests/test_latent.py")  # --beta, warm-up, latent figures
CVAE_TESTS = ("tests/test_cvae.py",)  # --model cvae
SWEEP_TESTS = ("tests/test_sweep.py",)  # the sweep subcommand: grids, devices, processes
DATA_TESTS = ("tests/test_data.py",)  # the MNIST cache and its sources

TIMEOUT_S = 1800  # per mutant: the unmutated copy takes about 190 s on 2 cores


class Mutant(NamedTuple):
  name: str
  path: str         # file in the repository
  old: str          # text that occurs exactly once in it
  new: str
  bug: str          # what it breaks, in words
  equivalent: str = ""  # why it cannot change any number, if it cannot
  tests: tuple = ()     # the tests that cover it, when not TESTS


MUTANTS = [
    # The model.
    Mutant("init_bound_fan", "vae_jax/model.py", "bound = 1.0 / jnp.sqrt(fan_in)",
           "bound = 1.0 / fan_in", "init bound 1/fan_in instead of 1/sqrt(fan_in)"),
    Mutant("init_one_sided", "vae_jax/model.py", "uniform(key, shape, dtype, -bound, bound)",
           "uniform(key, shape, dtype, 0.0, bound)", "init U(0, b) instead of U(-b, b)"),
    Mutant("bias_zero", "vae_jax/model.py", "kernel_init=i, bias_init=i,", "kernel_init=i,",
           "biases start at zero (Flax's default), not PyTorch's U(-b, b)"),
    Mutant("fc3_fan_in", "vae_jax/model.py",
           'self._dense(self.hidden_dim, self.latent_dim + c, "fc3")',
           'self._dense(self.hidden_dim, self.hidden_dim + c, "fc3")',
           "fc3's init uses fan-in 512"),
    Mutant("fc4_fan_in", "vae_jax/model.py", 'self._dense(self.data_dim, self.hidden_dim, "fc4")',
           'self._dense(self.data_dim, self.data_dim, "fc4")', "fc4's init uses fan-in 784"),
    Mutant("reparam_std", "vae_jax/model.py", "mu + jnp.exp(0.5 * logvar) * eps",
           "mu + jnp.exp(logvar) * eps", "z = mu + sigma^2 eps (no square root)"),
    Mutant("sigma_through_variance", "vae_jax/model.py", "return mu + jnp.exp(0.5 * logvar) * eps",
           "return mu + jnp.sqrt(jnp.exp(logvar)) * eps",
           "sigma as sqrt(exp(logvar)): inf or a NaN gradient at extreme logvar"),
    Mutant("reparam_sign", "vae_jax/model.py", "mu + jnp.exp(0.5 * logvar) * eps",
           "mu - jnp.exp(0.5 * logvar) * eps", "z = mu - sigma eps (same law, other eps)"),
    Mutant("encoder_no_relu", "vae_jax/model.py", "h = nn.relu(self.fc1(self._join(x, y)))",
           "h = self.fc1(self._join(x, y))", "encoder without its ReLU"),
    Mutant("decoder_no_relu", "vae_jax/model.py", "h = nn.relu(self.fc3(self._join(z, y)))",
           "h = self.fc3(self._join(z, y))", "decoder without its ReLU"),
    Mutant("heads_swapped", "vae_jax/model.py", "return self.fc21(h), self.fc22(h)",
           "return self.fc22(h), self.fc21(h)", "fc21 read as logvar, fc22 as mu"),
    Mutant("eval_samples", "vae_jax/model.py", "z = mu if eps is None else",
           "z = mu + jnp.exp(0.5 * logvar) if eps is None else",
           "eval mode decodes mu + sigma, not mu"),
    # The losses.
    Mutant("kl_half", "vae_jax/losses.py", "return -0.5 * jnp.sum(1.0 + logvar",
           "return -1.0 * jnp.sum(1.0 + logvar", "KL without its 1/2"),
    Mutant("kl_mu_square", "vae_jax/losses.py",
           "jnp.sum(1.0 + logvar - mu**2 - jnp.exp(logvar), axis=-1)",
           "jnp.sum(1.0 + logvar - mu - jnp.exp(logvar), axis=-1)", "KL with mu instead of mu^2"),
    Mutant("kl_exp", "vae_jax/losses.py", "- jnp.exp(logvar), axis=-1)",
           "- jnp.exp(0.5 * logvar), axis=-1)", "KL with sigma instead of sigma^2"),
    Mutant("kl_constant", "vae_jax/losses.py", "-0.5 * jnp.sum(1.0 + logvar",
           "-0.5 * jnp.sum(0.0 + logvar", "KL without its constant 1 (gradients unchanged)"),
    Mutant("kl_mean", "vae_jax/losses.py", "- jnp.exp(logvar), axis=-1)",
           "- jnp.exp(logvar), axis=-1) / mu.shape[-1]", "KL averaged over z, not summed"),
    Mutant("bce_mean", "vae_jax/losses.py", "sigmoid_binary_cross_entropy(logits, x).sum(axis=-1)",
           "sigmoid_binary_cross_entropy(logits, x).mean(axis=-1)", "BCE averaged over pixels"),
    Mutant("bce_swapped", "vae_jax/losses.py", "sigmoid_binary_cross_entropy(logits, x)",
           "sigmoid_binary_cross_entropy(x, logits)", "BCE with logits and targets swapped"),
    Mutant("elbo_sign", "vae_jax/losses.py", "LossTerms(recon, kl, recon + kl)",
           "LossTerms(recon, kl, recon - kl)", "loss = recon - KL"),
    Mutant("padding_weight", "vae_jax/losses.py", "jnp.sum(weight * t)", "jnp.sum(t)",
           "padding rows counted"),
    Mutant("iwae_padding_weight", "vae_jax/losses.py", "jnp.sum(weight * -iwae_bound(lw.log_w))",
           "jnp.sum(-iwae_bound(lw.log_w))", "the IWAE objective counts the padding rows"),
    Mutant("batch_mean", "vae_jax/losses.py", "jnp.sum(weight * t)", "jnp.mean(weight * t)",
           "batch loss averaged, not summed (Adam sees a scaled gradient)"),
    # The data and the training loop.
    Mutant("pixels_256", "vae_jax/data.py", "astype(jnp.float32) / 255.0",
           "astype(jnp.float32) / 256.0", "pixels / 256"),
    Mutant("no_shuffle", "vae_jax/train.py", "perm = jax.random.permutation(perm_key, num_examples)",
           "perm = jnp.arange(num_examples)", "the epoch never shuffles"),
    Mutant("one_eps_key", "vae_jax/train.py", "jax.random.split(eps_key, steps))",
           "jnp.stack([eps_key] * steps))", "every step draws the same eps"),
    Mutant("padding_mask", "vae_jax/train.py", "(jnp.arange(padded) < num_examples)",
           "(jnp.arange(padded) <= num_examples)", "one padding row gets weight 1"),
    Mutant("same_epoch_key", "vae_jax/train.py", "return jax.random.fold_in(train_key, epoch)",
           "return jax.random.fold_in(train_key, 0)", "every epoch the same shuffle and eps"),
    Mutant("shared_keys", "vae_jax/train.py",
           "return RunKeys(*jax.random.split(jax.random.PRNGKey(seed), 3))",
           "return RunKeys(*[jax.random.PRNGKey(seed)] * 3)", "init, train and sample share a key"),
    Mutant("seed_ignored", "vae_jax/train.py", "params = _init_params(model, key)",
           "params = _init_params(model, jax.random.PRNGKey(0))",
           "the seed does not reach the init"),
    Mutant("eval_noise", "vae_jax/train.py", "eps = jnp.zeros((len(x), model.latent_dim))",
           "eps = jnp.ones((len(x), model.latent_dim))", "evaluation with z = mu + sigma"),
    Mutant("ascent", "vae_jax/train.py", "optax.apply_updates(state.params, updates)",
           "jax.tree.map(jnp.subtract, state.params, updates)", "the step climbs the loss"),
    Mutant("row_divisor", "vae_jax/train.py", "float(v) / n_train for k, v in train_sums",
           "float(v) / n_test for k, v in train_sums", "train loss per image uses the test size"),
    # The optimiser and the set-up.
    Mutant("adam_b2", "vae_jax/train.py", "optax.inject_hyperparams(optax.adam)(learning_rate=rate, eps=config.adam_eps)",
           "optax.inject_hyperparams(optax.adam)(learning_rate=rate, eps=config.adam_eps, b2=0.99)",
           "Adam's beta2 0.99"),
    Mutant("adam_b1", "vae_jax/train.py", "optax.inject_hyperparams(optax.adam)(learning_rate=rate, eps=config.adam_eps)",
           "optax.inject_hyperparams(optax.adam)(learning_rate=rate, eps=config.adam_eps, b1=0.8)",
           "Adam's beta1 0.8"),
    Mutant("adam_eps", "vae_jax/config.py", "adam_eps: float = 1e-8", "adam_eps: float = 1e-6",
           "Adam's eps 1e-6"),
    Mutant("adamw", "vae_jax/train.py", "optax.inject_hyperparams(optax.adam)(learning_rate=rate, eps=config.adam_eps)",
           "optax.inject_hyperparams(optax.adamw)(learning_rate=rate, eps=config.adam_eps)",
           "AdamW (weight decay 1e-4), not Adam"),
    Mutant("lr_default", "vae_jax/config.py", "learning_rate: float = 1e-3",
           "learning_rate: float = 2e-3", "default learning rate 2e-3"),
    Mutant("batch_default", "vae_jax/config.py", "batch_size: int = 128", "batch_size: int = 100",
           "default batch size 100"),
    # A run that survives (checkpoints, resume, Ctrl-C, the NaN guard, bad input).
    Mutant("resume_from_1", "vae_jax/run.py", "first=start + 1)", "first=1)",
           "a resumed run retrains from epoch 1 on the restored state", tests=RUN_TESTS),
    Mutant("resume_fresh_adam", "vae_jax/run.py",
           "state, history, start = jax.device_put(ckpt.state), ckpt.history, ckpt.epoch",
           "state, history, start = jax.device_put(ckpt.state._replace(opt_state="
           "run.state.opt_state)), ckpt.history, ckpt.epoch",
           "a resumed run restarts Adam's moments and step count", tests=RUN_TESTS),
    Mutant("no_nan_guard", "vae_jax/run.py",
           'bad = first_non_finite(row) or (None if finite else "a parameter")', "bad = None",
           "non-finite losses and parameters go unnoticed", tests=RUN_TESTS),
    Mutant("checkpoint_not_atomic", "vae_jax/checkpoint.py",
           'tmp = path.with_name(f".{path.name}.tmp")', "tmp = path",
           "files written in place, not renamed into place (a crash mid-write leaves half a "
           "checkpoint)", tests=RUN_TESTS),
    Mutant("ctrl_c_ignored", "vae_jax/run.py", "          break  # dispatch nothing more",
           "          pass  # dispatch nothing more", "Ctrl-C does not stop the run",
           tests=RUN_TESTS),
    Mutant("keep_all_checkpoints", "vae_jax/checkpoint.py", "checkpoints(run_dir)[:-keep]",
           "checkpoints(run_dir)[:-keep - 1]", "three checkpoints kept, not two",
           tests=RUN_TESTS),
    Mutant("overwrite_in_place", "vae_jax/run.py",
           'final if status.state == "empty" else staging_dir(final)', "final", "--overwrite writes over the old run at once",
           tests=RUN_TESTS),
    Mutant("lr_inf_accepted", "vae_jax/config.py", "or not math.isfinite(self.learning_rate)",
           "", "a learning rate of inf is accepted", tests=RUN_TESTS),
    Mutant("checkpoint_clock_per_epoch", "vae_jax/run.py",
           "else now - saved_at >= checkpoint_seconds)",
           'else row["seconds"] >= checkpoint_seconds)',
           "the checkpoint clock reads the epoch's own seconds, not those since the last save "
           "(short epochs never checkpoint)", tests=RUN_TESTS),
    Mutant("checkpoint_clock_not_reset", "vae_jax/run.py", "saved, saved_at = epoch, now",
           "saved = epoch", "the checkpoint clock never restarts: every epoch after the first "
           "second is checkpointed", tests=RUN_TESTS),
    Mutant("checkpoint_clock_after_the_save", "vae_jax/run.py", "saved, saved_at = epoch, now",
           "saved, saved_at = epoch, _clock()", "the checkpoint clock restarts after the save, "
           "so checkpoints come S plus the save's time apart", tests=RUN_TESTS),
    Mutant("divergence_under_overwrite_says_overwrite", "vae_jax/run.py",
           "if out == plan.final else", "if True else", "a run that diverges under --overwrite "
           "says to start again with --overwrite, which its own WORKDIR.new refuses",
           tests=RUN_TESTS),
    Mutant("divergence_keeps_an_older_checkpoint", "vae_jax/run.py",
           "if last_read is not None and last_read[0] != saved:",
           "if False:", "a run that diverges keeps its last checkpoint, not the epoch before "
           "the bad one", tests=RUN_TESTS),
    # The importance-weighted estimator, the IWAE objective, binarized MNIST, Burda's recipe.
    Mutant("elbo_se_per_sample", "vae_jax/likelihood.py",
           'log_px_z.var(-1, ddof=1) / k if k > 1', 'log_px_z.var(-1, ddof=1) if k > 1',
           "the ELBO's s.e. is one sample's, not the mean of k samples'",
           tests=LIKELIHOOD_TESTS),
    Mutant("log_q_no_logvar", "vae_jax/losses.py", "LOG_2PI + logvar[:, None, :], axis=-1)",
           "LOG_2PI, axis=-1)", "log q(z|x) without its -1/2 log sigma^2 term",
           tests=LIKELIHOOD_TESTS),
    Mutant("log_q_of_z", "vae_jax/losses.py", "jnp.sum(eps**2 + LOG_2PI", "jnp.sum(z**2 + LOG_2PI",
           "log q(z|x) evaluated as if q were the prior", tests=LIKELIHOOD_TESTS),
    Mutant("iwae_no_log_k", "vae_jax/losses.py",
           "jax.nn.logsumexp(log_w, axis=-1) - jnp.log(log_w.shape[-1])",
           "jax.nn.logsumexp(log_w, axis=-1)", "L_k = log sum w, not log mean w",
           tests=LIKELIHOOD_TESTS),
    Mutant("iwae_mean_log", "vae_jax/losses.py",
           "jax.nn.logsumexp(log_w, axis=-1) - jnp.log(log_w.shape[-1])",
           "log_w.mean(axis=-1)", "L_k = mean log w (the k-sample ELBO), not log mean w",
           tests=LIKELIHOOD_TESTS),
    Mutant("groups_ignored", "vae_jax/likelihood.py",
           "log_w[:, :(k // j) * j].reshape(c, k // j, j)", "log_w[:, None, :j]",
           "L_j from the first group of j samples only (unbiased, noisier)",
           tests=LIKELIHOOD_TESTS),
    Mutant("elbo_no_kl", "vae_jax/likelihood.py",
           'out["elbo"] = log_px_z.mean(-1) - losses.kl_standard_normal(mu, logvar)',
           'out["elbo"] = log_px_z.mean(-1) + 0 * losses.kl_standard_normal(mu, logvar)',
           "the ELBO without its KL", tests=LIKELIHOOD_TESTS),
    Mutant("active_threshold", "vae_jax/likelihood.py", "ACTIVE_THRESHOLD = 0.01",
           "ACTIVE_THRESHOLD = 0.001", "active units counted above 0.001", tests=LIKELIHOOD_TESTS),
    Mutant("binarize_same_key", "vae_jax/train.py",
           "jax.random.split(bin_key[0], steps) if binarize else None",
           "jnp.stack([bin_key[0]] * steps) if binarize else None",
           "every step binarizes with the same key", tests=LIKELIHOOD_TESTS),
    Mutant("binarize_threshold", "vae_jax/train.py",
           "return jax.random.bernoulli(key, x).astype(x.dtype)",
           "return (x > 0.5).astype(x.dtype)", "fixed binarization at 0.5, not Bernoulli",
           tests=LIKELIHOOD_TESTS),
    Mutant("test_binarize_rate", "vae_jax/data.py", "np.where(u < images / 255.0, 255, 0)",
           "np.where(u < images / 256.0, 255, 0)", "test pixels on with probability k / 256",
           tests=LIKELIHOOD_TESTS),
    Mutant("burda_stage_rate", "vae_jax/train.py", "base * 10.0 ** (-stage / 7.0)",
           "base * 10.0 ** (-stage / 8.0)", "Burda's rates 10^(-i/8)", tests=LIKELIHOOD_TESTS),
    Mutant("burda_stage_length", "vae_jax/train.py",
           "starts = jnp.array([(3**i - 1) // 2 for i in range(1, BURDA_STAGES)])",
           "starts = jnp.array([3**i for i in range(1, BURDA_STAGES)])",
           "Burda's stages start one epoch late", tests=LIKELIHOOD_TESTS),
    Mutant("loglik_flipped", "vae_jax/losses.py", "jnp.sum(x * logits - jax.nn.softplus(logits)",
           "jnp.sum(x * logits - jax.nn.softplus(-logits)", "log p(x|z) with softplus(-l)",
           tests=LIKELIHOOD_TESTS),
    Mutant("iwae_objective_ignored", "vae_jax/losses.py",
           'return iwae_batch_loss if config.objective == "iwae" else batch_loss',
           "return batch_loss", "--objective iwae trains the ELBO", tests=LIKELIHOOD_TESTS),
    Mutant("schedule_ignored", "vae_jax/train.py", 'if config.schedule == "burda":', "if False:",
           "--schedule burda trains at a constant rate", tests=LIKELIHOOD_TESTS),
    Mutant("burda_tanh", "vae_jax/model.py", "return self.fc6(jnp.tanh(self.fc5(jnp.tanh(",
           "return self.fc6(jax.nn.relu(self.fc5(jnp.tanh(", "Burda's decoder with a ReLU",
           tests=LIKELIHOOD_TESTS),
    # The KL's weight and the latent figures.
    Mutant("kl_weight_ignored", "vae_jax/losses.py",
           "return jnp.sum(weight * (terms.recon + kl_weight * terms.kl)), sums",
           "return jnp.sum(weight * (terms.recon + terms.kl)), sums",
           "--beta and the warm-up change nothing", tests=LATENT_TESTS),
    Mutant("warmup_one_epoch_early", "vae_jax/train.py",
           "beta * jnp.minimum(1.0, (count // steps_per_epoch) / n)",
           "beta * jnp.minimum(1.0, (count // steps_per_epoch + 1) / n)",
           "the warm-up starts at beta / N, not 0", tests=LATENT_TESTS),
    Mutant("warmup_steps_of_mnist", "vae_jax/train.py", "**epoch_options(config, loss_fn, n_train))",
           "**epoch_options(config, loss_fn))",
           "the warm-up counts MNIST's steps per epoch, not the run's data's", tests=LATENT_TESTS),
    Mutant("schedule_one_step_epochs", "vae_jax/train.py",
           "optimizer = make_optimizer(config, steps_per_epoch(config, n_train))",
           "optimizer = make_optimizer(config)",
           "Burda's schedule counts every Adam step as an epoch", tests=LATENT_TESTS),
    Mutant("active_units_flipped", "vae_jax/run.py",
           "active_units=int((mu_var > ACTIVE_THRESHOLD).sum())",
           "active_units=int((mu_var < ACTIVE_THRESHOLD).sum())",
           "a run counts the inactive units as active", tests=LATENT_TESTS),
    Mutant("manifold_grid_ends", "vae_jax/latent.py", "NormalDist().inv_cdf((i + 0.5) / n)",
           "NormalDist().inv_cdf((i + 1) / (n + 1))", "the grid's quantiles at i / (n + 1)",
           tests=LATENT_TESTS),
    Mutant("manifold_upside_down", "vae_jax/latent.py", "np.meshgrid(values, values[::-1])",
           "np.meshgrid(values, values)", "the manifold's top row at the smallest z_2",
           tests=LATENT_TESTS),
    Mutant("manifold_not_principal", "vae_jax/latent.py",
           "return np.pad(vt[:2], ((0, 2 - len(vt[:2])), (0, 0)))",
           "return np.eye(2, latent)", "z > 2: the first two coordinates, not principal axes",
           tests=LATENT_TESTS),
    # The conditional VAE.
    Mutant("cvae_decoder_unconditioned", "vae_jax/model.py",
           "h = nn.relu(self.fc3(self._join(z, y)))",
           "h = nn.relu(self.fc3(self._join(z, None if y is None else 0 * y)))",
           "the CVAE's decoder is always told digit 0", tests=CVAE_TESTS),
    Mutant("cvae_labels_misaligned", "vae_jax/train.py", 'extra["y"] = labels[idx]',
           'extra["y"] = labels[:len(idx)]', "each step trains on the first B labels, not its "
           "images'", tests=CVAE_TESTS),
    Mutant("cvae_one_hot_off_by_one", "vae_jax/model.py",
           "jax.nn.one_hot(y, self.condition_dim, dtype=a.dtype)",
           "jax.nn.one_hot(y + 1, self.condition_dim, dtype=a.dtype)",
           "the label's one-hot shifted by one (digit 9: all zeros)", tests=CVAE_TESTS),
    Mutant("cvae_digits_transposed", "vae_jax/run.py", "y = jnp.repeat(jnp.arange(10), 10)",
           "y = jnp.tile(jnp.arange(10), 10)", "digits.png: each row all ten digits, not one",
           tests=CVAE_TESTS),
    # The sweep.
    Mutant("sweep_padding_first", "vae_jax/experiments/multi.py",
           "return list(members) + [members[-1]] * (-len(members) % mesh.size)",
           "return [members[-1]] * (-len(members) % mesh.size) + list(members)",
           "the padding goes first: member i reads another member's results", tests=SWEEP_TESTS),
    Mutant("sweep_not_sharded", "vae_jax/experiments/multi.py",
           'shard = NamedSharding(mesh, P("members"))', "shard = NamedSharding(mesh, P())",
           "every device trains every member (replicated, not sharded)", tests=SWEEP_TESTS),
    Mutant("sweep_shares_overlap", "vae_jax/experiments/sweep.py",
           "if i % processes == process]", "if i % processes == 0]",
           "every process trains process 0's share", tests=SWEEP_TESTS),
    Mutant("sweep_retrains_all", "vae_jax/experiments/sweep.py",
           "todo = [m for m in members if not _finished(workdir / m.name, m.config)]",
           "todo = [m for m in members if not _finished(workdir / m.name, m.config) or True]",
           "a rerun trains the finished members again", tests=SWEEP_TESTS),
    Mutant("sweep_std_ddof0", "vae_jax/experiments/sweep.py",
           '"std": float(v.std(ddof=1)) if len(v) > 1 else 0.0,\n                    "min"',
           '"std": float(v.std()) if len(v) > 1 else 0.0,\n                    "min"',
           "the spread over seeds is the population std, not the sample's", tests=SWEEP_TESTS),
    Mutant("sweep_seed_ignored", "vae_jax/experiments/sweep.py",
           "[(m.config.seed, m.config.learning_rate) for m in part]",
           "[(part[0].config.seed, m.config.learning_rate) for m in part]",
           "every member of a group trains with the first one's seed", tests=SWEEP_TESTS),
    Mutant("sweep_resume_repeats_an_epoch", "vae_jax/experiments/multi.py",
           "go_on.epoch + 1, checkpoint_member if on_progress else None)",
           "max(go_on.epoch, 1), checkpoint_member if on_progress else None)",
           "a member resumed after epoch k trains epoch k again", tests=SWEEP_TESTS),
    Mutant("sweep_stack_resumes_at_epoch_1", "vae_jax/experiments/multi.py",
           'start = resumed[0].epoch if strategy == "vmap" and resumed else 0', "start = 0",
           "a stack resumed from its checkpoints counts its epochs from 1 again",
           tests=SWEEP_TESTS),
    Mutant("sweep_resume_not_aligned", "vae_jax/experiments/sweep.py",
           "epoch = max(shared) if shared else max(kept)", "epoch = max(kept)", "a stack stopped between its members' checkpoints resumes them from "
           "different epochs", tests=SWEEP_TESTS),
    Mutant("sweep_member_checkpoint_after_figures", "vae_jax/experiments/sweep.py",
           "  checkpoint.save_checkpoint(out, config.epochs, state, history, config)\n"
           "  checkpoint.atomic_write_bytes(out / \"config.json\"",
           "  checkpoint.atomic_write_bytes(out / \"config.json\"",
           "a finished member's checkpoint is not written first: a kill while its figures "
           "are drawn costs its training", tests=SWEEP_TESTS),
    Mutant("sweep_among_users_files", "vae_jax/experiments/sweep.py",
           "  other = others_files(workdir)\n  if other:", "  other = others_files(workdir)\n  if False:",
           "a sweep writes into a folder of a user's files, or a single run's", tests=SWEEP_TESTS),
    Mutant("sweep_nan_member_written", "vae_jax/experiments/sweep.py",
           "    bad = divergence(rows, state.params)\n    if bad is not None:",
           "    bad = divergence(rows, state.params)\n    if False:",
           "a member whose loss went NaN is written as finished, and summarised",
           tests=SWEEP_TESTS),
    Mutant("sweep_other_setting_unchecked", "vae_jax/experiments/sweep.py",
           "    _check_in_training(workdir / f\"{m.name}.new\", m.config)\n", "    pass\n",
           "a member in training of another setting is found only when its group's turn comes, "
           "after the groups before it have trained", tests=SWEEP_TESTS),
    Mutant("sweep_progress_not_saved", "vae_jax/experiments/sweep.py",
           "    save_progress(workdir, part[i], progress)\n",
           "    pass\n", "a member in training is never checkpointed", tests=SWEEP_TESTS),
    Mutant("sweep_save_clock_runs_ahead", "vae_jax/experiments/multi.py",
           "      jax.block_until_ready(before[1])\n", "",
           "the save clock reads dispatch, which runs ahead of the device, so a sweep's group "
           "in training is never checkpointed", tests=("tests/test_multi.py",)),
    Mutant("sweep_resumed_rows_retimed", "vae_jax/experiments/sweep.py",
           'row = {**row, "seconds": row.get("seconds", seconds)}',
           'row = {**row, "seconds": seconds}',
           "a continued member's epochs of an earlier call get this call's seconds per epoch",
           tests=SWEEP_TESTS),
    Mutant("ctrl_c_dropped_forgotten", "vae_jax/interrupt.py",
           "    if unraisable.exc_type is not None and issubclass(unraisable.exc_type, "
           "KeyboardInterrupt):", "    if False:",
           "a Ctrl-C that JAX's gc callback drops is dropped: the command trains on",
           tests=("tests/test_interrupt.py",)),
    Mutant("ctrl_c_import_as_missing", "vae_jax/interrupt.py",
           "  if from_ctrl_c(error):\n    raise KeyboardInterrupt from error",
           "  if False:\n    raise KeyboardInterrupt from error",
           "an import that Ctrl-C stopped reads as a package not installed: the command goes on "
           "without it", tests=("tests/test_interrupt.py",)),
    Mutant("sweep_saved_rows_total_seconds", "vae_jax/experiments/multi.py",
           '  return [{**row, "seconds": seconds / max(1, epochs)} for row in rows]',
           '  return [{**row, "seconds": seconds} for row in rows]',
           "a saved member's rows each get the seconds of all its epochs so far",
           tests=("tests/test_multi.py",)),
    Mutant("compare_overwrites_silently", "vae_jax/experiments/compare.py",
           'if (out / "blog_comparison.json").exists() and not overwrite:', "if False:",
           "a comparison replaces the results already in --out without --overwrite",
           tests=("tests/test_cli_limits.py",)),
    Mutant("compare_over_users_files", "vae_jax/experiments/compare.py",
           'if drawn and not (out / "blog_comparison.json").exists() and not overwrite:',
           "if False:", "a comparison replaces a user's blog_comparison.md (no JSON beside it)",
           tests=("tests/test_cli_limits.py",)),
    Mutant("resume_restarts_over_results", "vae_jax/run.py",
           'if not overwrite and results_without_weights(where):',
           'if False:',
           "--resume without a checkpoint starts over and truncates the run's results",
           tests=("tests/test_resume.py",)),
    Mutant("study_overwrites_silently", "vae_jax/experiments/study.py",
           "if earlier and not overwrite:", "if False:",
           "a study replaces the results already in --out without --overwrite",
           tests=("tests/test_study.py",)),
    Mutant("sweep_rerun_renames_members", "vae_jax/experiments/sweep.py",
           "named_by = set(swept) | set(named_by) | names_in(workdir)",
           "named_by = set(swept) | set(named_by)",
           "a rerun with fewer values names its members anew and trains them again",
           tests=SWEEP_TESTS),
    # The compilation cache.
    Mutant("cache_small_programs_left_out", "vae_jax/train.py",
           '"jax_persistent_cache_min_compile_time_secs", 0)',
           '"jax_persistent_cache_min_compile_time_secs", 0.1)',
           "the eager operations' small programs are compiled again by every process",
           tests=("tests/test_compile_cache.py",)),
    # The data's content and order.
    Mutant("tfds_order_kept", "vae_jax/data.py",
           'arrays[f"{split}_{name}"][position] = stored',
           'arrays[f"{split}_{name}"][:] = stored',
           "TFDS's examples kept in its hashed order, not MNIST's", tests=DATA_TESTS),
    Mutant("cache_content_unchecked", "vae_jax/data.py", "    if digest != expected:",
           "    if False:", "a cache's content and order go unchecked (shapes and sizes only)",
           tests=DATA_TESTS),
    Mutant("fixture_mark_trusted", "vae_jax/data.py",
           'return "test_fixture" in arrays and any(', 'return "test_fixture" in arrays or any(',
           "a cache of MNIST's sizes marked as a test fixture goes unchecked", tests=DATA_TESTS),
    Mutant("overwrite_deletes_users_checkpoint_files", "vae_jax/run.py",
           'if not p.name.startswith(".") and p.name not in kept])', "if False])",
           "--overwrite deletes a user's file among the old run's checkpoints",
           tests=RUN_TESTS),
    Mutant("overwrite_deletes_users_files", "vae_jax/run.py",
           "  if other and (overwrite or not resume):",
           "  if other and resume and not overwrite:",
           "a run writes among a user's files, and --overwrite then deletes them",
           tests=("tests/test_bad_input.py",)),
    Mutant("run_names_trusted_without_config", "vae_jax/run.py",
           "  ours = has_run_config(run_dir)", "  ours = True",
           "a user's own samples.png, with no run's config.json beside it, is taken for a "
           "run's results (and --overwrite deletes it)", tests=("tests/test_bad_input.py",)),
    Mutant("foreign_config_trusted", "vae_jax/run.py",
           "  ours = has_run_config(run_dir)", '  ours = (run_dir / "config.json").exists()',
           "another project's config.json is taken for a run's: a run writes over it, and "
           "--overwrite deletes the files beside it", tests=("tests/test_bad_input.py",)),
    Mutant("none_for_every_flag", "vae_jax/cli.py", "    if optional and text.lower() == _NONE:",
           "    if text.lower() == _NONE:",
           "--binarize none, a listed choice, is refused (read as None); --data-dir none is "
           "no folder", tests=("tests/test_cli.py",)),
    Mutant("stale_grid_kept", "vae_jax/run.py",
           "      _drop_stale_grid(out, config, plan.resumed)", "      pass",
           "a run extended by --resume --epochs keeps the shorter run's last grid, which the "
           "run never stopped has not", tests=("tests/test_resume.py",)),
    Mutant("limit_past_mnist", "vae_jax/config.py", "if value is not None and value > size:",
           "if False:", "--train-limit 70000 is recorded in config.json as if used",
           tests=("tests/test_bad_input.py",)),
    Mutant("labels_dtype_kept", "vae_jax/data.py",
           'astype(np.int32, copy=False)', 'astype(None, copy=False)',
           "a cache's uint8 or int64 labels reach the programs unconverted", tests=DATA_TESTS),
    Mutant("data_dir_made_late", "vae_jax/data.py",
           "    _make_data_dir(data_dir)  #", "    pass  #",
           "a data directory that cannot be created is found only after the fetch",
           tests=DATA_TESTS),
]


UNMUTATED = Mutant("unmutated", "vae_jax/model.py", '"""', '"""', "nothing: the copy as it is")


def run_one(m: Mutant, tests: list[str], python: str) -> tuple[bool, str, float]:
  """(killed, the first failing test or "", seconds) for mutant `m`."""
  with tempfile.TemporaryDirectory(prefix=f"mutant_{m.name}_") as tmp:
    copy = Path(tmp) / "repo"
    shutil.copytree(ROOT, copy, ignore=shutil.ignore_patterns(
        ".venv", ".git", "runs", ".cache", "__pycache__", "*.egg-info"))  # results: read by tests
    target = copy / m.path
    text = target.read_text()
    if m is not UNMUTATED and text.count(m.old) != 1:
      raise SystemExit(f"mutant {m.name}: {m.old!r} occurs {text.count(m.old)} times in {m.path}")
    target.write_text(text.replace(m.old, m.new))
    env = {**os.environ, "PYTHONPATH": str(copy)}
    t0 = time.perf_counter()
    try:
      proc = subprocess.run([python, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider",
                             *tests], cwd=copy, env=env, capture_output=True, text=True,
                            timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:  # a mutant that hangs the tests is caught by them
      return True, f"a timeout ({TIMEOUT_S} s)", time.perf_counter() - t0
    failed = [line.split()[1] for line in proc.stdout.splitlines() if line.startswith("FAILED")]
    if proc.returncode == 2:  # the tests could not even be collected: the mutant broke import
      return True, "a collection error", time.perf_counter() - t0
    if proc.returncode not in (0, 1):
      raise SystemExit(f"mutant {m.name}: pytest exited {proc.returncode}\n{proc.stdout[-2000:]}")
    if m is UNMUTATED and proc.returncode == 1:  # the why, for the fix
      print(proc.stdout[-4000:], flush=True)
    return proc.returncode == 1, (failed[0] if failed else ""), time.perf_counter() - t0


def parse_args(argv=None) -> argparse.Namespace:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--only", nargs="+", metavar="NAME", help="run these mutants only")
  parser.add_argument("--list", action="store_true", help="list the mutants and exit")
  parser.add_argument("--skip-unmutated", action="store_true",
                      help="skip the first run, of the copy with no mutation (it must pass)")
  args = parser.parse_args(argv)
  unknown = sorted(set(args.only or ()) - {m.name for m in MUTANTS})
  if unknown:
    parser.error(f"unknown mutant(s) {unknown}; --list shows them")
  return args


def main(argv=None) -> int:
  args = parse_args(argv)
  if args.list:
    for m in MUTANTS:
      print(f"{m.name:16s} {m.path:18s} {m.bug}")
    return 0
  chosen = [m for m in MUTANTS if not args.only or m.name in args.only]
  if not args.skip_unmutated:  # a failure here would make every kill meaningless
    needed = list(dict.fromkeys(t for m in chosen for t in (m.tests or TESTS)))  # in order
    failed, by, seconds = run_one(UNMUTATED, needed, sys.executable)
    if failed:
      print(f"the unmutated copy fails {by}: fix that first")
      return 2
    print(f"{'unmutated':16s} passes ({seconds:.0f} s)", flush=True)
  killed = equivalent = 0
  survivors = []
  for m in chosen:
    if m.equivalent:
      equivalent += 1
      print(f"{m.name:16s} equivalent: {m.equivalent}", flush=True)
      continue
    dead, by, seconds = run_one(m, list(m.tests or TESTS), sys.executable)
    killed += dead
    if not dead:
      survivors.append(m.name)
    print(f"{m.name:16s} {'killed by ' + by if dead else 'SURVIVED'} ({seconds:.0f} s)", flush=True)
  scored = len(chosen) - equivalent
  print(f"\nscore: {killed} / {scored} killed ({equivalent} equivalent, not scored)"
        + (f"; survivors: {', '.join(survivors)}" if survivors else ""))
  return 0 if not survivors else 1


if __name__ == "__main__":
  sys.exit(main())
