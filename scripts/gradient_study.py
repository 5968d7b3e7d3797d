"""The gradient-flow study (docs/gradient_flow.md): `python scripts/gradient_study.py --out results/gradient_flow`.

--only NAME ... runs some of: likelihood stop_gradient scalar_eps parameterisation
gradient_flow variance. --quick shrinks every experiment (a smoke run).
"""
import argparse

from vae_jax import study

p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
p.add_argument("--out", default="results/gradient_flow")
p.add_argument("--only", nargs="+", choices=list(study.EXPERIMENTS))
p.add_argument("--quick", action="store_true")
a = p.parse_args()
study.run(a.out, a.only, a.quick)
