#!/usr/bin/env bash
# Stream the training log of worker 0 (the only process that prints metrics).
# Usage: tpu_setup/logs.sh [--dry-run] [--worker=N]
source "$(dirname "$0")/common.sh"
worker=0
for arg in "$@"; do [[ "$arg" == --worker=* ]] && worker="${arg#--worker=}"; done

run gcloud compute tpus tpu-vm ssh "$(nodes | head -n 1)" --zone="$TPU_ZONE" $(project_flag) --worker="$worker" \
  --command="tail -n 200 -f ~/train.log"
