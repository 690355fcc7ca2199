"""`satracker eval`: track every sequence of a benchmark, write raw results, score them.

  satracker eval --checkpoint runs/tiny --dataset tnl2k --root /data/TNL2K_test --out runs/tiny/tnl2k \
      [--split test] [--parallel 4] [--config configs/tiny.py] [--config.tracker.hann_window=False]

The work is `satracker_jax.evaluation.runner.evaluate` (see there for the files written).
Config: the checkpoint's own config is used; `--config.x=y` overrides change it (tracker settings,
typically). A `--config` file given as well is only checked: if its model's parameter shapes
differ from the checkpoint's, that is an error (wrong file or wrong checkpoint). Without
`--checkpoint` the model runs with random weights (a pipeline smoke test; says so loudly).
"""
from __future__ import annotations

import argparse
import os

from satracker_jax.cli import common

DATASETS = ("lasot", "tnl2k", "otb", "otb99_lang", "got10k", "synthetic")


def add_arguments(parser: argparse.ArgumentParser) -> None:
  common.add_model_arguments(parser)
  parser.add_argument("--dataset", required=True, choices=DATASETS)
  parser.add_argument("--root", required=True, help="dataset root folder")
  parser.add_argument("--split", default="test")
  parser.add_argument("--out", required=True, help="raw results + metrics.json go here")
  parser.add_argument("--parallel", type=int, default=0,
                      help="sequences tracked at once (batched); default config.eval.parallel")
  parser.add_argument("--name", default="satracker", help="tracker name in metrics.json / tables")
  parser.add_argument("--limit", type=int, default=0, help="only the first N sequences (0 = all)")
  parser.add_argument("--no-progress", action="store_true")


def run(args, overrides) -> int:
  from data_pipelines.readers import load_dataset  # noqa: PLC0415  (numpy-only readers)
  from satracker_jax.evaluation import runner  # noqa: PLC0415
  config, variables = common.load_model(args, overrides)
  sequences = load_dataset(args.dataset, args.root, args.split)
  if args.limit:
    sequences = sequences[:args.limit]
  parallel = args.parallel or int(config.eval.get("parallel", 1))
  metrics = runner.evaluate(config, variables, sequences, args.out, parallel=parallel,
                            progress=not args.no_progress, dataset=args.dataset, name=args.name)
  print(f"wrote {os.path.join(args.out, 'metrics.json')}")
  return 0 if metrics else 1
