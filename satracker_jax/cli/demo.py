"""`satracker demo [--workdir DIR] [--ablations] [--seeds N] [--protocols P,..] [--steps N] [--seed S]`:
synthetic data -> train tiny -> evaluate -> report. The work is `satracker_jax.demo.run_demo`.
"""
from __future__ import annotations

import argparse
import logging

from satracker_jax.cli import common


def add_arguments(parser: argparse.ArgumentParser) -> None:
  parser.add_argument("--workdir", default="demo_workdir", help="everything is written under here")
  parser.add_argument("--config", default="configs/synthetic.py", help="config file[:arg]")
  parser.add_argument("--ablations", action="store_true",
                      help="also train/evaluate no_tem, no_sam, no_dm and no_text variants")
  parser.add_argument("--seeds", type=int, default=1,
                      help="train every variant with this many training seeds (same data) and "
                           "report mean ± std; finished runs are reused, so it can be resumed")
  parser.add_argument("--protocols", default="",
                      help="comma-separated protocols to evaluate every model under (nl_bb, bb, "
                           "nl; default: nl_bb, plus nl when the config trains grounding)")
  parser.add_argument("--steps", type=common.count_arg("--steps", 0), default=0, help="training steps (0: the config's)")
  parser.add_argument("--seed", type=int, default=-1, help="training and data seed (-1: the config's)")
  parser.add_argument("--parallel", type=common.count_arg("--parallel"), default=1, help="test sequences tracked per call")
  parser.add_argument("--no-progress", action="store_true", help="no progress bars (logs, CI)")


def quiet_library_logs() -> None:
  """The demo's console is for its own lines. Orbax's informational warnings (read-only managers,
  checkpoint items not asked for) tell a demo user nothing to act on; errors still show.
  (TensorFlow's C++ start-up notices: every verb keeps them off, `cli.main`.)"""
  logging.getLogger("absl").setLevel(logging.ERROR)


def run(args, overrides) -> int:
  quiet_library_logs()
  from satracker_jax.demo import Interrupted, run_demo  # noqa: PLC0415
  protocols = [p.strip() for p in args.protocols.split(",") if p.strip()] or None
  try:
    run_demo(args.workdir, args.config, overrides, ablations=args.ablations, steps=args.steps,
             seed=args.seed, seeds=args.seeds, protocols=protocols, parallel=args.parallel,
             progress=not args.no_progress)
  except Interrupted as e:
    print(f"[demo] {e}", flush=True)
    return 1
  return 0
