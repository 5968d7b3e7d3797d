"""`vae-jax explore`: the page it writes, driven in a real browser (Debian's chromium, through
Playwright), against the package's own JAX results; and its refusals.

The page's model must equal the package's to 1e-5 of each vector's largest value (logits,
Bernoulli means, mu, logvar) and its loss to 1e-5 relative, for z values and images of the
tests' own choosing; its views must show what that model gives. The browser tests train three
small models on MNIST (one epoch of 2,000 images: z = 2, z = 5, and the CVAE at z = 2) and
keep a screenshot of every view, printing where.
"""

import base64
import json
import math
import os
from pathlib import Path

import jax
import jax.numpy as jnp
import matplotlib.image
import numpy as np
import pytest

from vae_jax import Config, train
from vae_jax.app import checkpoint, cli, explore, plots, weights
from vae_jax.data import to_inputs
from vae_jax.extensions import latent, likelihood, recipe

CHROMIUM = Path("/usr/bin/chromium")  # Debian's; Playwright's own download cannot be fetched here
TOLERANCE = 1e-5                      # of each vector's largest value; relative for the losses
MODELS = {"vae2": Config(latent_dim=2), "vae5": Config(latent_dim=5),
          "cvae2": Config(latent_dim=2, model="cvae")}
TRAIN = {"epochs": 1, "train_limit": 2000, "test_limit": 500}


def _browser_missing() -> str | None:
  """Why the browser tests cannot run here, in one line; None when they can."""
  try:
    import playwright.sync_api  # noqa: F401
  except ImportError:
    return "the browser tests need Playwright: pip install -e '.[dev]'"
  if not CHROMIUM.exists():
    return f"the browser tests need Debian's chromium at {CHROMIUM}: sudo apt-get install chromium"
  return None


@pytest.fixture(scope="module")
def browser():
  why = _browser_missing()
  if why and os.environ.get("CI", "").lower() not in ("", "0", "false"):
    pytest.fail(f"{why} (CI runs them: .ci/run installs chromium)")
  if why:
    pytest.skip(why)
  from playwright.sync_api import sync_playwright
  with sync_playwright() as p:
    b = p.chromium.launch(executable_path=str(CHROMIUM))
    yield b
    b.close()


class Built:
  """A trained model, its page and what the package says about it."""

  def __init__(self, name, config, params, html, d):
    self.name, self.config, self.params, self.html, self.d = name, config, params, html, d
    self.model = recipe.make_model(config)
    self.cond = config.model == "cvae"

  def encode(self, x, y=None):
    """The package's q(z|x) (float32 x [N, 784]; the CVAE's labels y [N]) -> mu, logvar."""
    kw = {"y": jnp.asarray(y)} if self.cond else {}
    return map(np.asarray, self.model.apply({"params": self.params}, jnp.asarray(x, jnp.float32),
                                            method="encode", **kw))

  def decode_logits(self, z, y=None):
    kw = {"y": jnp.asarray(y)} if self.cond else {}
    return np.asarray(self.model.apply({"params": self.params}, jnp.asarray(z, jnp.float32),
                                       method="decode", **kw))


@pytest.fixture(scope="module")
def built(browser, tmp_path_factory):
  """The three models, trained briefly on MNIST, each with its page (`vae-jax explore`); after
  `browser`, so that a machine without one skips before training."""
  out = {}
  for name, base in MODELS.items():
    config = base.replace(**TRAIN)
    d = recipe.load_data(config)
    fit = train.fit(recipe.setup(config, d), d, config.epochs)
    run = tmp_path_factory.mktemp(name)
    weights.save_params(fit.params, run / "params.msgpack")
    (run / "config.json").write_text(config.to_json())
    html = run / "explorer.html"
    limit = [] if name == "vae2" else ["--test-limit", str(TRAIN["test_limit"])]  # vae2: all
    assert cli.main(["explore", "--weights", str(run / "params.msgpack"), "--out", str(html),
                     "--no-compile-cache", *limit]) == 0
    data = recipe.load_data(config.replace(test_limit=None if name == "vae2" else 500),
                            with_train=False)
    out[name] = Built(name, config, weights.load_weights(run / "params.msgpack")[0], html, data)
  return out


def open_page(browser, html: Path):
  """The page from file://, every other request aborted (and recorded); its console messages,
  page errors and aborted requests are returned alongside, to be checked."""
  context = browser.new_context(viewport={"width": 1400, "height": 1000})
  seen = {"console": [], "errors": [], "blocked": []}

  def route(r):
    if r.request.url.startswith("file:") or r.request.url.startswith("data:"):
      return r.continue_()
    seen["blocked"].append(r.request.url)
    return r.abort()

  context.route("**/*", route)
  page = context.new_page()
  page.on("console", lambda m: seen["console"].append(f"{m.type}: {m.text}"))
  page.on("pageerror", lambda e: seen["errors"].append(str(e)))
  page.goto(html.as_uri())
  page.evaluate("() => vae.ready.then(() => new Promise(r => requestAnimationFrame(() => r())))")
  return page, seen


@pytest.fixture(scope="module")
def pages(built, browser):
  opened = {name: open_page(browser, b.html) for name, b in built.items()}
  yield opened
  for page, _ in opened.values():
    page.context.close()


