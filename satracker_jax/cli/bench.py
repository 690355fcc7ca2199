"""`satracker bench {data,train,track,eval,accel,scale} --config C --json FILE`: each prints a table
and writes JSON. Frame sizes are WxH, as everywhere (`satracker synth --size`).

The work is `satracker_jax.bench.<name>.run(config_spec, overrides, **options)`.
"""
from __future__ import annotations

import argparse
import importlib

from satracker_jax import utils
from satracker_jax.cli import common


def _data_arguments(p: argparse.ArgumentParser) -> None:
  p.add_argument("--batches", type=int, default=20, help="timed batches")
  p.add_argument("--warmup", type=int, default=3, help="untimed batches first")
  p.add_argument("--data-root", default="",
                 help="synthetic data (satracker synth output); default: the config's data "
                      "sets, or freshly generated synthetic data when none has a root")
  p.add_argument("--sequences", type=common.count_arg("--sequences"), default=24, help="videos to generate (no data root)")
  p.add_argument("--frame-size", default="1280x720", type=common.frame_size_arg("--frame-size"),
                 help="WxH of generated (JPEG) videos")
  p.add_argument("--workers", default="",
                 help="comma list of input worker counts (of the config's data.workers kind) for "
                      "the scaling table (default 1, 2, 4.. the usable cores)")


def _train_arguments(p: argparse.ArgumentParser) -> None:
  p.add_argument("--batch", type=common.count_arg("--batch", 0), default=0, help="global batch (0: the config's)")
  p.add_argument("--steps", type=common.count_arg("--steps"), default=10, help="timed steps")
  p.add_argument("--warmup", type=int, default=2, help="untimed steps after compilation")
  p.add_argument("--bf16", action="store_true", help="bf16 compute (f32 master weights)")
  p.add_argument("--peak-flops", type=float, default=0.0,
                 help="peak FLOP/s per device (default: from the table for known accelerators)")


def _track_arguments(p: argparse.ArgumentParser) -> None:
  p.add_argument("--frames", type=common.count_arg("--frames"), default=100, help="timed calls per measurement")
  p.add_argument("--parallel", type=common.count_arg("--parallel", 0), default=0, help="also time a BatchedTracker of N slots (0: the single stream only)")
  p.add_argument("--bf16", action="store_true", help="bfloat16 compute (model.dtype)")
  p.add_argument("--frame-size", default="640x480", type=common.frame_size_arg("--frame-size"),
                 help="WxH of the synthetic frames")


def _scale_arguments(p: argparse.ArgumentParser) -> None:
  p.add_argument("--devices", type=int, default=8, help="fake CPU devices to compile for")
  p.add_argument("--mesh", default="data=-1,fsdp=1", help="data=A,fsdp=B (one may be -1)")
  p.add_argument("--batch", type=common.count_arg("--batch", 0), default=0, help="global batch (0: the config's)")
  p.add_argument("--remat", default="", choices=("", "none", "full", "dots"),
                 help="model.remat policy (default: the config's)")
  p.add_argument("--memory-gib", type=float, default=16.0, help="per-device memory the step must fit")


def _eval_arguments(p: argparse.ArgumentParser) -> None:
  p.add_argument("--frame-size", default="1280x720", type=common.frame_size_arg("--frame-size"),
                 help="WxH of the generated JPEG videos")
  p.add_argument("--sequences", type=common.count_arg("--sequences"), default=8, help="videos to generate")
  p.add_argument("--frames", type=common.count_arg("--frames"), default=60, help="frames per video")
  p.add_argument("--parallel", type=common.count_arg("--parallel"), default=8, help="sequences tracked at once")
  p.add_argument("--workers", type=int, default=0, help="decoding threads (0: all cores)")
  p.add_argument("--data-root", default="",
                 help="satracker synth output to read instead (default: videos generated afresh)")
  p.add_argument("--no-model", action="store_true", help="host-only rates (skip the model)")
  p.add_argument("--checkpoint", default="",
                 help="a trained model for the end-to-end run (default: random weights)")


