"""Seconds per epoch: this JAX trainer vs the blog's PyTorch loop, same machine, same run.

  vae-jax bench --bench-epochs 3

An epoch is the blog's: 60k training images in shuffled batches of 128 (Adam
steps, sampled z) then the 10k test images (eval mode). Compile time is shown
apart, and every loop runs one untimed epoch before the timed ones: a first call pays
one-off costs (memory, threads, caches) that no later epoch does. The PyTorch rows need the `torch` extra (`pip install torch==2.13.0`,
a CPU build); they are skipped when it is missing.

PyTorch rows (`torch_ref.py` holds the blog's code they run) run on CUDA when torch
sees a GPU, else on the CPU:
* ``blog``: the post's loop: a `DataLoader(batch_size=128, shuffle=True)` over a
  dataset that converts each image like `ToTensor()` (uint8 -> float / 255),
  each batch copied to the device (`data.cuda()` in the post), forward,
  `binary_cross_entropy(..., reduction="sum")` + KLD, backward, Adam,
  `loss.item()` each step.
* ``tensor``: the same model and loss fed by slicing one pre-converted tensor,
  resident on the device, with `randperm`, to show where time goes.
* ``compiled``: the tensor loop's step under `torch.compile` (forward, loss,
  backward and Adam; the loss read once an epoch): what a user after speed would
  write. Its first epoch compiles; that epoch is run untimed and shown as compile s.
  Its test pass is the tensor loop's, eager (the test set is a small part of an epoch).
* ``graphs`` (CUDA only): the same under `torch.compile(mode="reduce-overhead")`,
  which replays each compiled graph as a CUDA graph.

JAX's compile s is whatever building the programs took: with the CLI's compilation
cache on (the default), a program compiled by an earlier run is loaded instead;
`--no-compile-cache` times compiling.
"""

from __future__ import annotations

import math
import os
import platform
import sys
import time

import jax
import numpy as np

from vae_jax import data, train
from vae_jax.app import TORCH_LOOPS, interrupt
from vae_jax.config import Config
from vae_jax.data import DeviceData


def bench_jax(config: Config, d: DeviceData, epochs: int) -> dict:
  """Times `epochs` epochs of the lesson's compiled epoch (the blog's model): train and test
  apart, compile apart."""
  run = train.setup(config, d)
  warm, _ = run.programs.train_epoch(run.state, d.x_train, train.epoch_key(run.keys.train, 1))
  jax.block_until_ready(run.programs.evaluate(warm.params, d.x_test))  # untimed, not kept
  state, train_s, test_s = run.state, [], []
  for epoch in range(1, epochs + 1):
    t0 = time.perf_counter()
    state, _ = jax.block_until_ready(run.programs.train_epoch(
        state, d.x_train, train.epoch_key(run.keys.train, epoch)))
    t1 = time.perf_counter()
    jax.block_until_ready(run.programs.evaluate(state.params, d.x_test))
    t2 = time.perf_counter()
    train_s.append(t1 - t0)
    test_s.append(t2 - t1)
  return _row(f"jax (this project), matmul {config.matmul_precision}", run.compile_s, train_s,
              test_s)


def _row(name, compile_s, train_s, test_s) -> dict:
  # The median of the epochs: robust to one slow epoch on a shared machine.
  tr, te = float(np.median(train_s)), float(np.median(test_s))
  return {"name": name, "compile_s": compile_s, "train_s": tr, "test_s": te, "epoch_s": tr + te}


def torch_device() -> str | None:
  """Where the PyTorch rows run: "cuda" when torch sees a GPU (as the blog: `model.cuda()`),
  else "cpu"; None without torch."""
  torch = interrupt.optional_import("torch")
  if torch is None:
    return None
  return "cuda" if torch.cuda.is_available() else "cpu"


def default_torch_loops(device: str) -> tuple[str, ...]:
  """Every loop that runs on `device`: CUDA graphs need CUDA."""
  return tuple(l for l in TORCH_LOOPS if l != "graphs" or device == "cuda")


def bench_torch(config: Config, d: DeviceData, epochs: int, loader: str = "blog",
                device: str = "cpu") -> dict:
  """Times one PyTorch loop on `device`: the blog's (`loader="blog"`: DataLoader on the host,
  each batch copied to the device), a tensor-slicing one over data resident on the device
  (`"tensor"`), that one's step under `torch.compile` (`"compiled"`; its test pass stays
  eager) or under `torch.compile(mode="reduce-overhead")`, CUDA graphs (`"graphs"`)."""
  import torch

  from vae_jax.app import torch_ref

  if loader not in TORCH_LOOPS:
    raise ValueError(f"loader must be one of {TORCH_LOOPS}, got {loader!r}")
  if loader == "graphs" and device != "cuda":
    raise ValueError("the graphs loop (CUDA graphs) needs a GPU that torch can see")
  torch.manual_seed(config.seed)
  train_u8, test_u8 = np.array(d.x_train), np.array(d.x_test)  # writable host copies
  if loader == "blog":  # the post's loop: `data = data.cuda()` inside it, on a GPU
    batches = {k: (lambda u8=u8: (x.to(device) for x in
                                  torch_ref.blog_batches(u8, config.batch_size)))
               for k, u8 in (("train", train_u8), ("test", test_u8))}
  else:  # one pre-converted tensor on the device, sliced
    converted = {"train": (torch.from_numpy(train_u8).float() / 255).to(device),
                 "test": (torch.from_numpy(test_u8).float() / 255).to(device)}
    batches = {k: (lambda k=k: torch_ref.tensor_batches(converted[k], config.batch_size))
               for k in converted}
  model = torch_ref.BlogVAE(config.latent_dim, config.hidden_dim).to(device)
  optimizer = torch.optim.Adam(model.parameters(), lr=config.learning_rate)
  train_epoch = lambda b: torch_ref.train_epoch(model, optimizer, b)  # noqa: E731
  sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
  compile_s = math.nan
  if loader in ("compiled", "graphs"):
    train_epoch = torch_ref.compiled_train_epoch(
        model, optimizer, mode="reduce-overhead" if loader == "graphs" else None)
    t0 = time.perf_counter()
    train_epoch(batches["train"]())  # compiles: every batch shape of an epoch, once
    sync()
    compile_s = time.perf_counter() - t0
  else:  # the eager loops' untimed first epoch
    train_epoch(batches["train"]())
    torch_ref.test_epoch(model, batches["test"]())
    sync()
  train_s, test_s = [], []
  for _ in range(epochs):
    sync()
    t0 = time.perf_counter()
    train_epoch(batches["train"]())
    sync()
    t1 = time.perf_counter()
    torch_ref.test_epoch(model, batches["test"]())
    sync()
    t2 = time.perf_counter()
    train_s.append(t1 - t0)
    test_s.append(t2 - t1)
  if loader in ("compiled", "graphs"):  # the untimed first epoch: compiling plus one epoch
    compile_s -= float(np.median(train_s))
  return _row(f"pytorch {torch.__version__} on {device}, {loader} loop", compile_s, train_s,
              test_s)


