"""`satracker train --config configs/X.py[:arg] --workdir DIR [--config.key=value ...]`.

An existing checkpoint in --workdir is resumed automatically. --workdir may be a bucket URL
(gs://bucket/run): its write access is checked first, then everything is written there.
`--config.train.platform=gpu|tpu` stops at once when the installed JAX cannot see that platform.
Multi-host: run the same command on every host; `jax.distributed.initialize()` picks the cluster
up from SLURM / TPU / the JAX_COORDINATOR_ADDRESS environment, or from the explicit --coordinator
flags (see launch/).
The work is `satracker_jax.train.loop.train(config, workdir)`.
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys

EPILOG = """\
config overrides: any config field, after the options, as --config.<field>=<value>, e.g.
  satracker train --config configs/tiny.py --workdir runs/tiny \\
      --config.train.total_steps=2000 --config.optim.lr=1e-4

resume: a --workdir that already holds a checkpoint is resumed from its latest step (the same
sample order, the same schedule); a new or empty --workdir starts at step 0. Written there:
checkpoints/, metrics.jsonl and TensorBoard event files under tensorboard/
(tensorboard --logdir WORKDIR/tensorboard)."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
  parser.add_argument("--config", required=True, help="config file[:arg], e.g. configs/tiny.py")
  parser.add_argument("--workdir", required=True,
                      help="checkpoints, metrics.jsonl, tensorboard/; a folder or a bucket URL (gs://...)")
  parser.add_argument("--allow-config-changes", action="store_true",
                      help="resume a workdir whose checkpoint was trained with another model, "
                           "optimizer, loss or data config (refused without it; the changes are "
                           "printed either way)")
  parser.add_argument("--coordinator", default="",
                      help="host:port of process 0 (multi-process; default: found by "
                           "jax.distributed.initialize from SLURM / TPU / the environment)")
  parser.add_argument("--num-processes", type=int, default=0, help="with --coordinator")
  parser.add_argument("--process-id", type=int, default=-1, help="with --coordinator")
  parser.add_argument("--local-device-ids", default="",
                      help="comma list of this process's GPUs (one process per node under "
                           "SLURM; default: all GPUs of the host)")
  parser.add_argument("--cpu-collectives", default="", choices=["", "gloo", "mpi"],
                      help="cross-process collectives for CPU devices (local multi-process tests; "
                           "default: JAX's, none across processes)")


PLATFORMS = {"cpu": "cpu", "gpu": "gpu", "cuda": "gpu", "rocm": "gpu", "tpu": "tpu"}
INSTALL_HINT = {"gpu": "make env ACCEL=cuda (pip install -e '.[cuda]')",
                "tpu": "make env ACCEL=tpu (pip install -e '.[tpu]')", "cpu": "JAX_PLATFORMS=cpu"}


def platform_problem(requested: str) -> str:
  """"" when the installed JAX runs on `requested` ("" = any platform), else the reason, one line."""
  import jax  # noqa: PLC0415
  if not requested:
    return ""
  want = PLATFORMS.get(requested.lower())
  if want is None:
    return f"train.platform={requested!r}: expected one of {sorted(PLATFORMS)} or \"\" (any)"
  try:
    backend = jax.default_backend()
    devices = jax.devices()
  except RuntimeError as e:  # e.g. JAX_PLATFORMS names a backend that failed to start
    return f"train.platform={requested}: JAX could not start a backend ({' '.join(str(e).split())})"
  if backend == want:
    return ""
  return (f"train.platform={requested} but the installed JAX {jax.__version__} sees only "
          f"{len(devices)} {backend} device(s) ({devices[0].device_kind}); install the matching "
          f"build: {INSTALL_HINT[want]}")


def run(args, overrides) -> int:
  import jax  # noqa: PLC0415
  if args.cpu_collectives:
    jax.config.update("jax_cpu_collectives_implementation", args.cpu_collectives)
  from satracker_jax import config_utils, paths  # noqa: PLC0415
  config = config_utils.load_config(args.config, overrides)
  from satracker_jax.train import sharding  # noqa: PLC0415
  sharding.maybe_initialize_distributed(args.coordinator, args.num_processes, args.process_id,
                                        args.local_device_ids)
  problem = platform_problem(str(config.train.get("platform", "")))
  if problem:
    print(f"satracker train: {problem}", file=sys.stderr)
    return 2
  new_workdir = not paths.is_url(args.workdir) and not os.path.exists(args.workdir)
  try:
    paths.ensure_dir(args.workdir, "--workdir")
  except paths.OutputPathError as e:
    print(f"satracker train: {e}", file=sys.stderr)
    return 2

  from satracker_jax.train import loop  # noqa: PLC0415
  try:
    summary = loop.train(config, args.workdir, allow_config_changes=args.allow_config_changes)
  except loop.TrainingStopped as e:
    print(f"satracker train: {e}", file=sys.stderr)
    return 1
  except (config_utils.ConfigError, SystemExit):
    # Refused before anything was trained (data roots, resume check, ...): a workdir this command
    # created is removed again while it holds nothing but empty folders.
    if new_workdir and not any(files for _, _, files in os.walk(args.workdir)):
      shutil.rmtree(args.workdir, ignore_errors=True)
    raise
  if summary["loss"] is None:  # nothing left to train: no loss to report
    print(f"finished: step {summary['step']}: the workdir already holds train.total_steps="
          f"{config.train.total_steps} (raise it to train on)")
    return 0
  print(f"finished: step {summary['step']} ({summary['stopped_by']}), loss {summary['loss']}, "
        f"skipped non-finite steps {summary['nonfinite_total']}")
  return 0
