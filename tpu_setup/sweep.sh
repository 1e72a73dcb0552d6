#!/usr/bin/env bash
# Run a scaling sweep on every worker of the slice. Worker i of N runs
#   gpt2-jax sweep run SWEEP.py --out DIR --shard i/N [flags]
# as an independent process on its own chips (no jax.distributed: points never span hosts), and
# packs its share of the points side by side on those chips (--devices-per-point K). DIR should
# be shared storage (NFS, a GCS FUSE mount) so `gpt2-jax sweep collect DIR` sees every point;
# rerunning the same command resumes. Each worker logs to ~/sweep.log. First the sweep's largest
# point is compiled for its chips of $TPU_TYPE on this machine (compile_check, common.sh).
# N comes from TPU_TYPE (v4-/v5p-: cores/8 hosts; v5litepod-/v6e-: chips/4 hosts, 1 up to 8 chips)
# or TPU_HOSTS. The worker index is read from the VM's metadata server on the worker itself.
# Usage: tpu_setup/sweep.sh [--dry-run] SWEEP.py --out DIR [--devices-per-point K]
source "$(dirname "$0")/common.sh"
args=()
for arg in "$@"; do [[ "$arg" != "--dry-run" ]] && args+=("$arg"); done
if [[ ${#args[@]} -eq 0 ]]; then
  echo "error: give a sweep file and --out DIR, e.g. tpu_setup/sweep.sh experiments/scaling_tiny_cpu.py --out /mnt/shared/sweep" >&2
  exit 2
fi

hosts="${TPU_HOSTS:-}"
if [[ -z "$hosts" ]]; then
  n="${TPU_TYPE##*-}"
  case "$TPU_TYPE" in
    v4-*|v5p-*) hosts=$(( n > 8 ? n / 8 : 1 )) ;;
    v5litepod-*|v6e-*) hosts=$(( n > 8 ? n / 4 : 1 )) ;;
    *) echo "error: cannot tell the number of hosts of TPU_TYPE=$TPU_TYPE; set TPU_HOSTS=N" >&2; exit 2 ;;
  esac
fi

# The sweep's largest point compiled for the chips one point gets on this slice, before pod time.
compile_check sweep run "${args[@]}"
quoted=$(printf '%q ' "${args[@]}")
worker='$(curl -s -H Metadata-Flavor:Google http://metadata.google.internal/computeMetadata/v1/instance/attributes/agent-worker-number)'
on_all_workers "cd gpt2_jax && nohup ~/venv/bin/gpt2-jax sweep run ${quoted}--shard ${worker}/${hosts} --no-progress > ~/sweep.log 2>&1 &"
echo "# follow a worker's log with: gcloud compute tpus tpu-vm ssh $TPU_NAME --zone=$TPU_ZONE --worker=0 --command='tail -f ~/sweep.log'"
