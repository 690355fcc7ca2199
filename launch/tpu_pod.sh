#!/usr/bin/env bash
# Train on a multi-host Cloud TPU slice: the same command on every worker (one process per host).
# SATRACKER_DISTRIBUTED=1 makes each worker call jax.distributed.initialize() with no arguments,
# and JAX's own Cloud TPU detection (the TPU VM metadata server) finds the coordinator, the process
# count and this worker's id; no platform variable of ours is needed. Process 0 writes the logs.
#
#   launch/tpu_pod.sh TPU_NAME ZONE configs/base.py gs://bucket/run1 [--config.key=value ...]
#
# The workdir must be shared by all hosts (a gs:// bucket: Orbax writes there directly).
# The repository is expected at ~/satracker-jax on every worker with .venv built (`make env`).
# A preempted (or deleted and recreated) slice is resumed by running this again: an existing
# checkpoint in WORKDIR is picked up automatically.
set -euo pipefail
if [[ $# -lt 4 ]]; then
  echo "usage: $0 TPU_NAME ZONE CONFIG WORKDIR [--config.key=value ...]" >&2
  exit 2
fi
TPU_NAME=$1; ZONE=$2; CONFIG=$3; WORKDIR=$4; shift 4
REPO=${REPO:-~/satracker-jax}
EXTRA=$(printf ' %q' "$@")
gcloud compute tpus tpu-vm ssh "$TPU_NAME" --zone "$ZONE" --worker=all --command \
  "cd $REPO && SATRACKER_DISTRIBUTED=1 .venv/bin/satracker train --config $CONFIG --workdir $WORKDIR$EXTRA 2>&1 | tee -a ~/train.log"
