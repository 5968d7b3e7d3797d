#!/usr/bin/env bash
# Every GPU check in one run of at most $BUDGET seconds (default 570), for a machine with a
# CUDA GPU, jax[cuda], torch, pytest, pytest-xdist and pytest-timeout:
#   1. the machine and versions; what a process spends before training (imports, CUDA);
#      the float32 error of one product at each --matmul-precision, against float64;
#   2. `vae-jax train` (z = 2, 100 epochs): a cold, then a warm compilation cache, then the
#      warm run again under scripts/train_phases.py (where its seconds go), with the default
#      checkpoints (at most one a second) and with one every epoch;
#   3. the epoch programs (scripts/epoch_variants.py): one seed built three ways (the
#      model's forward pass, mu and logvar from one product, the z-wide products as sums)
#      and 5 stacked seeds, at highest precision (PRECISIONS="highest default" for both),
#      each profiled;
#   4. the test suite on CUDA (pytest-xdist, 16 workers), in the time left.
# Usage, from the repository root, with MNIST cached in $VAE_JAX_DATA_DIR:
#   OUT=gpu_out bash scripts/gpu_check.sh [pytest args...]
# STEPS picks the steps (default: all four); e.g. only the tests, or some of them:
#   OUT=gpu_out STEPS="machine tests" bash scripts/gpu_check.sh tests/test_resume.py
# Logs go to $OUT; the HLO texts and the profiles to $OUT/variants.tar.gz.
set -u
OUT=${OUT:-gpu_out}
mkdir -p "$OUT"
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1 XLA_PYTHON_CLIENT_PREALLOCATE=false
PY=${PYTHON:-python3}
BUDGET=${BUDGET:-570}
START=$SECONDS
STEPS=${STEPS:-machine train variants tests}
step() { echo "== $* ($(date +%T), $((SECONDS - START)) s in)"; }
wanted() { [[ " $STEPS " == *" $1 "* ]]; }

if wanted machine; then
step machine
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
$PY -c "import jax, flax, optax, torch; print('jax', jax.__version__, 'flax', flax.__version__,
'optax', optax.__version__, 'torch', torch.__version__, jax.devices())"
lscpu | grep -m1 "Model name"

step "before training: imports and CUDA"
$PY - <<'EOF' 2>&1 | tee "$OUT/startup.log"
import time
t0 = time.perf_counter()
import jax
t1 = time.perf_counter()
jax.devices()
t2 = time.perf_counter()
import flax, optax
t3 = time.perf_counter()
import vae_jax.app.cli, vae_jax.app.run, vae_jax.app.plots
t4 = time.perf_counter()
import matplotlib.pyplot
t5 = time.perf_counter()
print(f"import jax {t1 - t0:.2f} s; start CUDA (jax.devices) {t2 - t1:.2f} s; import flax + optax "
      f"{t3 - t2:.2f} s; import the package {t4 - t3:.2f} s; pyplot {t5 - t4:.2f} s")
EOF

step "float32 product error at each matmul precision"
$PY - <<'EOF' 2>&1 | tee "$OUT/precision.log"
import jax, jax.numpy as jnp, numpy as np
rng = np.random.default_rng(0)
a = rng.normal(size=(512, 784)).astype(np.float32)
b = rng.normal(size=(784, 512)).astype(np.float32)
ref = a.astype(np.float64) @ b.astype(np.float64)
print(jax.devices()[0].device_kind)
for p in ("highest", "high", "default"):
  out = np.asarray(jnp.matmul(a, b, precision=p), np.float64)
  err = np.max(np.abs(out - ref)) / np.max(np.abs(ref))
  print(f"512x784 @ 784x512 float32 at {p:>7}: max error {err:.1e}, relative to max |product|")
EOF
fi

if wanted train; then
step "train, z = 2, ${TRAIN_EPOCHS:=100} epochs: cold, warm, then its phases (train_phases.py)"
rm -rf "${VAE_JAX_DATA_DIR:-$HOME/.cache/vae_jax}/jax_compile_cache" /tmp/vae_2_cold /tmp/vae_2_warm /tmp/vae_2_prof
for run in cold warm; do
  start=$EPOCHREALTIME
  timeout 90 $PY -m vae_jax train --workdir "/tmp/vae_2_$run" --epochs "$TRAIN_EPOCHS" --no-progress 2>&1 | tail -4
  awk -v a="$start" -v b="$EPOCHREALTIME" -v r="$run" 'BEGIN{printf "%s: whole command %.1f s\n", r, b - a}'
done 2>&1 | tee "$OUT/train.log"
for every in "" "--checkpoint-every 1"; do  # the default checkpoints, then one every epoch
  rm -rf /tmp/vae_2_phases
  timeout 60 $PY scripts/train_phases.py --workdir /tmp/vae_2_phases --epochs "$TRAIN_EPOCHS" \
    $every 2>&1 | tail -16
done 2>&1 | tee -a "$OUT/train.log"
fi

if wanted variants; then
step "epoch programs: one seed three ways, and 5 stacked, matmul ${PRECISIONS:-highest}"
for precision in ${PRECISIONS:-highest}; do
  timeout 150 $PY scripts/epoch_variants.py --epochs "${VARIANT_EPOCHS:-4}" --precision "$precision" --out "$OUT/ev_$precision" \
    ${TRACE---trace} --variants ${VARIANTS:-base fwd:fused-heads fwd:latent-reduce stack-5} 2>&1
done | tee "$OUT/variants.log"
(cd "$OUT" && for d in ev_*; do for f in $(find "$d" -name 'perfetto_trace.json.gz'); do
   mv "$f" "$d/$(echo "$f" | sed 's|.*/trace_\([^/]*\)/.*|\1|').json.gz"; done; rm -rf "$d"/trace_*; done
 tar czf variants.tar.gz ev_* && rm -rf ev_*)
fi

if wanted tests; then
LEFT=$((BUDGET - (SECONDS - START) - 10))
step "tests on CUDA, ${LEFT} s left"
JAX_PLATFORMS=cuda timeout "$LEFT" $PY -m pytest -p no:cacheprovider -n "${WORKERS:-16}" \
  --dist worksteal --timeout 400 -v -rfEs --tb=short --durations=25 "$@" 2>&1 \
  | tee "$OUT/tests.log" | grep -v " PASSED " | tail -70
fi
step done
