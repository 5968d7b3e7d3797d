"""The `explore` subcommand: one self-contained HTML page to explore a trained model in a browser.

`write_page(weights, out, config)` reads the weights as `evaluate` does (the model from the
run's config.json), encodes the test set with the package, and writes `out`: the page's
HTML, styles and JavaScript (`explore.html`, `explore.css`, `explore.js`, beside this file)
with the weights and the data the page shows inline, so that it opens from disk (`file://`)
with no network and no server. The page runs the model itself, in plain JavaScript over
Float32Arrays: float32 weights and activations, each dot product accumulated in float64.

What the page is given, computed here with the package at matmul precision "highest" (the
float32 products the page computes too):

* the weights, float32, little-endian, in base64 (Flax's kernels, [in, out], row-major);
* the map: the test set's mu, as latent.png draws it. z = 2: mu itself. z > 2: the PCA view,
  x = (mu - m) . v1, y = (mu - m) . v2, with m the mean of mu and v1, v2 the first two
  principal axes (`latent.principal_axes`); a point (x, y) of the map decodes
  z = m + x v1 + y v2;
* each latent dimension u's KL over the test set, mean_x KL(q(z_u|x) || N(0, 1)), and
  Var_x(mu_u), active above `likelihood.ACTIVE_THRESHOLD` (`likelihood.latent_statistics`);
* a strip of test images, the first `STRIP_PER_DIGIT` of each digit, as uint8;
* the test loss at z = mu (`recipe.make_evaluate`, as `evaluate` prints it).
"""

from __future__ import annotations

import base64
import html
import json
import os
import re
from importlib import resources
from pathlib import Path

import numpy as np

from vae_jax.config import Config

STRIP_PER_DIGIT = 3  # test images of each digit in the page's strip (test images 0 and 1 too)
PAGE_FILES = ("explore.html", "explore.css", "explore.js")
MIN_TEST_IMAGES = 10  # --test-limit's least: the map and its statistics are over the test set


def check_supported(config: Config, weights) -> None:
  """The page runs the blog's model and its CVAE (one ReLU layer a side, any width) with z >= 2;
  Burda et al.'s architecture is refused, and so is z = 1, which has no second axis to map."""
  if config.arch != "blog":
    raise ValueError(f"--weights {weights} is a {config.arch} model: the explorer runs the "
                     f"blog's model (one ReLU layer a side) and its CVAE only")
  if config.latent_dim < 2:
    raise ValueError(f"--weights {weights}: the explorer maps z on two axes: a model with "
                     f"z = {config.latent_dim} has fewer (train one with --latent-dim 2 or more)")


def check_test_limit(config: Config) -> None:
  """The map, its PCA and each dimension's KL and Var(mu) are statistics over the test images:
  below 10 of them they say nothing (one image: 0% and 0% of a variance, every unit inactive)."""
  if config.test_limit is not None and config.test_limit < MIN_TEST_IMAGES:
    raise ValueError(f"--test-limit {config.test_limit}: the page's map and its statistics of z "
                     f"need at least {MIN_TEST_IMAGES} test images")


def b64(array, dtype) -> str:
  """An array as base64 of its little-endian bytes (`dtype` float32 or uint8), row-major."""
  return base64.b64encode(np.ascontiguousarray(array, np.dtype(dtype).newbyteorder("<"))
                          .tobytes()).decode("ascii")


def layers(params) -> dict:
  """{name: {"in", "out", "kernel", "bias"}}: each Dense layer's kernel [in, out] and bias."""
  return {name: {"in": int(p["kernel"].shape[0]), "out": int(p["kernel"].shape[1]),
                 "kernel": b64(p["kernel"], "<f4"), "bias": b64(p["bias"], "<f4")}
          for name, p in params.items()}


def projection(mu: np.ndarray) -> tuple[np.ndarray, np.ndarray, str]:
  """The map's plane: (origin m [z], axes [2, z], what it is). z <= 2: m = 0 and the axes are
  z's own; z > 2: m = mean of mu and the first two principal axes, as latent.png's PCA view.
  A map point (x, y) is z = m + x axes[0] + y axes[1]."""
  from vae_jax.extensions import latent
  mu = np.asarray(mu, np.float64)
  axes = latent.principal_axes(mu)
  if mu.shape[1] <= 2:
    return np.zeros(mu.shape[1]), axes, "z itself: x = z1, y = z2"
  spread = ((mu - mu.mean(0)) @ axes.T).var(0) / max(mu.var(0).sum(), 1e-300)
  return mu.mean(0), axes, (f"the PCA projection of the test set's mu (z = {mu.shape[1]}): "
                            f"x = (z - m) . v1, y = (z - m) . v2, m the mean of mu, v1 and v2 "
                            f"its first two principal axes ({100 * spread[0]:.0f}% and "
                            f"{100 * spread[1]:.0f}% of its variance); a point (x, y) decodes "
                            f"z = m + x v1 + y v2")


