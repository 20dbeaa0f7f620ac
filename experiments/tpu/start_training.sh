#!/bin/bash
# Starts the same trainer command on every worker of the TPU VM, detached
# from the ssh session; each worker's output goes to ~/train.log there.
# Not run yet on any TPU: see README.md here.
#
#   PROJECT=my-project ZONE=us-central2-b TPU_NAME=resnet-v4-8 \
#   bash experiments/tpu/start_training.sh \
#     --config=configs/resnet56.py --workdir=gs://my-bucket/runs/resnet56-seed0 \
#     --config.data.data_dir=gs://my-bucket/tfds --config.data.download=False \
#     --config.eval_batch_size=1000
#
# Rerunning it with the same arguments resumes from the newest checkpoint in
# the workdir (after a preemption, on a new VM too when the workdir is on
# gs://). It refuses to start a second trainer on a worker that runs one.
set -euo pipefail
: "${PROJECT:?set PROJECT}" "${ZONE:?set ZONE}" "${TPU_NAME:?set TPU_NAME}"
if [[ $# -eq 0 ]]; then
  echo "error: give the trainer's arguments (--config=... --workdir=...)" >&2
  exit 2
fi
for arg in "$@"; do
  if [[ "$arg" == --workdir=* && "$arg" != --workdir=gs://* ]]; then
    echo "warning: $arg is on the VM's disk: a preempted or deleted VM takes" \
         "its checkpoints with it; use gs://" >&2
  fi
done
args=$(printf '%q ' "$@")  # Quoted once more for the remote shell.

gcloud compute tpus tpu-vm ssh "$TPU_NAME" --project="$PROJECT" --zone="$ZONE" \
  --worker=all --command="
if [ -f ~/train.pid ] && kill -0 \"\$(cat ~/train.pid)\" 2> /dev/null; then
  echo \"error: \$(hostname) already runs the trainer, pid \$(cat ~/train.pid)\" >&2
  exit 1
fi
cd ~/resnet_jax
echo \"=== \$(date -u +%FT%TZ) resnet_jax.main $args\" >> ~/train.log
nohup ~/venv/bin/python -m resnet_jax.main $args >> ~/train.log 2>&1 < /dev/null &
echo \$! > ~/train.pid
echo \"\$(hostname): started, pid \$!, log ~/train.log\""
