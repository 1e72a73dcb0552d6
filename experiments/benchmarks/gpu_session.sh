#!/usr/bin/env bash
# The GPU checks of issues 15 and 23 in one command, for a device session (one H100/H200):
#   bash experiments/benchmarks/gpu_session.sh --quick   (~7 min: fits 15 minutes of a rented GPU)
#   bash experiments/benchmarks/gpu_session.sh           (the full speed table; BUDGET_S, default 330 s)
# from the checkout; results under $OUT. In order of value:
# 1. README's command 1, the demo (`python -m gpt2_jax train`, no TensorFlow needed), ~1 min
# 2. gpu_speed.py: defaults vs the PyTorch peer for gpt2 and gpt2-xl, kernels (--quick: only these)
# 3. kernel lowering from a CPU-only view (jax 0.11's abstract GPU target), ~30 s
# 4. the hardware tests, pytest -m gpu, ~1-2 min
# Every step shares one persistent compilation cache (runs/xla_cache, ignored by git, kept while the
# machine is): a rerun, or the full table after --quick, does not compile what was compiled before.
set -u
QUICK=""
[ "${1:-}" = "--quick" ] && QUICK="--quick"
OUT=${OUT:-gpu_session_results}
mkdir -p "$OUT"
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
export GPT2_JAX_CACHE_DIR=${GPT2_JAX_CACHE_DIR:-$PWD/runs/xla_cache}
PY=${PYTHON:-$(command -v python || command -v python3)}
{ $PY -c 'import sys, jax; print("python", sys.version.split()[0], "jax", jax.__version__, jax.devices())'
  nvidia-smi --query-gpu=name,memory.total,clocks.max.sm --format=csv,noheader; } > "$OUT/machine.txt" 2>&1
DEMO=$(mktemp -d)
T0=$SECONDS
timeout 240 $PY -m gpt2_jax train workdir="$DEMO/demo" --no-progress > "$OUT/demo.txt" 2>&1
echo "demo (README command 1): exit $? in $((SECONDS - T0)) s" | tee -a "$OUT/machine.txt"
tail -12 "$OUT/demo.txt"; rm -rf "$DEMO"
if [ -n "$QUICK" ]; then
  $PY experiments/benchmarks/gpu_speed.py --out "$OUT" --quick --budget-s "${BUDGET_S:-280}"
else
  $PY experiments/benchmarks/gpu_speed.py --out "$OUT" --budget-s "${BUDGET_S:-330}"
fi
JAX_PLATFORMS=cpu timeout 120 $PY -m pytest -q -p no:cacheprovider tests/test_kernel_lowering.py \
  > "$OUT/pytest_lowering.txt" 2>&1; echo "lowering: exit $?" | tee -a "$OUT/machine.txt"
timeout 180 $PY -m pytest -q -p no:cacheprovider -m gpu tests/test_kernels.py > "$OUT/pytest_gpu.txt" 2>&1
echo "pytest -m gpu: exit $?" | tee -a "$OUT/machine.txt"
tail -3 "$OUT/pytest_lowering.txt" "$OUT/pytest_gpu.txt"
