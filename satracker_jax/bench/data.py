"""`satracker bench data --config C --json FILE [--batches N] [--data-root DIR]`: input pipeline speed.

Times `data_pipelines.sampler.make_dataset` alone (no model): host-local batches of
`train.batch_size` at the config's crop sizes, after a few warm-up batches. Without configured
data roots (or with --data-root pointing at `satracker synth` output) it reads synthetic videos,
generated into a temporary folder when needed; `--frame-size` sets their resolution, since JPEG
decoding of the full frame is most of the cost on real data.
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time

from satracker_jax import config_utils, utils


def add_arguments(parser: argparse.ArgumentParser) -> None:
  parser.add_argument("--batches", type=int, default=20, help="timed batches")
  parser.add_argument("--warmup", type=int, default=3, help="untimed batches first")
  parser.add_argument("--data-root", default="",
                      help="synthetic data (satracker synth output); default: the config's data "
                           "sets, or freshly generated synthetic data when none has a root")
  parser.add_argument("--sequences", type=int, default=24, help="videos to generate (no data root)")
  parser.add_argument("--frame-size", default="160x120", help="WxH of generated videos")


def _use_synthetic(config, root: str) -> None:
  config.data.datasets = {"synthetic": {"root": root, "weight": 1.0, "split": "train"}}
  # The generated vocab covers every generated word; a BERT vocab would do as well, but may be absent.
  config.text.tokenizer = "wordpiece"
  config.text.vocab_file = os.path.join(root, "vocab.txt")


def run(args, overrides) -> dict:
  from data_pipelines import sampler, synthetic  # noqa: PLC0415  (TensorFlow behind this import)
  config = config_utils.load_config(args.config, overrides)
  configured = [n for n, d in config.data.datasets.items()
                if float(d.get("weight", 1.0)) > 0 and d.get("root", "")]
  tmp = None
  if args.data_root:
    _use_synthetic(config, args.data_root)
    source = f"synthetic ({args.data_root})"
  elif configured:
    source = ", ".join(configured)
  else:
    tmp = tempfile.TemporaryDirectory(prefix="satracker_bench_data_")
    synthetic.generate(tmp.name, sequences=args.sequences, seed=0, size=args.frame_size,
                       progress=False)
    _use_synthetic(config, tmp.name)
    source = f"synthetic, generated ({args.sequences} videos, {args.frame_size})"

  batch_size = int(config.train.batch_size)
  start = time.perf_counter()
  it = sampler.make_dataset(config, batch_size=batch_size)
  next(it)
  first_batch_s = time.perf_counter() - start
  for _ in range(max(args.warmup - 1, 0)):
    next(it)
  start = time.perf_counter()
  for _ in range(args.batches):
    next(it)
  elapsed = time.perf_counter() - start
  stats = it.stats()
  it.close()
  if tmp is not None:
    tmp.cleanup()

  result = {
      "config": args.config, "data": source, "batch_size": batch_size,
      "template_size": int(config.model.template_size), "search_size": int(config.model.search_size),
      "batches": args.batches, "seconds": elapsed,
      "samples_per_s": args.batches * batch_size / elapsed,
      "batches_per_s": args.batches / elapsed, "first_batch_s": first_batch_s,
      "replaced": stats["replaced"], "samples": stats["samples"],
      "num_parallel_calls": int(config.data.num_parallel_calls),
      "cpu_count": os.cpu_count(),
  }
  rows = [[k, result[k]] for k in ("config", "data", "batch_size", "template_size", "search_size",
                                   "samples_per_s", "batches_per_s", "first_batch_s", "replaced",
                                   "cpu_count")]
  print(utils.format_table(["data pipeline", "value"], rows))
  return result
