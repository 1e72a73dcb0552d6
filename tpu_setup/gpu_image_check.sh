#!/usr/bin/env bash
# Before renting a GPU: run the README's commands on a CPU with the GPU image's package versions
# (Python 3.12, jax 0.11.2, flax 0.12.10, optax 0.2.8, orbax-checkpoint 0.12.4, chex 0.1.92; no
# TensorFlow, no tensorboardX, no export extras), from this checkout with PYTHONPATH as on the image.
# Usage: tpu_setup/gpu_image_check.sh [VENV]   (VENV default /tmp/gpt2_jax_gpu_image; made if missing)
# Needs a python3.12 (PYTHON312=...; e.g. pyenv's). Prints each command's exit status; exits 1 if any
# command that the GPU image must run failed.
set -u
VENV=${1:-/tmp/gpt2_jax_gpu_image}
PY312=${PYTHON312:-$(command -v python3.12 || ls -d "$HOME"/.pyenv/versions/3.12*/bin/python 2>/dev/null | tail -1)}
if [[ ! -x "$VENV/bin/python" ]]; then
  [[ -n "$PY312" ]] || { echo "error: no python3.12 found; set PYTHON312=/path/to/python3.12" >&2; exit 2; }
  "$PY312" -m venv "$VENV" && "$VENV/bin/pip" install -q jax==0.11.2 jaxlib==0.11.2 flax==0.12.10 optax==0.2.8 \
    orbax-checkpoint==0.12.4 chex==0.1.92 tiktoken tqdm pytest || exit 2
fi
REPO=$(cd "$(dirname "$0")/.." && pwd)
WORK=$(mktemp -d)
cd "$WORK" || exit 2
export PYTHONPATH=$REPO JAX_PLATFORMS=cpu GPT2_JAX_CACHE_DIR=$WORK/xla_cache
PY="$VENV/bin/python"
"$PY" -c 'import sys, jax, flax, optax, orbax.checkpoint as oc; print("python", sys.version.split()[0], "jax", jax.__version__, "flax", flax.__version__, "optax", optax.__version__, "orbax", oc.__version__)'
"$PY" -c 'import importlib.util as u; print("tensorflow installed:", u.find_spec("tensorflow") is not None)'
head -c 3000 "$REPO/gpt2_jax/assets/corpora/tinyshakespeare.txt" | "$PY" -c 'import sys, json; print(json.dumps({"text": sys.stdin.read()}))' > docs.jsonl
failed=0
check() {  # check NAME COMMAND...: run, print the exit status and the last lines
  local t0=$SECONDS
  "$@" > "$WORK/out.txt" 2>&1; local status=$?
  echo "== $status ($((SECONDS - t0)) s): ${*#$PY -m }"; tail -4 "$WORK/out.txt" | sed 's/^/   /'
  [[ $status == 0 ]] || failed=1
}
SHRINK="steps=20 batch_size=8 data.seq_len=64 log_every=10 eval_every=20 sample_tokens=16 --no-progress"
check "$PY" -m gpt2_jax train workdir=runs/demo $SHRINK
check "$PY" -m gpt2_jax train workdir=runs/demo2 $SHRINK   # a second run: compilation cache warm
check "$PY" -m gpt2_jax train model=tiny workdir=runs/t $SHRINK
check "$PY" -m gpt2_jax sample runs/demo/checkpoints --prompt "ROMEO:" --max-new-tokens 20 --temperature 0.8 --top-k 200
check "$PY" -m gpt2_jax ckpt-info runs/demo/checkpoints
check "$PY" -m gpt2_jax export runs/demo/checkpoints --format params --out params_out
check "$PY" -m gpt2_jax eval runs/demo/checkpoints --task text --data docs.jsonl --json --no-progress
# formats whose packages the image lacks must end in one `error:` line (exit 2), not a traceback
"$PY" -m gpt2_jax export runs/demo/checkpoints --format gguf --out m.gguf > out.txt 2>&1
echo "== $? (expected 2): export --format gguf without the gguf package: $(tail -1 out.txt)"
(cd "$REPO" && check "$PY" -m pytest -q -p no:cacheprovider tests/test_compilation_cache.py tests/test_config.py)
rm -rf "$WORK"
exit $failed
