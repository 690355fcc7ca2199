#!/usr/bin/env bash
# Train on a multi-host Cloud TPU slice: the same command on every worker (one process per host).
# jax.distributed.initialize() discovers the slice from the TPU VM metadata; process 0 writes logs.
#
#   launch/tpu_pod.sh TPU_NAME ZONE configs/base.py gs://bucket/run1 [--config.key=value ...]
#
# The workdir must be shared by all hosts (a gs:// bucket: Orbax writes there directly).
# The repository is expected at ~/satracker-jax on every worker with .venv built (`make env`).
set -euo pipefail
if [[ $# -lt 4 ]]; then
  echo "usage: $0 TPU_NAME ZONE CONFIG WORKDIR [--config.key=value ...]" >&2
  exit 2
fi
TPU_NAME=$1; ZONE=$2; CONFIG=$3; WORKDIR=$4; shift 4
REPO=${REPO:-~/satracker-jax}
EXTRA=$(printf ' %q' "$@")
gcloud compute tpus tpu-vm ssh "$TPU_NAME" --zone "$ZONE" --worker=all --command \
  "cd $REPO && .venv/bin/satracker train --config $CONFIG --workdir $WORKDIR$EXTRA 2>&1 | tee -a ~/train.log"