@pytest.fixture(scope="module")
def shots(tmp_path_factory):
  folder = tmp_path_factory.mktemp("explorer_screenshots")
  yield folder
  print(f"\nexplorer screenshots: {folder}")


def page_data(html: Path) -> dict:
  """The data a page carries (its JSON), the map's points decoded: xy [N, 2]."""
  text = html.read_text()
  start = text.index('<script type="application/json" id="vae-data">')
  data = json.loads(text[text.index(">", start) + 1:text.index("</script>", start)])
  data["map"]["xy"] = np.frombuffer(base64.b64decode(data["map"]["xy"]), "<f4").reshape(-1, 2)
  return data


def next_frame(page) -> None:
  """Waits until the page has drawn what the last event asked for (its next frame, and one more)."""
  page.evaluate("() => new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)))")


def per_vector_error(page, package) -> float:
  """The largest max_i |page_i - package_i| / max_i |package_i| over the rows."""
  page, package = np.asarray(page, np.float64), np.asarray(package, np.float64)
  assert page.shape == package.shape
  return float((np.abs(page - package).max(1) / np.abs(package).max(1)).max())


def canvas_grey(page, selector: str) -> np.ndarray:
  """The 28 x 28 canvas's red channel (its grey), read back: uint8 [784]."""
  rgba = page.evaluate(f"""() => Array.from(document.querySelector({selector!r})
      .getContext("2d", {{willReadFrequently: true}}).getImageData(0, 0, 28, 28).data)""")
  return np.asarray(rgba, np.uint8).reshape(-1, 4)[:, 0]


def call(page, method: str, rows, labels=None) -> list:
  """vae.<method>(row) for each row (with its label for a CVAE), in the page."""
  return page.evaluate(f"""([rows, labels]) => rows.map((r, i) =>
      labels === null ? vae.{method}(r) : vae.{method}(r, labels[i]))""",
                       [np.asarray(rows, np.float64).tolist(),
                        None if labels is None else [int(y) for y in labels]])


def test_the_strip_takes_the_first_images_of_each_digit_in_test_order():
  assert explore.strip_indices(np.array([1, 0, 1, 1, 1, 0])).tolist() == [1, 5, 0, 2, 3]


# --------------------------------------------------------------------------
# The browser.


@pytest.mark.slow
@pytest.mark.parametrize("name", MODELS)
def test_the_page_loads_offline_from_a_file_with_nothing_in_the_console(name, built, pages):
  page, seen = pages[name]
  assert page.evaluate("[vae.latentDim, vae.conditional]") == [
      built[name].config.latent_dim, built[name].cond]
  page.wait_for_timeout(200)  # a frame or two after the first
  assert seen == {"console": [], "errors": [], "blocked": []}
  # a finger dragged on the map or the pad draws there, and does not scroll the page
  assert page.evaluate("""() => ["map", "pad"].map(
      id => getComputedStyle(document.getElementById(id)).touchAction)""") == ["none", "none"]
  size = built[name].html.stat().st_size
  print(f"{name}: {size} bytes")
  if name == "vae2":  # the blog's model (784-512-2) and all 10,000 test images
    assert size <= 5_000_000


@pytest.mark.slow
@pytest.mark.parametrize("name", MODELS)
def test_decode_equals_the_package_for_100_random_z(name, built, pages):
  b, (page, _) = built[name], pages[name]
  rng = np.random.default_rng(7)
  z = (2.0 * rng.standard_normal((100, b.config.latent_dim))).astype(np.float32)
  y = rng.integers(0, 10, 100) if b.cond else None
  want = b.decode_logits(z, y)
  logits_err = per_vector_error(call(page, "decodeLogits", z, y), want)
  means_err = per_vector_error(call(page, "decode", z, y), jax.nn.sigmoid(want))
  print(f"{name}: decodeLogits {logits_err:.1e}, decode {means_err:.1e} of each vector's max")
  assert logits_err <= TOLERANCE and means_err <= TOLERANCE


@pytest.mark.slow
@pytest.mark.parametrize("name", MODELS)
def test_encode_and_loss_equal_the_package_for_100_test_images(name, built, pages):
  b, (page, _) = built[name], pages[name]
  idx = np.random.default_rng(8).choice(len(b.d.x_test), 100, replace=False)
  x = np.asarray(to_inputs(b.d.x_test[idx]))          # float32 [100, 784], as evaluate's
  y = np.asarray(b.d.y_test)[idx] if b.cond else None
  mu, logvar = b.encode(x, y)
  got = call(page, "encode", x, y)
  mu_err = per_vector_error([g["mu"] for g in got], mu)
  logvar_err = per_vector_error([g["logvar"] for g in got], logvar)
  # The package's evaluate, image by image: its loss sums at z = mu over a split of one.
  evaluate = jax.jit(recipe.make_evaluate(b.config, b.model))
  labels = lambda i: (jnp.asarray(y[i:i + 1]),) if b.cond else ()
  want = np.array([[float(v) for v in evaluate(b.params, b.d.x_test[idx[i]][None], *labels(i))]
                   for i in range(100)])             # [100, (recon, kl, loss)]
  losses = np.array([[g["recon"], g["kl"], g["loss"]] for g in call(page, "loss", x, y)])
  loss_err = np.abs(losses - want) / np.abs(want)
  print(f"{name}: encode mu {mu_err:.1e}, logvar {logvar_err:.1e} of each vector's max; loss "
        f"relative {loss_err.max(0)} (recon, kl, loss)")
  assert mu_err <= TOLERANCE and logvar_err <= TOLERANCE
  assert (loss_err <= TOLERANCE).all()


