"""`satracker <verb> ...`: one entry point for every workflow.

Each verb lives in its own module and exposes `add_arguments(parser)` and `run(args, overrides)`;
modules are imported only when their verb runs, so `satracker --help` is quick and nothing pulls in
TensorFlow unless the verb needs the input pipeline.
"""
from __future__ import annotations

import argparse
import importlib
import sys

from satracker_jax import config_utils

# verb -> (module, one-line help)
VERBS = {
    "smoke": ("satracker_jax.smoke", "jitted forward+backward of a config on random inputs"),
    "synth": ("data_pipelines.synthetic_cli", "write procedural VL tracking videos (TNL2K layout)"),
    "train": ("satracker_jax.train.main", "train a config (sharded, Orbax checkpoints, resumable)"),
    "eval": ("satracker_jax.evaluation.runner", "track a benchmark and write raw results + metrics"),
    "analyze": ("satracker_jax.evaluation.analyze", "AUC / P / NP, plots and tables from raw result folders"),
    "track": ("satracker_jax.track_cli", "track one video or frame folder and draw the boxes"),
    "convert": ("satracker_jax.convert", "convert MAE/OSTrack ViT and BERT weights for init_from"),
    "export": ("satracker_jax.export", "serialise the tracker step with jax.export (StableHLO)"),
    "bench": ("satracker_jax.bench", "benchmarks: data | train | track (table + JSON)"),
    "demo": ("satracker_jax.demo", "synthetic data -> train tiny -> evaluate -> report"),
}


def build_parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(
      prog="satracker",
      description="SATracker in JAX/Flax. Config fields are overridden with --config.a.b=value.")
  sub = parser.add_subparsers(dest="verb", metavar="VERB")
  for verb, (_, help_text) in VERBS.items():
    sub.add_parser(verb, help=help_text, add_help=False)
  return parser


def main(argv=None) -> int:
  argv = list(sys.argv[1:] if argv is None else argv)
  parser = build_parser()
  if not argv or argv[0] in ("-h", "--help"):
    parser.print_help()
    return 0
  verb = argv[0]
  if verb not in VERBS:
    parser.error(f"unknown verb {verb!r}; choose from {', '.join(VERBS)}")
  module_name, help_text = VERBS[verb]
  try:
    module = importlib.import_module(module_name)
  except ModuleNotFoundError as e:
    if e.name and module_name.startswith(e.name):
      print(f"satracker {verb}: not available in this build ({module_name} missing)", file=sys.stderr)
      return 2
    raise
  rest, overrides = config_utils.split_config_overrides(argv[1:])
  verb_parser = argparse.ArgumentParser(prog=f"satracker {verb}", description=help_text)
  module.add_arguments(verb_parser)
  args = verb_parser.parse_args(rest)
  result = module.run(args, overrides)
  return int(result or 0)


if __name__ == "__main__":
  sys.exit(main())
