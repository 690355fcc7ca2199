"""Offline evaluation (`satracker eval`): track every sequence of a benchmark, write raw results,
score them.

    metrics = evaluate(config, variables, sequences, out_dir, parallel=8, workers=0)

Writes `<out>/<seq>.txt` (x,y,w,h per frame) and `<out>/<seq>_time.txt` (seconds per frame), the
pytracking/OSTrack raw-result layout, then `<out>/metrics.json` ({tracker: {auc, ...}},
fractions), plots, `per_sequence.csv` and `results.md` via `evaluation.analyze`, and prints the
table. Also `<out>/provenance.json` (what produced each result) and `<out>/eval_summary.json`
(this run: tracked / skipped / failed sequences, bad sentences, frames/s).

This module holds the two entry points and the per-run bookkeeping; each job of the run has its own
module: `provenance.py` (what produced each result, when to re-track), `frame_reader.py` (the
decode-ahead reader), `scheduler.py` (sequences through the tracker's slots and waves).

The pipeline. Offline evaluation knows every frame in advance, so a pool of `workers` threads
(default: all cores) decodes each sequence's frames `depth` ahead while the tracker steps; Pillow
decodes and resizes without the GIL. A frame is decoded at the coarsest JPEG scale its crop allows
(`decode.decode_scale`: 1/2 when the search crop shrinks the frame >= 2x, ...) and is cropped
straight from the decoded Pillow image: ~1.8 ms of CPU per 720p frame instead of ~4.5 ms for a full
decode to an array and `boxes.crop_image` (`satracker bench eval`). The scale a frame is decoded at
is chosen ahead from the latest box; when the box it is finally cropped around asks for another
scale, that frame is decoded again (counted as `redecodes`), so every result is a function of the
frames and the model alone: the same for any number of workers, slots or devices (frame_reader.py).
`parallel` sequences are tracked at once by a `BatchedTracker` whose slots are spread over the
local devices (`devices`, default all), so a host with 8 GPUs steps on all 8; a slot that finishes
its sequence takes the next one. On accelerators the slots form two `waves` sharing one compiled
step: the host gathers and crops one wave's frames (in a thread pool) while the device steps the
other's, so the device does not wait for the host's per-frame Python (scheduler.py).
`reduced_decode=False` decodes every frame at full size: then the crops are exactly those
`Tracker` makes from `visualize.load_frame` arrays.

Results are never stale. `provenance.json` records, per sequence, the fingerprints of the model
(`fingerprint_variables`, or `model_fingerprint` given by the caller), of the config parts that
change tracking (`config_fingerprint`) and of the sequence's data (`sequence_fingerprint`). A
sequence is skipped only when its result files are complete and all three are identical; otherwise
its old files are deleted and it is tracked again (provenance.py). An interrupted run resumes
where it stopped.

Bad input loses nothing. A frame that is missing or cannot be decoded fails its sequence (the
message names the file); the other sequences are finished and scored, a summary is printed, and
`evaluate` then raises `EvaluationFailed` (the verb exits non-zero). A sentence file that is not
UTF-8 is decoded with replacement characters, warned about by name and counted.

Protocols (SPEC.md "Protocols"; every number is reported with its protocol): `nl_bb` (the first
box and the sentence, the default), `bb` (the first box only: the sentence is replaced by ""), `nl`
(the sentence only: frame 0's box is grounded by the tracker, `Tracker.init(frame, None, sentence)`,
and tracking starts from it). Under `nl` line 0 of `<seq>.txt` is the grounded box; the toolkit's
scoring still replaces frame 0 by the ground truth (pytracking's rule), so the grounding itself is
scored apart: `grounding_accuracy` = the fraction of sequences whose grounded box has IoU > 0.5
with the first ground-truth box (in metrics.json, with `grounding.json` per sequence), and, where
some sentences need motion (synthetic `direction` videos, `Sequence.single_frame` False),
`grounding_accuracy_single_frame` over the others.
`mask_text=True` replaces every sentence by "" under any protocol (the "sentence masked" control:
`nl` then grounds from no words at all). The protocol and the mask are part of the provenance.

Per-frame times: frame 0 is the `init` time; a batched call's wall time (decode waits, crops and
the device step) is shared equally by the frames it tracked, so the times add up to the run's
wall time (scheduler.py).
"""
from __future__ import annotations