@pytest.mark.slow
@pytest.mark.parametrize("name", MODELS)
def test_the_model_refuses_a_wrong_label_or_size(name, built, pages):
  page, cond = pages[name][0], built[name].cond
  def error(expression):
    return page.evaluate(f"() => {{ try {{ {expression}; return null }} catch (e) {{ return "
                         f"e instanceof Error ? e.message : 'not an Error' }} }}")
  z = "new Array(vae.latentDim).fill(0)"
  if cond:
    assert "give a label" in error(f"vae.decode({z})")
    assert "give a label" in error("vae.encode(new Array(784).fill(0), 10)")
    assert error(f"vae.decode({z}, 3)") is None
  else:
    assert "takes no label" in error(f"vae.decode({z}, 3)")
    assert "takes no label" in error("vae.loss(new Array(784).fill(0), 0)")
    assert error(f"vae.decode({z})") is None
  label = ", 1" if cond else ""
  assert "784 numbers" in error(f"vae.encode(new Array(783).fill(0){label})")
  assert error(f"vae.encode(new Array(784).fill(2){label})") == (
      "pixels[0] = 2: expected a finite number in [0, 1]")
  # z: any finite number, and nothing else; the bad value as it was given
  for bad, shown in (("Infinity", "Infinity"), ("-Infinity", "-Infinity"), ("NaN", "NaN"),
                     ("'0.5'", '"0.5"'), ("null", "null"), ("undefined", "undefined")):
    assert error(f"vae.decode([0, {bad}, 0, 0, 0].slice(0, vae.latentDim){label})") == (
        f"z[1] = {shown}: expected a finite number"), bad
  assert error(f"vae.loss(new Array(784).fill(NaN){label})") == (
      "pixels[0] = NaN: expected a finite number in [0, 1]")
  if cond:  # the string "3" is not the label 3, and the message shows its quotes
    assert error(f"vae.decode({z}, '3')") == (
        'this model is a CVAE: give a label, an integer 0-9 (got "3")')
    assert error(f"vae.decode({z}, 2.5)").endswith("(got 2.5)")


def map_point(page, px: float, py: float) -> tuple[float, float]:
  """The map's data coordinates of a pointer at (px, py) CSS pixels of the page, by the map's
  stated view: [-lim, lim] on both axes over the canvas's content box."""
  box, lim = page.evaluate("""() => { const c = document.getElementById("map");
      const r = c.getBoundingClientRect();
      return [[r.left + c.clientLeft, r.top + c.clientTop, c.clientWidth], explorer.view.lim]; }""")
  left, top, width = box
  return (-lim + 2 * lim * (px - left) / width, lim - 2 * lim * (py - top) / width)


def map_pixel(page, x: float, y: float) -> tuple[float, float]:
  box, lim = page.evaluate("""() => { const c = document.getElementById("map");
      const r = c.getBoundingClientRect();
      return [[r.left + c.clientLeft, r.top + c.clientTop, c.clientWidth], explorer.view.lim]; }""")
  left, top, width = box
  return left + (x + lim) / (2 * lim) * width, top + (lim - y) / (2 * lim) * width


@pytest.mark.slow
@pytest.mark.parametrize("name", MODELS)
def test_the_pointer_on_the_map_decodes_that_point_into_the_digit_canvas(name, built, pages):
  b, (page, _) = built[name], pages[name]
  mu, _ = b.encode(to_inputs(b.d.x_test), b.d.y_test if b.cond else None)
  # latent.png's view of the test set's mu (plots.project_2d): z = 2, mu itself; z > 2, its
  # PCA plane, z = m + x v1 + y v2 with m the mean of mu and v1, v2 its principal axes
  mu = np.asarray(mu, np.float64)
  xy, _ = plots.project_2d(mu)
  m = mu.mean(0) if b.config.latent_dim > 2 else np.zeros(2)
  axes = latent.principal_axes(mu)
  assert np.abs((mu - m) @ axes.T - xy).max() <= 1e-9 * np.abs(xy).max()
  assert np.abs(page_data(b.html)["map"]["xy"] - xy).max() <= TOLERANCE * np.abs(xy).max()
  label = page.evaluate("explorer.state.label") if b.cond else None
  for x, y in ((-1.5, 0.5), (0.3, -2.2), (2.0, 1.0)):
    px, py = map_pixel(page, x, y)
    page.mouse.move(px, py)
    next_frame(page)
    mx, my = map_point(page, px, py)
    z = page.evaluate("Array.from(explorer.state.z)")
    np.testing.assert_allclose(z, m + mx * axes[0] + my * axes[1], rtol=0, atol=1e-5)
    shown = canvas_grey(page, "#digit")
    page_means = np.asarray(call(page, "decode", [z], None if label is None else [label])[0])
    assert (shown == np.round(255 * page_means)).all()  # the canvas is what decode gives
    want = jax.nn.sigmoid(b.decode_logits(np.asarray([z]), None if label is None else [label]))[0]
    assert np.abs(shown - 255 * np.asarray(want)).max() <= 0.5 + 255 * TOLERANCE
  page.mouse.move(1300, 900)  # off the map: back to the pinned point


