"""What several verbs share: the model arguments (--checkpoint / --config) and loading them."""
from __future__ import annotations

import argparse
import sys


def add_model_arguments(parser: argparse.ArgumentParser, config_help: str = "") -> None:
  parser.add_argument("--checkpoint", default="",
                      help="training workdir, its checkpoints/ folder, a params .npz, or a "
                           "`satracker convert` output (with --config)")
  parser.add_argument("--config", default="",
                      help=config_help or "config file[:arg]; checked against the checkpoint")


def load_model(args, overrides):
  """(config, variables) from --checkpoint / --config; a clear one-line exit on any mismatch."""
  from satracker_jax import model_io  # noqa: PLC0415
  try:
    config, variables, random = model_io.load_model(args.checkpoint, args.config, overrides)
  except (ValueError, FileNotFoundError, KeyError) as e:
    raise SystemExit(str(e).strip("'\"")) from None
  if random:
    print("WARNING: no --checkpoint: using RANDOMLY INITIALISED weights", file=sys.stderr)
  return config, variables