import concurrent.futures
import dataclasses
import os
import sys
import time
from typing import Optional

import jax
import numpy as np

from satracker_jax import tracker as tracker_lib
from satracker_jax.evaluation import analyze as analyze_lib
from satracker_jax.evaluation import results_io
from satracker_jax.evaluation.frame_reader import DecodeStats
from satracker_jax.evaluation.provenance import (PROVENANCE_FILE, config_fingerprint,
                                                 fingerprint_variables, read_provenance,
                                                 results_complete, sequence_fingerprint,
                                                 write_json)
from satracker_jax.evaluation.scheduler import Progress, run_slots

SUMMARY_FILE = "eval_summary.json"
GROUNDING_FILE = "grounding.json"
PROTOCOLS = ("nl_bb", "bb", "nl")
MAX_DEPTH = 16


class EvaluationFailed(RuntimeError):
  """Some sequences could not be tracked; the others were tracked and scored (`metrics`)."""

  def __init__(self, failed: dict[str, str], metrics: dict, summary: "TrackingSummary"):
    lines = "\n".join(f"  {name}: {why}" for name, why in failed.items())
    super().__init__(f"{len(failed)} of {summary.sequences} sequences failed:\n{lines}")
    self.failed, self.metrics, self.summary = failed, metrics, summary


@dataclasses.dataclass
class TrackingSummary:
  """What one `track_sequences` call did (also written to `<out>/eval_summary.json`)."""
  sequences: int = 0
  tracked: list = dataclasses.field(default_factory=list)
  skipped: list = dataclasses.field(default_factory=list)
  failed: dict = dataclasses.field(default_factory=dict)          # name -> why (names the file)
  bad_sentences: dict = dataclasses.field(default_factory=dict)   # name -> warning (names the file)
  frames: int = 0
  seconds: float = 0.0  # wall time of the tracking loop (compilation excluded)
  cpu_seconds: float = 0.0  # CPU time of this process (all threads) in that loop
  parallel: int = 0
  waves: int = 1
  devices: int = 0
  workers: int = 0
  decode_scales: dict = dataclasses.field(default_factory=dict)   # k -> frames decoded at 1/k
  redecodes: int = 0
  compile: dict = dataclasses.field(default_factory=dict)  # the step's compile: seconds, cached

  @property
  def frames_per_s(self) -> float:
    return self.frames / self.seconds if self.seconds > 0 else 0.0

  @property
  def frames_per_cpu_s(self) -> float:
    """Frames per core-second: the cost of a frame, whatever else shares the cores."""
    return self.frames / self.cpu_seconds if self.cpu_seconds > 0 else 0.0

  def to_json(self) -> dict:
    d = dataclasses.asdict(self)
    d["frames_per_s"] = self.frames_per_s
    d["frames_per_cpu_s"] = self.frames_per_cpu_s
    d["decode_scales"] = {str(k): v for k, v in sorted(self.decode_scales.items())}
    return d


