#!/usr/bin/env bash
# Delete the slice and its queued resource (stops billing). Checkpoints must live in a bucket
# (workdir=gs://...) to survive this.
# Usage: tpu_setup/teardown.sh [--dry-run]
source "$(dirname "$0")/common.sh"

run gcloud compute tpus queued-resources delete "$TPU_NAME" --zone="$TPU_ZONE" $(project_flag) --force --quiet
