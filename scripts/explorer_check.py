"""The explorer's page against the package and against float64, in Chromium or Firefox.

  python scripts/explorer_check.py docs/explorer_vae_2.html runs/vae_2/params.msgpack
  python scripts/explorer_check.py docs/explorer_vae_2.html runs/vae_2/params.msgpack --browser firefox
  python scripts/explorer_check.py docs/explorer_cvae_2.html runs/cvae_2/params.msgpack --images 0:10000

An independent check of a page of the explore subcommand, with inputs of its own: `--z` z drawn
from N(0, 2.5^2 I) (`--seed`; a CVAE's labels too) and the test images `--images` (a CVAE's
with their labels). The page's `window.vae` (decodeLogits, decode, encode, loss) is compared

* with the package (JAX, float32, matmul precision "highest"): per vector, max_i |page_i -
  package_i| / max_i |package_i|, the tests' criterion (tests/test_explore.py), 1e-5; recon and
  KL relative, the package's `losses.vae_loss` at z = mu (its sum over the images equals
  `evaluate`'s, checked);
* and each side with float64: the same weights in a NumPy forward pass in float64, the exact
  value up to 1e-16. Where the page and the package disagree, this says which side rounds.

Exit code 1 when the page is more than 1e-5 (of each vector's largest value, or relative for
the losses) from float64 anywhere, or disagrees with the package by more than that where the
package itself is within it of float64; else 0. For a page of z = 2 it also says how large
q(z|x) is on the map: the spread of sigma, and how many 1-sigma ellipses fit inside the dot of
mu (what the page's close-up is for).

Chromium: Playwright for Python and Debian's chromium (/usr/bin/chromium). Firefox: Debian's
firefox-esr and Mozilla's client of Firefox's own remote protocol, Marionette (`pip install
marionette-driver`; no WebDriver binary). Either runs headless, opens the page from file://.
"""

from __future__ import annotations

import argparse
import base64
import json
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TOLERANCE = 1e-5
# explore.js: the map's width in CSS pixels (view.size) and the radius of the chosen image's mu
MAP_PIXELS, DOT_PIXELS = 480, 4
CHUNK = 500  # images sent to the page per call
# Runs in the page, `a` the inputs: the z (and labels), a chunk of images as base64 float32.
PAGE_CALLS = """
  const L = (ys, i) => a.cvae ? [ys[i]] : [];
  const plain = (v) => Array.from(v);
  if (vae.latentDim !== a.dim || vae.conditional !== a.cvae)  // another model's page
    return {info: [vae.latentDim, vae.conditional]};
  const raw = atob(a.x), u8 = new Uint8Array(raw.length);
  for (let i = 0; i < raw.length; i++) u8[i] = raw.charCodeAt(i);
  const x = new Float32Array(u8.buffer);  // little-endian float32, [n, 784]
  const image = (i) => plain(x.subarray(784 * i, 784 * (i + 1)));
  const n = x.length / 784, out = {info: [vae.latentDim, vae.conditional], mu: [], logvar: [],
                                   loss: []};
  for (let i = 0; i < n; i++) {
    const e = vae.encode(image(i), ...L(a.y, i)), l = vae.loss(image(i), ...L(a.y, i));
    out.mu.push(plain(e.mu)); out.logvar.push(plain(e.logvar)); out.loss.push([l.recon, l.kl]);
  }
  out.logits = a.z.map((z, i) => plain(vae.decodeLogits(z, ...L(a.zy, i))));
  out.means = a.z.map((z, i) => plain(vae.decode(z, ...L(a.zy, i))));
  return out;
"""


def parse_args(argv=None) -> argparse.Namespace:
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("page", type=Path, help="a page of the explore subcommand")
  p.add_argument("weights", help="the weights it was written from (params.msgpack)")
  p.add_argument("--browser", choices=("chromium", "firefox"), default="chromium")
  p.add_argument("--images", default="500:600", help="test images A:B (default: 500:600)")
  p.add_argument("--z", type=int, default=100, help="random z to decode (default: 100)")
  p.add_argument("--seed", type=int, default=12345, help="the z and labels' seed")
  args = p.parse_args(argv)
  a, _, b = args.images.partition(":")
  if not (a.isdigit() and b.isdigit() and int(a) < int(b) <= 10_000):
    p.error(f"--images must be A:B with 0 <= A < B <= 10000, got {args.images!r}")
  return args


