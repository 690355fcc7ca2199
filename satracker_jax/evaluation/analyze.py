"""Scoring raw result folders (`satracker analyze`): AUC / OP50 / OP75 / P / NP, plots and tables,
under one or more benchmark toolkits' rules (`toolkits`).

Each results folder (NAME -> DIR) is a folder of `<seq>.txt` files (ours or any pytracking-style
tracker's). Writes to `--out`, for the first toolkit: `metrics.json` ({NAME: {toolkit, auc, op50,
op75, precision, norm_precision, norm_precision_auc, num_sequences, repaired_rows, padded_rows}},
fractions), `per_sequence.csv` (the same scores per sequence), `success.png`, `precision.png`,
`norm_precision.png`; for every further toolkit the same files named `metrics.<toolkit>.json`,
`success.<toolkit>.png`, ...; `results.md` (percentages, one row per tracker and toolkit) and, where
the sequences carry attribute flags (the TNL2K toolkit pack's `annos/att/`), `attributes.json` /
`.md` / `.png` (AUC per attribute per tracker). Only the sequences' boxes and flags are read: the
data set can be loaded with `readers.load_dataset(..., annotations_only=True)`, no frames needed.

Python callers (the eval runner, the demo) use `analyze(sequences, {name: dir}, dataset, out_dir)`.
On synthetic data, `grounding_by_mode` breaks the frame-0 grounding of `nl` runs down by the
generator's mode and by what each miss picked (`satracker analyze --grounding`).
"""
from __future__ import annotations

import csv
import dataclasses
import json
import os
import sys

import numpy as np

from satracker_jax import utils
from satracker_jax.evaluation import metrics, plots, results_io, toolkits


# metrics.json key -> table heading, in the order pytracking prints them (then the TNL2K paper's).
SCORE_LABELS = {"auc": "AUC", "op50": "OP50", "op75": "OP75", "precision": "P",
                "norm_precision": "NP", "norm_precision_auc": "NP-AUC"}
SCORES = tuple(SCORE_LABELS)


@dataclasses.dataclass
class Report:
  dataset: str
  sequence_names: list[str]                        # the sequences scored, in dataset order
  skipped: list[str]                               # sequences dropped by skip_missing
  per_sequence: dict[str, list[metrics.SequenceCurves]]   # tracker -> one per scored sequence
  metrics: dict[str, dict]                         # tracker -> summarize(...)
  curves: dict[str, dict[str, np.ndarray]]         # tracker -> averaged curves
  toolkit: str = toolkits.PYTRACKING
  warnings: list[str] = dataclasses.field(default_factory=list)   # each names a file
  # Sequences without absent flags, under a toolkit that drops absent frames (tnl2k-matlab).
  without_absent_flags: list[str] = dataclasses.field(default_factory=list)
  # tracker -> [{"index", "short", "name", "num_sequences", "auc"}], when the sequences have flags.
  attributes: dict[str, list[dict]] | None = None