def busy_cpu(load=None, cores=None) -> str | None:
  """A warning when other work already keeps the CPU busy before the benchmark starts (the
  1-minute load average over half the cores): the figures then time the contention too,
  PyTorch's threads most of all. None when the CPU is idle enough, or the load is unknown."""
  try:
    load = os.getloadavg()[0] if load is None else load
  except OSError:
    return None
  cores = cores or os.cpu_count() or 1
  if load <= cores / 2:
    return None
  return (f"the load average is {load:.1f} on {cores} cores before the benchmark starts: other "
          f"work competes for the CPU, and the figures will show it")


def run(config: Config, epochs: int, torch_loops=None) -> list[dict]:
  """Benchmarks JAX and (if installed) PyTorch on MNIST as `config` loads it; prints the rows.

  `torch_loops`: which PyTorch loops to time (`()`: none); default: every loop that runs
  on the device torch sees (`default_torch_loops`).
  """
  busy = busy_cpu()
  if busy:
    print(f"bench: warning: {busy}", file=sys.stderr)
  d = data.load_device_data(config)
  # Both precisions: the same on a CPU; on a GPU "default" may be TF32-like and faster.
  rows = [bench_jax(config.replace(matmul_precision=p), d, epochs) for p in ("highest", "default")]
  for row in rows:
    _progress(row)
  if torch_loops != ():
    device = torch_device()
    if device is None:
      print("PyTorch is not installed: skipping its rows (pip install torch==2.13.0)")
    else:
      for loop in torch_loops or default_torch_loops(device):
        rows.append(bench_torch(config, d, epochs, loop, device))
        _progress(rows[-1])
  print(format_table(rows, config, epochs, len(d.x_train), len(d.x_test)))
  return rows


def _progress(row: dict) -> None:
  """One line on stderr as each row is measured (the table comes at the end)."""
  print(f"{row['name']}: {row['epoch_s']:.3f} s an epoch", file=sys.stderr, flush=True)


def describe_machine(with_torch: bool = True) -> str:
  """The device JAX runs on, the CPU model and core count, and the library versions (torch's
  when `with_torch` and it is installed)."""
  dev = jax.devices()[0]
  cpu = platform.processor() or platform.machine()
  try:
    with open("/proc/cpuinfo") as f:
      cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
  except (OSError, StopIteration):
    pass
  line = (f"jax {jax.__version__} on {dev.platform} ({dev.device_kind}); "
          f"CPU: {cpu}, {os.cpu_count()} cores, {platform.machine()}")
  if not with_torch:
    return line
  torch = interrupt.optional_import("torch")
  if torch is None:
    return line
  if torch.cuda.is_available():
    return line + f"; torch {torch.__version__} on cuda ({torch.cuda.get_device_name()})"
  return line + f"; torch {torch.__version__} on cpu"


def format_table(rows: list[dict], config: Config | None = None, epochs: int | None = None,
                 n_train: int = 60_000, n_test: int = 10_000) -> str:
  """The rows as a Markdown table; with `config`, headed by the machine and the setting."""
  base = next((r for r in rows if "blog" in r["name"]), None)
  lines = []
  if config is not None:
    lines += [f"machine: {describe_machine(any('pytorch' in r['name'] for r in rows))}",
              f"z = {config.latent_dim}"
              + (f", hidden {config.hidden_dim}" if config.hidden_dim != Config().hidden_dim
                 else "")
              + f", batch {config.batch_size}, {n_train} train + {n_test} "
              f"test images, " + (f"median of {epochs} epochs" if epochs > 1 else "1 epoch")]
  lines += ["| loop | compile s | train s/epoch | test s/epoch | epoch s | vs blog loop |",
            "|---|---|---|---|---|---|"]
  for r in rows:
    ratio = "n/a"
    if base:  # two decimals, or three where a GPU makes the ratio small
      q = r["epoch_s"] / base["epoch_s"]
      ratio = f"{q:.2f}x" if q >= 0.1 else f"{q:.3f}x"
    comp = "-" if math.isnan(r["compile_s"]) else f"{r['compile_s']:.2f}"
    lines.append(f"| {r['name']} | {comp} | {r['train_s']:.3f} | {r['test_s']:.3f} "
                 f"| {r['epoch_s']:.3f} | {ratio} |")
  return "\n".join(lines)