@pytest.mark.slow
def test_print_the_frames_per_second_of_live_decoding(built, pages):
  page = pages["vae2"][0]
  x0, y0 = map_pixel(page, -4, -4)
  x1, y1 = map_pixel(page, 4, 4)
  before = page.evaluate("[explorer.state.frames, performance.now()]")
  steps = 240
  for i in range(steps):
    t = i / (steps - 1)
    page.mouse.move(x0 + t * (x1 - x0), y0 + t * (y1 - y0) + 40 * math.sin(6 * t))
  next_frame(page)
  after = page.evaluate("[explorer.state.frames, performance.now()]")
  frames, seconds = after[0] - before[0], (after[1] - before[1]) / 1000
  decode_ms = page.evaluate("""() => { const z = [0.5, -0.5], t0 = performance.now();
      for (let i = 0; i < 200; i++) vae.decode(z); return (performance.now() - t0) / 200; }""")
  print(f"\nlive decoding (z = 2, 784-512-2) while the pointer moves: {frames} frames in "
        f"{seconds:.2f} s = {frames / seconds:.0f} frames per second ({steps} pointer moves); "
        f"vae.decode alone: {decode_ms:.2f} ms")
  page.mouse.move(1300, 900)
  assert frames > 0


# MNIST's preparation of a drawn digit, written again in NumPy from its description: the ink's
# bounding box fit to 20 x 20 keeping its aspect (area averaging), centred by its centre of mass
# in 28 x 28 by whole pixels (JavaScript's Math.round: floor(v + 1/2)).


def area_weights(n: int, m: int) -> np.ndarray:
  """[m, n]: target j averages the source interval [j n / m, (j + 1) n / m)."""
  a = np.arange(m)[:, None] * n / m
  k = np.arange(n)[None, :]
  return np.clip(np.minimum(a + n / m, k + 1) - np.maximum(a, k), 0, None) / (n / m)


def mnist_like(ink: np.ndarray) -> np.ndarray:
  rows, cols = np.nonzero(ink > 0)
  grid = np.zeros((28, 28))
  if not len(rows):
    return grid.ravel().astype(np.float32)
  crop = ink[rows.min():rows.max() + 1, cols.min():cols.max() + 1]
  height, width = crop.shape
  scale = 20 / max(height, width)
  h, w = (max(1, math.floor(s * scale + 0.5)) for s in (height, width))
  box = area_weights(height, h) @ crop @ area_weights(width, w).T
  cy = box.sum(1) @ (np.arange(h) + 0.5) / box.sum()
  cx = box.sum(0) @ (np.arange(w) + 0.5) / box.sum()
  dy = min(max(math.floor(14 - cy + 0.5), 0), 28 - h)
  dx = min(max(math.floor(14 - cx + 0.5), 0), 28 - w)
  grid[dy:dy + h, dx:dx + w] = np.minimum(box, 1)
  return grid.ravel().astype(np.float32)


def test_the_mnist_preparation_of_the_tests_fits_20_pixels_and_centres_the_mass():
  ink = np.zeros((280, 280))
  ink[40:200, 100:130] = 1.0  # a bar 160 tall, 30 wide
  ink[40:60, 100:220] = 0.5
  grid = mnist_like(ink).reshape(28, 28).astype(np.float64)
  rows, cols = np.nonzero(grid > 0)
  assert rows.max() - rows.min() + 1 == 20 and cols.max() - cols.min() + 1 == 15
  centre = [(grid.sum(1) @ (np.arange(28) + 0.5)), (grid.sum(0) @ (np.arange(28) + 0.5))]
  assert np.all(np.abs(np.array(centre) / grid.sum() - 14) <= 0.5)
  # area averaging keeps the ink's mass, times the area's scale: (20 / 160)^2
  assert grid.sum() == pytest.approx(ink.sum() * (20 / 160) ** 2, rel=1e-6)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["vae2", "cvae2"])
