"""`satracker synth --out DIR --sequences N --seed S [--frames F --size WxH --split-test K]`.

Writes N procedural VL tracking videos in the TNL2K layout (see data_pipelines/synthetic.py): the
last K under DIR/test (held out), the rest under DIR/train, plus DIR/vocab.txt and DIR/meta.json.
The work is `data_pipelines.synthetic.generate`.
"""
from __future__ import annotations

import argparse

from data_pipelines import synthetic


def add_arguments(parser: argparse.ArgumentParser) -> None:
  parser.add_argument("--out", required=True, help="output folder")
  parser.add_argument("--sequences", type=int, default=100, help="videos in total (train + test)")
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--frames", type=int, default=48, help="frames per video")
  parser.add_argument("--size", default="160x120", help="frame size WxH")
  parser.add_argument("--split-test", type=int, default=0, help="videos held out under test/")
  parser.add_argument("--no-progress", action="store_true")


def run(args, overrides) -> int:
  if overrides:
    raise SystemExit(f"satracker synth takes no --config overrides (got {overrides})")
  meta = synthetic.generate(args.out, sequences=args.sequences, seed=args.seed, frames=args.frames,
                            size=args.size, test_sequences=args.split_test,
                            progress=not args.no_progress)
  print(f"wrote {meta['sequences'] - meta['test_sequences']} train + {meta['test_sequences']} test "
        f"videos to {args.out} (modes: {meta['modes']}, vocab {meta['vocab_size']} tokens)")
  return 0
