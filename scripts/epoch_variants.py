"""Milliseconds per training epoch for ways of building the same program: the profile
behind the trainer's loop settings.

  python scripts/epoch_variants.py                       # every variant, z = 2, highest
  python scripts/epoch_variants.py --out DIR --trace     # also HLO texts and a profile

Each variant compiles the blog's training epoch (60k images, batches of 128, z = 2,
`--matmul-precision highest` unless --precision says otherwise) from the same state
and key, and prints its compile seconds, the median milliseconds of --epochs
epochs, and the largest difference of its weights after those epochs from the
baseline's (0 when it computes the same numbers bit for bit). Variants:

* ``base``: `train.make_train_epoch` as the package builds it;
* ``unroll-N``: `lax.scan(unroll=N)`, N Adam steps per loop iteration;
* ``flat-adam``: Adam over one flat vector of all parameters (`optax.flatten`):
  one update kernel instead of one per parameter array;
* ``sgd``: the same step with plain SGD's update (rate 1e-6) instead of Adam's: other
  numbers, but the time it saves is Adam's share of a step;
* ``stack-N``: N seeds (1..N) in one program, the epoch vmapped over the stacked
  states and keys as a sweep with `--strategy vmap` builds it, on one device; its
  milliseconds are for all N, and its weights compared are those of seed 1 (the
  base run's seed), so the difference is what stacking changes;
* ``fwd:FORM``: the same step with the model's forward pass written as a function of its
  parameters (`forward`), FORM one of ``pure`` (the same products as the model's: its
  weights should match the base's bit for bit, the control), ``fused-heads`` (mu and logvar
  from one 512 x 2z product instead of two) and ``latent-reduce`` (the products with a
  z-wide side, fc21, fc22 and fc3, as a multiply and a sum that XLA fuses with their
  neighbours, not as matrix products: on a GPU each such product is a kernel of its own
  that does almost no arithmetic);
* ``xla:NAME``: the base program under other XLA flags (command buffers, i.e.
  CUDA graphs, for the loop too), each in a child process, since XLA reads its
  flags once per process; ``xla:NAME/stack-N``: a stack under those flags.

`--products` first times each of the five 784-wide products of a training step alone
(forward fc1 and fc4, fc4's weight gradient and input gradient, fc1's weight gradient:
128x784 @ 784x512 and the like) and a 2048x2048 one, each a compiled call timed from the
host, median of 50: what the products alone cost an epoch, and this device's float32 rate.
On a GPU the host's dispatch outweighs such small kernels: read the profile there.

With --out, the optimized HLO of each in-process variant is written there
(`hlo_<name>.txt`: count the kernels of one step), and with --trace a JAX profile
of one epoch of the base, of each stack and of each fwd: form (`trace_<name>/`), summarised
kernel by kernel.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import subprocess
import sys
import time
from typing import NamedTuple

XLA_VARIANTS = {
    # XLA's command buffers (CUDA graphs) for the loop itself, not only the kernels in it.
    "graphs-while": "--xla_gpu_enable_command_buffer=FUSION,CUBLAS,CUBLASLT,CUSTOM_CALL,"
                    "CUDNN,WHILE,CONDITIONAL --xla_gpu_graph_min_graph_size=1",
    "no-graphs": "--xla_gpu_enable_command_buffer=",
    # cuBLAS for every product instead of XLA's Triton GEMM fusions.
    "cublas": "--xla_gpu_enable_triton_gemm=false",
}


FORMS = ("pure", "fused-heads", "latent-reduce")  # the fwd: variants


def forward(params, x, eps, precision: str, form: str):
  """The blog VAE's training-mode forward pass (`model.VAE.__call__` with eps), as a function
  of its parameters, built as `form` says (`FORMS`; the module's doc). x: [B, 784],
  eps: [B, z] -> `model.VAEOutput`."""
  import jax
  import jax.numpy as jnp

  from vae_jax import model

  p = jax.lax.Precision(precision)

  def dense(name, a):  # a @ W + b: flax's Dense
    return jnp.dot(a, params[name]["kernel"], precision=p) + params[name]["bias"]

  def narrow(name, a):  # the same sum as a @ W + b, as a multiply and a sum: no GEMM
    return (a[:, :, None] * params[name]["kernel"][None]).sum(1) + params[name]["bias"]

  h = jax.nn.relu(dense("fc1", x))                                          # [B, 512]
  if form == "fused-heads":
    w = jnp.concatenate([params["fc21"]["kernel"], params["fc22"]["kernel"]], 1)  # [512, 2z]
    b = jnp.concatenate([params["fc21"]["bias"], params["fc22"]["bias"]])         # [2z]
    mu, logvar = jnp.split(jnp.dot(h, w, precision=p) + b, 2, axis=1)            # [B, z] each
  elif form == "latent-reduce":
    mu, logvar = narrow("fc21", h), narrow("fc22", h)
  elif form == "pure":
    mu, logvar = dense("fc21", h), dense("fc22", h)
  else:
    raise ValueError(f"form must be one of {FORMS}, got {form!r}")
  z = model.reparameterize(mu, logvar, eps)                                 # [B, z]
  h3 = jax.nn.relu(narrow("fc3", z) if form == "latent-reduce" else dense("fc3", z))
  return model.VAEOutput(dense("fc4", h3), mu, logvar, z)


class _Forward(NamedTuple):
  """`forward` where `losses.batch_loss` calls the model: `apply({"params": p}, x, eps)`."""
  form: str
  precision: str

  def apply(self, variables, x, eps):
    return forward(variables["params"], x, eps, self.precision, self.form)


def forward_loss(form: str, precision: str):
  """`losses.batch_loss` (the ELBO, the blog's runs) over `forward`'s pass instead of the
  model's; the same signature, so `train.make_train_epoch(loss_fn=...)` takes it."""
  from vae_jax import losses

  def loss(params, model, x, eps, weight):
    return losses.batch_loss(params, _Forward(form, precision), x, eps, weight)

  return loss


def _unrolled_epoch(run, optimizer, loss_fn, num_examples: int, batch_size: int, unroll: int):
  """`train.make_train_epoch` with `lax.scan(unroll=...)`: the same steps, `unroll` of them an
  iteration of the compiled loop."""
  import jax

  from vae_jax import losses, train
  from vae_jax.data import to_inputs

  def epoch(state, images_u8, key):
    plan = train.epoch_plan(key, num_examples=num_examples, batch_size=batch_size,
                            latent_dim=run.model.latent_dim)

    def step(state, s):
      return train.adam_step(state, optimizer, loss_fn, run.model, to_inputs(images_u8[s.idx]),
                             s.eps, s.weight)

    state, sums = jax.lax.scan(step, state, plan, unroll=unroll)
    return state, losses.Metrics(*(x.sum() for x in sums))

  return epoch


def build(variant: str, config, d):
  import jax
  import optax

  from vae_jax import losses, train

  run = train.setup(config)  # model, Adam, keys, initial state: no programs yet
  optimizer, state = run.optimizer, run.state
  unroll, loss_fn = 1, losses.batch_loss  # the blog's ELBO
  if variant.startswith("stack-"):
    from vae_jax.app import multi
    from vae_jax.extensions import recipe

    seeds = range(1, int(variant[6:]) + 1)
    members = [multi.Member(seed, config.learning_rate) for seed in seeds]
    mesh = multi.member_mesh(jax.local_devices()[:1])
    first, states, keys = multi._stacked_setups(config, members, mesh)
    epoch, _ = recipe.functions(config, first.model, first.optimizer, len(d.x_train))
    # states [S], images shared, keys [S]: the stacked run's program
    return first._replace(keys=first.keys._replace(train=keys)), states, jax.vmap(
        epoch, in_axes=(0, None, 0))
  if variant.startswith("unroll-"):
    unroll = int(variant.split("-")[1])
  elif variant.startswith("flat-adam"):
    optimizer = optax.flatten(run.optimizer)
    state = train.TrainState(state.params, optimizer.init(state.params))
    if "+unroll-" in variant:
      unroll = int(variant.split("+unroll-")[1])
  elif variant == "sgd":  # a small rate, so that the summed loss's gradients do not diverge
    optimizer = optax.sgd(1e-6)
    state = train.TrainState(state.params, optimizer.init(state.params))
  elif variant.startswith("fwd:"):  # the blog's VAE and ELBO only, as `forward` writes them
    if (config.arch, config.model, config.objective) != ("blog", "vae", "elbo"):
      raise SystemExit(f"{variant} builds the blog's VAE and ELBO only")
    loss_fn = forward_loss(variant[4:], config.matmul_precision)
  elif variant != "base":
    raise SystemExit(f"unknown variant {variant!r}")
  if unroll > 1:
    return run, state, _unrolled_epoch(run, optimizer, loss_fn, len(d.x_train),
                                       config.batch_size, unroll)
  return run, state, train.make_train_epoch(run.model, optimizer, num_examples=len(d.x_train),
                                            batch_size=config.batch_size, loss_fn=loss_fn)


def _file_name(variant: str) -> str:
  """A variant's name in a file name: fwd:fused-heads -> fwd_fused-heads."""
  return variant.replace(":", "_").replace("/", "_")


def time_variant(variant: str, config, d, epochs: int, out: str | None, trace: bool = False):
  import jax
  import numpy as np

  from vae_jax import train

  run, state, epoch = build(variant, config, d)
  t0 = time.perf_counter()
  compiled = jax.jit(epoch).lower(state, d.x_train, run.keys.train).compile()
  compile_s = time.perf_counter() - t0
  if out:
    with open(os.path.join(out, f"hlo_{_file_name(variant)}.txt"), "w") as f:
      f.write(compiled.as_text())
  times = []
  for e in range(1, epochs + 1):
    t0 = time.perf_counter()
    state, _ = jax.block_until_ready(compiled(state, d.x_train, train.epoch_key(run.keys.train, e)))
    times.append(time.perf_counter() - t0)
  params = state.params
  if variant.startswith("stack-"):  # seed 1's weights, to compare with the base run's
    params = jax.tree.map(lambda x: x[0], params)
  leaves = [np.asarray(x) for x in jax.tree.leaves(params)]
  if trace:  # one more epoch, profiled: every kernel of every step, with its time
    folder = os.path.join(out, f"trace_{_file_name(variant)}")
    with jax.profiler.trace(folder, create_perfetto_trace=True):
      jax.block_until_ready(compiled(state, d.x_train, train.epoch_key(run.keys.train, 99)))
    print(f"profile of one {variant} epoch in {folder}", flush=True)
    for found in glob.glob(os.path.join(folder, "**", "perfetto_trace.json.gz"), recursive=True):
      print(summarize_trace(found, -(-len(d.x_train) // config.batch_size)), flush=True)
  return {"variant": variant, "compile_s": compile_s, "ms": 1e3 * float(np.median(times[1:])),
          "ms_all": [1e3 * t for t in times]}, leaves


def time_products(config, steps: int, repeats: int = 50) -> str:
  """The five 784-wide products of one training step, each alone (see the module's doc)."""
  import jax
  import jax.numpy as jnp
  import numpy as np

  b, d, h = config.batch_size, 784, config.hidden_dim
  shapes = [("fc1 forward: x @ W1", (b, d), (d, h)),
            ("fc4 forward: h @ W4", (b, h), (h, d)),
            ("fc4 weight gradient: h.T @ g", (h, b), (b, d)),
            ("fc4 input gradient: g @ W4.T", (b, d), (d, h)),
            ("fc1 weight gradient: x.T @ dh", (d, b), (b, h))]
  dot = jax.jit(lambda x, y: jnp.dot(x, y, precision=config.matmul_precision))
  lines, total = [f"the products alone, {config.matmul_precision} precision, median of "
                  f"{repeats} calls each:"], 0.0
  for name, sa, sb in [*shapes, ("a 2048x2048 product, for the rate", (2048,) * 2, (2048,) * 2)]:
    x, y = (jax.random.uniform(jax.random.PRNGKey(i), s) for i, s in enumerate((sa, sb)))
    jax.block_until_ready(dot(x, y))  # compiled, warm
    times = []
    for _ in range(repeats):
      t0 = time.perf_counter()
      jax.block_until_ready(dot(x, y))
      times.append(time.perf_counter() - t0)
    s = float(np.median(times))
    flop = 2 * sa[0] * sa[1] * sb[1]
    if name.startswith("fc"):
      total += s
    lines.append(f"  {name:36s} {sa[0]}x{sa[1]} @ {sb[0]}x{sb[1]}: {1e3 * s:7.3f} ms, "
                 f"{flop / s / 1e9:6.1f} GFLOP/s")
  lines.append(f"  the five, {steps} steps: {total * steps:.2f} s an epoch")
  return "\n".join(lines)


def summarize_trace(path: str, steps: int, top: int = 12) -> str:
  """The device's kernels in a profile (`perfetto_trace.json.gz`): per step, how many, how
  long in all, and the `top` longest with their time each, against the span they cover."""
  import collections
  import gzip

  with gzip.open(path) as f:
    trace = json.load(f)
  events = trace["traceEvents"] if isinstance(trace, dict) else trace
  devices = {e["pid"] for e in events if e.get("ph") == "M" and e.get("name") == "process_name"
             and "/device:" in e["args"]["name"]}
  kernels = [e for e in events if e.get("ph") == "X" and e.get("pid") in devices]
  if not kernels:
    return "no device kernels in the profile"
  span = max(e["ts"] + e["dur"] for e in kernels) - min(e["ts"] for e in kernels)
  busy = sum(e["dur"] for e in kernels)
  count, total = collections.Counter(), collections.Counter()
  for e in kernels:
    count[e["name"]] += 1
    total[e["name"]] += e["dur"]
  lines = [f"{len(kernels) / steps:.0f} kernels a step; kernel time {busy / steps:.1f} us a step, "
           f"{100 * busy / span:.0f}% of the {span / 1e3:.1f} ms they span",
           "| kernel | per step | us each | us a step |", "|---|---|---|---|"]
  for name, t in total.most_common(top):
    lines.append(f"| {name[:60]} | {count[name] / steps:.0f} | {t / count[name]:.2f} "
                 f"| {t / steps:.1f} |")
  rest = busy - sum(t for _, t in total.most_common(top))
  lines.append(f"| {len(total) - top} others | | | {rest / steps:.1f} |")
  return "\n".join(lines)


def parse_args(argv=None) -> argparse.Namespace:
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--variants", nargs="+", metavar="VARIANT",
                 default=["base", "unroll-8", "flat-adam",
                          *(f"xla:{k}" for k in XLA_VARIANTS)],
                 help="base, unroll-N, flat-adam, flat-adam+unroll-N, sgd, stack-N, fwd:FORM "
                      f"(FORM: {', '.join(FORMS)}), xla:NAME "
                      f"or xla:NAME/stack-N (NAME: {', '.join(XLA_VARIANTS)}); the module's "
                      "docstring says what each is; default: %(default)s")
  p.add_argument("--precision", default="highest", choices=("highest", "high", "default"))
  p.add_argument("--epochs", type=int, default=6, help="epochs per variant (the first is "
                 "left out of the median)")
  p.add_argument("--out", default=None, help="folder for HLO texts, the profile and JSON")
  p.add_argument("--trace", action="store_true", help="profile one base epoch into OUT/trace")
  p.add_argument("--products", action="store_true",
                 help="first time the five large products of a step, each alone")
  p.add_argument("--child", default=None, help=argparse.SUPPRESS)  # the variant to run
  args = p.parse_args(argv)
  if args.epochs < 2:
    p.error(f"--epochs must be >= 2 (the first is left out of the median), got {args.epochs}")
  if args.trace and not args.out:
    p.error("--trace writes its profile into --out: give --out DIR")
  bad = [v for v in args.variants if not _known(v)]
  if bad:
    p.error(f"unknown variant(s) {', '.join(bad)}: base, unroll-N, flat-adam[+unroll-N], sgd, "
            f"stack-N, fwd:FORM with FORM one of {', '.join(FORMS)}, xla:NAME[/stack-N] with "
            f"NAME one of {', '.join(XLA_VARIANTS)}")
  return args


def _known(variant: str) -> bool:
  """Whether `build` (or, for xla:, a child process of it) knows the variant's name."""
  if variant.startswith("xla:"):
    name, _, inner = variant[4:].partition("/")
    return name in XLA_VARIANTS and (not inner or _known(inner))
  stem, _, n = variant.rpartition("-")
  if variant in ("base", "sgd", "flat-adam", *(f"fwd:{f}" for f in FORMS)):
    return True
  return stem in ("unroll", "stack", "flat-adam+unroll") and n.isdigit() and int(n) > 0


def main(argv=None):
  args = parse_args(argv)

  import jax
  import numpy as np

  from vae_jax import data
  from vae_jax.config import Config

  config = Config(matmul_precision=args.precision)
  d = data.load_device_data(config)
  if args.out:
    os.makedirs(args.out, exist_ok=True)
  if args.child:  # one variant under this process's XLA_FLAGS: JSON on the last line
    row, leaves = time_variant(args.child, config, d, args.epochs, None)
    np.savez(os.path.join(args.out, "child_params.npz"), *leaves)
    print(json.dumps(row))
    return 0
  dev = jax.devices()[0]
  print(f"jax {jax.__version__} on {dev.platform} ({dev.device_kind}); matmul {args.precision}; "
        f"median of epochs 2..{args.epochs}", flush=True)
  if args.products:
    print(time_products(config, -(-len(d.x_train) // config.batch_size)), flush=True)
  rows, ref = [], None
  for variant in args.variants:
    if variant.startswith("xla:"):
      name, _, inner = variant[4:].partition("/")
      flags = XLA_VARIANTS[name]
      env = {**os.environ, "XLA_FLAGS": (os.environ.get("XLA_FLAGS", "") + " " + flags).strip()}
      tmp = args.out or "."
      proc = subprocess.run([sys.executable, __file__, "--child", inner or "base",
                             "--epochs", str(args.epochs),
                             "--precision", args.precision, "--out", tmp],
                            env=env, capture_output=True, text=True)
      if proc.returncode != 0:
        print(f"{variant}: failed ({proc.returncode}): {proc.stderr.strip()[-600:]}", flush=True)
        continue
      row = {**json.loads(proc.stdout.strip().splitlines()[-1]), "variant": variant}
      with np.load(os.path.join(tmp, "child_params.npz")) as z:
        leaves = [z[k] for k in sorted(z.files, key=lambda k: int(k.split("_")[1]))]
    else:
      row, leaves = time_variant(variant, config, d, args.epochs, args.out,
                                 trace=bool(args.trace and args.out) and (
                                     variant == "base" or variant.startswith(("stack-", "fwd:"))))
    if ref is None:
      ref = leaves
    row["max_diff"] = max(float(np.max(np.abs(a - b))) for a, b in zip(leaves, ref))
    if "stack-" in variant and rows:
      row["vs_first"] = row["ms"] / rows[0]["ms"]
    rows.append(row)
    print(f"{row['variant']:>22}: {row['ms']:8.2f} ms/epoch ({1e3 * row['ms'] / 469:6.1f} us/step)"
          f"  compile {row['compile_s']:5.1f} s  max |dw| vs first {row['max_diff']:.2e}  "
          f"epochs {' '.join(f'{t:.1f}' for t in row['ms_all'])}"
          + (f"  {row['vs_first']:.2f}x the first" if "vs_first" in row else ""), flush=True)
  if args.out:
    with open(os.path.join(args.out, "variants.json"), "w") as f:
      json.dump(rows, f, indent=1)
  return 0


if __name__ == "__main__":
  sys.exit(main())
