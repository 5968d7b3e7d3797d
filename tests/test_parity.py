"""PyTorch parity: the blog's model (`app/torch_ref.py`) against the JAX model.

Needs PyTorch (`pip install torch==2.13.0`, a CPU build); CI installs it. On a GPU
(`JAX_PLATFORMS=cuda`), PyTorch runs there too, when it sees the GPU (`DEVICE`).
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vae_jax import Config, data, losses, train
from vae_jax.app import weights
from vae_jax.model import VAE

torch = pytest.importorskip("torch")
from vae_jax.app.torch_ref import BlogVAE, loss_function as blog_loss  # noqa: E402

# PyTorch runs on the device JAX computes on. On a GPU both frameworks then use CUDA's
# exp, log and float32 products (TF32 off on both: JAX at matmul "highest", PyTorch by
# default), and the float32 error analysis of each test holds as on a CPU. JAX on a GPU
# against PyTorch on the CPU would also compare two backends' transcendentals, which
# this analysis does not cover (two of these tests failed so on an NVIDIA H200).
DEVICE = "cuda" if jax.default_backend() == "gpu" and torch.cuda.is_available() else "cpu"
torch.backends.cuda.matmul.allow_tf32 = False  # PyTorch's default, stated


def _numpy(t) -> np.ndarray:
  return t.detach().cpu().numpy()


def _digits(n, seed):
  """Continuous digit-like images in [0, 1]: dark background, bright strokes."""
  rng = np.random.default_rng(seed)
  x = rng.uniform(0, 0.1, (n, 28, 28)) * (rng.uniform(size=(n, 28, 28)) < 0.3)
  for i in range(n):
    r, c = rng.integers(4, 20, 2)
    x[i, r:r + 6, c:c + 3] = rng.uniform(0.6, 1.0)
  return x.reshape(n, 784).astype(np.float32)


def test_state_dict_round_trip_and_errors(tmp_path):
  torch.manual_seed(0)
  model = BlogVAE(3)
  torch.save(model.state_dict(), tmp_path / "vae.pth")
  params = weights.params_from_state_dict(weights.load_state_dict(tmp_path / "vae.pth"))
  np.testing.assert_array_equal(params["fc1"]["kernel"], model.fc1.weight.detach().numpy().T)
  weights.export_state_dict(params, tmp_path / "back.npz")
  weights.export_state_dict(params, tmp_path / "back.pth")
  for name in ("back.npz", "back.pth"):
    back = weights.load_state_dict(tmp_path / name)
    for k, v in model.state_dict().items():
      np.testing.assert_array_equal(back[k], v.numpy())
  model.load_state_dict(torch.load(tmp_path / "back.pth", weights_only=True))  # PyTorch reads it
  state = weights.state_dict_from_params(params)
  with pytest.raises(ValueError, match=r"missing \['fc4.bias'\]"):
    weights.params_from_state_dict({k: v for k, v in state.items() if k != "fc4.bias"})
  with pytest.raises(ValueError, match=r"'fc1.weight' has shape \[784, 512\], expected \[512, 784\]"):
    weights.params_from_state_dict({**state, "fc1.weight": state["fc1.weight"].T})


def _blog_run(z, dtype=np.float32):
  """The blog's PyTorch model (seed 1) and its Adam, as both trajectory tests start."""
  torch.manual_seed(1)
  torch.set_num_threads(2)
  # initialised on the CPU in float32, then moved (and widened): the same weights
  tmodel = BlogVAE(z).to(DEVICE, getattr(torch, np.dtype(dtype).name))
  return tmodel, torch.optim.Adam(tmodel.parameters(), lr=1e-3)


def _batches(z, steps, batch=128):
  """The (x, eps) of every step, the same for both frameworks, from fixed seeds.

  x are uint8 digit images / 255 (what the package's steps gather), as float32.
  """
  images = _images(1024, seed=0)
  rng = np.random.default_rng(1)
  for _ in range(steps):
    idx = rng.choice(len(images), batch, replace=False)
    yield idx, rng.standard_normal((batch, z)).astype(np.float32)


