#!/usr/bin/env bash
# Two JAX processes on this machine (CPU devices, gloo collectives over 127.0.0.1): the multi-host
# code path (jax.distributed, per-process data slices, cross-process fsdp, Orbax multi-host saves)
# without a cluster.
#
#   launch/local_two_process.sh [WORKDIR] [--config.key=value ...]
#   DRY_RUN=1 launch/local_two_process.sh ...   # print the two commands instead of running them
#
# Defaults: configs/synthetic.py:runlocal, 1 CPU device per process, mesh data=1 x fsdp=2.
set -euo pipefail
cd "$(dirname "$0")/.."
WORKDIR=${1:-/tmp/satracker_two_process}; shift || true
CONFIG=${CONFIG:-configs/synthetic.py:runlocal}
PORT=${PORT:-12355}
DEVICES_PER_PROCESS=${DEVICES_PER_PROCESS:-1}
export JAX_PLATFORMS=cpu
export XLA_FLAGS="--xla_force_host_platform_device_count=$DEVICES_PER_PROCESS"
pids=()
for i in 0 1; do
  cmd=(.venv/bin/satracker train --config "$CONFIG" --workdir "$WORKDIR"
       --coordinator "127.0.0.1:$PORT" --num-processes 2 --process-id "$i" --cpu-collectives gloo
       --config.train.mesh.data=-1 --config.train.mesh.fsdp=2 "$@")
  if [[ -n ${DRY_RUN:-} ]]; then
    echo "JAX_PLATFORMS=$JAX_PLATFORMS XLA_FLAGS=$XLA_FLAGS $(printf '%q ' "${cmd[@]}")"
    continue
  fi
  "${cmd[@]}" &
  pids+=($!)
done
status=0
for pid in "${pids[@]}"; do wait "$pid" || status=$?; done
exit $status
