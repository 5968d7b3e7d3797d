"""The gradient-flow study: six experiments, each computing numbers, then a figure from them.

  vae-jax study --out results/gradient_flow --overwrite     # all six again, about 11 minutes
  vae-jax study --out results/gradient_flow --only variance stop_gradient
  vae-jax study --out results/gradient_flow --redraw        # every figure again, in seconds

Each experiment is a pair: `compute_<name>(d, quick) -> (result, arrays)` trains and
measures (`quick` shrinks it for the tests), and `draw_<name>(result, arrays)`
returns its figure. `run` writes `<name>.json` (the numbers), `<name>.npz` (the
arrays a figure plots, when it needs more than the JSON holds) and `<name>.png`;
`redraw` reads the first two back and draws again. Each JSON says how it was made
(`setting`: quick or not, how many train and test images). docs/gradient_flow.md
discusses the results.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.ticker  # noqa: E402
import numpy as np  # noqa: E402

from vae_jax import data, losses, train  # noqa: E402
from vae_jax.app import plots  # noqa: E402
from vae_jax.app.files import atomic_write, check_results_dir  # noqa: E402
from vae_jax.config import Config  # noqa: E402
from vae_jax.data import DeviceData  # noqa: E402
from vae_jax.model import VAE  # noqa: E402
from vae_jax.study import EXPERIMENTS as NAMES  # noqa: E402
from vae_jax.study import estimators, variants  # noqa: E402


def fit(config: Config, d: DeviceData, loss_fn=losses.batch_loss, programs=None, on_epoch=None):
  """Trains `config.epochs` epochs with `loss_fn` (`train.setup` + `train.fit`).

  Returns (params, history, programs); pass the programs to a later call with the
  same shapes to reuse them across seeds and learning rates.
  """
  run = train.setup(config, d, loss_fn=loss_fn, programs=programs)
  result = train.fit(run, d, config.epochs, on_epoch)
  return result.params, result.history, run.programs


def _encode(config, params, x_u8):
  mu, h = VAE.from_config(config).apply({"params": params}, data.to_inputs(x_u8),
                                         method=VAE.encode)
  return np.asarray(mu), np.asarray(h)


# ---------------------------------------------------------------------------
# 1. Estimator variance versus number of samples.


def _variance_curve(estimate, ns, repeats, key, groups=None):
  """Per-parameter variance (averaged over parameters) of estimate(key, n) over repeats.

  With `groups` ({name: boolean mask [P]}) also returns {name: the same averaged over
  that group's parameters only}.
  """
  out, by_group = [], {name: [] for name in groups or {}}
  for n in ns:
    keys = jax.random.split(jax.random.fold_in(key, n), repeats)
    g = jax.vmap(lambda k: estimate(k, n))(keys)          # [repeats, P]
    var = jnp.var(g, axis=0)                              # [P]
    out.append(float(jnp.mean(var)))
    for name, mask in (groups or {}).items():
      by_group[name].append(float(jnp.mean(var[mask])))
  return (out, by_group) if groups is not None else out


ENCODER = ("fc1", "fc21", "fc22")  # the layers whose gradient the weight panels estimate


def compute_variance(d: DeviceData, quick: bool = False):
  ns = [2, 8] if quick else [2, 8, 32, 128, 512]  # >= 2: the baseline leaves one out
  repeats = 20 if quick else 200
  key = jax.random.PRNGKey(0)
  mu, logvar = jnp.array([0.5, -1.0]), jnp.array([0.0, -2.0])
  result = {"ns": ns, "repeats": repeats, "closed_form": {}, "vae_output": {}, "vae_weights": {}}

  def flat(e):
    return jnp.concatenate([e.mu, e.logvar])

  integrands = {"quadratic": estimators.quadratic(jnp.array([1.0, 0.0])),
                "exponential": estimators.exponential(jnp.array([0.5, -0.3]))}
  for fname, (f, _) in integrands.items():
    result["closed_form"][fname] = {
        name: _variance_curve(jax.jit(lambda k, n, e=est: flat(e(f, mu, logvar, k, n)),
                                      static_argnums=1), ns, repeats, key)
        for name, est in estimators.ESTIMATORS.items()}

  # The real VAE: f_x(z) = -log p(x | z) for a few test images; the gradient wrt the
  # encoder's output (mu, logvar) and wrt the encoder's weights, at init and trained.
  config = Config(epochs=1 if quick else 10)
  model = VAE.from_config(config)
  init = train.setup(config).state.params
  trained, _, _ = fit(config, d)
  x = data.to_inputs(d.x_test[:8])                          # [8, 784]
  z_dim = config.latent_dim
  # Each image's estimate is [mu (z), logvar (z)]: the two kinds of component apart.
  is_mu = np.tile(np.arange(2 * z_dim) < z_dim, len(x))
  components = {"mu": is_mu, "logvar": ~is_mu}
  out_repeats = max(2, repeats // 2)  # each repeat decodes 8 x n latent codes
  w_ns = ns[:4]
  w_repeats = min(repeats, 10 if quick else 30)

  def recon(params, z, xi):  # -log p(x_i | z), one image
    return losses.bernoulli_nll(model.apply({"params": params}, z[None], method=VAE.decode),
                                xi[None])[0]

  # The parameters are arguments, not constants: each program compiles once per n and
  # serves both stages.
  def output_estimate(est):
    def one(k, n, params, mu_x, lv_x):
      ks = jax.random.split(k, len(x))
      es = jax.vmap(lambda m, lv, xi, kk: flat(est(lambda z: recon(params, z, xi), m, lv, kk,
                                                   n)))(mu_x, lv_x, x, ks)
      return es.ravel()
    return jax.jit(one, static_argnums=1)

  def weight_grad(k, n, params, kind):
    # Encoder weights: the estimators' surrogate losses, differentiated wrt fc1, fc21, fc22.
    enc = {layer: params[layer] for layer in ENCODER}
    encode = lambda e: model.apply({"params": {**params, **e}}, x, method=VAE.encode)
    per_image = lambda z: jax.vmap(lambda zi, xi: recon(params, zi, xi))(z, x)  # [8, z] -> [8]
    g = estimators.encoder_weight_gradient(kind, encode, per_image, enc, k, n)
    return jnp.concatenate([v.ravel() for v in jax.tree.leaves(g)])

  output_fns = {name: output_estimate(est) for name, est in estimators.ESTIMATORS.items()}
  weight_fns = {name: jax.jit(lambda k, n, p, kind=name: weight_grad(k, n, p, kind),
                              static_argnums=1) for name in estimators.ESTIMATORS}
  # Each flat gradient entry's layer, in the flat gradient's (jax.tree.leaves') order.
  enc_init = {layer: init[layer] for layer in ENCODER}
  layer_of = np.concatenate(jax.tree.leaves(
      {layer: jax.tree.map(lambda v, i=i: np.full(v.size, i), enc_init[layer])
       for i, layer in enumerate(ENCODER)}))
  layers = {layer: layer_of == i for i, layer in enumerate(ENCODER)}

  for stage, params in (("init", init), ("trained", trained)):
    mu_x, lv_x = model.apply({"params": params}, x, method=VAE.encode)  # [8, 2]
    curves, by_component = {}, {c: {} for c in components}
    for name, fn in output_fns.items():
      curves[name], split = _variance_curve(
          lambda k, n, fn=fn: fn(k, n, params, mu_x, lv_x), ns, out_repeats, key, components)
      for c in components:
        by_component[c][name] = split[c]
    result["vae_output"][stage] = {
        "repeats": out_repeats, **curves, "by_component": by_component,
        "posterior_var": {"mean": float(jnp.mean(jnp.exp(lv_x))),
                          "median": float(jnp.median(jnp.exp(lv_x)))}}

    wcurves, by_layer = {}, {layer: {} for layer in ENCODER}
    for name, fn in weight_fns.items():
      wcurves[name], split = _variance_curve(lambda k, n, fn=fn: fn(k, n, params), w_ns,
                                             w_repeats, key, layers)
      for layer in ENCODER:
        by_layer[layer][name] = split[layer]
    result["vae_weights"][stage] = {"ns": w_ns, "repeats": w_repeats, **wcurves,
                                    "by_layer": by_layer}
  return result, {}


def draw_variance(result: dict, arrays: dict):
  ns = result["ns"]
  fig, axes = plt.subplots(1, 4, figsize=(18, 4))
  panels = [("quadratic f(z) = |z - a|^2", result["closed_form"]["quadratic"], ns),
            ("exponential f(z) = exp(c.z)", result["closed_form"]["exponential"], ns),
            ("VAE: wrt (mu, logvar), 8 test images", result["vae_output"], ns),
            ("VAE: wrt encoder weights", result["vae_weights"], None)]
  for ax, (title, curves, xs) in zip(axes, panels):
    if "init" in curves:
      for stage, style in (("init", "--"), ("trained", "-")):
        c = curves[stage]
        for name in estimators.ESTIMATORS:
          ax.plot(xs or c["ns"], c[name], style, marker="o", ms=3, label=f"{name} ({stage})")
    else:
      for name in estimators.ESTIMATORS:
        ax.plot(xs, curves[name], marker="o", ms=3, label=name)
    ax.set(xscale="log", yscale="log", xlabel="samples n", ylabel="variance per parameter",
           title=title)
    ax.set_xticks(ns, [str(n) for n in ns])
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)
  return fig


# ---------------------------------------------------------------------------
# 2. Why the trick is needed: sampling that stops the gradient.

SAMPLINGS_COMPARED = ("reparam", "stop_gradient")


def compute_stop_gradient(d: DeviceData, quick: bool = False):
  config = Config(epochs=2 if quick else 10)
  model = VAE.from_config(config)
  result, arrays = {"epochs": config.epochs}, {"y_test": np.asarray(d.y_test)}
  for sampling in SAMPLINGS_COMPARED:
    loss_fn = variants.make_loss(sampling)
    params, history, _ = fit(config, d, loss_fn)
    mu, h = _encode(config, params, d.x_test)
    # What flows into the encoder from each term, on 512 training images.
    b = min(512, len(d.x_train))
    x = data.to_inputs(d.x_train[:b])
    eps = jax.random.normal(jax.random.PRNGKey(0), (b, config.latent_dim))
    def term(p, which):
      return loss_fn(p, model, x, eps, jnp.ones(b))[1]._asdict()[which]
    norms = {}
    for which in ("recon", "kl"):
      g = jax.grad(term)(params, which)
      norms[which] = {k: float(jnp.sqrt(sum(jnp.sum(v**2) for v in jax.tree.leaves(g[k]))))
                      for k in ("fc1", "fc21", "fc22", "fc3", "fc4")}
    result[sampling] = {"history": history, "grad_norm_at_end": norms,
                        "test_mu_std": mu.std(0).tolist(), "test_mu_mean": mu.mean(0).tolist(),
                        "test_var_mean": np.exp(h).mean(0).tolist()}
    arrays[f"mu_{sampling}"] = mu.astype(np.float32)  # [M, 2], the latent map
  return result, arrays


def draw_stop_gradient(result: dict, arrays: dict):
  fig, axes = plt.subplots(1, 3, figsize=(17, 5))
  for i, sampling in enumerate(SAMPLINGS_COMPARED):
    history = result[sampling]["history"]
    axes[0].plot([r["epoch"] for r in history], [r["test_loss"] for r in history], label=sampling)
    plots.latent_scatter(axes[1 + i], arrays[f"mu_{sampling}"], arrays["y_test"],
                         title=f"test mu, {sampling}")
  axes[0].set(xlabel="epoch", ylabel="test loss per image", title="z = 2", yscale="log")
  axes[0].grid(True, which="both")
  axes[0].legend()
  return fig


# ---------------------------------------------------------------------------
# 3. One scalar eps for every latent dimension.


def compute_scalar_eps(d: DeviceData, quick: bool = False):
  result, arrays = {}, {"y_test": np.asarray(d.y_test)}
  for z in (2, 20):
    config = Config(latent_dim=z, epochs=2 if quick else 20)
    result[str(z)] = {"epochs": config.epochs}
    for sampling in ("reparam", "scalar_eps"):
      params, history, _ = fit(config, d, variants.make_loss(sampling))
      mu, h = _encode(config, params, d.x_test)                 # [M, z] each
      std = np.exp(0.5 * h)
      # The posterior of image 0 as the model samples it, 20,000 draws.
      e = np.random.default_rng(0).standard_normal((20_000, 1 if sampling == "scalar_eps" else z))
      draws = mu[0] + std[0] * e
      corr = np.corrcoef(draws.T)
      off = corr[~np.eye(z, dtype=bool)]
      analytic = np.asarray(losses.kl_standard_normal(mu, h))   # what the loss charges
      scalar = sampling == "scalar_eps"
      noisy = {str(dl): float(np.mean([variants.kl_rank_one_plus_noise(mu[i], std[i], dl)
                                        for i in range(min(200, len(mu)))]))
               for dl in (1e-1, 1e-2, 1e-3)}
      result[str(z)][sampling] = {
          "history": history, "final_test_loss": history[-1]["test_loss"],
          "posterior_corr_abs_offdiag_mean": float(np.mean(np.abs(off))),
          "analytic_kl_mean": float(analytic.mean()),
          "true_kl": "inf" if scalar and z > 1 else "equal to analytic",
          "kl_with_isotropic_noise_delta": noisy if scalar else None}
      if scalar or z == 2:  # latent maps: z = 2 both ways, z = 20 scalar eps (PCA)
        xy, what = plots.project_2d(mu)
        arrays[f"xy_{z}_{sampling}"] = xy.astype(np.float32)
        result[str(z)][sampling]["latent_map_axes"] = what
      if z == 2:  # image 0's posterior as each model samples it
        arrays[f"draws_{sampling}"] = draws[:2000].astype(np.float32)
  return result, arrays


def draw_scalar_eps(result: dict, arrays: dict):
  fig, axes = plt.subplots(1, 4, figsize=(22, 5))
  panels = [("2", "reparam"), ("2", "scalar_eps"), ("20", "scalar_eps")]
  for ax, (z, sampling) in zip(axes, panels):
    r = result[z][sampling]
    plots.latent_scatter(ax, arrays[f"xy_{z}_{sampling}"], arrays["y_test"],
                         title=f"z = {z}, {sampling}: {r['latent_map_axes']}\n"
                               f"test loss {r['final_test_loss']:.1f}")
  for sampling in ("reparam", "scalar_eps"):
    draws = arrays[f"draws_{sampling}"]
    axes[3].scatter(draws[:, 0], draws[:, 1], s=2, alpha=0.4, label=sampling)
  axes[3].set(aspect="equal", title="z = 2: 2,000 draws of z for test image 0")
  axes[3].legend(markerscale=5)
  axes[3].grid(True)
  return fig


# ---------------------------------------------------------------------------
# 4. logvar vs softplus variance vs raw variance vs raw std.


def compute_parameterisation(d: DeviceData, quick: bool = False):
  seeds = [1, 2] if quick else [1, 2, 3]
  rates = [1e-3, 1e-2] if quick else [1e-3, 3e-3, 1e-2]
  config = Config(epochs=1 if quick else 3)
  result = {"seeds": seeds, "learning_rates": rates, "epochs": config.epochs, "runs": {}}
  for param in variants.PARAMS:
    programs = None
    result["runs"][param] = {}
    for lr in rates:
      finals = []
      for seed in seeds:
        _, history, programs = fit(config.replace(seed=seed, learning_rate=lr), d,
                                   variants.make_loss("reparam", param), programs=programs)
        finals.append(history[-1]["test_loss"])
      result["runs"][param][str(lr)] = finals
  # Divergence: NaN, or a final test loss over 1.5x the logvar median at that rate.
  summary = {}
  for param, by_lr in result["runs"].items():
    nan = div = total = 0
    for lr, finals in by_lr.items():
      ref = np.nanmedian(result["runs"]["logvar"][lr])
      for v in finals:
        total += 1
        nan += not np.isfinite(v)
        div += (not np.isfinite(v)) or v > 1.5 * ref
    summary[param] = {"nan_rate": nan / total, "diverged_rate": div / total}
  result["summary"] = summary

  # Gradient scale near small variances (variants.gradient_scale): closed forms in
  # float64 (float32 cannot even hold h = v - 1 for v below ~6e-8), checked against
  # autodiff in tests/test_study.py.
  v = np.logspace(-8, 0, 50)
  scale = {param: {"dkl_dh": np.abs(g[0]).tolist(), "dstd_dh": np.abs(g[1]).tolist()}
           for param, g in variants.gradient_scale(v).items()}
  result["gradient_scale"] = {"variance": v.tolist(), **scale}
  # The report's table: the same closed forms, signed, at exactly v = 1e-4.
  result["gradient_scale_table"] = {"variance": 1e-4, **variants.gradient_scale_at(1e-4)}
  # What variances a trained blog model actually uses (z = 2 and 20, short runs).
  used = {}
  for z in (2, 20):
    cz = Config(latent_dim=z, epochs=1 if quick else 10)
    params, _, _ = fit(cz, d)
    _, h = _encode(cz, params, d.x_test)
    used[str(z)] = {str(q): float(np.exp(np.quantile(h, q))) for q in (0.001, 0.01, 0.5)}
  result["variances_used"] = used
  return result, {}


def draw_parameterisation(result: dict, arrays: dict):
  scale, rates, summary = result["gradient_scale"], result["learning_rates"], result["summary"]
  v = scale["variance"]
  fig, axes = plt.subplots(1, 3, figsize=(17, 4.5))
  for param in variants.PARAMS:
    axes[0].loglog(v, scale[param]["dkl_dh"], label=param)
    axes[1].loglog(v, scale[param]["dstd_dh"], label=param)
  titles = ("|dKL/dh| (one dimension, mu = 0)", "|d std/dh| = |dz/dh| per unit eps")
  for ax, t in zip(axes[:2], titles):
    ax.set(xlabel="variance", title=t)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
  for z, q in result["variances_used"].items():
    axes[0].axvline(q["0.01"], ls=":", color="k" if z == "2" else "grey")
  x = np.arange(len(rates))
  for i, param in enumerate(variants.PARAMS):
    finite = [[v for v in result["runs"][param][str(lr)] if np.isfinite(v)] for lr in rates]
    vals = [np.mean(f) if f else np.nan for f in finite]  # NaN: every run of that rate NaN
    axes[2].bar(x + 0.2 * i, np.nan_to_num(vals, nan=0), width=0.2,
                label=f"{param} (NaN {summary[param]['nan_rate']:.0%})")
  axes[2].set(xticks=x + 0.3, xticklabels=[str(r) for r in rates], xlabel="learning rate",
              ylabel="final test loss, mean of finite runs", ylim=(140, 200),
              title=f"z = 2, {result['epochs']} epochs, {len(result['seeds'])} seeds "
                    "(no bar: all NaN)")
  axes[2].legend(fontsize=8)
  return fig


# ---------------------------------------------------------------------------
# 5. Gradient norms per layer during training, reconstruction vs KL.

LAYERS = ("fc1", "fc21", "fc22", "fc3", "fc4")


def compute_gradient_flow(d: DeviceData, quick: bool = False):
  config = Config(epochs=2 if quick else 30)
  model = VAE.from_config(config)
  b = min(1024, len(d.x_train))
  x = data.to_inputs(d.x_train[:b])                         # a fixed batch, [b, 784]
  eps = jax.random.normal(jax.random.PRNGKey(0), (b, config.latent_dim))  # and fixed eps

  @jax.jit
  def norms(params):
    def terms(p, act):
      mu, lv = model.apply({"params": p}, x, method=VAE.encode)
      mu, lv = mu + act[0], lv + act[1]   # zero offsets: their gradient is dL/dmu, dL/dlogvar
      logits = model.apply({"params": p}, mu + jnp.exp(0.5 * lv) * eps, method=VAE.decode)
      return jnp.stack([losses.bernoulli_nll(logits, x).mean(),
                        losses.kl_standard_normal(mu, lv).mean()])
    zeros = jnp.zeros((2, b, config.latent_dim))
    jp, ja = jax.jacrev(terms, argnums=(0, 1))(params, zeros)  # leading axis: recon, KL
    out = {}
    for i, which in enumerate(("recon", "kl")):
      for layer in LAYERS:
        out[f"{which}/{layer}"] = jnp.sqrt(sum(jnp.sum(v[i] ** 2)
                                               for v in jax.tree.leaves(jp[layer])))
      # per image: the norm of d(its loss)/dmu and /dlogvar (x b undoes the batch mean)
      out[f"{which}/mu"] = jnp.mean(jnp.linalg.norm(ja[i, 0] * b, axis=-1))
      out[f"{which}/logvar"] = jnp.mean(jnp.linalg.norm(ja[i, 1] * b, axis=-1))
    return out

  _, history, _ = fit(config, d, on_epoch=norms)
  return {"epochs": config.epochs, "batch": b, "history": history}, {}


def draw_gradient_flow(result: dict, arrays: dict):
  history = result["history"]
  fig, axes = plt.subplots(1, 2, figsize=(13, 4.5))
  e = [r["epoch"] for r in history]
  for i, layer in enumerate(LAYERS):
    c = f"C{i}"
    axes[0].plot(e, [r[f"recon/{layer}"] for r in history], color=c, label=f"{layer}, recon")
    if layer in ("fc1", "fc21", "fc22"):
      axes[0].plot(e, [r[f"kl/{layer}"] for r in history], "--", color=c, label=f"{layer}, KL")
  for i, head in enumerate(("mu", "logvar")):
    axes[1].plot(e, [r[f"recon/{head}"] for r in history], color=f"C{i}", label=f"{head}, recon")
    axes[1].plot(e, [r[f"kl/{head}"] for r in history], "--", color=f"C{i}", label=f"{head}, KL")
  axes[0].set(yscale="log", xlabel="epoch", ylabel="gradient norm (loss per image)",
              title="per layer (KL reaches only the encoder)")
  axes[1].set(yscale="log", xlabel="epoch", ylabel="mean over images of |dL/d.|",
              title="at the encoder's outputs")
  for ax in axes:
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
  return fig


# ---------------------------------------------------------------------------
# 6. The likelihood is the cross-entropy, and its floor on continuous pixels.


def compute_likelihood(d: DeviceData, quick: bool = False):
  rng = np.random.default_rng(0)
  n = min(64, len(d.x_test))
  logits = rng.normal(0, 3, (n, 784))
  xb = (np.asarray(d.x_test[:n]) > 127).astype(np.float64)         # binarised pixels
  p = 1 / (1 + np.exp(-logits))
  nll = -np.sum(np.log(np.where(xb == 1, p, 1 - p)), axis=1)        # -log prod p^x (1-p)^(1-x)
  bce = np.asarray(losses.bernoulli_nll(jnp.asarray(logits, jnp.float32),
                                        jnp.asarray(xb, jnp.float32)), np.float64)
  # Continuous x in (0, 1): the BCE is minimised at p = x, where it equals the binary
  # entropy H(x) = -x log x - (1 - x) log(1 - x) > 0: a floor no decoder can go under.
  x = np.asarray(d.x_test, np.float64) / 255                       # [M, 784]
  with np.errstate(divide="ignore", invalid="ignore"):
    h = -(np.where(x > 0, x * np.log(x), 0) + np.where(x < 1, (1 - x) * np.log1p(-x), 0))
  floor = h.sum(1)                                                 # [M] nats per image
  frac_gray = float(np.mean((x > 0) & (x < 1)))
  result = {"binary_max_abs_diff_bce_vs_nll": float(np.max(np.abs(bce - nll))),
            "binary_max_rel_diff": float(np.max(np.abs(bce - nll) / nll)),
            "test_floor_mean_nats": float(floor.mean()), "test_floor_std": float(floor.std()),
            "fraction_of_pixels_strictly_between_0_and_1": frac_gray}
  return result, {}


def draw_likelihood(result: dict, arrays: dict):
  xs = np.linspace(0.001, 0.999, 300)
  fig, ax = plt.subplots(figsize=(6, 4))
  for xv in (0.0, 0.3, 0.5, 0.9, 1.0):
    bce_curve = -(xv * np.log(xs) + (1 - xv) * np.log1p(-xs))
    ax.plot(xs, bce_curve, label=f"x = {xv}")
  ax.set(xlabel="decoder's p", ylabel="BCE(x, p), nats", ylim=(0, 4),
         title="one pixel: minimum at p = x, value H(x)")
  ax.grid(True)
  ax.legend()
  return fig


# ---------------------------------------------------------------------------
# Running, writing and redrawing.

EXPERIMENTS = {name: (globals()[f"compute_{name}"], globals()[f"draw_{name}"]) for name in NAMES}


def _check_names(names) -> list[str]:
  names = list(names or EXPERIMENTS)
  unknown = [n for n in names if n not in EXPERIMENTS]
  if unknown:
    raise ValueError(f"unknown experiment {unknown[0]!r}: choose from {list(EXPERIMENTS)}")
  return names


def _draw(out: Path, name: str, result: dict, arrays: dict) -> None:
  plots.save_figure(EXPERIMENTS[name][1](result, arrays), out / f"{name}.png", dpi=90)


def run(out="results/gradient_flow", only=None, quick: bool = False, d: DeviceData | None = None,
        config: Config = Config(), overwrite: bool = False):
  """Runs the experiments `only` (default: all) and writes each one's files into `out`.

  `config` says where the data come from (source, cache, limits); each experiment
  sets its own model and training settings. Results already in `out` are refused
  unless `overwrite`; each experiment's files are replaced once its numbers are in.
  """
  names = _check_names(only)
  out = check_results_dir(out, "--out", "the study")
  earlier = [name for name in names if (out / f"{name}.json").exists()]
  if earlier and not overwrite:
    raise FileExistsError(f"{out}/{earlier[0]}.json holds an earlier study's results: pass "
                          f"--overwrite to replace them, or choose another --out")
  out.mkdir(parents=True, exist_ok=True)
  d = d or data.load_device_data(config)
  setting = {"quick": quick, "train_images": len(d.x_train), "test_images": len(d.x_test)}
  results = {}
  for name in names:
    t0 = time.perf_counter()
    result, arrays = EXPERIMENTS[name][0](d, quick)
    result["seconds"] = time.perf_counter() - t0
    result["setting"] = setting
    atomic_write(out / f"{name}.json", json.dumps(result, indent=1).encode())
    if arrays:
      atomic_write(out / f"{name}.npz", lambda f: np.savez_compressed(f, **arrays))
    elif (out / f"{name}.npz").exists():
      (out / f"{name}.npz").unlink()  # an older version's arrays: not this result's
    _draw(out, name, result, arrays)
    results[name] = result
    print(f"{name}: {result['seconds']:.1f} s -> {out}/{name}.json")
  return results


def redraw(out="results/gradient_flow", only=None) -> list[str]:
  """Draws every figure (or those of `only`) again from the JSON and arrays in `out`."""
  out = Path(out)
  drawn = []
  any_results = any((out / f"{n}.json").exists() for n in _check_names(None))
  for name in _check_names(only):
    path = out / f"{name}.json"
    again = f"run `vae-jax study --out {out} --only {name} --overwrite`"
    if not path.exists():
      if only:
        raise FileNotFoundError(f"{path} does not exist: run `vae-jax study --out {out} "
                                f"--only {name}` first")
      if any_results:  # else the one error below says the folder holds none
        print(f"vae-jax: {name}.png not redrawn: {out} holds no {name}.json (make it with "
              f"`vae-jax study --out {out} --only {name}`)", file=sys.stderr)
      continue
    try:
      result = json.loads(path.read_text())
    except json.JSONDecodeError as e:
      raise ValueError(f"{path} is not valid JSON ({e}): {again}") from None
    arrays_path = out / f"{name}.npz"
    arrays = dict(np.load(arrays_path)) if arrays_path.exists() else {}
    try:
      _draw(out, name, result, arrays)
    except KeyError as e:
      if not arrays_path.exists():  # the figure may read its arrays from there
        raise ValueError(f"{name}.png needs {e}, which {path} does not hold, and there is no "
                         f"{arrays_path.name} beside it: {again}") from None
      raise ValueError(f"{path} (or {arrays_path.name}) lacks {e} for its figure: it was "
                       f"written by an older version; {again}") from None
    drawn.append(name)
  if not drawn:
    raise FileNotFoundError(f"{out} holds no study results: run `vae-jax study --out {out}` first")
  return drawn