def _images(n, seed):
  """_digits quantised to uint8 pixels [n, 784], as the package stores MNIST."""
  return np.round(_digits(n, seed) * 255).astype(np.uint8)


def _to_tensor(images_u8):
  """ToTensor's float(pixel) / 255 in float32."""
  return images_u8.astype(np.float32) / np.float32(255)


# The model's two ReLUs take the outputs of fc1 and fc3. On an example where one of those
# inputs lies within float32 rounding of zero, one framework's unit can be on and the
# other's off; that example's gradient then differs by its whole share through the unit
# (measured: 3.3e-3 of fc3.weight's norm, from one pre-activation of 1.5e-8 against
# -3.6e-8 in float64, on an Intel Xeon). The one-step test finds such examples from both
# frameworks' own ReLU inputs, checks that each sign disagreement is float32 rounding, and
# compares the step on the batch without them.
RELU_LAYERS = ("fc1", "fc3")


def _loss_and_relu_inputs(params, model, x, eps, weight):
  """`losses.batch_loss`, with each ReLU layer's (input, output) from the same program, so
  the recorded signs are the ones the gradient used: {"fc1": (x [B, 784], h [B, 512]), ...}."""
  seen = {}

  def record(next_fun, args, kwargs, context):
    out = next_fun(*args, **kwargs)
    if context.method_name == "__call__" and context.module.name in RELU_LAYERS:
      seen[context.module.name] = (args[0], out)
    return out

  with nn.intercept_methods(record):
    loss, _ = losses.batch_loss(params, model, x, eps, weight)
  return loss, seen


def _relu_flips(params, jax_seen, torch_seen, rows):
  """The examples (of `rows`, the batch rows PyTorch saw) on which a ReLU of one framework
  is on and the other's off, after checking that each such disagreement is float32 rounding.

  A dot product of n float32 terms is within gamma_n sum_k |w_k a_k| of the exact one, in
  any order of summation (Higham, Accuracy and Stability, 2nd ed., eq. 3.5;
  gamma_n = n u / (1 - n u), u = 2^-24), so the two frameworks' pre-activations
  h = w.a + b can be at most gamma_{n+1} (|w|.(|a_jax| + |a_torch|) + 2 |b|)
  + |w|.|a_jax - a_torch| apart (the last term: fc3's input z is itself rounded
  differently). A larger gap at a sign disagreement
  would be a real difference. Returns (indices into `rows`, the |h| of each disagreement).
  """
  flips, sizes = set(), []
  for name in RELU_LAYERS:
    a_j, h_j = (np.asarray(v, np.float64)[rows] for v in jax_seen[name])  # JAX saw every row
    a_t, h_t = (np.asarray(v, np.float64) for v in torch_seen[name])
    w = np.abs(np.asarray(params[name]["kernel"], np.float64))  # [n, 512]
    b = np.abs(np.asarray(params[name]["bias"], np.float64))
    n = w.shape[0] + 1
    gamma = n * 2.0**-24 / (1 - n * 2.0**-24)
    bound = gamma * ((np.abs(a_j) + np.abs(a_t)) @ w + 2 * b) + np.abs(a_j - a_t) @ w
    i, k = np.nonzero((h_j > 0) != (h_t > 0))
    gap = np.abs(h_j - h_t)[i, k]
    assert np.all(gap <= bound[i, k]), (name, gap, bound[i, k])
    flips.update(i.tolist())
    sizes += np.maximum(np.abs(h_j[i, k]), np.abs(h_t[i, k])).tolist()
  return sorted(flips), sizes


def _torch_backward(tmodel, toptim, x, eps, seen=None):
  """The blog's loss on (x, eps) and its gradient in .grad (no optimiser step yet).

  `seen`: a dict that receives each ReLU layer's (input, output), as NumPy, by name.
  """
  hooks = [getattr(tmodel, name).register_forward_hook(
      lambda module, args, out, name=name: seen.__setitem__(name, (_numpy(args[0]), _numpy(out))))
      for name in (RELU_LAYERS if seen is not None else ())]
  try:
    toptim.zero_grad()
    xt = torch.from_numpy(x).to(DEVICE)
    recon, mu, logvar = tmodel(xt, torch.from_numpy(eps).to(DEVICE))
    tloss = blog_loss(recon, xt, mu, logvar)
    tloss.backward()
  finally:
    for hook in hooks:
      hook.remove()
  return tloss.item()


