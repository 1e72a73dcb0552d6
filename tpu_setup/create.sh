#!/usr/bin/env bash
# Create a TPU VM or pod slice through a queued resource and wait until it is ACTIVE.
# Usage: TPU_NAME=... TPU_ZONE=... TPU_TYPE=v4-32 tpu_setup/create.sh [--dry-run] [--spot]
source "$(dirname "$0")/common.sh"
spot=""
for arg in "$@"; do [[ "$arg" == "--spot" ]] && spot="--spot"; done

# TPU_SLICES=N > 1 asks for a multislice: N slices named TPU_NAME-0 .. TPU_NAME-(N-1), joined by DCN.
node_flags=(--node-id="$TPU_NAME")
[[ "$TPU_SLICES" != "1" ]] && node_flags=(--node-count="$TPU_SLICES" --node-prefix="$TPU_NAME")
run gcloud compute tpus queued-resources create "$TPU_NAME" "${node_flags[@]}" --zone="$TPU_ZONE" \
  $(project_flag) --accelerator-type="$TPU_TYPE" --runtime-version="$TPU_RUNTIME" $spot
if [[ "$DRY_RUN" == "1" ]]; then
  run gcloud compute tpus queued-resources describe "$TPU_NAME" --zone="$TPU_ZONE" $(project_flag) --format='value(state.state)'
  exit 0
fi
# Queued resources wait for capacity; poll until the slice is ACTIVE (or fails).
while true; do
  state=$(gcloud compute tpus queued-resources describe "$TPU_NAME" --zone="$TPU_ZONE" $(project_flag) --format='value(state.state)')
  echo "$(date +%T) queued resource $TPU_NAME: $state"
  case "$state" in
    ACTIVE) break ;;
    FAILED|SUSPENDED) echo "error: queued resource $TPU_NAME is $state" >&2; exit 1 ;;
  esac
  sleep 30
done