def inputs_and_package(weights: str, images: range, n_z: int, seed: int):
  """The inputs, the package's outputs for them (float32), and the float64 forward pass's."""
  import jax
  import jax.numpy as jnp
  import numpy as np

  from vae_jax import data, losses
  from vae_jax.app import weights as weights_io
  from vae_jax.extensions import recipe

  params, config = weights_io.load_weights(weights)
  model, cvae = recipe.make_model(config), config.model == "cvae"
  arrays = data.load_cached(config.data_source, config.data_dir)
  x_u8 = arrays["test_images"][images.start:images.stop].reshape(-1, 784)
  y = arrays["test_labels"][images.start:images.stop].astype(np.int32)
  rng = np.random.default_rng(seed)
  z = (2.5 * rng.standard_normal((n_z, config.latent_dim))).astype(np.float32)
  zy = rng.integers(0, 10, n_z).astype(np.int32)
  labels = (lambda ys: (jnp.asarray(ys),)) if cvae else (lambda ys: ())
  x = np.asarray(data.to_inputs(jnp.asarray(x_u8)))                    # float32 [n, 784]
  out = recipe.conditioned(model, labels(y)).apply({"params": params}, jnp.asarray(x))  # z = mu
  terms = losses.vae_loss(out.logits, jnp.asarray(x), out.mu, out.logvar)
  total = jax.jit(recipe.make_evaluate(config, model))(params, jnp.asarray(x_u8), *labels(y))
  if abs(float(terms.loss.sum()) - float(total.loss)) > 1e-5 * float(total.loss):
    raise SystemExit(f"explorer_check.py: error: the package's per-image losses sum to "
                     f"{float(terms.loss.sum())}, its evaluate to {float(total.loss)}")
  logits = recipe.conditioned(model, labels(zy)).apply({"params": params}, jnp.asarray(z),
                                                       method="decode")
  package = {"mu": out.mu, "logvar": out.logvar, "logits": logits,
             "means": jax.nn.sigmoid(logits), "loss": jnp.stack([terms.recon, terms.kl], 1)}
  f64 = float64_pass({k: {n: np.asarray(v, np.float64) for n, v in p.items()}
                      for k, p in params.items()}, x, y, z, zy, cvae)
  ins = {"dim": config.latent_dim, "cvae": cvae, "z": z.tolist(), "zy": zy.tolist(),
         "y": y.tolist()}
  return ins, x, {k: np.asarray(v, np.float64) for k, v in package.items()}, f64


def float64_pass(p: dict, x, y, z, zy, cvae: bool) -> dict:
  """The blog's model (the CVAE: one-hot(y) joined to fc1's and fc3's inputs) in float64."""
  import numpy as np

  def join(a, labels):
    return np.concatenate([a, np.eye(10)[labels]], 1) if cvae else a

  def dense(a, name):
    return a @ p[name]["kernel"] + p[name]["bias"]

  def decode(codes, labels):
    return dense(np.maximum(dense(join(codes, labels), "fc3"), 0), "fc4")

  x = np.asarray(x, np.float64)
  h = np.maximum(dense(join(x, y), "fc1"), 0)
  mu, logvar = dense(h, "fc21"), dense(h, "fc22")
  logits_mu = decode(mu, y)
  recon = (np.logaddexp(0, logits_mu) - x * logits_mu).sum(1)  # softplus(l) - x l
  kl = -0.5 * (1 + logvar - mu**2 - np.exp(logvar)).sum(1)
  logits = decode(np.asarray(z, np.float64), zy)
  means = np.exp(-np.logaddexp(0, -logits))  # sigmoid(l), without overflow
  return {"mu": mu, "logvar": logvar, "logits": logits, "means": means,
          "loss": np.stack([recon, kl], 1)}


def chunks(ins: dict, x) -> list[dict]:
  """The inputs in calls of CHUNK images (the z with the first), images as base64 float32."""
  import numpy as np
  out = []
  for start in range(0, len(x), CHUNK):
    part = np.ascontiguousarray(x[start:start + CHUNK], "<f4")
    out.append({**ins, "x": base64.b64encode(part.tobytes()).decode("ascii"),
                "y": ins["y"][start:start + CHUNK], **({} if start == 0 else {"z": [], "zy": []})})
  return out


def in_chromium(page: Path, calls: list[dict]) -> tuple[list, str]:
  from playwright.sync_api import sync_playwright
  with sync_playwright() as pw:
    browser = pw.chromium.launch(executable_path="/usr/bin/chromium")
    tab = browser.new_page()
    tab.route("**/*", lambda r: r.continue_() if r.request.url.startswith("file:") else r.abort())
    tab.goto(page.resolve().as_uri())
    tab.evaluate("() => window.vae.ready")
    out = [tab.evaluate(f"(a) => {{ {PAGE_CALLS} }}", a) for a in calls]
    version = browser.version
    browser.close()
  return out, f"Chromium {version}"