def _grads_of(tmodel):
  """The torch model's .grad of every parameter, in the blog's state_dict layout, as NumPy."""
  return {k: _numpy(p.grad).copy() for k, p in tmodel.named_parameters()}


@pytest.mark.parametrize("z", [2, 20])
def test_loss_and_gradients_match_pytorch_at_every_step_of_its_trajectory(z):
  # Teacher forcing: at each of 200 Adam steps of the PyTorch run, the JAX loss and
  # gradient are computed at PyTorch's current weights, batch and eps, so nothing
  # accumulates: what is compared is one step's arithmetic, float32 against float32.
  # Tolerances: the loss is a sum of ~10^5 float32 terms whose order differs, so its
  # relative rounding is a few 1e-7 (measured at most 2.2e-7, an AMD EPYC and an Intel
  # Xeon); a gradient is a sum over the batch that partly cancels, most in the small
  # bias tensors (measured at most 1.1e-5 of a tensor's norm, fc21.bias at z = 2). The
  # bounds, 1e-5 for the loss and 1e-4 for a gradient, are far below any real
  # difference: pixels / 256 instead of / 255 moves every gradient by ~4e-3, a KL without
  # its 1/2 by far more. An example on which the two frameworks' ReLUs disagree
  # (`_relu_flips`: a unit's input within float32 rounding of zero) is left out of that
  # step's comparison on both sides; the loop must still compare 99% of the examples.
  steps, batch = 200, 128
  tmodel, toptim = _blog_run(z)
  model = VAE.from_config(Config(latent_dim=z))
  grad_fn = jax.jit(jax.value_and_grad(_loss_and_relu_inputs, has_aux=True), static_argnums=1)
  worst_loss, worst_grad, left_out, flip_sizes = 0.0, {}, 0, []
  images = _images(1024, seed=0)
  for idx, eps in _batches(z, steps, batch):
    x = _to_tensor(images[idx])
    params = weights.params_from_state_dict(tmodel.state_dict())
    keep = np.ones(batch, bool)
    for _ in range(3):  # PyTorch on fewer rows rounds anew: its ReLUs are checked again
      (loss, jax_seen), grads = grad_fn(params, model, x, eps, jnp.asarray(keep, jnp.float32))
      torch_seen = {}
      tloss = _torch_backward(tmodel, toptim, x[keep], eps[keep], torch_seen)
      flips, sizes = _relu_flips(params, jax_seen, torch_seen, np.flatnonzero(keep))
      if not flips:
        break
      keep[np.flatnonzero(keep)[flips]] = False
      flip_sizes += sizes
    else:
      pytest.fail(f"the ReLUs still disagree after leaving out {batch - keep.sum()} examples")
    left_out += batch - keep.sum()
    worst_loss = max(worst_loss, abs(float(loss) - tloss) / abs(tloss))
    jgrads = weights.state_dict_from_params(grads)
    for k, g in _grads_of(tmodel).items():
      rel = np.linalg.norm(jgrads[k] - g) / np.linalg.norm(g)
      worst_grad[k] = max(worst_grad.get(k, 0.0), rel)
    if not keep.all():
      _torch_backward(tmodel, toptim, x, eps)  # PyTorch's step takes its whole batch
    toptim.step()
  print(f"z={z}: loss {worst_loss:.1e}; gradients " +
        ", ".join(f"{k} {v:.1e}" for k, v in worst_grad.items()) +
        f"; {left_out} of {steps * batch} examples left out for a ReLU input within rounding "
        f"of zero" + (f" (|h| at most {max(flip_sizes):.1e})" if flip_sizes else ""))
  assert worst_loss < 1e-5
  assert max(worst_grad.values()) < 1e-4, worst_grad
  assert left_out <= 0.01 * steps * batch


