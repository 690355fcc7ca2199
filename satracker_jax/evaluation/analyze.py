"""Scoring raw result folders (`satracker analyze`): AUC / OP50 / OP75 / P / NP, plots and tables.

Each results folder (NAME -> DIR) is a folder of `<seq>.txt` files (ours or any pytracking-style
tracker's). Writes to `--out`: `metrics.json` ({NAME: {auc, op50, op75, precision,
norm_precision, num_sequences}}, fractions), `per_sequence.csv` (the same scores per sequence),
`success.png`, `precision.png`, `norm_precision.png` and `results.md` (percentages), and prints
the table. Only the sequences' boxes (and LaSOT's visibility flags) are read: the data set can be
loaded with `readers.load_dataset(..., annotations_only=True)`, no frames needed.

Python callers (the eval runner, the demo) use `analyze(sequences, {name: dir}, dataset, out_dir)`.
On synthetic data, `grounding_by_mode` breaks the frame-0 grounding of `nl` runs down by the
generator's mode and by what each miss picked (`satracker analyze --grounding`).
"""
from __future__ import annotations

import csv
import dataclasses
import json
import os

import numpy as np

from satracker_jax import utils
from satracker_jax.evaluation import metrics, plots, results_io


# metrics.json key -> table heading, in the order pytracking prints them.
SCORE_LABELS = {"auc": "AUC", "op50": "OP50", "op75": "OP75", "precision": "P", "norm_precision": "NP"}
SCORES = tuple(SCORE_LABELS)


@dataclasses.dataclass
class Report:
  dataset: str
  sequence_names: list[str]                        # the sequences scored, in dataset order
  skipped: list[str]                               # sequences dropped by skip_missing
  per_sequence: dict[str, list[metrics.SequenceCurves]]   # tracker -> one per scored sequence
  metrics: dict[str, dict]                         # tracker -> summarize(...)
  curves: dict[str, dict[str, np.ndarray]]         # tracker -> averaged curves


def evaluate(sequences, results: dict[str, str], dataset: str, skip_missing: bool = False) -> Report:
  """Scores every tracker's `<seq>.txt` in `results[name]` against `sequences`' ground truth.

  A missing result file is an error; with `skip_missing` the sequence is dropped for every
  tracker instead (as pytracking does), so all trackers are compared on the same sequences.
  """
  if not results:
    raise ValueError("no result folders to analyze")
  if not sequences:
    raise ValueError(f"no {dataset} sequences to analyze")
  for name, results_dir in results.items():
    if not os.path.isdir(results_dir):
      raise FileNotFoundError(f"results of {name!r}: folder {results_dir} does not exist")
  per_sequence = {name: [] for name in results}
  scored, skipped = [], []
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
    visible = metrics.target_visible_of(seq, dataset)
    for name, path in paths.items():
      pred = results_io.read_boxes(path)
      per_sequence[name].append(metrics.sequence_curves(pred, gt, visible, dataset, source=path))
    scored.append(seq.name)
  if not scored:
    raise ValueError(f"none of the {len(sequences)} {dataset} sequences has results for every tracker")
  return Report(
      dataset=dataset, sequence_names=scored, skipped=skipped, per_sequence=per_sequence,
      metrics={name: metrics.summarize(c) for name, c in per_sequence.items()},
      curves={name: metrics.average_curves(c) for name, c in per_sequence.items()})


def results_table(report: Report) -> str:
  """Markdown table, scores in percent with 2 decimals (pytracking's columns and order)."""
  rows = [[name] + [100.0 * m[key] for key in SCORES] + [m["num_sequences"]]
          for name, m in report.metrics.items()]
  return utils.format_table(["Tracker"] + [SCORE_LABELS[k] for k in SCORES] + ["Sequences"], rows,
                            floatfmt=".2f")


def write_report(report: Report, out_dir: str, title: str | None = None) -> dict[str, str]:
  """Writes metrics.json, per_sequence.csv, the three PNG plots and results.md; returns paths."""
  os.makedirs(out_dir, exist_ok=True)
  paths = {"metrics": os.path.join(out_dir, "metrics.json"),
           "per_sequence": os.path.join(out_dir, "per_sequence.csv"),
           "table": os.path.join(out_dir, "results.md")}
  utils.write_json(paths["metrics"], report.metrics)
  with open(paths["per_sequence"], "w", newline="") as f:
    writer = csv.writer(f)
    writer.writerow(["tracker", "sequence", "num_frames", "num_valid_frames",
                     "auc", "op50", "op75", "precision", "norm_precision", "mean_iou"])
    for name, curves in report.per_sequence.items():
      for seq_name, c in zip(report.sequence_names, curves):
        writer.writerow([name, seq_name, c.num_frames, c.num_valid, repr(c.auc), repr(c.op50),
                         repr(c.op75), repr(c.precision_20), repr(c.norm_precision_20),
                         repr(c.mean_iou)])
  title = title or report.dataset
  for path in plots.plot_curves(report.curves, out_dir, title_prefix=f"{title}: "):
    paths[os.path.splitext(os.path.basename(path))[0] + "_plot"] = path
  lines = [f"# {title}: {len(report.sequence_names)} sequences", "", results_table(report), "",
           "AUC: mean success rate over IoU thresholds 0:0.05:1; OP50 / OP75: success rate at "
           "IoU > 0.5 / > 0.75; P: precision at 20 px; NP: normalised precision at 0.20 "
           "(pytracking / OSTrack definitions)."]
  if report.skipped:
    lines += ["", f"Skipped ({len(report.skipped)}, missing results): " + ", ".join(report.skipped)]
  with open(paths["table"], "w") as f:
    f.write("\n".join(lines) + "\n")
  return paths


def analyze(sequences, results: dict[str, str], dataset: str, out_dir: str | None = None,
            skip_missing: bool = False, title: str | None = None) -> dict:
  """{tracker: {"auc", "op50", "op75", "precision", "norm_precision", "num_sequences"}} (fractions).

  With `out_dir`, also writes the report files (see `write_report`).
  """
  report = evaluate(sequences, results, dataset, skip_missing=skip_missing)
  if out_dir is not None:
    write_report(report, out_dir, title=title)
  return report.metrics


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


def write_grounding_report(breakdown: dict, out_dir: str, title: str = "") -> dict[str, str]:
  """grounding_by_mode.{json,md,png} in out_dir; returns their paths."""
  os.makedirs(out_dir, exist_ok=True)
  paths = {k: os.path.join(out_dir, f"grounding_by_mode.{k}") for k in ("json", "md", "png")}
  utils.write_json(paths["json"], breakdown)
  with open(paths["md"], "w") as f:
    f.write(f"# {title}frame-0 grounding by mode\n\n{grounding_table(breakdown)}\n\n"
            "grounded: IoU > 0.5 with the first ground-truth box. A miss is put where its centre "
            "lies (the target's twin, a distractor one word off, the relation's anchor or decoy, "
            "the target itself with a poor box, or none of those). random twin: the rate of a "
            "random pick among the target and its identical twins.\n")
  plots.plot_grounding_by_mode(breakdown, paths["png"], title=f"{title}frame-0 grounding by mode")
  return paths
