"""Offline evaluation (`satracker eval`): track every sequence of a benchmark, write raw results,
score them.

    metrics = evaluate(config, variables, sequences, out_dir, parallel=1)

Writes `<out>/<seq>.txt` (x,y,w,h per frame) and `<out>/<seq>_time.txt` (seconds per frame), the
pytracking/OSTrack raw-result layout, then `<out>/metrics.json` ({tracker: {auc, precision,
norm_precision, num_sequences}}, fractions), plots, `per_sequence.csv` and `results.md` via
`evaluation.analyze`, and prints the table. Sequences whose results are already complete are
skipped, so an interrupted run resumes where it stopped.

Per-frame times: frame 0 is the `init` time; with `--parallel N` a batched call's time is shared
equally by the frames it tracked (the amortised per-frame cost, which is what fps should mean).
"""
from __future__ import annotations

import collections
import concurrent.futures
import os
import sys
import time
from typing import Iterator, Sequence

import numpy as np
from tqdm import tqdm

from satracker_jax import tracker as tracker_lib
from satracker_jax.evaluation import analyze as analyze_lib
from satracker_jax.evaluation import results_io
from satracker_jax.visualize import load_frame

PREFETCH = 4  # frames decoded ahead of the tracker per sequence (JPEG decoding overlaps compute)


def is_done(out_dir: str, sequence) -> bool:
  """Complete results exist: the time file (written last) and one box per frame."""
  if not os.path.isfile(results_io.times_path(out_dir, sequence.name)):
    return False
  try:
    boxes = results_io.read_boxes(results_io.results_path(out_dir, sequence.name))
  except (OSError, ValueError):
    return False
  return len(boxes) == len(sequence.frames)


def _frames(paths: Sequence[str], pool: concurrent.futures.Executor) -> Iterator[np.ndarray]:
  pending = collections.deque(pool.submit(load_frame, p) for p in paths[:PREFETCH])
  next_index = len(pending)
  while pending:
    frame = pending.popleft().result()
    if next_index < len(paths):
      pending.append(pool.submit(load_frame, paths[next_index]))
      next_index += 1
    yield frame


def _init_box(sequence) -> np.ndarray:
  box = np.asarray(sequence.boxes[0], np.float64)
  if not np.isfinite(box).all() or box[2] <= 0 or box[3] <= 0:
    raise ValueError(f"sequence {sequence.name}: the first frame's ground-truth box {box.tolist()} "
                     "is not a valid x,y,w,h; the tracker needs it to start")
  return box


class _Progress:
  """A tqdm bar over frames with the tracker's own frames/s (time inside init/track only)."""

  def __init__(self, total: int, enabled: bool):
    self.bar = tqdm(total=total, unit="frame", disable=not enabled, dynamic_ncols=True, file=sys.stdout)
    self.frames = 0
    self.seconds = 0.0

  def update(self, frames: int, seconds: float, sequence: str):
    self.frames += frames
    self.seconds += seconds
    self.bar.update(frames)
    if self.seconds > 0:
      self.bar.set_postfix(fps=f"{self.frames / self.seconds:.1f}", seq=sequence[:24], refresh=False)

  def close(self):
    self.bar.close()


def _track_single(tracker: tracker_lib.Tracker, sequences, out_dir, progress, pool):
  for seq in sequences:
    boxes, times = [], []
    for i, frame in enumerate(_frames(seq.frames, pool)):
      start = time.perf_counter()
      if i == 0:
        box = _init_box(seq)
        tracker.init(frame, box, seq.sentence)
      else:
        box, _ = tracker.track(frame)
      times.append(time.perf_counter() - start)
      boxes.append(box)
      progress.update(1, times[-1], seq.name)
    results_io.write_results(out_dir, seq.name, np.stack(boxes), times)


def _track_batched(tracker: tracker_lib.BatchedTracker, sequences, out_dir, progress, pool):
  queue = collections.deque(sequences)
  slots: list[dict | None] = [None] * tracker.num_slots

  def start(slot):
    # Loads the next sequence into `slot` (frame 0 = init, no network call); None when drained.
    while queue:
      seq = queue.popleft()
      frames = _frames(seq.frames, pool)
      t0 = time.perf_counter()
      box = _init_box(seq)
      tracker.init(slot, next(frames), box, seq.sentence)
      state = {"seq": seq, "frames": frames, "boxes": [box], "times": [time.perf_counter() - t0]}
      progress.update(1, state["times"][0], seq.name)
      if len(seq.frames) > 1:
        return state
      finish(state)
    tracker.release(slot)
    return None

  def finish(state):
    results_io.write_results(out_dir, state["seq"].name, np.stack(state["boxes"]), state["times"])

  for slot in range(tracker.num_slots):
    slots[slot] = start(slot)
  while any(s is not None for s in slots):
    frames = [next(s["frames"]) if s is not None else None for s in slots]
    t0 = time.perf_counter()
    results = tracker.track(frames)
    elapsed = time.perf_counter() - t0
    active = [i for i, s in enumerate(slots) if s is not None]
    share = elapsed / len(active)
    for i in active:
      state = slots[i]
      state["boxes"].append(results[i][0])
      state["times"].append(share)
      progress.update(1, share, state["seq"].name)
      if len(state["boxes"]) == len(state["seq"].frames):
        finish(state)
        slots[i] = start(i)


def evaluate(config, variables, sequences, out_dir: str, parallel: int = 1, progress: bool = True,
             dataset: str | None = None, name: str = "satracker", apply_fn=None, tokenizer=None,
             write_report: bool = True) -> dict:
  """Tracks the `sequences` not yet done in `out_dir`, then scores all of them.

  Returns `{name: {"auc", "precision", "norm_precision", "num_sequences"}}` (fractions), the
  schema of `<out_dir>/metrics.json`. `apply_fn` / `tokenizer` replace the model / tokenizer
  (tests). `parallel` > 1 tracks that many sequences at once with a `BatchedTracker`.
  """
  sequences = list(sequences)
  if not sequences:
    raise ValueError("no sequences to evaluate")
  dataset = dataset or sequences[0].dataset
  os.makedirs(out_dir, exist_ok=True)
  pending = [s for s in sequences if not is_done(out_dir, s)]
  if len(pending) < len(sequences):
    print(f"{len(sequences) - len(pending)} of {len(sequences)} sequences already have results "
          f"in {out_dir}; skipping them")
  if pending:
    parallel = max(1, min(int(parallel), len(pending)))
    bar = _Progress(sum(len(s.frames) for s in pending), progress)
    with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
      try:
        if parallel == 1:
          tracker = tracker_lib.Tracker(config, variables, apply_fn=apply_fn, tokenizer=tokenizer)
          tracker.warmup()  # compile outside the timed frames
          _track_single(tracker, pending, out_dir, bar, pool)
        else:
          tracker = tracker_lib.BatchedTracker(config, variables, parallel, apply_fn=apply_fn,
                                               tokenizer=tokenizer)
          tracker.warmup()
          _track_batched(tracker, pending, out_dir, bar, pool)
      finally:
        bar.close()
    if bar.seconds > 0:
      print(f"tracked {bar.frames} frames of {len(pending)} sequences at "
            f"{bar.frames / bar.seconds:.1f} frames/s (parallel={parallel})")
  report = analyze_lib.evaluate(sequences, {name: out_dir}, dataset)
  if write_report:
    analyze_lib.write_report(report, out_dir, title=dataset)
  print(analyze_lib.results_table(report))
  return report.metrics
