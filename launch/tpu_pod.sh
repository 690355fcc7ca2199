#!/usr/bin/env bash
# Train on a multi-host Cloud TPU slice: the same command on every worker (one process per host).
# SATRACKER_DISTRIBUTED=1 makes each worker call jax.distributed.initialize() with no arguments,
# and JAX's own Cloud TPU detection (the TPU VM metadata server) finds the coordinator, the process
# count and this worker's id; no platform variable of ours is needed. Process 0 writes the logs.
#
#   launch/tpu_pod.sh TPU_NAME ZONE configs/base.py gs://bucket/run1 [--config.key=value ...]
#   DRY_RUN=1 launch/tpu_pod.sh ...     # print the commands instead of running them
#
# The workdir must be shared by all hosts (a gs:// bucket: Orbax writes there directly).
# The repository is expected at ~/satracker-jax on every worker (REPO=path changes it); the first
# command builds (or keeps) its .venv with the TPU jaxlib (`make env ACCEL=tpu`), and
# `train.platform=tpu` stops the run in one line if JAX still cannot see the TPU. A preempted (or
# deleted and recreated) slice is resumed by running this again: an existing checkpoint in WORKDIR
# is picked up automatically.
set -euo pipefail
if [[ $# -lt 4 ]]; then
  echo "usage: $0 TPU_NAME ZONE CONFIG WORKDIR [--config.key=value ...]" >&2
  exit 2
fi
TPU_NAME=$1; ZONE=$2; CONFIG=$3; WORKDIR=$4; shift 4
# Relative to the remote home (a `~` here would expand to this machine's home, not the worker's).
REPO=${REPO:-satracker-jax}
# Quoted once more for the worker's shell (a space or a quote in an argument stays inside it).
Q_CONFIG=$(printf '%q' "$CONFIG"); Q_WORKDIR=$(printf '%q' "$WORKDIR"); EXTRA=$(printf ' %q' "$@")
run() { if [[ -n ${DRY_RUN:-} ]]; then printf '%q ' "$@"; echo; else "$@"; fi; }

run gcloud compute tpus tpu-vm ssh "$TPU_NAME" --zone "$ZONE" --worker=all --command \
  "cd $REPO && make env ACCEL=tpu"
run gcloud compute tpus tpu-vm ssh "$TPU_NAME" --zone "$ZONE" --worker=all --command \
  "cd $REPO && SATRACKER_DISTRIBUTED=1 .venv/bin/satracker train --config $Q_CONFIG --workdir $Q_WORKDIR --config.train.platform=tpu$EXTRA 2>&1 | tee -a ~/train.log"
