"""`satracker convert`: MAE/timm/OSTrack ViT and HuggingFace BERT weights -> SATracker backbone.

    satracker convert --vit mae_pretrain_vit_base.pth --bert bert-base-uncased/ --out weights/satracker_b

`--config` defaults to configs/base.py (ViT-B/16 + BERT-base, the widths of the public checkpoints).

The work is `satracker_jax.convert.convert_to_folder` (rules and policy: that module's docstring).
"""
from __future__ import annotations

import argparse
import os


def add_arguments(parser: argparse.ArgumentParser) -> None:
  parser.add_argument("--vit", help="ViT checkpoint (MAE/timm/OSTrack): .pth/.bin/.safetensors/.npz "
                                    "(default: none; give --vit and/or --bert)")
  parser.add_argument("--bert", help="BERT checkpoint file or HF model directory (with vocab.txt; "
                                     "default: none)")
  parser.add_argument("--vocab", help="vocab.txt to ship with the weights (default: next to --bert)")
  parser.add_argument("--config", default="configs/base.py",
                      help="config file[:arg] whose parameter shapes the weights are mapped onto "
                           "(default: configs/base.py, ViT-B + BERT-base; the converted weights "
                           "load into any config of the same widths, position embeddings resampled)")
  parser.add_argument("--out", required=True, help="output directory (params.npz, report.json, vocab.txt)")
  parser.add_argument("--allow-unused", action="store_true",
                      help="do not fail on checkpoint keys this model has no place for")
  parser.add_argument("--allow-missing", action="store_true",
                      help="do not fail when a converted branch leaves some backbone parameters new")


def _print_report(report: dict) -> None:
  def show(title, items, limit=12):
    items = list(items)
    print(f"{title}: {len(items)}")
    for item in items[:limit]:
      print(f"  {item}")
    if len(items) > limit:
      print(f"  ... {len(items) - limit} more (see report.json)")
  print(f"mapped: {len(report['mapped'])} parameters")
  show("unused (known, not needed)", [f"{k}: {v}" for k, v in report["unused"].items()], 6)
  show("unexpected", report["unexpected"])
  show("missing (left as initialised)", report["missing"])
  for name, how in report["pos_embed"].items():
    print(f"{name}: {how}")


def run(args, overrides=()) -> int:
  from satracker_jax import convert  # noqa: PLC0415
  from satracker_jax.config_utils import load_config  # noqa: PLC0415
  if not args.vit and not args.bert:
    raise SystemExit("satracker convert: give --vit and/or --bert")
  config = load_config(args.config, overrides)
  if args.bert and not convert.find_vocab(args.vocab, args.bert):
    print("warning: no vocab.txt found next to --bert (give --vocab); the WordPiece tokenizer needs it")
  try:
    report = convert.convert_to_folder(
        args.out, config, vit=args.vit, bert=args.bert, vocab=args.vocab,
        allow_unused=args.allow_unused, allow_missing=args.allow_missing,
        config_name=args.config, overrides=overrides)
  except convert.ConversionError as e:
    _print_report(e.report)
    raise SystemExit(f"satracker convert: {e}") from None
  except (ValueError, FileNotFoundError, ImportError) as e:
    raise SystemExit(f"satracker convert: {e}") from None
  _print_report(report)
  print(f"wrote {os.path.join(args.out, convert.PARAMS_FILE)} ({len(report['mapped'])} arrays)")
  if report["vocab_file"]:
    print(f"tokenizer: --config.text.vocab_file={os.path.join(args.out, convert.VOCAB_FILE)}")
  return 0