def evaluate(sequences, results: dict[str, str], dataset: str, skip_missing: bool = False,
             toolkit: str = toolkits.PYTRACKING) -> Report:
  """Scores every tracker's `<seq>.txt` in `results[name]` against `sequences`' ground truth,
  under `toolkit`'s rules.

  A missing result file is an error; with `skip_missing` the sequence is dropped for every
  tracker instead (as pytracking does), so all trackers are compared on the same sequences.
  A result shorter than the ground truth is padded (the toolkit's way) with a warning naming the
  file, printed and kept in `Report.warnings`.
  """
  kit = toolkits.get(toolkit)
  if not results:
    raise ValueError("no result folders to analyze")
  if not sequences:
    raise ValueError(f"no {dataset} sequences to analyze")
  for name, results_dir in results.items():
    if not os.path.isdir(results_dir):
      raise FileNotFoundError(f"results of {name!r}: folder {results_dir} does not exist")
  per_sequence = {name: [] for name in results}
  scored, skipped, warnings, no_flags, attribute_rows = [], [], [], [], []
  for seq in sequences:
    paths = {name: results_io.find_results(d, seq.name) for name, d in results.items()}
    missing = [p for p in paths.values() if not os.path.isfile(p)]
    if missing:
      if skip_missing:
        skipped.append(seq.name)
        continue
      raise FileNotFoundError(f"result file not found: {missing[0]} (sequence {seq.name!r}; "
                              "pass --skip-missing to score only the sequences every tracker has)")
    gt = np.asarray(seq.boxes, dtype=np.float64)
    visible = metrics.target_visible_of(seq, dataset, kit)
    if visible is None and kit.name == toolkits.TNL2K_MATLAB:
      no_flags.append(seq.name)
    for name, path in paths.items():
      curves = metrics.sequence_curves(kit.read_results(path), gt, visible, dataset, source=path,
                                       toolkit=kit)
      if curves.padded_rows == curves.num_frames:
        warnings.append(f"{path}: empty result file; scored as {curves.num_frames} zero rows "
                        f"({kit.name}'s padding: failures)")
        print(f"WARNING: {warnings[-1]}", file=sys.stderr)
      elif curves.padded_rows:
        warnings.append(f"{path}: {curves.num_frames - curves.padded_rows} result rows for "
                        f"{curves.num_frames} ground-truth frames; padded with {curves.padded_rows} "
                        f"zero rows ({kit.name}{', then carried over' if kit.repairs_invalid_rows else ''})")
        print(f"WARNING: {warnings[-1]}", file=sys.stderr)
      per_sequence[name].append(curves)
    scored.append(seq.name)
    attribute_rows.append(getattr(seq, "attributes", None))
  if not scored:
    raise ValueError(f"none of the {len(sequences)} {dataset} sequences has results for every tracker")
  return Report(
      dataset=dataset, sequence_names=scored, skipped=skipped, per_sequence=per_sequence,
      metrics={name: metrics.summarize(c, kit) for name, c in per_sequence.items()},
      curves={name: metrics.average_curves(c, kit) for name, c in per_sequence.items()},
      toolkit=kit.name, warnings=warnings, without_absent_flags=no_flags,
      attributes=attribute_scores(per_sequence, attribute_rows, dataset, kit))


def evaluate_toolkits(sequences, results: dict[str, str], dataset: str, toolkit: str | None = None,
                      skip_missing: bool = False) -> list[Report]:
  """One `Report` per toolkit of `toolkits.default_names(dataset, toolkit)`: the one asked for,
  else `pytracking` (and `tnl2k-matlab` beside it on TNL2K). The first is the primary one."""
  return [evaluate(sequences, results, dataset, skip_missing=skip_missing, toolkit=name)
          for name in toolkits.default_names(dataset, toolkit)]


def attribute_scores(per_sequence: dict[str, list[metrics.SequenceCurves]], attribute_rows: list,
                     dataset: str, toolkit) -> dict[str, list[dict]] | None:
  """AUC per attribute per tracker over the sequences flagged with it (the toolkit's averaging),
  or None when some scored sequence has no attribute flags."""
  if not attribute_rows or any(a is None for a in attribute_rows):
    return None
  flags = np.asarray([np.asarray(a).reshape(-1) for a in attribute_rows])
  # evaluate_TNL2K_dataset.m: `idx_seq_set = find(att_all(:, att_idx) > att_trld)`, att_trld = 0.
  names = toolkits.attribute_names(flags.shape[1], dataset)
  out = {}
  for tracker, curves in per_sequence.items():
    rows = []
    for k, (short, long_name) in enumerate(names):
      chosen = [c for c, f in zip(curves, flags[:, k]) if f > 0]
      auc = float(metrics.average_curves(chosen, toolkit)["success"].mean()) if chosen else None
      rows.append({"index": k + 1, "short": short, "name": long_name,
                   "num_sequences": len(chosen), "auc": auc})
    out[tracker] = rows
  return out


def _as_list(reports) -> list[Report]:
  return [reports] if isinstance(reports, Report) else list(reports)


DATASET_TITLES = {"lasot": "LaSOT", "tnl2k": "TNL2K", "otb": "OTB-2015", "otb99_lang": "OTB99-lang",
                  "got10k": "GOT-10k", "synthetic": "synthetic"}
