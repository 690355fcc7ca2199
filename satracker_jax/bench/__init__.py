"""`satracker bench {data,train,track} --config C --json FILE`: each prints a table and writes JSON.

Each benchmark module exposes `add_arguments(parser)` and `run(args, overrides) -> dict`; the dict
is what lands in `--json`. Benchmarks measure; they never assert speed (tests do not time things).
"""
from __future__ import annotations

import argparse
import importlib

from satracker_jax import utils

BENCHES = {
    "data": ("satracker_jax.bench.data", "input pipeline samples/s"),
    "train": ("satracker_jax.bench.train", "train step time, samples/s, MFU"),
    "track": ("satracker_jax.bench.track", "tracker frames/s, single stream and batched"),
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
  sub = parser.add_subparsers(dest="bench", metavar="BENCH", required=True)
  for name, (module_name, help_text) in BENCHES.items():
    p = sub.add_parser(name, help=help_text)
    p.add_argument("--config", default="configs/tiny.py", help="config file[:arg]")
    p.add_argument("--json", default="", help="write the results here")
    p.set_defaults(_module=module_name)
    importlib.import_module(module_name).add_arguments(p)


def run(args, overrides) -> int:
  module = importlib.import_module(args._module)
  result = module.run(args, overrides)
  if args.json:
    utils.write_json(args.json, result)
    print(f"wrote {args.json}")
  return 0
