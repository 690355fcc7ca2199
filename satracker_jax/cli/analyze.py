"""`satracker analyze`: AUC / OP50 / OP75 / P / NP, plots and tables from raw result folders.

  satracker analyze --dataset tnl2k --root /data/TNL2K_test \
      --results ours=runs/ours/results/tnl2k ostrack=/raw/OSTrack/tnl2k --out reports/tnl2k
  satracker analyze --dataset lasot --root LaSOT_Evaluation_Toolkit \
      --results ATOM=raw/LaSOT/ATOM --out reports/lasot      # annos/ + annos/absent/ + testing_set.txt
  satracker analyze --dataset tnl2k --root TNL2K_evaluation_toolkit --toolkit tnl2k-matlab \
      --skip-missing --results ours=runs/ours/results/tnl2k --out reports/tnl2k  # annos/ pack
  satracker analyze --dataset synthetic --root /tmp/synth --grounding \
      --results ours=runs/nl masked=runs/nl_masked --out reports/grounding  # `eval --protocol nl` results

Each `--results NAME=DIR` is a folder of `<seq>.txt` files (ours or any pytracking-style
tracker's). Only annotations are read, never frames: `--root` may be a full data set without its
image folders or a toolkit's annotation pack (LaSOT `annos/`, OTB `anno/`, TNL2K
`annos/gt_rect/` + `annos/absent/` + `annos/att/`). `--toolkit` picks the rules (pytracking,
pytracking-2022, tnl2k-matlab; README "Which toolkit?"); without it, pytracking, and on TNL2K the
tnl2k-matlab rows beside it. The work is `satracker_jax.evaluation.analyze.evaluate_toolkits` +
`write_report`.
"""
from __future__ import annotations

import argparse

from satracker_jax.utils import plural

# Kept in step with data_pipelines.readers.DATASETS and evaluation.toolkits.NAMES (not imported:
# `--help` stays instant; tests/test_cli_errors.py checks both).
DATASETS = ("lasot", "tnl2k", "otb", "otb99_lang", "got10k", "synthetic")
SKIPPED_SHOWN = 10  # sequences named on the console; results.md names them all
TOOLKITS = ("pytracking", "pytracking-2022", "tnl2k-matlab")
TOOLKIT_HELP = ("scoring rules: pytracking (the OSTrack / UVLTrack / JointNLT analysis, what most VL "
                "papers report), pytracking-2022 (visionml/pytracking since 2022: border boxes "
                "invalid), tnl2k-matlab (the TNL2K authors' toolkit: absent frames fail, invalid "
                "rows carried over). Default: pytracking, plus tnl2k-matlab rows on TNL2K")


def add_arguments(parser: argparse.ArgumentParser) -> None:
  parser.add_argument("--dataset", required=True, choices=DATASETS,
                      help="benchmark layout of --root (its ground truth and sentences)")
  parser.add_argument("--root", required=True,
                      help="dataset root: the full layout (image folders not needed) or a "
                           "toolkit annotation pack (LaSOT annos/, OTB anno/, TNL2K annos/gt_rect/)")
  parser.add_argument("--split", default="test",
                      help="test, train, all (LaSOT, TNL2K, synthetic), val (GOT-10k); OTB has one")
  parser.add_argument("--results", nargs="+", required=True, metavar="NAME=DIR",
                      help="one folder of <seq>.txt raw results per tracker")
  parser.add_argument("--out", required=True, help="report folder")
  parser.add_argument("--grounding", action="store_true",
                      help="synthetic data, results of `eval --protocol nl`: also break frame-0 "
                           "grounding down by the generator's mode and by what each miss picked "
                           "(grounding_by_mode.md / .json / .png)")
  parser.add_argument("--skip-missing", action="store_true",
                      help="drop sequences some tracker has no result for (for every tracker)")
  parser.add_argument("--toolkit", choices=TOOLKITS, default=None, help=TOOLKIT_HELP)


def run(args, overrides) -> int:
  if overrides:
    raise SystemExit(f"satracker analyze takes no --config overrides (got {' '.join(overrides)})")
  from data_pipelines.readers import load_dataset  # noqa: PLC0415  (numpy-only readers)
  from satracker_jax.evaluation import analyze  # noqa: PLC0415
  if args.grounding and args.dataset != "synthetic":
    raise SystemExit("satracker analyze: --grounding needs --dataset synthetic (the breakdown "
                     "reads the generator's attributes.json)")
  try:
    results = analyze.parse_results_arg(args.results)
    sequences = load_dataset(args.dataset, args.root, args.split, annotations_only=True)
    reports = analyze.evaluate_toolkits(sequences, results, args.dataset, args.toolkit,
                                        skip_missing=args.skip_missing)
    report = reports[0]
    scored = set(report.sequence_names)
    grounding = (analyze.grounding_by_mode(args.root, args.split,
                                           [s for s in sequences if s.name in scored], results)
                 if args.grounding else None)
  except (ValueError, FileNotFoundError) as e:  # readers.DatasetError is a ValueError
    raise SystemExit(f"satracker analyze: {e}") from None
  title = analyze.report_title(args.dataset, args.split,
                               analyze.recorded_protocol(results, report.sequence_names))
  analyze.write_report(reports, args.out, title=title)
  print(analyze.results_table(reports))
  for r in reports:
    repaired = {n: m["repaired_rows"] for n, m in r.metrics.items() if m["repaired_rows"]}
    if repaired and r.toolkit == "tnl2k-matlab":
      print(f"{r.toolkit}: invalid result rows carried over: " +
            ", ".join(f"{n} {k}" for n, k in repaired.items()))
    if r.without_absent_flags:
      print(f"{r.toolkit}: no absent flags for {len(r.without_absent_flags)} of "
            f"{len(r.sequence_names)} sequences; every frame of those counted as present")
  if grounding is not None:
    analyze.write_grounding_report(grounding, args.out, title=title)
    print(analyze.grounding_table(grounding))
  if report.skipped:
    shown = report.skipped[:SKIPPED_SHOWN]
    more = len(report.skipped) - len(shown)
    print(f"skipped {plural(len(report.skipped), 'sequence')} with missing results: "
          f"{', '.join(shown)}{f' and {more} more (results.md lists them)' if more else ''}")
  print(f"wrote {args.out}")
  return 0
