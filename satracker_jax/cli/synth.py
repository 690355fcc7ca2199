"""`satracker synth --out DIR --sequences N --seed S [--frames F --size WxH --split-test K --workers P
--force]`.

Writes N procedural VL tracking videos in the TNL2K layout (see data_pipelines/synthetic.py): the
last K under DIR/test (held out), the rest under DIR/train, plus DIR/vocab.txt and DIR/meta.json.
K defaults to 10% of N (at least 1 when N >= 2), so what `synth` writes is read as written by every
verb's default split: `--dataset synthetic|tnl2k --root DIR` gives DIR/test to eval / analyze and
DIR/train to training. A DIR holding another generation (another seed, count, size...) is refused
in one line, or replaced whole with --force: two data sets never mix. The work is
`data_pipelines.synthetic.generate`.
"""
from __future__ import annotations

import argparse

from data_pipelines import batches, synthetic
from satracker_jax.cli import common


def add_arguments(parser: argparse.ArgumentParser) -> None:
  parser.add_argument("--out", required=True, help="output folder")
  parser.add_argument("--sequences", type=int, default=100, help="videos in total (train + test)")
  parser.add_argument("--seed", type=int, default=0,
                      help="generator seed: the same seed, count and size give the same bytes")
  parser.add_argument("--frames", type=common.count_arg("--frames"), default=48, help="frames per video")
  parser.add_argument("--size", default="160x120", type=common.frame_size_arg("--size"),
                      help="frame size WxH")
  parser.add_argument("--split-test", type=int, default=None,
                      help="videos held out under test/ (default: 10%% of --sequences, at least 1)")
  parser.add_argument("--modes", default="",
                      help="mode probabilities, e.g. relation=0.5,absolute=0.5 (default: the generator's mix)")
  parser.add_argument("--workers", type=int, default=1,
                      help="processes rendering videos (-1: one per CPU this process may use); "
                      "the bytes do not change")
  parser.add_argument("--force", action="store_true",
                      help="replace another generation in --out (only the generator's own files)")
  parser.add_argument("--no-progress", action="store_true", help="no progress bar (logs, CI)")


def run(args, overrides) -> int:
  if overrides:
    raise SystemExit(f"satracker synth takes no --config overrides (got {overrides})")
  test = args.split_test
  if test is None:
    test = max(1, round(0.1 * args.sequences)) if args.sequences >= 2 else 0
  try:
    modes = synthetic.parse_modes(args.modes) if args.modes else None
    meta = synthetic.generate(args.out, sequences=args.sequences, seed=args.seed, frames=args.frames,
                              size=args.size, test_sequences=test, progress=not args.no_progress,
                              modes=modes, replace=args.force,
                              workers=batches.usable_cpus() if args.workers < 0 else args.workers)
  except ValueError as e:
    raise SystemExit(f"satracker synth: {e}") from None
  print(f"wrote {meta['sequences'] - meta['test_sequences']} train + {meta['test_sequences']} test "
        f"videos to {args.out} (modes: {meta['modes']}, vocab {meta['vocab_size']} tokens)")
  return 0