def strip_indices(labels: np.ndarray, per_digit: int = STRIP_PER_DIGIT) -> np.ndarray:
  """The first `per_digit` test images of each digit, by digit then test order."""
  return np.array([i for y in range(10) for i in np.flatnonzero(labels == y)[:per_digit]], int)


def page_data(params, config: Config, x_test_u8, y_test, source: str) -> dict:
  """Everything the page shows besides its code (module docstring), as JSON-ready values."""
  import jax
  import matplotlib

  from vae_jax.app import plots
  from vae_jax.data import to_inputs
  from vae_jax.extensions import likelihood, recipe
  config = config.replace(matmul_precision="highest")  # the page's own float32 products
  model = recipe.make_model(config)
  labels = recipe.labels(config, y_test)

  @jax.jit
  def statistics(params, x_u8, *labels):  # mu [N, z]; each dimension's KL and Var_x(mu) [z]
    model_y = recipe.conditioned(model, labels)  # the CVAE with the images' labels
    return (recipe.encode_mean(model, params, x_u8, *labels),
            *likelihood.latent_statistics(params, model_y, to_inputs(x_u8)))

  mu, kl, mu_var = map(np.asarray, statistics(params, x_test_u8, *labels))
  sums = jax.jit(recipe.make_evaluate(config, model))(params, x_test_u8, *labels)
  origin, axes, what = projection(mu)
  xy = (mu - origin) @ axes.T                                          # [N, 2], float64
  y_test, n = np.asarray(y_test), len(mu)
  strip = strip_indices(y_test)
  jet = matplotlib.colormaps["jet"]  # latent.png's colours: jet over digits -0.5 .. 9.5
  return {
      "source": source, "conditional": config.model == "cvae", "latentDim": config.latent_dim,
      "hiddenDim": config.hidden_dim, "binarize": config.binarize, "layers": layers(params),
      "testLoss": {"n": n, **{k: float(v) / n for k, v in sums._asdict().items()}},
      "map": {"xy": b64(xy, "<f4"), "labels": b64(y_test, "u1"), "projection": what,
              "lim": plots.map_limit(xy),
              "origin": origin.tolist(), "axes": axes.tolist()},
      "dims": {"kl": np.asarray(kl, np.float64).tolist(),
               "muVar": np.asarray(mu_var, np.float64).tolist(),
               "threshold": likelihood.ACTIVE_THRESHOLD},
      "strip": {"images": b64(np.asarray(x_test_u8)[strip], "u1"),
                "labels": y_test[strip].tolist(), "index": strip.tolist()},
      "colors": [matplotlib.colors.to_hex(jet((d + 0.5) / 10)) for d in range(10)],
  }


def render(data: dict, title: str) -> bytes:
  """The page: the template with its styles, the data (JSON, each `<` escaped as \\u003c so
  that no string ends the script element) and the script inline."""
  text = {name: resources.files("vae_jax.app").joinpath(name).read_text("utf-8")
          for name in PAGE_FILES}
  values = {"TITLE": html.escape(title), "STYLE": text["explore.css"], "SCRIPT": text["explore.js"],
            "DATA": json.dumps(data, separators=(",", ":")).replace("<", "\\u003c")}
  # one pass: a value that happens to hold "{{DATA}}" (a path) is not filled in again
  return re.sub(r"\{\{([A-Z]+)\}\}", lambda m: values[m.group(1)], text["explore.html"]
                ).encode("utf-8")


def write_page(weights, out, config: Config) -> int:
  """Writes the page of `weights` to `out` (a new .html file) with the test images `config`
  names (data source, folder, --test-limit); returns its size in bytes. Every refusal comes
  before any work: `out` existing or in a missing folder, fewer than 10 test images, weights
  that are a checkpoint or hold NaN (`weights.load_weights`), a model the page cannot run.
  The page names the weights by their folder and file only (`shown_name`)."""
  from vae_jax.app import weights as weights_io
  from vae_jax.app.files import atomic_write, check_new_file
  from vae_jax.extensions import recipe
  out = check_new_file(out, "--out", ".html")
  if out.suffix.lower() not in (".html", ".htm"):
    raise ValueError(f"--out {out}: the page is HTML: give a .html name")
  check_test_limit(config)
  params, wconfig = weights_io.load_weights(weights)
  check_supported(wconfig, weights)
  d = recipe.load_data(config, with_train=False, binarized=wconfig.binarize == "dynamic")
  what = "CVAE" if wconfig.model == "cvae" else "VAE"
  source = shown_name(weights)
  title = f"{what}, z = {wconfig.latent_dim}: {source}"
  page = render(page_data(params, wconfig, d.x_test, d.y_test, source), title)
  atomic_write(out, page)
  return len(page)


def shown_name(weights) -> str:
  """The weights as the page names them: the run's folder and the file, `vae_2/params.msgpack`,
  so that a page passed on does not carry the local path it was made from."""
  path = Path(os.path.abspath(weights))  # not resolve(): a link keeps the name it was given
  return f"{path.parent.name}/{path.name}" if path.parent.name else path.name