def test_strokes_drawn_with_the_mouse_give_the_grid_the_page_encodes(name, built, pages, shots):
  b, (page, _) = built[name], pages[name]
  page.click("#clear")
  page.locator('#strip canvas[data-index="1"]').click()  # the test image "clear" goes back to
  box = page.evaluate("""() => { const r = document.getElementById("pad").getBoundingClientRect();
      return [r.left, r.top]; }""")
  stroke = [(70, 60), (200, 55), (205, 70), (150, 150), (120, 230)]  # a 7, in pad pixels
  page.mouse.move(box[0] + stroke[0][0], box[1] + stroke[0][1])
  page.mouse.down()
  for x, y in stroke[1:]:
    page.mouse.move(box[0] + x, box[1] + y, steps=12)
  page.mouse.up()
  next_frame(page)
  alpha = page.evaluate("""() => { const c = document.getElementById("pad");
      return Array.from(c.getContext("2d", {willReadFrequently: true})
        .getImageData(0, 0, c.width, c.height).data.filter((_, i) => i % 4 === 3)); }""")
  ink = np.asarray(alpha, np.float64).reshape(280, 280) / 255
  assert ink.sum() > 500  # the strokes are there
  want = mnist_like(ink)
  assert page.evaluate("explorer.state.image.name") == "your drawing"
  grid = np.asarray(page.evaluate("Array.from(explorer.state.image.pixels)"))
  assert np.abs(grid - want).max() <= 1e-6
  assert (canvas_grey(page, "#grid") == np.round(255 * grid)).all()
  label = page.evaluate("explorer.state.label") if b.cond else None
  mu, logvar = b.encode(want[None], None if label is None else [label])
  shown = page.evaluate("[explorer.state.image.mu, explorer.state.image.logvar]"
                        ".map(a => Array.from(a))")
  assert per_vector_error([shown[0]], mu) <= TOLERANCE
  assert per_vector_error([shown[1]], logvar) <= TOLERANCE
  page.locator("#draw-panel").screenshot(path=shots / f"{name}_drawn.png")
  print(f"kept {shots / f'{name}_drawn.png'}")
  # "clear" wipes the pad and goes back to the test image chosen before the drawing: its grid,
  # reconstruction, loss and mu, as the strip's click gave them
  page.click("#clear")
  next_frame(page)
  assert page.evaluate("""() => { const c = document.getElementById("pad");
      return c.getContext("2d").getImageData(0, 0, c.width, c.height).data.every(v => v === 0); }""")
  assert page.evaluate("explorer.state.image.name").startswith("test image 1 ")
  assert (canvas_grey(page, "#grid") == np.asarray(b.d.x_test[1]).ravel()).all()
  mu, _ = b.encode(to_inputs(b.d.x_test[1:2]), b.d.y_test[1:2] if b.cond else None)
  assert per_vector_error([page.evaluate("Array.from(explorer.state.image.mu)")], mu) <= TOLERANCE


# The page's seeded generator, written again in Python: mulberry32 and Box-Muller.
M32 = 0xFFFFFFFF


def mulberry32(seed: int):
  a = seed & M32
  imul = lambda x, y: (x * y) & M32
  while True:
    a = (a + 0x6D2B79F5) & M32
    t = imul(a ^ (a >> 15), a | 1)
    t ^= (t + imul(t ^ (t >> 7), t | 61)) & M32
    yield ((t ^ (t >> 14)) & M32) / 2**32


def normals(seed: int):
  uniform = mulberry32(seed)
  while True:
    r = math.sqrt(-2 * math.log(1 - next(uniform)))
    angle = 2 * math.pi * next(uniform)
    yield r * math.cos(angle)
    yield r * math.sin(angle)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["vae2", "vae5"])
def test_the_samples_are_mu_plus_sigma_times_the_seeded_eps(name, built, pages):
  b, (page, _) = built[name], pages[name]
  z = b.config.latent_dim
  page.fill("#seed", "12345")
  page.dispatch_event("#seed", "change")
  page.locator('#strip canvas[data-index="0"]').click()  # test image 0
  page.click("#draw-eps")
  eps, samples = page.evaluate("[explorer.state.eps.map(e => Array.from(e)), "
                               "explorer.state.samples.map(s => Array.from(s))]")
  stream = normals(12345)
  want_eps = np.array([[next(stream) for _ in range(z)] for _ in range(8)])
  np.testing.assert_allclose(eps, want_eps, rtol=0, atol=1e-12)
  mu, logvar = b.encode(to_inputs(b.d.x_test[:1]))
  want = mu + np.exp(0.5 * logvar.astype(np.float64)) * want_eps  # [8, z]
  assert per_vector_error(samples, want) <= TOLERANCE
  # The generator itself: 20,000 draws have mean 0 and variance 1 within 5 standard errors.
  draws = np.asarray(page.evaluate("() => { const g = explorer.normals(3); "
                                   "return Array.from({length: 20000}, g); }"))
  assert abs(draws.mean()) < 5 / math.sqrt(len(draws))
  assert abs(draws.var() - 1) < 5 * math.sqrt(2 / len(draws))
  again = normals(3)
  assert np.abs(draws[:6] - [next(again) for _ in range(6)]).max() < 1e-12


def canvas_rgb(page, selector: str) -> np.ndarray:
  """A canvas's pixels, read back: uint8 [height, width, 3] (its backing store's pixels)."""
  w, h, rgba = page.evaluate(f"""() => {{ const c = document.querySelector({selector!r});
      return [c.width, c.height, Array.from(c.getContext("2d", {{willReadFrequently: true}})
        .getImageData(0, 0, c.width, c.height).data)]; }}""")
  return np.asarray(rgba, np.uint8).reshape(h, w, 4)[..., :3]


