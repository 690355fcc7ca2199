"""The slot scheduler of offline evaluation (`runner.track_sequences`): sequences through the
slots of `BatchedTracker`s, frames from `frame_reader.FrameReader`s.

`parallel` sequences are tracked at once by a `BatchedTracker` whose slots are spread over the
local devices; a slot that finishes its sequence takes the next one. On accelerators the slots
form two `waves` sharing one compiled step: the host gathers and crops one wave's frames while
the device steps the other's, so the device does not wait for the host's per-frame Python. A
frame that fails to decode fails its sequence (`on_fail`), and the slot moves on.

Per-frame times: frame 0 is the `init` time; a batched call's wall time (decode waits, crops and
the device step) is shared equally by the frames it tracked, so the times add up to the run's
wall time.
"""
from __future__ import annotations

import collections
import dataclasses
import sys
import time
from typing import Optional

import numpy as np
from tqdm import tqdm

from satracker_jax.evaluation.decode import FrameError, decode_scale
from satracker_jax.evaluation.frame_reader import DecodeStats, FrameReader


class Progress:
  """A tqdm bar over frames with the run's frames/s."""

  def __init__(self, total: int, enabled: bool):
    self.bar = tqdm(total=total, unit="frame", disable=not enabled, dynamic_ncols=True, file=sys.stdout)
    self.start = time.perf_counter()
    self.frames = 0

  def update(self, frames: int, sequence: str):
    self.frames += frames
    self.bar.update(frames)
    elapsed = time.perf_counter() - self.start
    if elapsed > 0:
      self.bar.set_postfix(fps=f"{self.frames / elapsed:.1f}", seq=sequence[:24], refresh=False)

  def close(self):
    self.bar.close()


def _init_box(sequence) -> np.ndarray:
  box = np.asarray(sequence.boxes[0], np.float64)
  if not np.isfinite(box).all() or box[2] <= 0 or box[3] <= 0:
    raise ValueError(f"sequence {sequence.name}: the first frame's ground-truth box {box.tolist()} "
                     "is not a valid x,y,w,h; the tracker needs it to start")
  return box


@dataclasses.dataclass
class _Slot:
  seq: object
  reader: FrameReader
  boxes: list
  times: list


def run_slots(trackers: list, work: list, pool, depth: int, reduced: bool, stats: DecodeStats,
               progress: Progress, on_done, on_fail, protocol: str = "nl_bb") -> None:
  """Tracks `work` ([(sequence, sentence)]) through the slots of `trackers` (see the module doc).

  With several trackers (waves), each is submitted as soon as its previous call is collected, so
  the host gathers and crops one wave's frames while the device steps the other's."""
  first = trackers[0]

  def template_scale(box) -> int:
    return decode_scale(first.template_params(box).size, first.template_size)

  def search_scale(box) -> int:
    scale = decode_scale(first.search_params_at(box).size, first.search_size)
    if first.template_update:  # the same frame may re-crop the template
      scale = min(scale, template_scale(box))
    return scale

  def hint(box, first_frame: bool):
    return lambda i: template_scale(box) if (first_frame and i == 0) else search_scale(box)

  queue = collections.deque(work)
  upcoming: collections.deque = collections.deque()
  total_slots = sum(t.num_slots for t in trackers)

  def refill():
    # The next sequences' first frames are decoded while the current ones finish.
    while queue and len(upcoming) < total_slots:
      seq, sentence = queue.popleft()
      reader = FrameReader(seq.frames, pool, depth, reduced, stats)
      box = np.asarray(seq.boxes[0], np.float64)
      valid = np.isfinite(box).all() and box[2] > 0 and box[3] > 0
      if protocol == "nl":
        # The GT box only guesses later frames' scales (a wrong guess is decoded again); `nl`
        # needs no valid one: frame 0 is grounded.
        reader.prefetch(lambda i: 1 if i == 0 or not valid else search_scale(box))
      elif valid:
        reader.prefetch(hint(box, first_frame=True))
      upcoming.append((seq, sentence, reader))

  def start(tracker, slot: int) -> Optional[_Slot]:
    while True:
      refill()
      if not upcoming:
        tracker.release(slot)
        return None
      seq, sentence, reader = upcoming.popleft()
      t0 = time.perf_counter()
      try:
        if not seq.frames:
          raise ValueError(f"sequence {seq.name}: no frames to track (annotations only?)")
        if protocol == "nl":
          # Grounding sees the whole frame: decoded at full size (once per sequence).
          frame = reader.get(0, 1)
          box, _ = tracker.ground(slot, frame, sentence, allow_empty=True)
          tracker.init(slot, frame, box, sentence)
        else:
          box = _init_box(seq)
          tracker.init(slot, reader.get(0, template_scale(box)), box, sentence)
      except (FrameError, ValueError) as e:
        reader.close()
        on_fail(seq, str(e))
        continue
      state = _Slot(seq, reader, [box], [time.perf_counter() - t0])
      progress.update(1, seq.name)
      if len(seq.frames) == 1:
        reader.close()
        on_done(seq, state.boxes, state.times)
        continue
      reader.prefetch(hint(box, first_frame=False))
      return state

  def submit(tracker, slots):
    """Each live slot's next frame (a slot whose frame fails takes the next sequence), then the
    crops and the step; None when the wave has nothing left."""
    frames = [None] * tracker.num_slots
    for i in range(tracker.num_slots):
      while slots[i] is not None:
        state = slots[i]
        try:
          frames[i] = state.reader.get(len(state.boxes), search_scale(tracker.box_of(i)))
          break
        except FrameError as e:
          state.reader.close()
          on_fail(state.seq, str(e))
          slots[i] = start(tracker, i)
    if all(f is None for f in frames):
      return None
    return tracker.submit(frames)

  def collect(tracker, slots, pending) -> list:
    """Advances the wave's slots by `pending`'s results; returns the states that got a frame."""
    results = tracker.collect(pending)
    advanced = []
    for i, result in enumerate(results):
      if result is None:
        continue
      state = slots[i]
      state.boxes.append(result[0])
      advanced.append(state)
      progress.update(1, state.seq.name)
      if len(state.boxes) == len(state.seq.frames):
        state.reader.close()
        slots[i] = start(tracker, i)
      else:
        state.reader.prefetch(hint(result[0], first_frame=False))
    return advanced

  waves = [[start(t, i) for i in range(t.num_slots)] for t in trackers]
  pending = [None] * len(trackers)
  live = [True] * len(trackers)
  while any(live):
    t0 = time.perf_counter()
    advanced = []
    for w, (tracker, slots) in enumerate(zip(trackers, waves)):
      if not live[w]:
        continue
      if pending[w] is not None:
        advanced += collect(tracker, slots, pending[w])
      pending[w] = submit(tracker, slots)
      live[w] = pending[w] is not None
    # This round's wall time (decode waits, crops, steps) shared by the frames it advanced.
    share = (time.perf_counter() - t0) / max(len(advanced), 1)
    for state in advanced:
      state.times.append(share)
      if len(state.boxes) == len(state.seq.frames):
        on_done(state.seq, state.boxes, state.times)
