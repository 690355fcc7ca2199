"""Raw tracking results on disk: the `<seq>.txt` + `<seq>_time.txt` layout pytracking reads.

`<seq>.txt` holds one `x,y,w,h` box per frame (pixels, top-left + size); `<seq>_time.txt` holds
the seconds each frame took. Reading is `satracker_jax.box_files` (the parser of every box file:
tab, comma or whitespace separated values), so raw files published by other trackers
(pytracking/OSTrack write tab-separated `%d` integers) load unchanged; a blank line inside a
result file is an error.

Writing uses tabs like pytracking, but keeps 4 decimals (trailing zeros dropped, so integral
boxes look exactly like pytracking's `%d` files) instead of pytracking's `%d`, which floors every
coordinate and costs up to a pixel. 1e-4 px is far below anything the metrics resolve; metrics
are always computed from the files, so a run and its re-analysis agree exactly.
"""
from __future__ import annotations

import os
import re

import numpy as np

from satracker_jax import box_files


def results_path(results_dir: str, seq_name: str) -> str:
  return os.path.join(results_dir, f"{seq_name}.txt")


def find_results(results_dir: str, seq_name: str) -> str:
  """The existing `<seq>.txt` of a sequence, or the pytracking-spelled path when none exists.

  Multi-target OTB sequences are spelled `Jogging_1` by pytracking / OSTrack and `Jogging-1` by
  pysot and the OTB toolkit; published result folders come in both spellings.
  """
  path = results_path(results_dir, seq_name)
  m = re.fullmatch(r"(.+)([_-])(\d)", seq_name)
  if os.path.isfile(path) or not m:
    return path
  other = results_path(results_dir, f"{m.group(1)}{'-' if m.group(2) == '_' else '_'}{m.group(3)}")
  return other if os.path.isfile(other) else path


def times_path(results_dir: str, seq_name: str) -> str:
  return os.path.join(results_dir, f"{seq_name}_time.txt")


def read_boxes(path: str, allow_invalid: bool = False) -> np.ndarray:
  """[N, 4] float64 x,y,w,h. A NaN/inf value or a negative size is a `ValueError` naming the line.

  `allow_invalid` (the `tnl2k-matlab` toolkit, which carries such rows over) keeps NaN values and
  negative sizes; an infinite value is still an error."""
  boxes = box_files.read_rows(path, 4)
  bad = np.isinf(boxes).any(axis=1) if allow_invalid else ~np.isfinite(boxes).all(axis=1)
  if bad.any():
    i = int(np.argmax(bad))
    raise ValueError(f"{path}:{i + 1}: non-finite box {boxes[i].tolist()}")
  if allow_invalid:
    return boxes
  negative = (boxes[:, 2:] < 0).any(axis=1)
  if negative.any():
    i = int(np.argmax(negative))
    raise ValueError(f"{path}:{i + 1}: negative box size {boxes[i].tolist()}")
  return boxes


def read_times(path: str) -> np.ndarray:
  """[N] float64 seconds per frame."""
  times = box_files.read_rows(path, 1)[:, 0]
  bad = ~np.isfinite(times) | (times < 0)
  if bad.any():
    i = int(np.argmax(bad))
    raise ValueError(f"{path}:{i + 1}: invalid frame time {times[i]}")
  return times


def _format_coordinate(v: float) -> str:
  text = f"{v:.4f}".rstrip("0").rstrip(".")
  return "0" if text == "-0" else text


def write_results(results_dir: str, seq_name: str, boxes, times=None) -> str:
  """Writes `<seq>.txt` (and `<seq>_time.txt` when `times` is given); returns the box file path."""
  boxes = np.asarray(boxes, dtype=np.float64)
  if boxes.ndim != 2 or boxes.shape[1] != 4:
    raise ValueError(f"{seq_name}: boxes must be [N, 4], got shape {boxes.shape}")
  if not np.isfinite(boxes).all() or (boxes[:, 2:] < 0).any():
    raise ValueError(f"{seq_name}: refusing to write non-finite or negative-size boxes")
  os.makedirs(results_dir, exist_ok=True)
  path = results_path(results_dir, seq_name)
  with open(path, "w") as f:
    for box in boxes:
      f.write("\t".join(_format_coordinate(v) for v in box) + "\n")
  if times is not None:
    times = np.asarray(times, dtype=np.float64).reshape(-1)
    with open(times_path(results_dir, seq_name), "w") as f:
      for t in times:
        f.write(f"{t:.6f}\n")
  return path