# -- sentences -------------------------------------------------------------------------------------
def sentence_for_eval(sequence) -> tuple[str, str]:
  """(sentence to track with, warning or ""). A language file that is not UTF-8 is decoded with
  replacement characters (the rest of the sentence still helps); an empty or missing one gives ""
  (tracking then runs on the box alone). Either way the warning names the file."""
  if not getattr(sequence, "bad_sentence", False):
    return sequence.sentence, ""
  path = getattr(sequence, "sentence_file", "")
  if not path:
    return sequence.sentence, f"sequence {sequence.name}: no usable sentence; tracking without one"
  from data_pipelines import files  # noqa: PLC0415  (a local file, or an object on a bucket)
  try:
    data = files.read_bytes(path)
  except OSError:
    return "", f"{path}: sentence file missing; tracking {sequence.name} without a sentence"
  try:
    text, problem = data.decode("utf-8-sig"), ""
  except UnicodeDecodeError as e:
    text = data.decode("utf-8-sig", errors="replace")
    problem = f"not valid UTF-8 (byte 0x{data[e.start:e.start + 1].hex()} at offset {e.start})"
  lines = text.splitlines()
  sentence = lines[0].strip().lower() if lines else ""
  if not sentence:
    return "", f"{path}: empty sentence; tracking {sequence.name} without one"
  if not problem:  # readable now (the file changed since the data set was indexed)
    return sentence, ""
  return sentence, f"{path}: {problem}; tracking with it decoded with replacement: {sentence!r}"


def replaced_results_line(record: dict, expected: dict, out_dir: str,
                          model_info: Optional[dict]) -> str:
  """"replacing the results of another model ..." when `out_dir` holds results (of the sequences
  in `expected`) that a model other than this one made: which model and how many; "" otherwise."""
  others = sorted(name for name, want in expected.items()
                  if record["sequences"].get(name, {}).get("model") not in (None, want["model"])
                  and os.path.exists(results_io.results_path(out_dir, name)))
  if not others:
    return ""
  def who(info, fingerprint):
    info = info or {}
    source = info.get("source") or "an unnamed model"
    return f"{source}" + (f", config {info['config']}" if info.get("config") else "") + f" (model {fingerprint})"
  old_fp = record["sequences"][others[0]]["model"]
  new_fp = expected[others[0]]["model"]
  names = ", ".join(others[:3]) + (f" and {len(others) - 3} more" if len(others) > 3 else "")
  return (f"replacing the results of another model in {out_dir}: {len(others)} of {len(expected)} "
          f"sequences ({names}) were tracked by {who(record.get('model_info'), old_fp)}; now "
          f"tracking with {who(model_info, new_fp)}")


