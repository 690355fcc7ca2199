"""`satracker eval`: track every sequence of a benchmark, write raw results, score them.

  satracker eval --checkpoint runs/tiny --dataset tnl2k --root /data/TNL2K_test --out runs/tiny/tnl2k \
      [--split test] [--protocol nl_bb|bb|nl] [--toolkit pytracking|pytracking-2022|tnl2k-matlab] \
      [--parallel 8] [--workers 16] \
      [--config configs/tiny.py] [--config.tracker.hann_window=False]

The work is `satracker_jax.evaluation.runner.evaluate` (see there for the files written, how frames
are decoded ahead and how slots spread over the devices). Results made by the same model, config
and data are kept; anything else is tracked again. A sequence that cannot be tracked (a missing
or corrupt frame) does not stop the others: they are finished and scored, the failures are listed
and the exit status is 1. `--toolkit` only changes the scoring (README "Which toolkit?"): with
another toolkit the raw results are re-scored, not tracked again.
Config: the checkpoint's own config is used; `--config.x=y` overrides change it (tracker settings,
typically). A `--config` file given as well is only checked: if its model's parameter shapes
differ from the checkpoint's, that is an error (wrong file or wrong checkpoint). Without
`--checkpoint` the model runs with random weights (a pipeline smoke test; says so loudly).
"""
from __future__ import annotations

import argparse
import os

from satracker_jax.cli import common
from satracker_jax.cli.analyze import DATASETS, TOOLKIT_HELP, TOOLKITS


def add_arguments(parser: argparse.ArgumentParser) -> None:
  common.add_model_arguments(parser)
  parser.add_argument("--dataset", required=True, choices=DATASETS, help="benchmark layout of --root")
  parser.add_argument("--root", required=True, help="dataset root folder (or a bucket URL, gs://...)")
  parser.add_argument("--split", default="test",
                      help="test, train, all (LaSOT, TNL2K, synthetic), val (GOT-10k); OTB has one")
  parser.add_argument("--out", required=True,
                      help="raw results + metrics.json go here (a folder or a bucket URL, gs://...)")
  parser.add_argument("--parallel", type=common.count_arg("--parallel", 0), default=0,
                      help="sequences tracked at once (batched, spread over the local devices); "
                           "default: config.eval.parallel or the device count, the larger")
  parser.add_argument("--workers", type=int, default=0,
                      help="threads decoding frames ahead (default: all cores)")
  parser.add_argument("--full-decode", action="store_true",
                      help="decode every frame at full size (default: JPEGs at the coarsest "
                           "scale the crop allows)")
  parser.add_argument("--protocol", default="nl_bb", choices=("nl_bb", "bb", "nl"),
                      help="nl_bb: first box + sentence; bb: first box only (sentence removed); "
                           "nl: sentence only (frame 0 grounded, grounding accuracy reported)")
  parser.add_argument("--mask-text", action="store_true",
                      help="replace every sentence by \"\" (the sentence-masked control)")
  parser.add_argument("--toolkit", choices=TOOLKITS, default=None, help=TOOLKIT_HELP)
  parser.add_argument("--name", default="satracker", help="tracker name in metrics.json / tables")
  parser.add_argument("--limit", type=int, default=0, help="only the first N sequences (0 = all)")
  parser.add_argument("--no-progress", action="store_true", help="no progress bar (logs, CI)")


def run(args, overrides) -> int:
  from data_pipelines.readers import load_dataset  # noqa: PLC0415  (numpy-only readers)
  from satracker_jax import paths  # noqa: PLC0415
  from satracker_jax.evaluation import runner  # noqa: PLC0415
  def check_out():  # a bucket that cannot be written fails before anything is read, in one line
    try:
      paths.ensure_dir(args.out, "--out")
    except paths.OutputPathError as e:
      raise SystemExit(str(e)) from None
  if paths.is_url(args.out):  # a local --out is created only once the data set has been found
    check_out()
  try:  # before the model is loaded: a wrong --root / --split / --dataset fails now, in one line
    sequences = load_dataset(args.dataset, args.root, args.split)
  except (ValueError, FileNotFoundError) as e:  # readers.DatasetError is a ValueError
    raise SystemExit(str(e)) from None
  check_out()
  config, variables = common.load_model(
      args, overrides, needs_vocab=True, synthetic_root=args.root if args.dataset == "synthetic" else "")
  if args.limit:
    sequences = sequences[:args.limit]
  source = os.fspath(paths.resolve(args.checkpoint)) if args.checkpoint else "random weights"
  # A bucket --out: tracked into a local folder (what the bucket holds copied down first, so
  # results of the same model are kept), copied up at the end, also after a failed sequence.
  with paths.staged_output(args.out) as out:
    try:
      runner.evaluate(config, variables, sequences, out, parallel=args.parallel,
                      progress=not args.no_progress, dataset=args.dataset, name=args.name,
                      workers=args.workers, reduced_decode=not args.full_decode,
                      model_info={"source": source, "config": args.config or None},
                      protocol=args.protocol, mask_text=args.mask_text, toolkit=args.toolkit,
                      split=args.split)
    except runner.EvaluationFailed as e:
      print(f"\n{e}\nThe other {e.summary.sequences - len(e.failed)} sequences were tracked and "
            f"scored; run again to retry the failed ones after fixing their files.")
      return 1
  print(f"wrote {paths.join(args.out, 'metrics.json')}")
  return 0