@pytest.mark.slow
@pytest.mark.parametrize("name", ["vae2", "vae5"])
def test_the_close_up_of_q_draws_its_ellipses_and_samples_where_the_maths_puts_them(
    name, built, pages, shots):
  b, (page, _) = built[name], pages[name]
  page.fill("#seed", "7")
  page.dispatch_event("#seed", "change")
  page.locator('#strip canvas[data-index="0"]').click()  # test image 0
  page.click("#draw-eps")
  next_frame(page)
  # q(z|x) = N(mu, diag(sigma^2)) seen on the map's plane z = m + x v1 + y v2 (A = [v1; v2]):
  # centred at A (mu - m), covariance C = A diag(sigma^2) A^T, whose k-sigma ellipse has
  # semi-axes k sqrt(lambda) along C's eigenvectors. The close-up spans mu +- 3.5 sqrt(lambda_max).
  data = page_data(b.html)
  m, A = np.asarray(data["map"]["origin"]), np.asarray(data["map"]["axes"])
  mu, logvar = (v[0].astype(np.float64) for v in b.encode(to_inputs(b.d.x_test[:1])))
  sigma = np.exp(logvar / 2)
  lam, vec = np.linalg.eigh(A @ np.diag(sigma**2) @ A.T)  # ascending: minor, major
  centre, half = A @ (mu - m), 3.5 * math.sqrt(lam[1])
  zoom = page.evaluate("explorer.state.zoom")
  size = zoom["size"]
  unit = size / (2 * half)  # pixels per unit of the map
  assert abs(zoom["half"] - half) <= TOLERANCE * half
  assert np.abs(np.asarray(zoom["centre"]) - centre).max() <= TOLERANCE * np.abs(centre).max()
  for k, e in zip((1, 2), zoom["ellipses"]):
    np.testing.assert_allclose([e["major"], e["minor"]], k * np.sqrt(lam[::-1]) * unit, rtol=1e-4)
  to_px = lambda xy: np.stack([size / 2 + (xy[..., 0] - centre[0]) * unit,
                               size / 2 - (xy[..., 1] - centre[1]) * unit], -1)
  stream = normals(7)
  eps = np.array([[next(stream) for _ in range(len(mu))] for _ in range(8)])
  samples = to_px((mu + sigma * eps - m) @ A.T)  # [8, 2]
  assert np.abs(np.asarray(zoom["samples"]) - samples).max() <= 0.01
  # What the canvas shows at those pixels: an orange dot at each sample inside the view, and
  # the ellipses' black strokes (or a sample on them) at the ends of their axes.
  rgb = canvas_rgb(page, "#zoom").astype(int)
  scale = rgb.shape[1] / size  # the device pixel ratio
  def block(point):  # the 3 x 3 device pixels around a point given in CSS pixels
    c, r = (int(v * scale) for v in point)
    return rgb[max(r - 1, 0):r + 2, max(c - 1, 0):c + 2].reshape(-1, 3)
  inside = [p for p in samples if (3 <= p).all() and (p <= size - 3).all()]
  assert len(inside) >= 5, samples  # 3.5 sigma each way: most samples fall in the view
  for point in inside:
    assert (np.abs(block(point) - [0xe8, 0x59, 0x0c]).max(1) <= 8).any(), point
  for k in (1, 2):
    for axis in (0, 1):
      for sign in (1, -1):
        end = to_px(centre + sign * k * math.sqrt(lam[axis]) * vec[:, axis])
        assert block(end)[:, 1].min() < 128, (k, axis, sign)  # dark: drawn there
  assert rgb[:, :, 1].min() < 128 and (rgb == 255).all(-1).mean() > 0.5  # white, with ink
  path = shots / f"{name}_zoom.png"
  page.locator("#zoom").screenshot(path=path)
  colours = len(np.unique((matplotlib.image.imread(path)[..., :3] * 255).astype(np.uint8)
                          .reshape(-1, 3), axis=0))
  assert colours >= 16, colours
  print(f"{name}: the close-up spans mu +- {half:.3g} (the map: +-{data['map']['lim']:g}); "
        f"kept {path}")


@pytest.mark.slow
def test_z5_sliders_follow_the_kl_order_start_at_mu_and_decode(built, pages):
  b, (page, _) = built["vae5"], pages["vae5"]
  kl, var = map(np.asarray, likelihood.latent_statistics(b.params, b.model, to_inputs(b.d.x_test)))
  active = var > likelihood.ACTIVE_THRESHOLD
  order = sorted(range(5), key=lambda k: (not active[k], -kl[k]))
  page.locator('#strip canvas[data-index="1"]').click()
  next_frame(page)
  rows = page.evaluate("""() => Array.from(document.querySelectorAll("#sliders .slider"), r => {
      const i = r.querySelector("input");
      return [Number(i.dataset.dim), Number(i.value), r.classList.contains("inactive")]; })""")
  assert [r[0] for r in rows] == order
  assert [r[2] for r in rows] == [not active[k] for k in order]
  mu, _ = b.encode(to_inputs(b.d.x_test[1:2]))
  np.testing.assert_allclose([r[1] for r in rows], mu[0][order], rtol=0,
                             atol=TOLERANCE * np.abs(mu).max())
  k = order[0]
  page.locator(f'#sliders input[data-dim="{k}"]').fill("1.25")  # a range input takes fill
  next_frame(page)
  z = np.asarray(page.evaluate("Array.from(explorer.state.z)"))
  assert z[k] == 1.25 and np.allclose(np.delete(z, k), np.delete(mu[0], k), atol=1e-6)
  want = jax.nn.sigmoid(b.decode_logits(z[None]))[0]
  assert np.abs(canvas_grey(page, "#digit") - 255 * np.asarray(want)).max() <= 0.5 + 255 * TOLERANCE


