"""The decode-ahead frame reader of offline evaluation (`runner.track_sequences`).

Offline evaluation knows every frame in advance, so a pool of threads decodes each sequence's
frames `depth` ahead while the tracker steps; Pillow decodes and resizes without the GIL. A frame
is decoded at the coarsest JPEG scale its crop allows (`decode.decode_scale`), chosen ahead from
the latest box; when the box it is finally cropped around asks for another scale, that frame is
decoded again (counted as `redecodes`), so every result is a function of the frames and the model
alone: the same for any number of workers, slots or devices.
"""
from __future__ import annotations

import collections
import dataclasses
from typing import Callable

from satracker_jax.evaluation.decode import decode_frame


@dataclasses.dataclass
class DecodeStats:
  scales: collections.Counter = dataclasses.field(default_factory=collections.Counter)
  redecodes: int = 0


class FrameReader:
  """One sequence's frames, decoded ahead in the pool at the scale each crop is expected to need.

  `get(i, scale)` returns frame i decoded at exactly `scale`: when the guess made at prefetch
  time differs, the frame is decoded again here, so results never depend on timing."""

  def __init__(self, paths, pool, depth: int, reduced: bool, stats: DecodeStats):
    self.paths, self.pool, self.depth, self.reduced, self.stats = paths, pool, depth, reduced, stats
    self.pending: collections.deque = collections.deque()
    self.next = 0

  def prefetch(self, scale_of: Callable[[int], int]) -> None:
    while len(self.pending) < self.depth and self.next < len(self.paths):
      scale = scale_of(self.next) if self.reduced else 1
      self.pending.append((self.next, scale, self.pool.submit(decode_frame, self.paths[self.next],
                                                               scale)))
      self.next += 1

  def get(self, index: int, scale: int):
    scale = scale if self.reduced else 1
    if not self.pending:
      self.prefetch(lambda i: scale)
    i, requested, future = self.pending.popleft()
    assert i == index, (i, index)
    frame = future.result()  # FrameError names the file
    if requested != scale:
      self.stats.redecodes += 1
      frame = decode_frame(self.paths[index], scale)
    self.stats.scales[frame.scale] += 1
    return frame

  def close(self) -> None:
    for _, _, future in self.pending:
      future.cancel()
    self.pending.clear()
