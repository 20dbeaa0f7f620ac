#!/bin/bash
# Installs this repository (the committed HEAD) and JAX for TPU on every
# worker of the TPU VM, into ~/resnet_jax and ~/venv. Not run yet on any TPU:
# see README.md here.
#
#   PROJECT=my-project ZONE=us-central2-b TPU_NAME=resnet-v4-8 \
#   BUCKET=gs://my-bucket bash experiments/tpu/setup_workers.sh
#
# The code travels through the bucket (the workers read it anyway for the
# data and write checkpoints there), so every worker gets the same commit.
set -euo pipefail
: "${PROJECT:?set PROJECT}" "${ZONE:?set ZONE}" "${TPU_NAME:?set TPU_NAME}"
: "${BUCKET:?set BUCKET, e.g. gs://my-bucket}"
JAX_VERSION="${JAX_VERSION:-0.10.2}"  # pyproject.toml pins jax and jaxlib.

cd "$(git rev-parse --show-toplevel)"
commit=$(git rev-parse --short HEAD)
if [[ -n "$(git status --porcelain --untracked-files=no)" ]]; then
  echo "warning: uncommitted changes are not shipped; installing $commit" >&2
fi
git archive --format=tar.gz -o "/tmp/resnet_jax-$commit.tar.gz" HEAD
gcloud storage cp "/tmp/resnet_jax-$commit.tar.gz" "$BUCKET/code/"

# resnet_jax needs Python 3.11+; the TPU images are Ubuntu 22.04 (Python
# 3.10), whose universe repository has python3.11.
gcloud compute tpus tpu-vm ssh "$TPU_NAME" --project="$PROJECT" --zone="$ZONE" \
  --worker=all --command="set -e
sudo apt-get update -qq
sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3.11 python3.11-venv
rm -rf ~/resnet_jax && mkdir -p ~/resnet_jax
gcloud storage cp '$BUCKET/code/resnet_jax-$commit.tar.gz' /tmp/
tar -xzf '/tmp/resnet_jax-$commit.tar.gz' -C ~/resnet_jax
test -d ~/venv || python3.11 -m venv ~/venv
~/venv/bin/pip install -q -U pip
~/venv/bin/pip install -q -e ~/resnet_jax 'jax[tpu]==$JAX_VERSION'
~/venv/bin/python -c 'import jax; print(jax.devices()[0].device_kind, jax.local_device_count(), \"local devices\")'
echo \"\$(hostname): resnet_jax $commit installed\""