@pytest.mark.slow
def test_the_cvae_label_keeps_z_and_changes_the_digit(built, pages):
  b, (page, _) = built["cvae2"], pages["cvae2"]
  page.locator('#strip canvas[data-index="0"]').click()  # a 7: the label becomes 7
  assert page.evaluate("explorer.state.label") == int(b.d.y_test[0])
  z = page.evaluate("Array.from(explorer.state.z)")
  page.locator("#labels button", has_text="3").click()
  next_frame(page)
  assert page.evaluate("explorer.state.label") == 3
  assert page.evaluate("Array.from(explorer.state.z)") == z
  for y in range(10):
    want = 255 * np.asarray(jax.nn.sigmoid(b.decode_logits(np.asarray([z]), [y]))[0])
    shown = canvas_grey(page, f"#every-digit canvas:nth-child({y + 1})")
    assert np.abs(shown - want).max() <= 0.5 + 255 * TOLERANCE, y
    if y == 3:
      assert (canvas_grey(page, "#digit") == shown).all()


@pytest.mark.slow
def test_the_cvae_label_redraws_the_interpolation_row_with_the_new_label(built, pages):
  b, (page, _) = built["cvae2"], pages["cvae2"]
  a, bb = (np.asarray(page.evaluate(f"Array.from(explorer.state.{w}.mu)")) for w in "ab")
  steps = [(1 - s / 9) * a + s / 9 * bb for s in range(10)]  # z_t, t = s / 9, as the page
  now = page.evaluate("explorer.state.label")
  for how, y in (("#labels button", (now + 3) % 10), ("#every-digit canvas", (now + 6) % 10)):
    page.locator(how).nth(y).click()  # a label button, then a tile of every digit
    next_frame(page)
    assert page.evaluate("explorer.state.label") == y
    want = np.asarray(call(page, "decode", steps, [y] * 10))  # the page's own decoder, label y
    package = np.asarray(jax.nn.sigmoid(b.decode_logits(np.asarray(steps), [y] * 10)))
    for s in range(10):
      shown = canvas_grey(page, f"#path canvas:nth-child({s + 1})")
      assert (shown == np.round(255 * want[s])).all(), (how, s)
      assert np.abs(shown - 255 * package[s]).max() <= 0.5 + 255 * TOLERANCE, (how, s)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["vae2", "cvae2"])
def test_the_interpolation_slider_walks_from_one_mu_to_the_other(name, built, pages):
  b, (page, _) = built[name], pages[name]
  label = page.evaluate("explorer.state.label") if b.cond else None
  # A and B are test images 0 and 1 until set, each encoded with its label (a CVAE)
  y = np.asarray(b.d.y_test[:2]) if b.cond else None
  mu, _ = b.encode(to_inputs(b.d.x_test[:2]), y)
  page.evaluate('document.querySelector("#path canvas").dataset.kept = "yes"')
  page.locator("#t").fill("0.3")
  next_frame(page)
  # the row is kept (not drawn again for each t), and its step nearest to t outlined: t = 3 / 9
  assert page.evaluate('document.querySelector("#path canvas").dataset.kept') == "yes"
  assert page.evaluate("""() => Array.from(document.querySelectorAll("#path canvas"),
      c => c.classList.contains("chosen"))""") == [s == 3 for s in range(10)]
  z = np.asarray(page.evaluate("Array.from(explorer.state.z)"))
  want_z = 0.7 * mu[0].astype(np.float64) + 0.3 * mu[1]
  assert np.abs(z - want_z).max() <= TOLERANCE * np.abs(mu).max()
  want = jax.nn.sigmoid(b.decode_logits(z[None], None if label is None else [label]))[0]
  assert np.abs(canvas_grey(page, "#digit") - 255 * np.asarray(want)).max() <= 0.5 + 255 * TOLERANCE


@pytest.mark.slow
@pytest.mark.parametrize("name", MODELS)
def test_every_view_shows_something_and_is_kept_as_a_screenshot(name, built, pages, shots):
  page = pages[name][0]
  page.locator('#strip canvas[data-index="0"]').click()
  page.click("#draw-eps")
  views = ["map-panel", "decoded-panel", "draw-panel", "reparam-panel", "interp-panel",
           "api-panel"] + (["sliders-panel"] if name == "vae5" else []) + (
               ["cvae-panel"] if name == "cvae2" else [])
  for view in views:
    path = shots / f"{name}_{view}.png"
    page.locator(f"#{view}").screenshot(path=path)
    image = matplotlib.image.imread(path)[..., :3]
    colours = len(np.unique((image * 255).astype(np.uint8).reshape(-1, 3), axis=0))
    assert colours >= 16, (view, colours)  # a blank panel: its background and a few lines
    print(f"kept {path}")
  hidden = page.evaluate("""() => ["sliders-panel", "cvae-panel"].filter(
      id => document.getElementById(id).hidden)""")
  assert set(hidden) == {"sliders-panel", "cvae-panel"} - set(views)
  # the sections shown are numbered 1, 2, ... in the order they read
  titles = page.evaluate("""() => Array.from(document.querySelectorAll("main > section"))
      .filter(s => !s.hidden).map(s => s.querySelector("h2").textContent)""")
  assert [t.split(". ")[0] for t in titles] == [str(i + 1) for i in range(len(views))], titles