ONE_SPLIT = ("otb",)  # `otb`'s "test" is the whole data set: no split to name
PROTOCOL_TITLES = {"nl_bb": "nl_bb (first box + sentence)", "bb": "bb (first box only)",
                   "nl": "nl (sentence only)"}


def report_title(dataset: str, split: str | None = None, protocol: str | None = None) -> str:
  """"TNL2K test split, protocol nl_bb (first box + sentence)": what a report's titles name
  (plots add the toolkit). `protocol` as `eval` records it ("nl+masked_text" too); None: not
  recorded (results of another tracker)."""
  name = DATASET_TITLES.get(dataset, dataset)
  where = f"{name}, all sequences" if dataset in ONE_SPLIT or not split else f"{name} {split} split"
  if not protocol:
    return f"{where}, protocol not recorded"
  parts = []
  for p in protocol.split(" / "):
    base, masked = p.split("+masked_text")[0], "+masked_text" in p
    parts.append(PROTOCOL_TITLES.get(base, base) + (", sentence masked" if masked else ""))
  return f"{where}, protocol {' / '.join(parts)}"


def recorded_protocol(results: dict[str, str], sequence_names) -> str | None:
  """The protocol `eval` recorded (provenance.json) for these sequences' results, "a / b" when
  they differ, None when no folder records one (another tracker's raw results)."""
  found = set()
  for results_dir in results.values():
    try:
      with open(os.path.join(results_dir, "provenance.json")) as f:  # provenance.PROVENANCE_FILE
        record = json.load(f).get("sequences", {})
    except (OSError, ValueError, AttributeError):
      continue
    found.update(str(record[n]["protocol"]) for n in sequence_names
                 if isinstance(record.get(n), dict) and record[n].get("protocol"))
  return " / ".join(sorted(found)) or None


def results_table(reports) -> str:
  """Markdown table, scores in percent with 2 decimals (pytracking's columns and order, then the
  TNL2K paper's NP-AUC); one row per tracker and toolkit, the toolkits of a tracker side by side."""
  reports = _as_list(reports)
  rows = []
  for name in reports[0].metrics:
    for r in reports:
      m = r.metrics[name]
      rows.append([name, r.toolkit] + [100.0 * m[key] for key in SCORES] + [m["num_sequences"]])
  return utils.format_table(["Tracker", "Toolkit"] + [SCORE_LABELS[k] for k in SCORES] +
                            ["Sequences"], rows, floatfmt=".2f")


def _file_suffix(report: Report, primary: bool) -> str:
  return "" if primary else f".{report.toolkit}"


def attributes_table(reports) -> str:
  """Markdown: AUC (%) per attribute (rows) per tracker and toolkit (columns)."""
  reports = [r for r in _as_list(reports) if r.attributes]
  if not reports:
    return ""
  columns = [(r, name) for r in reports for name in r.attributes]
  first = next(iter(reports[0].attributes.values()))
  header = ["Attribute", "Sequences"] + [f"{name} ({r.toolkit})" for r, name in columns]
  rows = []
  for k, att in enumerate(first):
    cells = [r.attributes[name][k]["auc"] for r, name in columns]
    rows.append([f"{att['index']}. {att['short']} {att['name']}", att["num_sequences"]] +
                ["–" if v is None else 100.0 * v for v in cells])
  return utils.format_table(header, rows, floatfmt=".2f")