def test_adam_update_matches_pytorch_from_the_same_state():
  # The same weights and the same gradients into both optimisers, 20 steps: the
  # weights must agree to float32 rounding, so Adam's constants (betas, eps, bias
  # correction) are the same on both sides.
  torch.manual_seed(0)
  tmodel = BlogVAE(2).to(DEVICE)
  toptim = torch.optim.Adam(tmodel.parameters(), lr=1e-3)
  config = Config()
  optimizer = train.make_optimizer(config)
  params = weights.params_from_state_dict(tmodel.state_dict())
  opt_state = optimizer.init(params)
  update = jax.jit(optimizer.update)
  rng = np.random.default_rng(0)
  for step in range(1, 21):
    g = {k: (rng.standard_normal(v.shape) * 10.0 ** rng.integers(-4, 1)).astype(np.float32)
         for k, v in tmodel.state_dict().items()}  # gradients of mixed scales
    for k, p in tmodel.named_parameters():
      p.grad = torch.from_numpy(g[k]).to(DEVICE)
    toptim.step()
    updates, opt_state = update(weights.params_from_state_dict(g), opt_state, params)
    params = jax.tree.map(jnp.add, params, updates)
    ours = weights.state_dict_from_params(params)
    for k, v in tmodel.state_dict().items():
      # Per step each side rounds the sum weight + update (the two can end one ulp,
      # 2^-23 relative, apart) and computes the update, at most lr = 1e-3, in another
      # order (torch folds the bias corrections into the step size, Optax into the
      # moments): measured up to 3.7e-9 apart, where cancellation in the first moment
      # makes it small. Bound: 1e-5 of lr a step. A wrong beta or eps misses by 1e-5.
      np.testing.assert_allclose(ours[k], _numpy(v), rtol=step * 2.0**-23, atol=step * 1e-8,
                                 err_msg=f"{k} after {step} steps")


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("z", [2, 20])
def test_the_package_epoch_matches_the_blog_loop_on_the_same_batches(z, dtype):
  # The package's own compiled steps (`train.make_train_steps`, what every epoch
  # runs), driven through its seam with one `epoch_plan`, against the blog's PyTorch
  # loop fed the same examples in the same order and the same eps: one epoch of
  # 1,000 images in batches of 128, so 8 Adam steps, the last with 104 real rows
  # (and 24 padding rows on the JAX side, which PyTorch never sees). In float32, as
  # everything runs, and in float64 on both sides (the same code: JAX promotes the
  # float32 pixels to the float64 weights, PyTorch's model is `.double()`), where the
  # bounds shrink with the unit roundoff and no ReLU input falls within rounding of zero.
  with jax.enable_x64(dtype == "float64"):
    _epoch_against_the_blog_loop(z, np.dtype(dtype))


