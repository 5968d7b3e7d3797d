// vae-jax explorer: the trained model in plain JavaScript, and the views around it.
//
// The page is one file: the data (weights, the test set's mu, a strip of test images) sit in
// the JSON of the script element #vae-data, written by vae_jax/app/explore.py. No library, no
// network. window.vae is the model (documented in the page and in docs/explorer.md);
// window.explorer is the page's state, for the tests and for the curious.
"use strict";
(function () {
  const DATA = JSON.parse(document.getElementById("vae-data").textContent);
  const Z = DATA.latentDim;         // the latent size
  const COND = DATA.conditional;    // a CVAE: the label joins both networks' inputs
  const PIXELS = 784, SIDE = 28, CLASSES = 10;

  // ------------------------------------------------------------------------------------------
  // Bytes: base64 of little-endian float32 or uint8 arrays.

  function bytes(b64) {
    const s = atob(b64);
    const out = new Uint8Array(s.length);
    for (let i = 0; i < s.length; i++) out[i] = s.charCodeAt(i);
    return out;
  }

  function floats(b64) {
    const b = bytes(b64);
    const view = new DataView(b.buffer);
    const out = new Float32Array(b.length / 4);
    for (let i = 0; i < out.length; i++) out[i] = view.getFloat32(4 * i, true);  // little-endian
    return out;
  }

  // ------------------------------------------------------------------------------------------
  // The model: the blog's five Dense layers (the CVAE: one-hot(y) joined to fc1's and fc3's
  // inputs).
  //   encode:  h = relu(x W1 + b1),  mu = h W21 + b21,  logvar = h W22 + b22
  //   decode:  g = relu(z W3 + b3),  logits = g W4 + b4,  means = sigmoid(logits)
  // A kernel W is Flax's [in, out], row-major: W[i][j] = kernel[i * out + j].

  let layers = null;  // {fc1: {in, out, kernel: Float32Array, bias: Float32Array}, ...}

  function loadLayers() {
    const out = {};
    for (const [name, l] of Object.entries(DATA.layers)) {
      out[name] = {in: l.in, out: l.out, kernel: floats(l.kernel), bias: floats(l.bias)};
    }
    return out;
  }

  // y = x W + b (then ReLU), for a float32 x [in]: each y_j = sum_i x_i W_ij is summed in
  // float64 (plain JS numbers) and rounded to float32 once, when stored. A zero x_i adds
  // nothing and is skipped (most pixels, the ReLU's zeros, all but one of a one-hot).
  function dense(x, layer, relu) {
    const n = layer.out, w = layer.kernel;
    const acc = new Float64Array(n);
    for (let i = 0; i < layer.in; i++) {
      const xi = x[i];
      if (xi === 0) continue;
      const row = i * n;
      for (let j = 0; j < n; j++) acc[j] += xi * w[row + j];
    }
    const y = new Float32Array(n);
    for (let j = 0; j < n; j++) {
      const v = acc[j] + layer.bias[j];
      y[j] = relu && v < 0 ? 0 : v;  // ReLU = max(v, 0)
    }
    return y;
  }

  // A value as it was given, for an error message: the string "3" keeps its quotes, while
  // NaN, Infinity and undefined read as themselves (JSON would write null for the first two).
  function shown(v) {
    if (typeof v === "number" || typeof v === "bigint" || v === undefined) return String(v);
    try { return JSON.stringify(v) ?? String(v); } catch { return String(v); }
  }

  function checkLabel(label) {
    if (!COND) {
      if (label !== undefined) throw new Error("this model is a VAE: it takes no label");
      return;
    }
    if (!Number.isInteger(label) || label < 0 || label >= CLASSES) {
      throw new Error(`this model is a CVAE: give a label, an integer 0-9 (got ${shown(label)})`);
    }
  }

  // A float32 copy of `values` (n finite numbers, each in [lo, hi]), followed by one-hot(label)
  // for a CVAE: the input of fc1 or fc3.
  function input(values, n, what, label, lo = -Infinity, hi = Infinity) {
    if (layers === null) throw new Error("the weights are not loaded yet: await vae.ready");
    if (values == null || values.length !== n) {
      const got = values == null ? values : values.length;
      throw new Error(`${what} must hold ${n} numbers, got ${got}`);
    }
    checkLabel(label);
    const x = new Float32Array(n + (COND ? CLASSES : 0));
    const range = lo === -Infinity && hi === Infinity ? "" : ` in [${lo}, ${hi}]`;
    for (let i = 0; i < n; i++) {
      const v = values[i];
      // Number.isFinite: a number, and neither NaN nor +-Infinity (a string "3" is refused too)
      if (!Number.isFinite(v) || v < lo || v > hi) {
        throw new Error(`${what}[${i}] = ${shown(v)}: expected a finite number${range}`);
      }
      x[i] = v;
    }
    if (COND) x[n + label] = 1;
    return x;
  }

  function encode32(pixels, label) {
    const h = dense(input(pixels, PIXELS, "pixels", label, 0, 1), layers.fc1, true);
    return {mu: dense(h, layers.fc21, false), logvar: dense(h, layers.fc22, false)};
  }

  function decodeLogits32(z, label) {
    return dense(dense(input(z, Z, "z", label), layers.fc3, true), layers.fc4, false);
  }

  const sigmoid = (l) => 1 / (1 + Math.exp(-l));
  // softplus(l) = log(1 + e^l), written so that it never overflows.
  const softplus = (l) => Math.max(l, 0) + Math.log1p(Math.exp(-Math.abs(l)));

  function means32(logits) {
    const p = new Float32Array(logits.length);
    for (let i = 0; i < p.length; i++) p[i] = sigmoid(logits[i]);
    return p;
  }

  // The decoder's Bernoulli means at z: what every digit canvas of the page shows.
  const decode32 = (z, label) => means32(decodeLogits32(z, label));

  // The blog's loss of one image in eval mode (z = mu), in nats, summed in float64:
  //   recon = -sum_i [x_i log p_i + (1 - x_i) log(1 - p_i)],  p = sigmoid(l)
  //         =  sum_i [softplus(l_i) - x_i l_i]       (the same, from the logits l)
  //   kl    = -1/2 sum_k (1 + logvar_k - mu_k^2 - exp(logvar_k))
  function lossTerms(pixels, label) {
    const {mu, logvar} = encode32(pixels, label);
    const logits = decodeLogits32(mu, label);
    let recon = 0, kl = 0;
    for (let i = 0; i < PIXELS; i++) {
      const x = Math.fround(pixels[i]);  // the float32 pixel the encoder saw
      recon += softplus(logits[i]) - x * logits[i];
    }
    for (let k = 0; k < Z; k++) kl += 1 + logvar[k] - mu[k] * mu[k] - Math.exp(logvar[k]);
    kl *= -0.5;
    return {recon, kl, loss: recon + kl, mu, logvar, logits};
  }

  const plain = (a) => Array.from(a);

  const vae = {
    latentDim: Z,
    conditional: COND,
    encode: (pixels, label) => {
      const q = encode32(pixels, label);
      return {mu: plain(q.mu), logvar: plain(q.logvar)};
    },
    decodeLogits: (z, label) => plain(decodeLogits32(z, label)),
    decode: (z, label) => plain(decode32(z, label)),
    loss: (pixels, label) => {
      const t = lossTerms(pixels, label);
      return {recon: t.recon, kl: t.kl, loss: t.loss};
    },
  };
  vae.ready = new Promise((resolve) => setTimeout(() => {  // after the page has painted once
    layers = loadLayers();
    resolve(vae);
  }, 0));
  window.vae = vae;

  // ------------------------------------------------------------------------------------------
  // A seeded generator for eps: mulberry32 (a 32-bit state, one uniform per step, in [0, 1))
  // and the Box-Muller transform: two uniforms u1, u2 give two independent N(0, 1) numbers,
  //   r = sqrt(-2 log(1 - u1)),  eps = (r cos(2 pi u2), r sin(2 pi u2))
  // (1 - u1 is in (0, 1], so the log is finite).

  function mulberry32(seed) {
    let a = seed >>> 0;
    return function () {
      a = (a + 0x6d2b79f5) >>> 0;
      let t = a;
      t = Math.imul(t ^ (t >>> 15), t | 1);
      t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
      return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
    };
  }

  function normals(seed) {
    const uniform = mulberry32(seed);
    let spare = null;
    return function () {
      if (spare !== null) { const s = spare; spare = null; return s; }
      const r = Math.sqrt(-2 * Math.log(1 - uniform()));
      const angle = 2 * Math.PI * uniform();
      spare = r * Math.sin(angle);
      return r * Math.cos(angle);
    };
  }

  // ------------------------------------------------------------------------------------------
  // MNIST's preparation of a drawn digit (LeCun et al.): the ink's bounding box is scaled to
  // fit a 20 x 20 box keeping its aspect ratio, each new pixel the mean of the ink it covers
  // (area averaging: the anti-aliasing), and placed in 28 x 28 so that its centre of mass
  // falls on the centre, (14, 14) in pixel units, moved by whole pixels.

  // Weights [m, n] of an area-averaging resampling of n source pixels to m: target pixel j
  // covers the source interval [j n / m, (j + 1) n / m), each source pixel k weighing its
  // overlap with it, divided by the interval's length n / m.
  function areaWeights(n, m) {
    const w = new Float64Array(m * n), step = n / m;
    for (let j = 0; j < m; j++) {
      const a = j * step, b = (j + 1) * step;
      for (let k = Math.floor(a); k < Math.min(n, Math.ceil(b)); k++) {
        const overlap = Math.min(b, k + 1) - Math.max(a, k);
        if (overlap > 0) w[j * n + k] = overlap / step;
      }
    }
    return w;
  }

  // ink: values in [0, 1], [height, width] row-major -> Float32Array(784), MNIST-like.
  function prepareDigit(ink, width, height) {
    let top = height, bottom = -1, left = width, right = -1;
    for (let r = 0; r < height; r++) {
      for (let c = 0; c < width; c++) {
        if (ink[r * width + c] > 0) {
          top = Math.min(top, r); bottom = Math.max(bottom, r);
          left = Math.min(left, c); right = Math.max(right, c);
        }
      }
    }
    const grid = new Float32Array(PIXELS);
    if (bottom < 0) return grid;  // no ink
    const H = bottom - top + 1, W = right - left + 1;
    const scale = 20 / Math.max(H, W);
    const h = Math.max(1, Math.round(H * scale)), w = Math.max(1, Math.round(W * scale));
    const wr = areaWeights(H, h), wc = areaWeights(W, w);
    // box = wr . crop . wc^T: first the columns (each source row to w values), then the rows
    const rows = new Float64Array(H * w);
    for (let r = 0; r < H; r++) {
      for (let j = 0; j < w; j++) {
        let s = 0;
        for (let c = 0; c < W; c++) s += wc[j * W + c] * ink[(top + r) * width + left + c];
        rows[r * w + j] = s;
      }
    }
    const box = new Float64Array(h * w);
    let mass = 0, my = 0, mx = 0;
    for (let i = 0; i < h; i++) {
      for (let j = 0; j < w; j++) {
        let s = 0;
        for (let r = 0; r < H; r++) s += wr[i * H + r] * rows[r * w + j];
        box[i * w + j] = s;
        mass += s; my += s * (i + 0.5); mx += s * (j + 0.5);  // pixel centres at i + 1/2
      }
    }
    // shift so that the centre of mass lands on 14: the nearest whole pixel, the box kept inside
    const clamp = (v, hi) => Math.min(Math.max(v, 0), hi);
    const dy = clamp(Math.round(SIDE / 2 - my / mass), SIDE - h);
    const dx = clamp(Math.round(SIDE / 2 - mx / mass), SIDE - w);
    for (let i = 0; i < h; i++) {
      for (let j = 0; j < w; j++) grid[(dy + i) * SIDE + dx + j] = Math.min(1, box[i * w + j]);
    }
    return grid;
  }

  // ------------------------------------------------------------------------------------------
  // The views.

  const $ = (id) => document.getElementById(id);
  const fmt = (v, d = 2) => (v >= 0 ? " " : "") + v.toFixed(d);
  const vec = (a, d = 2) => "[" + Array.from(a, (v) => fmt(v, d)).join(",") + "]";
  const M = DATA.map;
  const ORIGIN = M.origin, AXES = M.axes;
  const DIMS = DATA.dims;

  // The map's plane: a point (x, y) is z = m + x v1 + y v2;
  // z projects to ((z - m) . v1, (z - m) . v2).
  function zAt(x, y) {
    return Float64Array.from(ORIGIN, (m, k) => m + x * AXES[0][k] + y * AXES[1][k]);
  }
  function project(z) {
    let x = 0, y = 0;
    for (let k = 0; k < Z; k++) {
      x += (z[k] - ORIGIN[k]) * AXES[0][k];
      y += (z[k] - ORIGIN[k]) * AXES[1][k];
    }
    return [x, y];
  }
  // The 2 x 2 covariance of q(z|x) = N(mu, diag(sigma^2)) projected on the map:
  // A diag(sigma^2) A^T, with A = [v1; v2].
  function projectedCovariance(logvar) {
    const c = [0, 0, 0];
    for (let k = 0; k < Z; k++) {
      const v = Math.exp(logvar[k]);  // sigma_k^2
      c[0] += AXES[0][k] * AXES[0][k] * v;
      c[1] += AXES[0][k] * AXES[1][k] * v;
      c[2] += AXES[1][k] * AXES[1][k] * v;
    }
    return c;
  }

  // The 1-sigma ellipse of that covariance [[a, b], [b, c]], in the map's units: its semi-axes
  // are the square roots of the eigenvalues
  //   lambda = (a + c) / 2 +- sqrt(((a - c) / 2)^2 + b^2),
  // the major one at the angle theta = atan2(2 b, a - c) / 2 from the x axis. The k-sigma
  // ellipse is k times it. `major` is the largest sigma of q seen on the map.
  function sigmaEllipse(logvar) {
    const [a, b, c] = projectedCovariance(logvar);
    const mid = (a + c) / 2, half = Math.sqrt(((a - c) / 2) ** 2 + b * b);
    return {major: Math.sqrt(mid + half), minor: Math.sqrt(Math.max(mid - half, 0)),
            theta: Math.atan2(2 * b, a - c) / 2};
  }

  const state = {
    z: zAt(0, 0),        // the z decoded now
    pinned: null,        // the z a click pinned (the pointer's z while it is on the map)
    label: 0,            // the CVAE's label y
    image: null,         // {pixels, name, label, mu, logvar, recon, kl, loss}
    samples: [],         // z = mu + sigma * eps of the last draw
    eps: [],
    draws: null,         // the seeded normal generator
    a: null, b: null, t: 0.5,
    frames: 0,           // renders that decoded (the live decoding's frames)
    zoom: null,          // the close-up of q(z|x): its centre, span and what it drew, in pixels
  };

  const view = {size: 480, lim: M.lim};  // the map: [-lim, lim]^2 on size x size CSS pixels
  const toPx = ([x, y]) => [(x + view.lim) / (2 * view.lim) * view.size,
                            (view.lim - y) / (2 * view.lim) * view.size];
  const fromPx = (px, py) => [px / view.size * 2 * view.lim - view.lim,
                              view.lim - py / view.size * 2 * view.lim];

  // A 28 x 28 canvas shows `values` in [0, 1] as grey, 0 black and 1 white: round(255 v).
  function paint(canvas, values) {
    const ctx = canvas.getContext("2d", {willReadFrequently: true});
    const img = ctx.createImageData(SIDE, SIDE);
    for (let i = 0; i < PIXELS; i++) {
      const g = Math.round(255 * Math.min(1, Math.max(0, values[i])));
      img.data[4 * i] = img.data[4 * i + 1] = img.data[4 * i + 2] = g;
      img.data[4 * i + 3] = 255;
    }
    ctx.putImageData(img, 0, 0);
  }

  // The pointer's position in a square canvas, in units where its content is `size` wide
  // (the border left out).
  function inside(canvas, e, size) {
    const r = canvas.getBoundingClientRect();
    return [(e.clientX - r.left - canvas.clientLeft) / canvas.clientWidth * size,
            (e.clientY - r.top - canvas.clientTop) / canvas.clientHeight * size];
  }

  function smallCanvas(cls = "small") {
    const c = document.createElement("canvas");
    c.width = c.height = SIDE;
    c.className = cls;
    return c;
  }

  const labelArg = () => (COND ? state.label : undefined);

  // The map's still layer (grid, prior circles, the test set's mu), drawn once.
  let mapLayer = null;
  function drawMapLayer() {
    const dpr = window.devicePixelRatio || 1;
    mapLayer = document.createElement("canvas");
    mapLayer.width = mapLayer.height = view.size * dpr;
    const ctx = mapLayer.getContext("2d");
    ctx.scale(dpr, dpr);
    ctx.fillStyle = "#fff";
    ctx.fillRect(0, 0, view.size, view.size);
    ctx.strokeStyle = "#e4e4e4";
    ctx.fillStyle = "#888";
    ctx.font = "10px sans-serif";
    const step = view.lim > 10 ? 5 : view.lim > 4 ? 2 : 1;
    for (let v = -Math.floor(view.lim / step) * step; v < view.lim; v += step) {
      if (v === -view.lim) continue;  // the edges: no line, no label
      const [px, py] = toPx([v, v]);
      ctx.beginPath(); ctx.moveTo(px, 0); ctx.lineTo(px, view.size); ctx.stroke();
      ctx.beginPath(); ctx.moveTo(0, py); ctx.lineTo(view.size, py); ctx.stroke();
      ctx.fillText(String(v), px + 2, view.size - 3);
      ctx.fillText(String(v), 2, py - 2);
    }
    const xy = floats(M.xy), labels = bytes(M.labels);
    ctx.globalAlpha = 0.55;
    for (let i = 0; i < labels.length; i++) {
      const [px, py] = toPx([xy[2 * i], xy[2 * i + 1]]);
      ctx.fillStyle = DATA.colors[labels[i]];
      ctx.fillRect(px - 1, py - 1, 2, 2);
    }
    ctx.globalAlpha = 1;
    // The prior N(0, I) projected on the map: N(-A m, I), circles of radius 1, 2, 3.
    const centre = toPx(project(new Float64Array(Z)));
    ctx.strokeStyle = "#333";
    ctx.setLineDash([4, 3]);
    for (const r of [1, 2, 3]) {
      ctx.beginPath();
      ctx.arc(centre[0], centre[1], r / (2 * view.lim) * view.size, 0, 2 * Math.PI);
      ctx.stroke();
    }
    ctx.setLineDash([]);
  }

  // A dot (fill) or a ring at z, edged in white so that it shows on the dots of any digit.
  function marker(ctx, z, color, radius, fill) {
    const [px, py] = toPx(project(z));
    ctx.beginPath();
    ctx.arc(px, py, radius, 0, 2 * Math.PI);
    ctx.strokeStyle = "#fff"; ctx.lineWidth = fill ? 2 : 5;
    ctx.stroke();
    ctx.strokeStyle = color; ctx.fillStyle = color; ctx.lineWidth = 2.5;
    fill ? ctx.fill() : ctx.stroke();
    ctx.lineWidth = 1;
  }

  // The 1- and 2-sigma ellipses of q(z|x) centred on the pixel (px, py), `unit` pixels to one
  // unit of the map.
  function ellipses(ctx, e, px, py, unit) {
    ctx.strokeStyle = "#000";
    for (const k of [1, 2]) {
      ctx.beginPath();
      // the canvas's y points down: the angle turns the other way
      ctx.ellipse(px, py, k * e.major * unit, k * e.minor * unit, -e.theta, 0, 2 * Math.PI);
      ctx.stroke();
    }
  }

  function drawMap() {
    const canvas = $("map"), dpr = window.devicePixelRatio || 1;
    const ctx = canvas.getContext("2d");
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    ctx.drawImage(mapLayer, 0, 0, view.size, view.size);
    if (state.a && state.b) {  // the interpolation's path
      const [ax, ay] = toPx(project(state.a.mu)), [bx, by] = toPx(project(state.b.mu));
      ctx.strokeStyle = "#7048e8"; ctx.lineWidth = 2;
      ctx.beginPath(); ctx.moveTo(ax, ay); ctx.lineTo(bx, by); ctx.stroke();
      ctx.lineWidth = 1;
    }
    if (state.image) {
      ellipses(ctx, sigmaEllipse(state.image.logvar), ...toPx(project(state.image.mu)),
               view.size / (2 * view.lim));
      marker(ctx, state.image.mu, "#000", 4, true);
    }
    for (const z of state.samples) marker(ctx, z, "#e8590c", 3, true);
    if (state.pinned) marker(ctx, state.pinned, "#c92a2a", 7, false);
    marker(ctx, state.z, "#000", 6, false);
  }

  // The close-up of q(z|x). The map draws 40 pixels to a unit of z (the blog's z = 2 run),
  // and that run's sigma is 0.026 to 0.092 for 90% of its test images' coordinates: the
  // 1-sigma ellipse of 94% of them fits inside the dot of mu (4 pixels in radius). So this
  // view is centred on the chosen image's mu and spans mu +- 3.5 e.major on both axes, e.major
  // the largest sigma of q on the map (for z > 2, of the projected covariance, as the map's
  // ellipses). Shown: the 1- and 2-sigma ellipses, mu (black) and the samples
  // z = mu + sigma * eps (orange), each projected on the map's plane.
  const ZOOM_SIGMAS = 3.5;  // the view's half-width, in units of the largest sigma
  function drawZoom() {
    const canvas = $("zoom"), dpr = window.devicePixelRatio || 1, size = zoomSize;
    const ctx = canvas.getContext("2d", {willReadFrequently: true});
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    ctx.fillStyle = "#fff";
    ctx.fillRect(0, 0, size, size);
    if (!state.image) { state.zoom = null; return; }
    const e = sigmaEllipse(state.image.logvar);
    const centre = project(state.image.mu), half = ZOOM_SIGMAS * e.major;
    const unit = size / (2 * half);  // pixels per unit of the map
    // (x, y) on the map -> the zoom's pixel; the canvas's y points down
    const px = ([x, y]) => [size / 2 + (x - centre[0]) * unit, size / 2 - (y - centre[1]) * unit];
    ctx.strokeStyle = "#ddd";  // the axes through mu
    ctx.beginPath(); ctx.moveTo(size / 2, 0); ctx.lineTo(size / 2, size);
    ctx.moveTo(0, size / 2); ctx.lineTo(size, size / 2); ctx.stroke();
    ctx.lineWidth = 1.5;
    ellipses(ctx, e, size / 2, size / 2, unit);
    ctx.lineWidth = 1;
    ctx.fillStyle = "#000";
    ctx.beginPath(); ctx.arc(size / 2, size / 2, 3, 0, 2 * Math.PI); ctx.fill();
    const samples = state.samples.map((z) => px(project(z)));
    ctx.fillStyle = "#e8590c";  // the samples on top of mu: each dot's centre is orange
    for (const [x, y] of samples) {
      ctx.beginPath(); ctx.arc(x, y, 3, 0, 2 * Math.PI); ctx.fill();
    }
    state.zoom = {centre, half, size, unit, samples,
                  ellipses: [1, 2].map((k) => ({major: k * e.major * unit,
                                                minor: k * e.minor * unit, theta: e.theta}))};
    const where = Z > 2 ? "x and y, the map's axes" : "z1 and z2";
    $("zoom-scale").textContent = `the view spans mu \u00b1 ${half.toPrecision(2)} on ${where}`
      + ` (the map: \u00b1${view.lim}, ${Math.round(view.lim / half)} times wider);`
      + ` largest sigma ${e.major.toPrecision(2)}, smallest ${e.minor.toPrecision(2)}`;
  }

  // One frame: decode the current z (and, for a CVAE, every digit at it), redraw the map.
  let pending = false;
  function render() {
    if (!pending) {
      pending = true;
      requestAnimationFrame(() => { pending = false; renderNow(); });
    }
  }
  function renderNow() {
    paint($("digit"), decode32(state.z, labelArg()));
    state.frames++;
    const [x, y] = project(state.z);
    $("z-readout").textContent = `z = ${vec(state.z)}`
      + (Z > 2 ? `\nmap (x, y) = (${fmt(x)}, ${fmt(y)})` : "")
      + (COND ? `\ny = ${state.label}` : "");
    if (COND) {
      document.querySelectorAll("#every-digit canvas").forEach((c, y) => {
        paint(c, decode32(state.z, y));
        c.classList.toggle("chosen", y === state.label);
      });
      document.querySelectorAll("#labels button").forEach(
        (b, y) => b.classList.toggle("chosen", y === state.label));
    }
    syncSliders();
    drawMap();
  }

  function setZ(z) {
    state.z = Float64Array.from(z);
    render();
  }

  // The chosen image: drawn or from the strip. Its q(z|x) (given the label for a CVAE), its
  // reconstruction at z = mu and its loss; z (and the pin) move to its mu, unless keepZ.
  function chooseImage(pixels, name, label, keepZ = false) {
    if (COND && label !== undefined) state.label = label;
    const t = lossTerms(pixels, labelArg());
    state.image = {pixels, name, mu: t.mu, logvar: t.logvar,
                   recon: t.recon, kl: t.kl, loss: t.loss};
    paint($("grid"), pixels);
    paint($("recon"), means32(t.logits));
    const sigma = Array.from(t.logvar, (l) => Math.exp(l / 2));
    $("loss").textContent = `${name}${COND ? `, y = ${state.label}` : ""}\n`
      + `mu    = ${vec(t.mu)}\nsigma = ${vec(sigma)}\n`
      + `loss at z = mu: recon ${t.recon.toFixed(2)} + KL ${t.kl.toFixed(2)}`
      + ` = ${t.loss.toFixed(2)} nats`;
    state.samples = []; state.eps = [];
    $("samples").replaceChildren();
    $("eps-readout").textContent = "";
    drawZoom();
    if (!keepZ) {
      state.pinned = Float64Array.from(t.mu);
      state.z = Float64Array.from(t.mu);
    }
    render();
  }

  // --- the map: the pointer decodes live, a click pins ---
  function setupMap() {
    const canvas = $("map"), dpr = window.devicePixelRatio || 1;
    canvas.width = canvas.height = view.size * dpr;
    drawMapLayer();
    const at = (e) => zAt(...fromPx(...inside(canvas, e, view.size)));
    canvas.addEventListener("pointermove", (e) => setZ(at(e)));
    canvas.addEventListener("click", (e) => { state.pinned = at(e); setZ(state.pinned); });
    canvas.addEventListener("pointerleave", () => { if (state.pinned) setZ(state.pinned); });
    $("map-projection").textContent =
      `The map: ${M.projection}; the view spans [-${view.lim}, ${view.lim}] on both axes.`;
    $("legend").innerHTML =
      DATA.colors.map((c, d) => `<span style="background:${c}">${d}</span>`).join("");
  }

  // --- the drawing pad and the strip of test images ---
  function setupDrawing() {
    const pad = $("pad");
    const ctx = pad.getContext("2d", {willReadFrequently: true});
    ctx.lineWidth = 20; ctx.lineCap = "round"; ctx.lineJoin = "round"; ctx.strokeStyle = "#fff";
    let last = null, queued = false;
    let picked = null;  // the strip's canvas chosen last: "clear" goes back to it
    const point = (e) => inside(pad, e, pad.width);
    const update = () => {  // once a frame while drawing: prepare the grid and encode it
      queued = false;
      const rgba = ctx.getImageData(0, 0, pad.width, pad.height).data;
      const ink = new Float64Array(pad.width * pad.height);
      for (let i = 0; i < ink.length; i++) ink[i] = rgba[4 * i + 3] / 255;  // the ink: alpha
      chooseImage(prepareDigit(ink, pad.width, pad.height), "your drawing");
      document.querySelectorAll("#strip canvas").forEach((c) => c.classList.remove("chosen"));
    };
    const stroke = (e) => {
      const p = point(e);
      ctx.beginPath(); ctx.moveTo(...(last || p)); ctx.lineTo(...p); ctx.stroke();
      last = p;
      if (!queued) { queued = true; requestAnimationFrame(update); }
    };
    pad.addEventListener("pointerdown", (e) => {
      pad.setPointerCapture(e.pointerId);
      last = null;
      stroke(e);
    });
    pad.addEventListener("pointermove", (e) => { if (last) stroke(e); });
    const end = () => { last = null; };
    pad.addEventListener("pointerup", end);
    pad.addEventListener("pointercancel", end);
    // "clear" wipes the pad and, if a drawing is the chosen image, goes back to the test image
    // chosen before it: the grid, reconstruction, loss and map then show that image again.
    $("clear").addEventListener("click", () => {
      ctx.clearRect(0, 0, pad.width, pad.height);
      last = null;
      if (picked && state.image && state.image.name === "your drawing") picked.click();
    });

    const images = bytes(DATA.strip.images);
    DATA.strip.labels.forEach((label, s) => {
      // pixel / 255 in float32, as the package's to_inputs
      const u8 = images.subarray(s * PIXELS, (s + 1) * PIXELS);
      const pixels = Float32Array.from(u8, (v) => v / 255);
      const c = smallCanvas();
      c.title = `test image ${DATA.strip.index[s]}, a ${label}`;
      c.dataset.index = DATA.strip.index[s];
      paint(c, pixels);
      c.addEventListener("click", () => {
        chooseImage(pixels, `test image ${DATA.strip.index[s]} (a ${label})`, label);
        picked = c;
        document.querySelectorAll("#strip canvas").forEach(
          (o) => o.classList.toggle("chosen", o === c));
      });
      $("strip").append(c);
    });
  }

  // --- the reparameterization, and the close-up of q(z|x) ---
  let zoomSize = 240;  // the close-up's CSS pixels, set from its canvas
  function setupReparam() {
    const zoom = $("zoom"), dpr = window.devicePixelRatio || 1;
    zoomSize = zoom.width;
    zoom.width = zoom.height = zoomSize * dpr;
    const reseed = () => { state.draws = normals(Number($("seed").value) >>> 0); };
    reseed();
    $("seed").addEventListener("change", reseed);
    $("draw-eps").addEventListener("click", () => drawSamples(8));
  }

  function drawSamples(count) {
    const img = state.image;
    if (!img) return;
    state.eps = []; state.samples = [];
    $("samples").replaceChildren();
    for (let s = 0; s < count; s++) {
      const eps = Float64Array.from({length: Z}, () => state.draws());
      // z = mu + sigma * eps, sigma = exp(logvar / 2)
      const z = Float64Array.from(img.mu, (m, k) => m + Math.exp(img.logvar[k] / 2) * eps[k]);
      state.eps.push(eps); state.samples.push(z);
      const c = smallCanvas();
      paint(c, decode32(z, labelArg()));
      c.title = `z = ${vec(z)}`;
      c.addEventListener("click", () => setZ(z));
      $("samples").append(c);
    }
    const shown = state.eps.slice(0, 3).map(
      (e, s) => `eps = ${vec(e)}  z = ${vec(state.samples[s])}`);
    $("eps-readout").textContent = shown.join("\n")
      + (count > 3 ? `\n... ${count} samples, drawn on the map and up close` : "");
    drawZoom();
    render();
  }

  // --- a slider per dimension (z > 2), the active units first, then by KL ---
  let sliders = [];
  function setupSliders() {
    if (Z <= 2) return;
    $("sliders-panel").hidden = false;
    $("threshold").textContent = String(DIMS.threshold);
    const isActive = (k) => DIMS.muVar[k] > DIMS.threshold;  // Burda et al.'s active unit
    const order = Array.from({length: Z}, (_, k) => k).sort(
      (p, q) => isActive(q) - isActive(p) || DIMS.kl[q] - DIMS.kl[p]);
    for (const k of order) {
      const active = isActive(k);
      const row = document.createElement("div");
      row.className = "slider" + (active ? "" : " inactive");
      const input = document.createElement("input");
      Object.assign(input, {type: "range", min: -4, max: 4, step: "any"});
      input.dataset.dim = k;
      const value = document.createElement("span");
      value.className = "mono";
      const info = document.createElement("span");
      info.textContent = `KL ${DIMS.kl[k].toFixed(2)}, Var(mu) ${DIMS.muVar[k].toPrecision(2)}`
        + (active ? "" : ", inactive");
      row.append(`z${k + 1}`, input, value, info);
      input.addEventListener("input", () => {
        const z = Float64Array.from(state.z);
        z[k] = Number(input.value);
        setZ(z);
      });
      sliders.push({k, input, value});
      $("sliders").append(row);
    }
  }
  function syncSliders() {
    for (const s of sliders) {
      const v = state.z[s.k];
      const reach = Math.max(4, Math.ceil(Math.abs(v)));
      s.input.min = -reach; s.input.max = reach;
      if (Number(s.input.value) !== v) s.input.value = v;
      s.value.textContent = fmt(v);
    }
  }

  // --- the CVAE's label ---
  function setupLabels() {
    if (!COND) return;
    $("cvae-panel").hidden = false;
    for (let y = 0; y < CLASSES; y++) {
      const b = document.createElement("button");
      b.textContent = String(y);
      const pick = () => {
        state.label = y;
        if (state.image) rescore();
        showPath();  // the interpolation's row, decoded with the new label
        render();
      };
      b.addEventListener("click", pick);
      $("labels").append(b);
      const c = smallCanvas();
      c.title = `y = ${y} at this z`;
      c.addEventListener("click", pick);
      $("every-digit").append(c);
    }
  }
  // The chosen image under a new label: its q(z|x, y) and loss change; z (the style) stays.
  function rescore() {
    chooseImage(state.image.pixels, state.image.name, undefined, true);
  }

  // --- interpolation ---
  function setupInterpolation() {
    if (COND) $("interp-label").textContent = ", each point decoded with the chosen label y";
    const set = (which) => {
      if (!state.image) return;
      state[which] = {mu: Float64Array.from(state.image.mu), name: state.image.name};
      showPath();
    };
    $("set-a").addEventListener("click", () => set("a"));
    $("set-b").addEventListener("click", () => set("b"));
    $("t").addEventListener("input", () => {  // z moves; the row stays, its marker moves
      state.t = Number($("t").value);
      if (state.a && state.b) setZ(interpolate(state.t));
      markT();
    });
  }
  // z_t = (1 - t) mu_a + t mu_b
  const interpolate = (t) => Float64Array.from(state.a.mu,
                                               (a, k) => (1 - t) * a + t * state.b.mu[k]);
  // The row of ten steps, t = 0, 1/9, ..., 1 (as interpolation.png), decoded with the label
  // chosen now: redrawn when A, B or the label change.
  function showPath() {
    const name = (p) => (p ? p.name : "-");
    $("ab-readout").textContent = `A: ${name(state.a)}\nB: ${name(state.b)}`;
    if (state.a && state.b) {
      $("path").replaceChildren();
      for (let s = 0; s < 10; s++) {
        const c = smallCanvas();
        paint(c, decode32(interpolate(s / 9), labelArg()));
        c.title = `t = ${(s / 9).toFixed(2)}`;
        $("path").append(c);
      }
    }
    markT();
    render();
  }
  // t's readout, and the row's step nearest to t outlined.
  function markT() {
    $("t-readout").textContent = `t = ${state.t.toFixed(2)}`;
    const nearest = Math.round(state.t * 9);
    document.querySelectorAll("#path canvas").forEach(
      (c, s) => c.classList.toggle("chosen", s === nearest));
  }

  // ------------------------------------------------------------------------------------------

  function about() {
    const L = DATA.testLoss, kind = COND ? "model as a conditional VAE (CVAE)" : "VAE";
    return `${DATA.source}: the blog's ${kind}, 784-${DATA.hiddenDim}-${Z}. `
      + `Test loss at z = mu over ${L.n} test images: ${L.loss.toFixed(2)} nats per image `
      + `(recon ${L.recon.toFixed(2)} + KL ${L.kl.toFixed(2)})`
      + (DATA.binarize === "dynamic" ? ", on the binarized test images it trained for." : ".");
  }

  // The sections shown, numbered in the order they read (the sliders show for z > 2 only, the
  // CVAE's label for a CVAE only).
  function numberSections() {
    document.querySelectorAll("main > section:not([hidden]) > h2").forEach((h, i) => {
      h.prepend(`${i + 1}. `);
    });
  }

  vae.ready.then(() => {
    $("about").textContent = about();
    setupMap();
    setupDrawing();
    setupReparam();
    setupSliders();
    setupLabels();
    setupInterpolation();
    numberSections();
    // A first image and pair, so that every view shows something: test images 0 and 1
    // (the first row of interpolation.png).
    const strip = document.querySelectorAll("#strip canvas");
    const byIndex = (i) => Array.from(strip).find((c) => Number(c.dataset.index) === i);
    if (byIndex(1)) { byIndex(1).click(); $("set-b").click(); }
    if (byIndex(0)) { byIndex(0).click(); $("set-a").click(); }
    drawSamples(8);
  });

  window.explorer = {state, view, prepareDigit, mulberry32, normals, project, zAt, drawSamples,
                     ZOOM_SIGMAS};
})();