def write_report(reports, out_dir: str, title: str | None = None) -> dict[str, str]:
  """Writes, per toolkit (the first unsuffixed, the others `.<toolkit>`), metrics.json,
  per_sequence.csv and the three PNG plots; results.md with every toolkit's rows; and the
  attribute breakdown where there is one. `title`: `report_title(...)` (default: the data set
  alone). Every plot gives a tracker the same colour. Returns the paths."""
  reports = _as_list(reports)
  os.makedirs(out_dir, exist_ok=True)
  paths = {"table": os.path.join(out_dir, "results.md")}
  title = title or report_title(reports[0].dataset)
  colors = plots.tracker_colors(reports[0].curves)
  for i, report in enumerate(reports):
    suffix = _file_suffix(report, i == 0)
    key = "" if i == 0 else f"_{report.toolkit}"
    paths["metrics" + key] = os.path.join(out_dir, f"metrics{suffix}.json")
    paths["per_sequence" + key] = os.path.join(out_dir, f"per_sequence{suffix}.csv")
    utils.write_json(paths["metrics" + key], report.metrics)
    with open(paths["per_sequence" + key], "w", newline="") as f:
      writer = csv.writer(f)
      writer.writerow(["tracker", "toolkit", "sequence", "num_frames", "num_valid_frames",
                       "auc", "op50", "op75", "precision", "norm_precision", "norm_precision_auc",
                       "mean_iou", "repaired_rows", "padded_rows"])
      for name, curves in report.per_sequence.items():
        for seq_name, c in zip(report.sequence_names, curves):
          writer.writerow([name, report.toolkit, seq_name, c.num_frames, c.num_valid, repr(c.auc),
                           repr(c.op50), repr(c.op75), repr(c.precision_20),
                           repr(c.norm_precision_20), repr(c.norm_precision_auc),
                           repr(c.mean_iou), c.repaired_rows, c.padded_rows])
    subtitle = f"{title}, toolkit {report.toolkit}"
    for path in plots.plot_curves(report.curves, out_dir, subtitle=subtitle, suffix=suffix,
                                  colors=colors):
      paths[os.path.splitext(os.path.basename(path))[0] + "_plot"] = path
  lines = [f"# {title}: {len(reports[0].sequence_names)} sequences", "", results_table(reports), "",
           "AUC: mean success rate over IoU thresholds 0:0.05:1; OP50 / OP75: success rate at "
           "IoU > 0.5 / > 0.75; P: precision at 20 px; NP: normalised precision at 0.20; NP-AUC: "
           "mean of the normalised-precision curve over 0:0.01:0.5 (the TNL2K paper's "
           "\"normalized precision\"). Toolkits: " +
           "; ".join(toolkits.get(r.toolkit).title for r in reports) +
           " (README \"Evaluation and toolkits\")."]
  for report in reports:
    repaired = {n: m["repaired_rows"] for n, m in report.metrics.items() if m["repaired_rows"]}
    if repaired:
      what = ("NaN or non-positive size, carried over from the previous row"
              if toolkits.get(report.toolkit).repairs_invalid_rows
              else "zero size, replaced by the previous box")
      lines += ["", f"Repaired result rows under {report.toolkit} ({what}): " +
                ", ".join(f"{n} {k}" for n, k in repaired.items())]
    dropped = {n: m["dropped_zero_curves"] for n, m in report.metrics.items()
               if "dropped_zero_curves" in m}
    if dropped:
      lines += ["", f"Sequences left out of the mean under {report.toolkit} (whole curve zero; "
                "success / precision / normalised precision): " +
                ", ".join(f"{n} {d['success']}/{d['precision']}/{d['norm_precision']}"
                          for n, d in dropped.items())]
    if report.without_absent_flags:
      lines += ["", f"No absent flags for {len(report.without_absent_flags)} of "
                f"{len(report.sequence_names)} sequences: {report.toolkit} counted every frame of "
                "those as present (the TNL2K toolkit pack's annos/absent/ has them)."]
  warnings = list(dict.fromkeys(w for r in reports for w in r.warnings))
  if warnings:
    lines += ["", "Warnings:"] + [f"- {w}" for w in warnings]
  if reports[0].skipped:
    lines += ["", f"Skipped ({len(reports[0].skipped)}, missing results): " +
              ", ".join(reports[0].skipped)]
  table = attributes_table(reports)
  if table:
    lines += ["", "Per-attribute AUC: attributes.md"]
    paths.update(write_attributes(reports, out_dir, title, colors))
  with open(paths["table"], "w") as f:
    f.write("\n".join(lines) + "\n")
  return paths


