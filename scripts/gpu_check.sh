#!/usr/bin/env bash
# Every GPU check in one run, for a machine with a CUDA GPU, jax[cuda], torch and pytest:
#   1. the test suite on CUDA (pytest-xdist, 12 workers; every result in $OUT/tests.log);
#   2. float32 matrix-product error at each --matmul-precision, against float64;
#   3. the epoch variants (scripts/epoch_variants.py) and a profile of the base epoch;
#   4. the benchmark (JAX at highest and default, PyTorch's loops on CUDA);
#   5. `vae-jax train` (z = 2, 100 epochs) twice: a cold, then a warm compilation cache;
#   6. stacked seeds: a sweep of one seed against one of five, 3 epochs, one vmapped program.
# Usage, from the repository root, with MNIST cached in $VAE_JAX_DATA_DIR:
#   OUT=gpu_out bash scripts/gpu_check.sh [pytest args...]
# Logs go to $OUT; the HLO texts and the profile to $OUT/variants.tar.gz.
set -u
OUT=${OUT:-gpu_out}
mkdir -p "$OUT"
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1 XLA_PYTHON_CLIENT_PREALLOCATE=false
PY=${PYTHON:-python3}
step() { echo "== $* ($(date +%T))"; }

step machine
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
$PY -c "import jax, flax, optax, torch; print('jax', jax.__version__, 'flax', flax.__version__,
'optax', optax.__version__, 'torch', torch.__version__, jax.devices())"

step "tests on CUDA"
JAX_PLATFORMS=cuda timeout "${TEST_TIMEOUT:-210}" $PY -m pytest -p no:cacheprovider -n 12 -v \
  -rfEs --tb=short --durations=10 "$@" 2>&1 | tee "$OUT/tests.log" | grep -v " PASSED " | tail -60

step "matmul precision"
$PY - <<'EOF'
import jax, jax.numpy as jnp, numpy as np
rng = np.random.default_rng(0)
a, b = rng.normal(size=(512, 784)).astype(np.float32), rng.normal(size=(784, 512)).astype(np.float32)
ref = a.astype(np.float64) @ b.astype(np.float64)
for p in ("highest", "high", "default"):
  out = np.asarray(jnp.matmul(a, b, precision=p), np.float64)
  print(f"512x784 @ 784x512 float32 at {p:>7}: max relative error {np.max(np.abs(out - ref)) / np.max(np.abs(ref)):.1e}")
EOF

step "epoch variants"
timeout "${VARIANTS_TIMEOUT:-120}" $PY scripts/epoch_variants.py --epochs 4 --out "$OUT/ev" --trace ${VARIANTS:+--variants $VARIANTS} 2>&1 \
  | tee "$OUT/variants.log"
(cd "$OUT" && find ev -name 'perfetto_trace.json.gz' -exec mv {} ev/ \; ; rm -rf ev/trace ev/*.npz;
 tar czf variants.tar.gz ev && rm -rf ev)

step bench
timeout "${BENCH_TIMEOUT:-130}" $PY -m vae_jax bench --bench-epochs "${BENCH_EPOCHS:-3}" ${BENCH_ARGS:-} 2>&1 | tee "$OUT/bench.log"

step "train, z = 2, ${TRAIN_EPOCHS:=100} epochs: cold then warm compilation cache"
rm -rf "${VAE_JAX_DATA_DIR:-$HOME/.cache/vae_jax}/jax_compile_cache"  # the bench filled it
for run in cold warm; do
  start=$EPOCHREALTIME
  timeout 60 $PY -m vae_jax train --workdir "/tmp/vae_2_$run" --epochs "$TRAIN_EPOCHS" --no-progress 2>&1 | tail -4
  awk -v a="$start" -v b="$EPOCHREALTIME" -v r="$run" 'BEGIN{printf "%s: whole command %.1f s\n", r, b - a}'
done 2>&1 | tee "$OUT/train.log"

step "stacked seeds: 1 against 5, ${SWEEP_EPOCHS:=3} epochs, --strategy vmap"
for seeds in 1 1,2,3,4,5; do
  timeout 120 $PY -m vae_jax sweep --workdir "/tmp/sweep_$seeds" --seed "$seeds" \
    --epochs "$SWEEP_EPOCHS" --strategy vmap --no-progress 2>&1 | grep "trained"
done 2>&1 | tee "$OUT/sweep.log"
step done
