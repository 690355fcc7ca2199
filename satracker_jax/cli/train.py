"""`satracker train --config configs/X.py[:arg] --workdir DIR [--config.key=value ...]`.

An existing checkpoint in --workdir is resumed automatically. Multi-host: run the same command on
every host; `jax.distributed.initialize()` picks the cluster up from SLURM / TPU / the
JAX_COORDINATOR_ADDRESS environment, or from the explicit --coordinator flags (see launch/).
The work is `satracker_jax.train.loop.train(config, workdir)`.
"""
from __future__ import annotations

import argparse
import os
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
  parser.add_argument("--config", required=True, help="config file[:arg], e.g. configs/tiny.py")
  parser.add_argument("--workdir", required=True, help="checkpoints, metrics.jsonl, tensorboard/")
  parser.add_argument("--coordinator", default="", help="host:port of process 0 (multi-process)")
  parser.add_argument("--num-processes", type=int, default=0, help="with --coordinator")
  parser.add_argument("--process-id", type=int, default=-1, help="with --coordinator")
  parser.add_argument("--local-device-ids", default="",
                      help="comma list of this process's GPUs (one process per node under SLURM)")
  parser.add_argument("--cpu-collectives", default="", choices=["", "gloo", "mpi"],
                      help="cross-process collectives for CPU devices (local multi-process tests)")


def run(args, overrides) -> int:
  import jax  # noqa: PLC0415
  if args.cpu_collectives:
    jax.config.update("jax_cpu_collectives_implementation", args.cpu_collectives)
  from satracker_jax.train import sharding  # noqa: PLC0415
  sharding.maybe_initialize_distributed(args.coordinator, args.num_processes, args.process_id,
                                        args.local_device_ids)

  from satracker_jax import config_utils  # noqa: PLC0415
  from satracker_jax.train import loop  # noqa: PLC0415
  config = config_utils.load_config(args.config, overrides)
  os.makedirs(args.workdir, exist_ok=True)
  try:
    summary = loop.train(config, args.workdir)
  except loop.TrainingStopped as e:
    print(f"satracker train: {e}", file=sys.stderr)
    return 1
  print(f"finished: step {summary['step']} ({summary['stopped_by']}), loss {summary['loss']}, "
        f"skipped non-finite steps {summary['nonfinite_total']}")
  return 0