def write_attributes(reports, out_dir: str, title: str, colors: dict | None = None) -> dict[str, str]:
  """attributes.json ({toolkit: {tracker: [{index, short, name, num_sequences, auc}]}}),
  attributes.md (AUC % per attribute, tracker and toolkit) and attributes.png (the first
  toolkit's)."""
  reports = [r for r in _as_list(reports) if r.attributes]
  paths = {f"attributes_{k}": os.path.join(out_dir, f"attributes.{k}") for k in ("json", "md", "png")}
  utils.write_json(paths["attributes_json"], {r.toolkit: r.attributes for r in reports})
  with open(paths["attributes_md"], "w") as f:
    f.write(f"# {title}: success AUC per attribute\n\n{attributes_table(reports)}\n\n"
            "AUC (%) over the sequences flagged with each attribute (annos/att/), averaged as the "
            "toolkit averages; names from the TNL2K toolkit's evaluate_TNL2K_dataset.m.\n")
  plots.plot_attributes(reports[0].attributes, paths["attributes_png"],
                        subtitle=f"{title}, toolkit {reports[0].toolkit}", colors=colors)
  return paths


def analyze(sequences, results: dict[str, str], dataset: str, out_dir: str | None = None,
            skip_missing: bool = False, title: str | None = None,
            toolkit: str | None = None) -> dict:
  """{tracker: {"toolkit", "auc", "op50", "op75", "precision", "norm_precision",
  "norm_precision_auc", "num_sequences", ...}} (fractions) under the first toolkit of
  `toolkits.default_names(dataset, toolkit)`.

  With `out_dir`, also writes the report files of every such toolkit (see `write_report`).
  """
  reports = evaluate_toolkits(sequences, results, dataset, toolkit, skip_missing=skip_missing)
  if out_dir is not None:
    write_report(reports, out_dir, title=title)
  return reports[0].metrics


def parse_results_arg(values: list[str]) -> dict[str, str]:
  """`NAME=DIR` (or a bare `DIR`, named after its folder) -> {name: dir}, order kept."""
  results = {}
  for value in values:
    name, sep, path = value.partition("=")
    if not sep:
      name, path = os.path.basename(os.path.normpath(value)), value
    if not name or not path:
      raise ValueError(f"--results expects NAME=DIR, got {value!r}")
    if name in results:
      raise ValueError(f"--results: tracker name {name!r} given twice")
    results[name] = path
  return results


# Columns of the grounding breakdown: a hit, then what a miss picked (`frame0_pick`).
GROUNDING_COLUMNS = ("hit", "twin", "one_off", "anchor", "decoy", "target", "other")
# attributes.json `frame0_boxes` key -> what a box centred in one of them picked, in this order.
FRAME0_KEYS = (("twins", "twin"), ("one_off", "one_off"), ("anchor", "anchor"), ("decoy", "decoy"))


def frame0_pick(attributes: dict, target_box, box) -> str:
  """What a frame-0 box (pixel x,y,w,h: a grounded box that missed, say) picked in a video of
  `satracker synth`, by where its centre lies: "target" (inside the target's box `target_box`:
  the right shape, a poor box), else the first key object of attributes.json's `frame0_boxes`
  holding it ("twin", "one_off", "anchor", "decoy"), else "other" (background or another
  distractor). Reads the attributes as data: evaluation does not import data_pipelines."""
  x, y, w, h = (float(v) for v in box)
  cx, cy = x + w / 2.0, y + h / 2.0

  def holds(b):
    return b[0] <= cx <= b[0] + b[2] and b[1] <= cy <= b[1] + b[3]

  if holds(target_box):
    return "target"
  known = attributes.get("frame0_boxes") or {}
  for key, pick in FRAME0_KEYS:
    boxes = known.get(key) or []
    if boxes and not isinstance(boxes[0], (list, tuple)):
      boxes = [boxes]  # anchor / decoy: one box
    if any(holds(b) for b in boxes):
      return pick
  return "other"