def track_sequences(config, variables, sequences, out_dir: str, parallel: int = 1,
                    workers: int = 0, devices=None, progress: bool = True, apply_fn=None,
                    tokenizer=None, reduced_decode: bool = True,
                    model_fingerprint: Optional[str] = None,
                    model_info: Optional[dict] = None, waves: int = 0, protocol: str = "nl_bb",
                    mask_text: bool = False) -> TrackingSummary:
  """Tracks the `sequences` whose results in `out_dir` are missing or stale; writes raw results
  and provenance. Never raises for one bad sequence: failures are in the returned summary.

  `parallel`: sequences tracked at once (0: `config.eval.parallel` or the device count, the
  larger); `workers`: decoding threads (0: all cores); `devices`: where the slots run (default:
  all local devices); `reduced_decode=False`: every frame at full size; `waves`: groups of
  slots stepped in turn (0: 2 on accelerators when there are slots for two per device, else 1);
  `apply_fn` /
  `tokenizer` replace the model / tokenizer (tests, the host-only benchmark);
  `model_fingerprint`: what identifies the model (default: `fingerprint_variables(variables)`);
  `model_info`: recorded beside it for people (e.g. the checkpoint path and step);
  `protocol` / `mask_text`: see the module docstring."""
  if protocol not in PROTOCOLS:
    raise ValueError(f"protocol {protocol!r}: choose from {', '.join(PROTOCOLS)}")
  sequences = list(sequences)
  if not sequences:
    raise ValueError("no sequences to evaluate")
  if tokenizer is None:
    # Before anything in out_dir is touched: a tokenizer that cannot be built (a wrong vocab
    # path) must not cost the results already there (stale ones are deleted below).
    from satracker_jax.tokenizer import build_tokenizer  # noqa: PLC0415
    tokenizer = build_tokenizer(config.text, max_len=config.model.max_text_len)
  os.makedirs(out_dir, exist_ok=True)
  devices = list(jax.local_devices() if devices is None else devices)
  workers = int(workers) or os.cpu_count() or 1
  summary = TrackingSummary(sequences=len(sequences), workers=workers)

  sentences = {}
  for s in sequences:
    if protocol == "bb" or mask_text:
      sentences[s.name] = ""
      continue
    sentences[s.name], warning = sentence_for_eval(s)
    if warning:
      summary.bad_sentences[s.name] = warning
      print(f"WARNING: {warning}", file=sys.stderr)
  expected_common = {"model": model_fingerprint or fingerprint_variables(variables),
                     "config": config_fingerprint(config, reduced_decode),
                     "protocol": protocol + ("+masked_text" if mask_text else "")}
  expected = {s.name: {**expected_common, "data": sequence_fingerprint(s, sentences[s.name])}
              for s in sequences}
  record = read_provenance(out_dir)
  record["format"] = 1
  replaced_model = replaced_results_line(record, expected, out_dir, model_info)
  if replaced_model:
    print(replaced_model)
  if model_info:
    record["model_info"] = model_info
  work = []
  for s in sequences:
    if results_complete(out_dir, s) and record["sequences"].get(s.name) == expected[s.name]:
      summary.skipped.append(s.name)
      continue
    # Whatever is there was made by another model, config or data (or is incomplete): it must not
    # be scored by anyone, so it goes before tracking starts.
    record["sequences"].pop(s.name, None)
    for path in (results_io.times_path(out_dir, s.name), results_io.results_path(out_dir, s.name)):
      if os.path.exists(path):
        os.remove(path)
    work.append((s, sentences[s.name]))
  write_json(os.path.join(out_dir, PROVENANCE_FILE), record)
  if summary.skipped:
    print(f"{len(summary.skipped)} of {len(sequences)} sequences already have results from this "
          f"model, config and data in {out_dir}; skipping them ({len(work)} to track)")
  if not work:
    return summary

  if int(parallel) <= 0:  # one slot per device at least, so every device has work
    parallel = max(int(config.get("eval", {}).get("parallel", 1)), len(devices))
  parallel = max(1, min(int(parallel), len(work)))
  stats = DecodeStats()

  def on_done(seq, boxes, times):
    results_io.write_results(out_dir, seq.name, np.stack(boxes), times)
    record["sequences"][seq.name] = expected[seq.name]
    write_json(os.path.join(out_dir, PROVENANCE_FILE), record)
    summary.tracked.append(seq.name)
    summary.frames += len(boxes)

  def on_fail(seq, why):
    summary.failed[seq.name] = why
    print(f"FAILED {seq.name}: {why}", file=sys.stderr)

  # Enough frames in flight to keep every worker busy, without holding many decoded frames.
  depth = int(np.clip(-(-4 * workers // parallel), 2, MAX_DEPTH))
  decode_pool = concurrent.futures.ThreadPoolExecutor(workers, thread_name_prefix="decode")
  # Cropping the slots in parallel and stepping two waves of slots in turn shorten the time an
  # accelerator waits for the host; on the CPU backend the step needs the same cores, so there the
  # pool's hand-offs and the smaller batches only cost.
  on_accelerator = devices[0].platform != "cpu"
  if int(waves) <= 0:
    waves = 2 if on_accelerator and parallel >= 2 * len(devices) else 1
  wave_slots = -(-parallel // int(waves))
  if int(waves) > 1 and wave_slots >= len(devices):  # every wave on every device
    wave_slots = -(-wave_slots // len(devices)) * len(devices)
  summary.parallel, summary.waves = wave_slots * int(waves), int(waves)
  crop_pool = (concurrent.futures.ThreadPoolExecutor(min(workers, parallel),
                                                     thread_name_prefix="crop")
               if on_accelerator and parallel > 1 and workers > 1 else None)
  bar = Progress(sum(len(s.frames) for s, _ in work), progress)
  try:
    trackers = [tracker_lib.BatchedTracker(config, variables, wave_slots, apply_fn=apply_fn,
                                           tokenizer=tokenizer, devices=devices,
                                           crop_pool=crop_pool)]
    for _ in range(int(waves) - 1):
      trackers.append(tracker_lib.BatchedTracker(config, variables, wave_slots, apply_fn=apply_fn,
                                                 tokenizer=tokenizer, devices=devices,
                                                 crop_pool=crop_pool, share_with=trackers[0]))
    summary.devices = trackers[0].num_devices
    # Compile outside the timed frames (the waves share the executable).
    summary.compile = trackers[0].warmup(
        say=(lambda line: print(f"[eval] {line}", flush=True)) if progress else None).as_dict()
    bar.start = start = time.perf_counter()
    cpu_start = time.process_time()
    run_slots(trackers, work, decode_pool, depth, reduced_decode, stats, bar, on_done, on_fail,
               protocol=protocol)
    summary.seconds = time.perf_counter() - start
    summary.cpu_seconds = time.process_time() - cpu_start
  finally:
    bar.close()
    decode_pool.shutdown(wait=True, cancel_futures=True)
    if crop_pool is not None:
      crop_pool.shutdown(wait=True)
  summary.decode_scales = dict(stats.scales)
  summary.redecodes = stats.redecodes
  print(f"tracked {summary.frames} frames of {len(summary.tracked)} sequences in "
        f"{summary.seconds:.1f} s: {summary.frames_per_s:.1f} frames/s (parallel="
        f"{summary.parallel} in {summary.waves} wave(s) on {summary.devices} device(s), {workers} "
        f"decode workers)")
  return summary


def grounding_scores(sequences, out_dir: str) -> dict:
  """Frame-0 grounding of an `nl` run: line 0 of each `<seq>.txt` against the first ground-truth
  box (pytracking's IoU). {"accuracy": fraction with IoU > 0.5, "num_sequences", "sequences":
  {name: {"box", "iou", "single_frame"}}, and the same accuracy over the sequences whose sentence
  a single frame resolves (`Sequence.single_frame`): "accuracy_single_frame", "num_single_frame"}."""
  from satracker_jax.evaluation import metrics as metrics_lib  # noqa: PLC0415
  per = {}
  for seq in sequences:
    box = results_io.read_boxes(results_io.results_path(out_dir, seq.name))[0]
    gt = np.asarray(seq.boxes[0], np.float64)
    # An invalid GT box (absent, NaN) scores IoU -1, never a hit (pytracking's invalid frames).
    valid = np.isfinite(gt).all() and gt[2] > 0 and gt[3] > 0
    iou = float(metrics_lib.iou_overlap(box[None], gt[None])[0]) if valid else -1.0
    per[seq.name] = {"box": [float(v) for v in box], "iou": iou,
                     "single_frame": bool(getattr(seq, "single_frame", True))}
  hits = [v["iou"] > 0.5 for v in per.values()]
  single = [v["iou"] > 0.5 for v in per.values() if v["single_frame"]]
  return {"accuracy": float(np.mean(hits)) if hits else float("nan"), "num_sequences": len(per),
          "accuracy_single_frame": float(np.mean(single)) if single else float("nan"),
          "num_single_frame": len(single), "sequences": per}


def evaluate(config, variables, sequences, out_dir: str, parallel: int = 1, progress: bool = True,
             dataset: str | None = None, name: str = "satracker", apply_fn=None, tokenizer=None,
             write_report: bool = True, workers: int = 0, devices=None,
             reduced_decode: bool = True, model_fingerprint: Optional[str] = None,
             model_info: Optional[dict] = None, waves: int = 0, protocol: str = "nl_bb",
             mask_text: bool = False, toolkit: Optional[str] = None,
             split: Optional[str] = None) -> dict:
  """Tracks what `track_sequences` finds missing or stale, then scores every sequence that has
  results. Returns `{name: {"toolkit", "auc", ...}}` (fractions), the schema of
  `<out_dir>/metrics.json`. `split` only names the report (`analyze.report_title`).

  `toolkit`: the scoring rules (`evaluation.toolkits`); None = `pytracking`, with the
  `tnl2k-matlab` rows beside it on TNL2K (`metrics.tnl2k-matlab.json`). The toolkit is not part
  of a result's provenance: changing it re-scores the raw results, never re-tracks them; the
  toolkits of the latest scoring are recorded in provenance.json (`toolkit`, `toolkits`).
  Every entry also holds `protocol` (and `mask_text`); under `nl`, `grounding_accuracy`,
  `grounding_accuracy_single_frame` and `num_single_frame` too (`grounding_scores`).
  Raises `EvaluationFailed` (after scoring the others and writing the summary) when a sequence
  could not be tracked; its `.metrics` holds the scores of the rest."""
  sequences = list(sequences)
  if not sequences:
    raise ValueError("no sequences to evaluate")
  dataset = dataset or sequences[0].dataset
  summary = track_sequences(config, variables, sequences, out_dir, parallel=parallel,
                            workers=workers, devices=devices, progress=progress, apply_fn=apply_fn,
                            tokenizer=tokenizer, reduced_decode=reduced_decode,
                            model_fingerprint=model_fingerprint, model_info=model_info,
                            waves=waves, protocol=protocol, mask_text=mask_text)
  write_json(os.path.join(out_dir, SUMMARY_FILE), summary.to_json())
  scored = [s for s in sequences if s.name not in summary.failed]
  metrics = {}
  if scored:
    reports = analyze_lib.evaluate_toolkits(scored, {name: out_dir}, dataset, toolkit)
    report = reports[0]
    tag = protocol + (", sentence masked" if mask_text else "")
    for r in reports:
      for entry in r.metrics.values():
        entry["protocol"], entry["mask_text"] = protocol, bool(mask_text)
    if protocol == "nl":
      grounded = grounding_scores(scored, out_dir)
      write_json(os.path.join(out_dir, GROUNDING_FILE), grounded)
      for r in reports:
        r.metrics[name].update(
            grounding_accuracy=grounded["accuracy"],
            grounding_accuracy_single_frame=grounded["accuracy_single_frame"],
            num_single_frame=grounded["num_single_frame"])
      line = (f"frame-0 grounding accuracy (IoU > 0.5): {grounded['accuracy']:.3f} over "
              f"{grounded['num_sequences']} sequences")
      if grounded["num_single_frame"] < grounded["num_sequences"]:
        line += (f"; {grounded['accuracy_single_frame']:.3f} over the {grounded['num_single_frame']} "
                 "a single frame resolves")
      print(f"{line} ({tag})")
    record = read_provenance(out_dir)
    record["toolkit"], record["toolkits"] = report.toolkit, [r.toolkit for r in reports]
    write_json(os.path.join(out_dir, PROVENANCE_FILE), record)
    if write_report:
      analyze_lib.write_report(reports, out_dir, title=analyze_lib.report_title(
          dataset, split, protocol + ("+masked_text" if mask_text else "")))
    print(f"protocol: {tag}")
    print(analyze_lib.results_table(reports))
    metrics = report.metrics
  if summary.bad_sentences:
    print(f"{len(summary.bad_sentences)} sequence(s) with an unreadable or empty sentence file, "
          f"tracked with what could be read or with no sentence (see the warnings and "
          f"{os.path.join(out_dir, SUMMARY_FILE)})")
  if summary.failed:
    raise EvaluationFailed(summary.failed, metrics, summary)
  return metrics
