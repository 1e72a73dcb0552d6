#!/usr/bin/env bash
# Start `gpt2-jax train` on every worker of the slice. Each worker logs to ~/train.log;
# jax.distributed finds the coordinator and process ids itself on TPU VMs (distributed.auto).
# First the same config is compiled for $TPU_TYPE on this machine (compile_check in common.sh):
# a config that does not fit the slice stops here, before any pod time is spent. With
# TPU_SLICES=N the check compiles for N slices and the job starts on every host of each; the
# devices then carry their slice index and the mesh is hybrid (data parallel across slices over
# DCN; README "Planning a pod run").
# Usage: tpu_setup/launch.sh [--dry-run] [EXPERIMENT.py] [key=value ...]
source "$(dirname "$0")/common.sh"
args=()
for arg in "$@"; do [[ "$arg" != "--dry-run" ]] && args+=("$arg"); done
quoted=$(printf '%q ' "${args[@]+"${args[@]}"}")

compile_check train "${args[@]+"${args[@]}"}"
on_all_workers "cd gpt2_jax && nohup ~/venv/bin/gpt2-jax train ${quoted}distributed.auto=true --no-progress > ~/train.log 2>&1 &"
echo "# follow the logs with: tpu_setup/logs.sh"