def grounding_by_mode(root: str, split: str, sequences, results: dict[str, str]) -> dict:
  """Frame-0 grounding of `nl` runs on a synthetic data set (`satracker synth`), by the video's
  mode (`attributes.json`), over the videos a single frame resolves:

    {tracker: {mode: {"videos", "hit" (IoU > 0.5, the grounding criterion), and for the misses
     "twin" / "one_off" / "anchor" / "decoy" / "target" (the right object, a poor box) / "other",
     "twin_chance" (mean 1 / (1 + twins): a random pick among the target and its twins)}}},

  with an "all" row. Line 0 of each `<seq>.txt` is the grounded box (under `nl` the tracker writes
  it there). Results of another protocol start from the ground-truth box and would all be hits."""
  attributes = {}
  for seq in sequences:
    path = os.path.join(root, split, seq.name, "attributes.json")
    try:
      with open(path) as f:
        attributes[seq.name] = json.load(f)
    except (OSError, ValueError) as e:
      raise ValueError(f"{path}: cannot read the video's attributes ({e}); the grounding breakdown "
                       "needs a data set written by `satracker synth`") from None
  out = {}
  for name, results_dir in results.items():
    table = {}
    for seq in sequences:
      att = attributes[seq.name]
      if not att.get("single_frame", True):
        continue
      path = results_io.find_results(results_dir, seq.name)
      if not os.path.isfile(path):
        raise FileNotFoundError(f"result file not found: {path} (sequence {seq.name!r})")
      box = np.asarray(results_io.read_boxes(path)[0], np.float64)
      gt = np.asarray(seq.boxes[0], np.float64)
      hit = float(metrics.iou_overlap(box[None], gt[None])[0]) > 0.5
      pick = "hit" if hit else frame0_pick(att, gt, box)
      twins = len((att.get("frame0_boxes") or {}).get("twins") or [])
      for mode in (str(att.get("mode", "?")), "all"):
        row = table.setdefault(mode, dict({c: 0 for c in GROUNDING_COLUMNS}, videos=0,
                                          twin_videos=0, twin_chance=0.0))
        row["videos"] += 1
        row[pick] += 1
        if twins:
          row["twin_videos"] += 1
          row["twin_chance"] += 1.0 / (1 + twins)
    for row in table.values():
      row["twin_chance"] = row["twin_chance"] / row["twin_videos"] if row["twin_videos"] else None
    out[name] = dict(sorted(table.items(), key=lambda kv: (kv[0] == "all", kv[0])))
  return out


def grounding_table(breakdown: dict) -> str:
  """Markdown: one row per tracker and mode, hits as a fraction, misses by what they picked."""
  lines = ["| tracker | mode | videos | grounded | misses: twin / one-off / anchor / decoy / "
           "target, poor box / other | random twin |", "|---|---|---|---|---|---|"]
  for name, table in breakdown.items():
    for mode, r in table.items():
      misses = " / ".join(str(r[c]) for c in GROUNDING_COLUMNS[1:])
      chance = "–" if r["twin_chance"] is None else f"{r['twin_chance']:.2f}"
      lines.append(f"| {name} | {mode} | {r['videos']} | {r['hit'] / r['videos']:.3f} ({r['hit']}) "
                   f"| {misses} | {chance} |")
  return "\n".join(lines)


def write_grounding_report(breakdown: dict, out_dir: str, title: str = "",
                           colors: dict | None = None) -> dict[str, str]:
  """grounding_by_mode.{json,md,png} in out_dir (`title`: `report_title(...)`; `colors`: the
  report's `plots.tracker_colors`); returns their paths."""
  os.makedirs(out_dir, exist_ok=True)
  paths = {k: os.path.join(out_dir, f"grounding_by_mode.{k}") for k in ("json", "md", "png")}
  utils.write_json(paths["json"], breakdown)
  with open(paths["md"], "w") as f:
    f.write(f"# {title + ': ' if title else ''}frame-0 grounding by mode\n\n{grounding_table(breakdown)}\n\n"
            "grounded: IoU > 0.5 with the first ground-truth box. A miss is put where its centre "
            "lies (the target's twin, a distractor one word off, the relation's anchor or decoy, "
            "the target itself with a poor box, or none of those). random twin: the rate of a "
            "random pick among the target and its identical twins.\n")
  plots.plot_grounding_by_mode(breakdown, paths["png"], subtitle=title, colors=colors)
  return paths
