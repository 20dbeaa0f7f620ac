#!/bin/bash
# Creates a TPU VM (single host or pod slice) through a queued resource and
# waits until it is ACTIVE. Not run yet on any TPU: see README.md here.
#
#   PROJECT=my-project ZONE=us-central2-b TPU_NAME=resnet-v4-8 \
#   ACCELERATOR_TYPE=v4-8 RUNTIME_VERSION=tpu-ubuntu2204-base \
#   [SPOT=1] bash experiments/tpu/create_vm.sh
#
# v5e: ACCELERATOR_TYPE=v5litepod-8 RUNTIME_VERSION=v2-alpha-tpuv5-lite.
# A pod slice (v4-32, v5litepod-32) is created the same way.
set -euo pipefail
: "${PROJECT:?set PROJECT}" "${ZONE:?set ZONE}" "${TPU_NAME:?set TPU_NAME}"
: "${ACCELERATOR_TYPE:?set ACCELERATOR_TYPE}"
: "${RUNTIME_VERSION:?set RUNTIME_VERSION}"
QUEUED_RESOURCE="${QUEUED_RESOURCE:-${TPU_NAME}-qr}"

extra=()
# Spot capacity is cheaper and can be taken back at any time: the trainer then
# saves a checkpoint on SIGTERM; the VM has to be created again (README.md).
if [[ "${SPOT:-0}" == 1 ]]; then extra+=(--spot); fi

gcloud compute tpus queued-resources create "$QUEUED_RESOURCE" \
  --project="$PROJECT" --zone="$ZONE" --node-id="$TPU_NAME" \
  --accelerator-type="$ACCELERATOR_TYPE" --runtime-version="$RUNTIME_VERSION" \
  "${extra[@]}"

# The request waits in a queue until capacity is free; poll its state.
while true; do
  state=$(gcloud compute tpus queued-resources describe "$QUEUED_RESOURCE" \
    --project="$PROJECT" --zone="$ZONE" --format='value(state.state)')
  echo "$(date -u +%H:%M:%S) $QUEUED_RESOURCE: $state"
  case "$state" in
    ACTIVE) break ;;
    FAILED|SUSPENDED) echo "error: $QUEUED_RESOURCE is $state" >&2; exit 1 ;;
  esac
  sleep 30
done
gcloud compute tpus tpu-vm describe "$TPU_NAME" --project="$PROJECT" \
  --zone="$ZONE" --format='value(state,acceleratorType,networkEndpoints[].ipAddress)'
