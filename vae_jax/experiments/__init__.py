"""What this project builds on the blog's VAE; the lesson itself is in the package above.

  bench.py       seconds per epoch: this JAX trainer against the blog's PyTorch loop
  torch_ref.py   the blog's PyTorch model, loss and loop (benchmark and parity tests)
  multi.py       many seeds / learning rates at once (vmap sharded over the devices, or one
                 after another)
  sweep.py       a grid of settings x seeds: members, groups, summary (the sweep subcommand)
  compare.py     the blog's numbers with error bars (`vae-jax compare`)
  estimators.py  pathwise, score-function and stop-gradient gradient estimators
  variants.py    the loss with other samplers and variance parameterisations
  study.py       the gradient-flow experiments (`vae-jax study`)
"""

# Names and defaults the command line shows; here so that parsing imports nothing heavy.
STRATEGIES = ("auto", "vmap", "sequential")  # how stacked runs train (multi.py)
COMPARE_DEFAULTS = {"out": "results", "seeds": 5, "epochs": 100, "sweep": (2, 5, 10, 20, 50),
                    "sweep_seeds": 2, "sweep_epochs": 50, "strategy": "auto", "bench_epochs": 3}

# The sweep's fields that take one value (every member trains on the same images), and of
# them those that say where the data come from, not what they are (a rerun ignores them).
SWEEP_WHERE_FROM = ("data_dir", "data_source")
SWEEP_SHARED = SWEEP_WHERE_FROM + ("train_limit", "test_limit")

# The gradient-flow study's experiments, in the order `vae-jax study` runs them.
STUDY_EXPERIMENTS = ("likelihood", "stop_gradient", "scalar_eps", "parameterisation",
                     "gradient_flow", "variance")
# The benchmark's PyTorch loops (bench.py); "graphs" (CUDA graphs) needs a GPU.
TORCH_LOOPS = ("blog", "tensor", "compiled", "graphs")


def count(n: int, noun: str) -> str:
  """"1 seed", "2 seeds": a number and its noun, in the singular for one."""
  return f"{n} {noun}{'' if n == 1 else 's'}"
