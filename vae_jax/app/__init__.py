"""The application around the lesson: the command line (`cli.py`), a run and its directory
(`run.py`, `rundir.py`, `checkpoint.py`), Ctrl-C (`interrupt.py`), files written whole
(`files.py`), figures (`plots.py`), the explorer page (`explore.py`, `explore.js`), the
blog's PyTorch code and weights (`torch_ref.py`, `weights.py`), and what runs many
trainings: `multi.py`, `sweep.py`, `compare.py`, `bench.py`.

Nothing here is imported by the package on its own: `vae-jax` starts without JAX, so that
its Ctrl-C handler is in place first (`interrupt.py`).
"""

# Names and defaults the command line shows; here so that parsing imports nothing heavy.
STRATEGIES = ("auto", "vmap", "sequential")  # how stacked runs train (multi.py)
COMPARE_DEFAULTS = {"out": "results", "seeds": 5, "epochs": 100, "sweep": (2, 5, 10, 20, 50),
                    "sweep_seeds": 2, "sweep_epochs": 50, "strategy": "auto", "bench_epochs": 3}
# The sweep's fields that take one value (every member trains on the same images), and of
# them those that say where the data come from, not what they are (a rerun ignores them).
SWEEP_WHERE_FROM = ("data_dir", "data_source")
SWEEP_SHARED = SWEEP_WHERE_FROM + ("train_limit", "test_limit")
# The benchmark's PyTorch loops (bench.py); "graphs" (CUDA graphs) needs a GPU.
TORCH_LOOPS = ("blog", "tensor", "compiled", "graphs")


def count(n: int, noun: str) -> str:
  """"1 seed", "2 seeds": a number and its noun, in the singular for one."""
  return f"{n} {noun}{'' if n == 1 else 's'}"
