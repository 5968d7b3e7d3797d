"""The explorer's page in Firefox: `window.vae` against the package, as tests/test_explore.py
checks it in Chromium.

  python scripts/explorer_firefox.py docs/explorer_vae_2.html runs/vae_2/params.msgpack
  python scripts/explorer_firefox.py docs/explorer_cvae_2.html runs/cvae_2/params.msgpack --seed 7

Needs Firefox (Debian: `apt-get install firefox-esr`) and Mozilla's client of Firefox's own
remote protocol, Marionette (`pip install marionette-driver`): no WebDriver binary to fetch.
Firefox runs headless on a fresh profile and opens the page from `file://`. The page is
given 100 z drawn from N(0, 2.5^2 I) and the test images 500..599 (and, for a CVAE, random
labels and the images' own), none of them the tests'; the script prints, per output, the
largest over the 100 vectors of max_i |page_i - package_i| / max_i |package_i| (recon, KL
and loss: |page - package| / |package|, the package's `evaluate` of each image), and exits
1 if any is above 1e-5, the tests' tolerance.
"""

from __future__ import annotations

import argparse
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TOLERANCE = 1e-5
PAGE_CALLS = """
  const [a, done] = [arguments[0], arguments[arguments.length - 1]];
  const vae = window.wrappedJSObject.vae;  // the page's own object, not the script's sandbox
  const L = (i, ys) => a.cvae ? [ys[i]] : [];
  const plain = (v) => Array.from(v);
  vae.ready.then(() => {
    if (vae.latentDim !== a.z[0].length || vae.conditional !== a.cvae)  // another model's page
      return done({info: [vae.latentDim, vae.conditional]});
    done({
      info: [vae.latentDim, vae.conditional],
      logits: a.z.map((z, i) => plain(vae.decodeLogits(z, ...L(i, a.zy)))),
      means: a.z.map((z, i) => plain(vae.decode(z, ...L(i, a.zy)))),
      enc: a.x.map((x, i) => { const e = vae.encode(x, ...L(i, a.y));
                               return [plain(e.mu), plain(e.logvar)]; }),
      loss: a.x.map((x, i) => { const l = vae.loss(x, ...L(i, a.y)); return [l.recon, l.kl, l.loss]; }),
    });
  }).catch((e) => done({error: String(e)}));
"""


def expected(weights: str, seed: int):
  """The inputs, and the package's outputs for them (float32, matmul precision "highest")."""
  import jax
  import jax.numpy as jnp
  import numpy as np

  from vae_jax import data
  from vae_jax.app import weights as weights_io
  from vae_jax.extensions import recipe

  params, config = weights_io.load_weights(weights)
  model, cvae = recipe.make_model(config), config.model == "cvae"
  arrays = data.load_cached(config.data_source, config.data_dir)
  x_u8 = arrays["test_images"][500:600].reshape(-1, 784)
  y = arrays["test_labels"][500:600].astype(np.int32)
  rng = np.random.default_rng(seed)
  z = (2.5 * rng.standard_normal((100, config.latent_dim))).astype(np.float32)
  zy = rng.integers(0, 10, 100).astype(np.int32)
  labels = (lambda ys: (jnp.asarray(ys),)) if cvae else (lambda ys: ())
  x = jnp.asarray(x_u8, jnp.float32) / 255
  mu, logvar = recipe.conditioned(model, labels(y)).apply({"params": params}, x, method="encode")
  logits = recipe.conditioned(model, labels(zy)).apply({"params": params}, jnp.asarray(z),
                                                       method="decode")
  evaluate = jax.jit(recipe.make_evaluate(config, model))
  scored = [evaluate(params, jnp.asarray(x_u8[i:i + 1]), *labels(y[i:i + 1])) for i in range(100)]
  inputs = {"z": z.tolist(), "zy": zy.tolist(), "x": np.asarray(x).tolist(), "y": y.tolist(),
            "cvae": cvae}
  want = {"info": [config.latent_dim, cvae], "logits": np.asarray(logits),
          "means": np.asarray(jax.nn.sigmoid(logits)), "mu": np.asarray(mu),
          "logvar": np.asarray(logvar),
          "loss": np.array([[float(s.recon), float(s.kl), float(s.loss)] for s in scored])}
  return inputs, want


def free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def in_firefox(page: Path, inputs: dict) -> tuple[dict, str]:
  """The page's answers in a headless Firefox, and Firefox's version."""
  try:
    from marionette_driver.marionette import Marionette
  except ImportError:
    raise SystemExit("explorer_firefox.py: error: no marionette_driver here "
                     "(pip install marionette-driver)") from None
  firefox = shutil.which("firefox-esr") or shutil.which("firefox")
  if firefox is None:
    raise SystemExit("explorer_firefox.py: error: no firefox here (apt-get install firefox-esr)")
  port = free_port()
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
      client.navigate(page.resolve().as_uri())
      out = client.execute_async_script(PAGE_CALLS, script_args=(inputs,), script_timeout=120_000)
      version = client.session_capabilities["browserVersion"]
      client.delete_session()
    finally:
      proc.terminate()
      proc.wait(30)
  if "error" in out:
    raise SystemExit(f"explorer_firefox.py: error: the page failed in Firefox: {out['error']}")
  return out, version


def parse_args(argv=None) -> argparse.Namespace:
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("page", type=Path, help="a page of the explore subcommand")
  p.add_argument("weights", help="the weights it was written from (params.msgpack)")
  p.add_argument("--seed", type=int, default=12345, help="the z and labels' seed")
  return p.parse_args(argv)


def main(argv=None) -> int:
  import numpy as np

  args = parse_args(argv)
  inputs, want = expected(args.weights, args.seed)
  got, version = in_firefox(args.page, inputs)
  if got["info"] != want["info"]:
    print(f"the page is of z = {got['info'][0]} (conditional: {got['info'][1]}), the weights of "
          f"z = {want['info'][0]} (conditional: {want['info'][1]})")
    return 1

  def worst(page, package):  # the largest, over the rows, of max |page - package| / max |package|
    page, package = np.asarray(page, np.float64), np.asarray(package, np.float64)
    return float((np.abs(page - package).max(1) / np.abs(package).max(1)).max())

  loss = np.asarray(got["loss"]) - want["loss"]
  errors = {"decodeLogits": worst(got["logits"], want["logits"]),
            "decode": worst(got["means"], want["means"]),
            "mu": worst([e[0] for e in got["enc"]], want["mu"]),
            "logvar": worst([e[1] for e in got["enc"]], want["logvar"]),
            **{k: float((np.abs(loss[:, i]) / np.abs(want["loss"][:, i])).max())
               for i, k in enumerate(("recon", "kl", "loss"))}}
  print(f"{args.page} in Firefox {version}, against the package (100 z, test images 500..599):")
  print("  " + ", ".join(f"{k} {v:.1e}" for k, v in errors.items()))
  bad = [k for k, v in errors.items() if not v <= TOLERANCE]
  print(f"  {'above' if bad else 'all within'} {TOLERANCE:g}" + (f": {', '.join(bad)}" if bad else ""))
  return 1 if bad else 0


if __name__ == "__main__":
  sys.exit(main())
