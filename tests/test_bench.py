"""The benchmark's PyTorch loops: each must do the blog's work, or its timing means nothing.

Needs PyTorch (`pip install torch==2.13.0`, a CPU build); CI installs it.
"""

import jax.numpy as jnp
import numpy as np
import pytest

from vae_jax import Config, losses, train
from vae_jax.app import weights
from vae_jax.data import to_inputs
from vae_jax.model import VAE

torch = pytest.importorskip("torch")
from vae_jax.app import torch_ref  # noqa: E402

N, BATCH, Z = 300, 64, 2  # 5 batches an epoch, the last of 44 images


def _images():
  from conftest import synthetic_mnist
  return synthetic_mnist(n_train=N)["train_images"].reshape(N, 784)  # uint8


def _feeds(images):
  return {"blog": lambda: torch_ref.blog_batches(images, BATCH),
          "tensor": lambda: torch_ref.tensor_batches(
              torch.from_numpy(images).float() / 255, BATCH)}


@pytest.mark.parametrize("loop", ["blog", "tensor"])
def test_each_feed_gives_every_image_once_as_pixels_over_255(loop):
  images = _images()
  torch.manual_seed(0)
  seen = [x.reshape(-1, 784).numpy() for x in _feeds(images)[loop]()]
  assert [len(x) for x in seen] == [64, 64, 64, 64, 44]
  seen = np.concatenate(seen)
  # The same images, each once: sorted rows equal the data's sorted rows / 255.
  order = lambda a: a[np.lexsort(a.T[::-1])]  # noqa: E731  (rows in lexicographic order)
  np.testing.assert_array_equal(order(seen), order(images.astype(np.float32) / np.float32(255)))
  assert not np.array_equal(seen, images.astype(np.float32) / np.float32(255))  # shuffled
  # PyTorch divides by 255 correctly rounded; XLA on the CPU computes x * (1/255), one
  # ulp off for 126 of the 256 pixel values. So the package's inputs equal the blog's
  # to 1 ulp (up to 2^-23 relative), not bit for bit.
  ours = np.asarray(to_inputs(jnp.asarray(images)))
  np.testing.assert_allclose(order(seen), order(ours), rtol=2.0**-23, atol=0)


@pytest.mark.parametrize("loop", ["blog", "tensor"])
def test_the_timed_loops_compute_the_packages_loss_on_the_same_weights_and_batches(
    loop, monkeypatch):
  # The loops as the benchmark times them (`torch_ref.train_epoch`, `test_epoch`), with
  # Adam's rate 0 so the weights stay put; every batch and eps they draw is recorded
  # and the package's loss is computed on the same weights, batches and eps. Both sum
  # ~64 * 784 float32 terms a batch in another order: sqrt(64 * 784) u = 1.3e-5
  # relative (u = 2^-24) bounds the difference of each sum.
  images = _images()
  torch.manual_seed(0)
  tmodel = torch_ref.BlogVAE(Z)
  seen_x, seen_eps = [], []
  tmodel.register_forward_pre_hook(lambda m, args: seen_x.append(args[0].reshape(-1, 784)))
  randn_like = torch.randn_like
  def recording_randn_like(t):
    seen_eps.append(randn_like(t))
    return seen_eps[-1]
  monkeypatch.setattr(torch, "randn_like", recording_randn_like)

  train_sum = torch_ref.train_epoch(tmodel, torch.optim.Adam(tmodel.parameters(), lr=0.0),
                                    _feeds(images)[loop]())
  test_sum = torch_ref.test_epoch(tmodel, _feeds(images)[loop]())
  assert len(seen_eps) == 5 and len(seen_x) == 10  # 5 training steps, then 5 test batches

  params = weights.params_from_state_dict(tmodel.state_dict())
  model = VAE.from_config(Config(latent_dim=Z))
  ours = sum(float(losses.batch_loss(params, model, jnp.asarray(x.numpy()), jnp.asarray(e.numpy()),
                                     jnp.ones(len(x)))[0])
             for x, e in zip(seen_x[:5], seen_eps))
  bound = np.sqrt(BATCH * 784) * 2.0**-24
  np.testing.assert_allclose(train_sum, ours, rtol=bound)
  ours_test = float(train.make_evaluate(model)(params, jnp.asarray(images)).loss)
  np.testing.assert_allclose(test_sum, ours_test, rtol=bound)


def test_the_compiled_loop_trains_as_the_eager_one():
  # `torch.compile` of the whole step must not change what is computed: with Inductor
  # drawing its random numbers as eager PyTorch does (`fallback_random`), the same seed
  # gives the same batches and eps, and one epoch of each loop (5 Adam steps, the last
  # on 44 images) ends with the same summed loss and weights, to float32 rounding
  # (compiled kernels fuse and order the sums differently): the loss within
  # sqrt(64 * 784) u per step, the weights within 1e-6 (5 steps of lr 1e-3 times a
  # relative gradient difference below 1e-4, as in tests/test_parity.py), but for the
  # odd weight whose gradient is within rounding of zero.
  import torch._inductor.config as inductor_config
  images = _images()
  results = {}
  for loop in ("tensor", "compiled"):
    torch.manual_seed(0)
    model = torch_ref.BlogVAE(Z)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    with inductor_config.patch(fallback_random=True):
      epoch = (torch_ref.compiled_train_epoch(model, opt) if loop == "compiled"
               else lambda b: torch_ref.train_epoch(model, opt, b))
      total = epoch(_feeds(images)["tensor"]())
    results[loop] = total, {k: v.detach().numpy().copy() for k, v in model.state_dict().items()}
  (eager, w_eager), (compiled, w_compiled) = results["tensor"], results["compiled"]
  np.testing.assert_allclose(compiled, eager, rtol=np.sqrt(BATCH * 784) * 2.0**-24)
  for k in w_eager:  # as tests/test_parity.py: all but 0.1% within 1e-6, none past 2 steps
    err = np.abs(w_compiled[k] - w_eager[k])
    assert np.mean(err > 1e-6) <= 1e-3 and err.max() < 2 * 5 * 1.03e-3, k


def test_the_machine_line_names_torch_only_beside_a_pytorch_row():
  pytest.importorskip("torch")
  from vae_jax.app import bench
  row = {"compile_s": 0.0, "train_s": 1.0, "test_s": 0.1, "epoch_s": 1.1}
  jax_row = {**row, "name": "jax (this project)"}
  torch_row = {**row, "name": "pytorch 2 on cpu, blog loop"}
  machine = lambda rows: bench.format_table(rows, Config(), 1).splitlines()[0]
  assert machine([jax_row]).startswith("machine: jax ") and "torch" not in machine([jax_row])
  assert "; torch " in machine([jax_row, torch_row])


def test_bench_warns_when_the_cpu_is_already_busy():
  from vae_jax.app import bench
  assert bench.busy_cpu(load=0.9, cores=2) is None   # half the cores or less: quiet
  assert bench.busy_cpu(load=1.0, cores=2) is None
  warning = bench.busy_cpu(load=1.9, cores=2)
  assert warning.startswith("the load average is 1.9 on 2 cores before the benchmark starts")
