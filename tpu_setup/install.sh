#!/usr/bin/env bash
# Install gpt2_jax with TPU JAX on every worker of the slice.
# Usage: TPU_NAME=... TPU_ZONE=... [REPO_URL=... REPO_REF=...] tpu_setup/install.sh [--dry-run]
source "$(dirname "$0")/common.sh"
if [[ -z "$REPO_URL" ]]; then
  echo "error: set REPO_URL to the git URL the workers clone gpt2_jax from (e.g. your fork)" >&2
  exit 2
fi

on_all_workers "set -e; \
  (test -d gpt2_jax || git clone $REPO_URL gpt2_jax); cd gpt2_jax && git fetch -q && git checkout -q $REPO_REF; \
  python3 -m venv ~/venv && ~/venv/bin/pip install -q -U pip && \
  ~/venv/bin/pip install -q -e . 'jax[tpu]' && \
  ~/venv/bin/python -c 'import jax; print(jax.process_index(), jax.device_count(), jax.devices()[0].device_kind)'"
