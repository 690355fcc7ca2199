"""`satracker smoke --config C [--batch N] [--seed S]`: `satracker_jax.smoke.smoke`, printed."""
from __future__ import annotations

import argparse

import jax

from satracker_jax import config_utils
from satracker_jax.cli import common


def add_arguments(parser: argparse.ArgumentParser) -> None:
  parser.add_argument("--config", default="configs/tiny.py", help="config file[:arg]")
  parser.add_argument("--batch", type=common.count_arg("--batch"), default=8, help="batch size of the random inputs")
  parser.add_argument("--seed", type=int, default=0, help="seed of the parameters and the inputs")


def run(args, overrides) -> int:
  from satracker_jax.smoke import smoke  # noqa: PLC0415
  config = config_utils.load_config(args.config, overrides)
  r = smoke(config, args.batch, args.seed)
  print(f"config {args.config}  batch {args.batch}  devices {jax.devices()}")
  print(f"parameters: {r['parameters']:,}")
  print("outputs:")
  for path, (shape, dtype) in r["outputs"].items():
    print(f"  {path:40s} {shape} {dtype}")
  print("losses:")
  print(f"  {'total':10s} {r['total']:.5f}")
  for name, value in r["terms"].items():
    print(f"  {name:10s} {value:.5f}")
  print(f"grad norm {r['grad_norm']:.5f}")
  print(f"init {r['init_s']:.1f}s  compile+first step {r['first_step_s']:.1f}s  "
        f"second step {r['second_step_s']:.3f}s")
  if not r["finite"]:
    print("NON-FINITE loss or gradient")
  return 0 if r["finite"] else 1