def _accel_arguments(p: argparse.ArgumentParser) -> None:
  from satracker_jax.bench.accel import PARTS  # noqa: PLC0415
  p.add_argument("--out", default="accel_report", help="folder for accel.json and accel.md (written after each part)")
  p.add_argument("--small", action="store_true", help="tiny shapes and few steps (CPU smoke run)")
  p.add_argument("--parts", default=",".join(PARTS), help="comma list of parts to run, in order")
  p.add_argument("--train-batches", default="32,64,128", help="train step batch sizes")
  p.add_argument("--track-slots", type=int, default=64, help="batched tracker size")
  p.add_argument("--language-batches", default="64,256,1024", help="language recipe batch sizes")
  p.add_argument("--part-timeout", type=float, default=600.0, help="seconds before a part's process is stopped")


# name -> (help, add the options, options for run())
BENCHES = {
    "data": ("input pipeline samples/s", _data_arguments,
             lambda a: dict(batches=a.batches, warmup=a.warmup, data_root=a.data_root,
                            sequences=a.sequences, frame_size="x".join(map(str, a.frame_size)),
                            workers=[int(t) for t in a.workers.split(",") if t] or None)),
    "train": ("train step time, samples/s, MFU", _train_arguments,
              lambda a: dict(batch=a.batch, steps=a.steps, warmup=a.warmup, bf16=a.bf16,
                             peak_flops=a.peak_flops)),
    "track": ("tracker frames/s, single stream and batched", _track_arguments,
              lambda a: dict(frames=a.frames, parallel=a.parallel, bf16=a.bf16,
                             frame_size=a.frame_size)),
    "eval": ("offline evaluation frames/s on JPEG videos: end to end and host only",
             _eval_arguments,
             lambda a: dict(frame_size=a.frame_size, sequences=a.sequences, frames=a.frames,
                            parallel=a.parallel, workers=a.workers, data_root=a.data_root,
                            model=not a.no_model, checkpoint=a.checkpoint)),
    "accel": ("the accelerator report: compile cold/cached, train MFU, kernels, tracker, eval, data, language",
              _accel_arguments,
              lambda a: dict(out=a.out, small=a.small, parts=tuple(a.parts.split(",")),
                             train_batches=tuple(int(b) for b in a.train_batches.split(",")),
                             track_slots=a.track_slots,
                             language_batches=tuple(int(b) for b in a.language_batches.split(",")),
                             timeout=a.part_timeout)),
    "scale": ("compile-only train step for N fake devices: memory, FLOPs, collectives", _scale_arguments,
              lambda a: dict(devices=a.devices, mesh=a.mesh, batch=a.batch, remat=a.remat,
                             memory_gib=a.memory_gib)),
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
  sub = parser.add_subparsers(dest="bench", metavar="BENCH", required=True,
                              help="the benchmark to run; `satracker bench BENCH --help` for its "
                                   "options")
  from satracker_jax.cli import HelpFormatter  # noqa: PLC0415
  for name, (help_text, add, _) in BENCHES.items():
    p = sub.add_parser(name, help=help_text, description=help_text, formatter_class=HelpFormatter)
    p.add_argument("--config", default="configs/tiny.py", help="config file[:arg]")
    p.add_argument("--json", default="", help="write the results here (default: table only)")
    add(p)
    from satracker_jax.cli import add_compile_cache_options  # noqa: PLC0415
    add_compile_cache_options(p, suppress=True)


def run(args, overrides) -> int:
  _, _, options = BENCHES[args.bench]
  module = importlib.import_module(f"satracker_jax.bench.{args.bench}")
  result = module.run(args.config, overrides, **options(args))
  if args.json:
    utils.write_json(args.json, result)
    print(f"wrote {args.json}")
  return 0