def in_firefox(page: Path, calls: list[dict]) -> tuple[list, str]:
  try:
    from marionette_driver.marionette import Marionette
  except ImportError:
    raise SystemExit("explorer_check.py: error: no marionette_driver here "
                     "(pip install marionette-driver)") from None
  firefox = shutil.which("firefox-esr") or shutil.which("firefox")
  if firefox is None:
    raise SystemExit("explorer_check.py: error: no firefox here (apt-get install firefox-esr)")
  with socket.socket() as s:  # a free port for Marionette
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
  with tempfile.TemporaryDirectory() as profile:
    Path(profile, "user.js").write_text(f'user_pref("marionette.port", {port});\n')
    proc = subprocess.Popen([firefox, "--headless", "--marionette", "--no-remote", "--profile",
                             profile], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
      client = Marionette(host="127.0.0.1", port=port, startup_timeout=60)
      for _ in range(60):  # until Firefox listens
        try:
          client.start_session()
          break
        except Exception:
          time.sleep(1)
      else:
        raise SystemExit("explorer_check.py: error: Firefox did not answer on Marionette's "
                         "port within a minute")
      client.navigate(page.resolve().as_uri())
      # A script runs in a sandbox; the page's own `vae` is window.wrappedJSObject.vae.
      script = ("const [a, done] = [arguments[0], arguments[arguments.length - 1]];"
                "const vae = window.wrappedJSObject.vae;"
                f"vae.ready.then(() => done((() => {{ {PAGE_CALLS} }})()))"
                ".catch((e) => done({error: String(e)}));")
      out = [client.execute_async_script(script, script_args=(a,), script_timeout=600_000)
             for a in calls]
      version = client.session_capabilities["browserVersion"]
      client.delete_session()
    finally:
      proc.terminate()
      proc.wait(30)
  errors = [o["error"] for o in out if "error" in o]
  if errors:
    raise SystemExit(f"explorer_check.py: error: the page failed in Firefox: {errors[0]}")
  return out, f"Firefox {version}"


def per_vector(a, b):
  """max_i |a_i - b_i| / max_i |b_i|, per row."""
  import numpy as np
  return np.abs(a - b).max(1) / np.abs(b).max(1)


def main(argv=None) -> int:
  import numpy as np

  args = parse_args(argv)
  if not args.page.is_file():
    print(f"explorer_check.py: error: {args.page} is not a file: give a page of the explore "
          f"subcommand", file=sys.stderr)
    return 2
  start, _, stop = args.images.partition(":")
  images = range(int(start), int(stop))
  ins, x, package, f64 = inputs_and_package(args.weights, images, args.z, args.seed)
  run = in_chromium if args.browser == "chromium" else in_firefox
  out, browser = run(args.page, chunks(ins, x))
  if out[0]["info"] != [ins["dim"], ins["cvae"]]:
    print(f"{args.page} is a page of z = {out[0]['info'][0]} (CVAE: {out[0]['info'][1]}); "
          f"{args.weights} is of z = {ins['dim']} (CVAE: {ins['cvae']})")
    return 1
  page = {k: np.array([row for o in out for row in o[k]], np.float64)
          for k in ("mu", "logvar", "logits", "means", "loss")}
  print(f"{args.page} in {browser}: {args.z} z ~ N(0, 2.5^2 I) (seed {args.seed}), test images "
        f"{images.start}..{images.stop - 1}; the worst vector of each (loss: relative, each "
        f"image), and how many are above {TOLERANCE:g}:")
  failed = above_any = False
  for key in ("logits", "means", "mu", "logvar", "loss"):
    if key == "loss":  # recon and KL, each relative
      rel = lambda a, b: (np.abs(a - b) / np.abs(b)).max(1)  # noqa: E731
    else:
      rel = per_vector
    vs_package, page_err, package_err = (rel(page[key], package[key]), rel(page[key], f64[key]),
                                         rel(package[key], f64[key]))
    above = vs_package > TOLERANCE
    blame_page = (page_err > TOLERANCE) | (above & (package_err <= TOLERANCE))
    failed |= bool(blame_page.any())
    above_any |= bool(above.any())
    first = 0 if key in ("logits", "means") else images.start  # rows: z's, or test images
    rows = [f"{first + i} (largest |value| {np.abs(package[key][i]).max():.2g}: "
            f"{vs_package[i]:.1e}; page vs float64 {page_err[i]:.1e}, package vs float64 "
            f"{package_err[i]:.1e})" for i in np.argsort(-vs_package)[:above.sum()][:3]]
    print(f"  {key:7s} page vs package {vs_package.max():.1e} ({above.sum()} above"
          + (f": {', '.join(rows)}" if rows else "")
          + f"); page vs float64 {page_err.max():.1e}, package vs float64 "
          f"{package_err.max():.1e}")
  if ins["dim"] == 2:  # how large q(z|x) is on the map, in the page's pixels
    lim = json.loads(re.search(r'id="vae-data">(.*?)</script>', args.page.read_text(),
                               re.S).group(1))["map"]["lim"]
    scale = MAP_PIXELS / (2 * lim)
    sigma = np.exp(0.5 * package["logvar"])                           # [n, 2]
    inside = (sigma.max(1) * scale <= DOT_PIXELS).mean()
    low, high = np.quantile(sigma, [0.05, 0.95])
    print(f"  q(z|x) on the map ({scale:.3g} pixels a unit of z): sigma {low:.3f} to {high:.3f}"
          f" for 90% of the coordinates; the 1-sigma ellipse "
          f"of {inside:.1%} of the images inside the {DOT_PIXELS}-pixel dot of mu")
  print("  " + ("the page is more than 1e-5 off where the package is not: see above" if failed
                else "the page is within 1e-5 of float64 everywhere; where it is more than "
                     "1e-5 from the package, the package is the farther from float64"
                if above_any else "the page is within 1e-5 of the package and of float64 "
                                  "everywhere"))
  return 1 if failed else 0


if __name__ == "__main__":
  sys.exit(main())
