#!/usr/bin/env bash
# Issue 15's GPU checks in one command, for a device session (one H100/H200, <= 10 minutes):
#   bash experiments/benchmarks/gpu_session.sh          (from the checkout; results under $OUT)
# 1. kernel lowering from a CPU-only view (jax 0.11's abstract GPU target), ~30 s
# 2. the hardware tests, now visible to pytest -m gpu (tests/conftest.py), ~1-2 min
# 3. gpu_speed.py: our defaults and the alternatives vs the PyTorch peer, gpt2-xl, kernels (budget below)
set -u
OUT=${OUT:-gpu_session_results}
mkdir -p "$OUT"
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
PY=${PYTHON:-$(command -v python || command -v python3)}
{ $PY -c 'import sys, jax; print("python", sys.version.split()[0], "jax", jax.__version__, jax.devices())'
  nvidia-smi --query-gpu=name,memory.total,clocks.max.sm --format=csv,noheader; } > "$OUT/machine.txt" 2>&1
JAX_PLATFORMS=cpu timeout 120 $PY -m pytest -q -p no:cacheprovider tests/test_kernel_lowering.py \
  > "$OUT/pytest_lowering.txt" 2>&1; echo "lowering: exit $?" | tee -a "$OUT/machine.txt"
timeout 180 $PY -m pytest -q -p no:cacheprovider -m gpu tests/test_kernels.py > "$OUT/pytest_gpu.txt" 2>&1
echo "pytest -m gpu: exit $?" | tee -a "$OUT/machine.txt"
tail -3 "$OUT/pytest_lowering.txt" "$OUT/pytest_gpu.txt"
$PY experiments/benchmarks/gpu_speed.py --out "$OUT" --budget-s "${BUDGET_S:-330}"
