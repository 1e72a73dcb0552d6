# Shared by the tpu_setup scripts: settings from the environment and a dry-run aware runner.
# Source it; do not run it. Every script accepts --dry-run (or DRY_RUN=1): print each command
# instead of running it, so the exact commands can be reviewed (and are checked by tests).

set -euo pipefail

TPU_NAME="${TPU_NAME:-gpt2-jax}"
TPU_ZONE="${TPU_ZONE:-us-central2-b}"
TPU_PROJECT="${TPU_PROJECT:-}"
TPU_TYPE="${TPU_TYPE:-v4-32}"                        # accelerator type: v4-8 is one host, v4-32 four
TPU_RUNTIME="${TPU_RUNTIME:-tpu-ubuntu2204-base}"
TPU_SLICES="${TPU_SLICES:-1}"                        # >1: a multislice of that many TPU_TYPE slices (DCN)
REPO_URL="${REPO_URL:-}"                             # git URL of your gpt2_jax checkout (install.sh)
REPO_REF="${REPO_REF:-main}"
DRY_RUN="${DRY_RUN:-0}"

for arg in "$@"; do
  [[ "$arg" == "--dry-run" ]] && DRY_RUN=1
done

project_flag() {
  [[ -n "$TPU_PROJECT" ]] && printf -- '--project=%s' "$TPU_PROJECT"
  return 0
}

# run CMD...: print it (shell-quoted) when dry-running, else run it.
run() {
  if [[ "$DRY_RUN" == "1" ]]; then
    printf '%q ' "$@" | sed 's/ $//'
    printf '\n'
  else
    "$@"
  fi
}

# The TPU VMs: the slice itself, or TPU_NAME-0 .. TPU_NAME-(N-1) for a multislice of N slices
# (queued resources name the nodes of a --node-count request PREFIX-i).
nodes() {
  if [[ "$TPU_SLICES" == "1" ]]; then echo "$TPU_NAME"; else seq -f "$TPU_NAME-%g" 0 $(( TPU_SLICES - 1 )); fi
}

# on_all_workers 'shell command': the same command on every host of every slice, in parallel.
on_all_workers() {
  local node
  for node in $(nodes); do
    run gcloud compute tpus tpu-vm ssh "$node" --zone="$TPU_ZONE" $(project_flag) --worker=all --command="$1"
  done
}

# compile_check train ARGS...: compile the train step for this slice ($TPU_TYPE) on this machine,
# with libtpu and no TPU (gpt2-jax train --compile-only --topology), before pod time is spent. A
# config that does not fit the chips' memory stops the script here with gpt2-jax's error line.
# GPT2_JAX names the command (default: gpt2-jax); SKIP_COMPILE_CHECK=1 skips the check.
compile_check() {
  [[ "${SKIP_COMPILE_CHECK:-0}" == "1" ]] && return 0
  local -a gpt2_jax
  read -ra gpt2_jax <<< "${GPT2_JAX:-gpt2-jax}"
  run "${gpt2_jax[@]}" "$@" --compile-only --topology "$TPU_TYPE" --slices "$TPU_SLICES" || {
    echo "error: the compile check for $TPU_TYPE failed (above); nothing was started on the slice" >&2
    exit 2
  }
}
