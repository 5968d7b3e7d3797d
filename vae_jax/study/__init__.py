"""The gradient-flow study: the blog's four open questions, answered by measurement
(docs/gradient_flow.md).

  estimators.py   pathwise, score-function and stop-gradient gradient estimators
  variants.py     the blog's loss with other samplers and variance parameterisations
  experiments.py  the six experiments, each computing numbers, then drawing a figure
                  from them (`vae-jax study`)
"""

# The experiments, in the order `vae-jax study` runs them (here: the command line imports
# nothing heavy).
EXPERIMENTS = ("likelihood", "stop_gradient", "scalar_eps", "parameterisation",
               "gradient_flow", "variance")