def _epoch_against_the_blog_loop(z, dtype):
  n, batch = 1000, 128
  u = np.finfo(dtype).eps / 2  # unit roundoff: 2^-24 in float32, 2^-53 in float64
  images = _images(n, seed=3)  # [n, 784]
  tmodel, toptim = _blog_run(z, dtype)
  config = Config(latent_dim=z, batch_size=batch)
  model, optimizer = VAE.from_config(config), train.make_optimizer(config)
  params = weights.params_from_state_dict(tmodel.state_dict(), dtype=dtype)
  plan = train.epoch_plan(jax.random.PRNGKey(7), num_examples=n, batch_size=batch,
                          latent_dim=z)
  state, sums = jax.jit(train.make_train_steps(model, optimizer))(
      train.TrainState(params, optimizer.init(params)), jnp.asarray(images), plan)
  assert state.params["fc1"]["kernel"].dtype == dtype

  idx, weight, eps = map(np.asarray, (plan.idx, plan.weight, plan.eps))
  assert idx.shape == (8, batch) and weight[-1].sum() == n - 7 * batch
  # PyTorch's pixels: ToTensor's k / 255, and in float64 the package's own float32 pixels
  # (XLA computes k * (1/255), one ulp from k / 255 for 126 of the 256 values), widened
  # as JAX widens them, so that float64 compares the rest of the arithmetic alone.
  torch_pixels = lambda images: (_to_tensor(images) if dtype == np.float32 else  # noqa: E731
                                 np.asarray(jax.jit(data.to_inputs)(images)).astype(dtype))
  pixels = torch_pixels(images)
  torch_losses = []
  for s in range(len(idx)):
    real = weight[s] > 0
    torch_losses.append(_torch_backward(tmodel, toptim, pixels[idx[s][real]],
                                        eps[s][real].astype(dtype)))
    toptim.step()
  rel = np.abs(np.asarray(sums.loss) - torch_losses) / np.abs(torch_losses)
  print(f"z={z} {dtype}: per-step loss, relative difference " +
        " ".join(f"{r:.1e}" for r in rel))
  # Error analysis. A step's loss sums B * 784 ~ 1e5 terms, in another order in each
  # framework; with unit roundoff u the rounding of such a sum is of order sqrt(1e5) u
  # (a random walk of per-term errors; the weights, a few ulp apart after earlier steps,
  # move it by less): 1.9e-5 in float32. Bound: that, once. / 256 for / 255 moves the
  # loss by ~1e-3, a wrong padding weight or a skipped batch by far more.
  assert rel.max() < np.sqrt(batch * 784) * u, rel
  assert np.asarray(sums.loss)[-1] < np.asarray(sums.loss)[0]  # it learned
  # The weights. Adam moves a weight by lr m/(sqrt(v) + eps): a gradient off by a
  # relative d moves the update by about lr d, so 8 steps leave a weight within 8 lr d of
  # PyTorch's, plus 8 roundings of the weight itself (each within u |w|, and those of the
  # two runs add): 8 lr d + 16 u |w|. d is bounded by the one-step test's 1e-4 in float32
  # and by that times 2^-29, the ratio of the unit roundoffs, in float64.
  # The exceptions. A weight whose gradient is within rounding of zero: Adam's
  # normalised step can then differ by up to its full size, lr. And in float32 a ReLU
  # input within rounding of zero on one example (see RELU_LAYERS): at fc1 it moves that
  # unit's row and bias by up to lr; at fc3 it moves the example's whole gradient into
  # the encoder (3.3e-3 of a tensor's norm at one step, measured), so after a few Adam
  # steps a large share of the encoder's weights may lie beyond the bound. So float32
  # bounds every weight by 2 * 8 * 1.03 lr = 1.6e-2 only (1.03 lr bounds one Adam step in
  # the first 8, bias correction included; two runs differ by at most twice that) and
  # prints how many lie beyond 8 lr d + 16 u |w|; float64, where no ReLU input comes near
  # enough to zero, holds every weight to that bound but for at most 0.1% of a tensor.
  d = 1e-4 * u / 2.0**-24
  final = weights.state_dict_from_params(state.params, dtype)
  beyond = {}
  for k, v in tmodel.state_dict().items():  # every tensor printed before any is judged
    err, w = np.abs(final[k] - _numpy(v)), np.abs(_numpy(v))
    beyond[k] = int(np.sum(err > 8 * config.learning_rate * d + 16 * u * w))
    print(f"  {k}: max {err.max():.1e}, median {np.median(err):.1e}, beyond 8 lr d + 16 u |w|: "
          f"{beyond[k]} of {err.size}")
    assert err.max() < 2 * 8 * 1.03 * config.learning_rate, k
  if dtype == np.float64:
    for k, v in tmodel.state_dict().items():
      assert beyond[k] <= 1e-3 * v.numel(), k

  # Eval mode (z = mu), the blog's test loss, on PyTorch's trained weights and 500
  # other images: one sum of 500 * 784 terms, so the same rounding argument as above
  # gives sqrt(500 * 784) u (3.7e-5 in float32). A sampled z in eval mode misses by ~1%.
  tmodel.eval()
  test = _images(500, seed=2)
  with torch.no_grad():
    xt = torch.from_numpy(torch_pixels(test)).to(DEVICE)
    recon, mu, logvar = tmodel(xt)
    t_eval = blog_loss(recon, xt, mu, logvar).item()
  j_eval = float(train.make_evaluate(model)(
      weights.params_from_state_dict(tmodel.state_dict(), dtype=dtype), jnp.asarray(test)).loss)
  print(f"  eval mode: relative difference {abs(j_eval - t_eval) / t_eval:.1e}")
  np.testing.assert_allclose(j_eval, t_eval, rtol=np.sqrt(test.size) * u)