# --------------------------------------------------------------------------
# What explore refuses: one line, exit 2, no file written.


@pytest.fixture
def runs(tmp_path):
  """Weights of the kinds explore refuses (and one it takes), small and untrained."""
  def save(name, config, params=None):
    run = tmp_path / name
    run.mkdir()
    model = recipe.make_model(config)
    params = params or model.init_params(jax.random.PRNGKey(0))
    weights.save_params(params, run / "params.msgpack")
    (run / "config.json").write_text(config.to_json())
    return run, params

  small = Config(hidden_dim=16)
  good, params = save("good", small)
  nan = jax.tree.map(lambda a: a, params)
  nan["fc4"]["bias"] = nan["fc4"]["bias"].at[3].set(jnp.nan)
  save("nan", small, nan)
  save("burda", Config(arch="burda", hidden_dim=16, latent_dim=2))
  save("z1", Config(hidden_dim=16, latent_dim=1))
  model = recipe.make_model(small)
  optimizer = recipe.make_optimizer(small, 1)
  checkpoint.save_checkpoint(good, 1, train.create_state(model, optimizer, jax.random.PRNGKey(0)),
                             [], small)
  (tmp_path / "taken.html").write_text("mine\n")
  return tmp_path


@pytest.mark.parametrize("weights_at, out, message", [
    ("good/params.msgpack", "taken.html", "--out {root}/taken.html exists"),
    ("good/params.msgpack", "missing/page.html", "the folder {root}/missing does not exist"),
    ("good/params.msgpack", "good", "is a directory"),
    ("good/params.msgpack", "page.png", "the page is HTML: give a .html name"),
    ("good/checkpoints/epoch_0001.msgpack", "page.html", "is a checkpoint"),
    ("nan/params.msgpack", "page.html", "holds 1 NaN or infinite values"),
    ("burda/params.msgpack", "page.html", "is a burda model: the explorer runs the blog's model"),
    ("z1/params.msgpack", "page.html", "the explorer maps z on two axes: a model with z = 1"),
    ("good/params.msgpack --test-limit 9", "page.html",
     "--test-limit 9: the page's map and its statistics of z need at least 10 test images"),
    ("none/params.msgpack", "page.html", "does not exist"),
])
def test_explore_refuses_what_it_cannot_draw(weights_at, out, message, runs, tiny_data_dir,
                                             capsys):
  before = sorted(p.relative_to(runs) for p in runs.rglob("*"))
  weights_at, *flags = weights_at.split()
  code = cli.main(["explore", "--weights", str(runs / weights_at), "--out", str(runs / out),
                   "--data-dir", str(tiny_data_dir), *flags])
  err = capsys.readouterr().err.strip()
  assert code == 2 and len(err.splitlines()) == 1, err
  assert err.startswith("vae-jax explore: error: ") and message.format(root=runs) in err, err
  assert "784-16" not in err  # no model's width given as the blog's (the blog's is 784-512)
  assert sorted(p.relative_to(runs) for p in runs.rglob("*")) == before  # nothing written


def test_explore_writes_a_page_of_the_run_or_of_the_blogs_state_dict(runs, tiny_data_dir, capsys):
  # Without a browser: one file, nothing fetched from elsewhere, the weights' float32 bytes
  # whole; the same model as a state dict (the blog's .npz layout) gives the same weights.
  params = weights.load_weights(runs / "good/params.msgpack")[0]
  weights.export_state_dict(params, runs / "vae.npz")
  for source, out in (("good/params.msgpack", "page.html"), ("vae.npz", "blog.html")):
    assert cli.main(["explore", "--weights", str(runs / source), "--out", str(runs / out),
                     "--data-dir", str(tiny_data_dir)]) == 0
    assert f"wrote {runs / out}" in capsys.readouterr().out
    text = (runs / out).read_text()
    # the page names the weights by their folder and file: no local path travels with it
    shown = f"{(runs / source).parent.name}/{Path(source).name}"
    assert page_data(runs / out)["source"] == shown and f": {shown}</title>" in text
    assert str(runs) not in text and str(runs.parent) not in text
    assert "http://" not in text and "https://" not in text and "<script src" not in text
    assert text.count("<script") == 2 and "{{" not in text
    data = page_data(runs / out)
    assert data["latentDim"] == 2 and not data["conditional"] and data["testLoss"]["n"] == 100
    for name, layer in data["layers"].items():
      for part in ("kernel", "bias"):
        stored = np.frombuffer(base64.b64decode(layer[part]), "<f4")
        assert (stored == np.asarray(params[name][part]).ravel()).all(), (source, name, part)
