"""`satracker export`: a trained model for shipping, in one of two formats.

  satracker export --checkpoint runs/tiny --out tiny_step.stablehlo [--batch 1] \
      [--weights baked|inputs] [--platforms cpu,cuda,tpu]          # --format stablehlo (default)
  satracker export --checkpoint runs/tiny --format orbax --out tiny_model   # or gs://bucket/tiny_model

stablehlo: the tracker's device step serialised with `jax.export` (`export.export_step` +
`save_exported`). orbax: the model alone, params + batch_stats + config, no optimizer state
(`export.save_model_folder`); `eval`, `track`, `export` and `train.init_from` load that folder as
they load a workdir, on any device count. Formats: `satracker_jax/export.py`'s docstring.
"""
from __future__ import annotations

import argparse
import sys

from satracker_jax.cli import common


def add_arguments(parser: argparse.ArgumentParser) -> None:
  common.add_model_arguments(parser, "config file[:arg] (checked against the checkpoint; "
                             "alone: random weights, for trying the export)")
  parser.add_argument("--format", choices=("stablehlo", "orbax"), default="stablehlo",
                      help="stablehlo: the tracker step (jax.export); orbax: the model's variables "
                           "and config as a folder (no optimizer state)")
  parser.add_argument("--out", required=True,
                      help="stablehlo: the serialised file (sidecar FILE.json); orbax: a folder. "
                           "Either may be a bucket URL (gs://...)")
  parser.add_argument("--batch", type=common.count_arg("--batch"), default=1, help="stablehlo: batch size baked into the export")
  parser.add_argument("--weights", choices=("baked", "inputs"), default="baked",
                      help="stablehlo: baked = constants inside FILE; inputs = FILE.weights.npz "
                           "bound at load")
  parser.add_argument("--platforms", default="",
                      help="stablehlo: comma-separated (cpu,cuda,rocm,tpu); default: this machine's backend")


def run(args, overrides) -> int:
  from satracker_jax import export, paths  # noqa: PLC0415
  try:  # before loading and compiling: a bucket that cannot be written fails now, in one line
    folder = args.out if args.format == "orbax" else paths.resolve(args.out).parent
    paths.ensure_dir(folder, "--out" if args.format == "orbax" else "--out folder")
  except paths.OutputPathError as e:
    print(f"satracker export: {e}", file=sys.stderr)
    return 2
  config, variables = common.load_model(args, overrides)
  if args.format == "orbax":
    for path in export.save_model_folder(args.out, config, variables):
      print(f"wrote {path}")
    return 0
  platforms = [p.strip() for p in args.platforms.split(",") if p.strip()] or None
  exported, meta, leaves = export.export_step(config, variables, args.batch, args.weights, platforms)
  for path in export.save_exported(args.out, exported, meta, leaves):
    print(f"wrote {path} ({paths.resolve(path).stat().length / 2**20:.1f} MiB)")
  print("inputs: " + ", ".join(f"{i['name']} {i['dtype']}{i['shape']}" for i in meta["inputs"]))
  return 0
