"""`satracker export`: the tracker's device step serialised with `jax.export` (StableHLO).

  satracker export --checkpoint runs/tiny --out tiny_step.stablehlo [--batch 1] \
      [--weights baked|inputs] [--platforms cpu,cuda,tpu]

The work is `satracker_jax.export.export_step` + `save_exported` (formats: that module's docstring).
"""
from __future__ import annotations

import argparse
import os

from satracker_jax.cli import common


def add_arguments(parser: argparse.ArgumentParser) -> None:
  common.add_model_arguments(parser, "config file[:arg] (checked against the checkpoint; "
                             "alone: random weights, for trying the export)")
  parser.add_argument("--out", required=True, help="serialised StableHLO file (sidecar: FILE.json)")
  parser.add_argument("--batch", type=int, default=1, help="batch size baked into the export")
  parser.add_argument("--weights", choices=("baked", "inputs"), default="baked",
                      help="baked: constants inside FILE; inputs: FILE.weights.npz bound at load")
  parser.add_argument("--platforms", default="",
                      help="comma-separated (cpu,cuda,rocm,tpu); default: this machine's backend")


def run(args, overrides) -> int:
  from satracker_jax import export  # noqa: PLC0415
  config, variables = common.load_model(args, overrides)
  platforms = [p.strip() for p in args.platforms.split(",") if p.strip()] or None
  exported, meta, leaves = export.export_step(config, variables, args.batch, args.weights, platforms)
  for path in export.save_exported(args.out, exported, meta, leaves):
    print(f"wrote {path} ({os.path.getsize(path) / 2**20:.1f} MiB)")
  print("inputs: " + ", ".join(f"{i['name']} {i['dtype']}{i['shape']}" for i in meta["inputs"]))
  return 0
