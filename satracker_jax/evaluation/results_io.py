"""Raw tracking results on disk: the `<seq>.txt` + `<seq>_time.txt` layout pytracking reads.

`<seq>.txt` holds one `x,y,w,h` box per frame (pixels, top-left + size); `<seq>_time.txt` holds
the seconds each frame took. Reading accepts tab, comma or whitespace separated values, so raw
files published by other trackers (pytracking/OSTrack write tab-separated `%d` integers) load
unchanged.

Writing uses tabs like pytracking, but keeps 4 decimals (trailing zeros dropped, so integral
boxes look exactly like pytracking's `%d` files) instead of pytracking's `%d`, which floors every
coordinate and costs up to a pixel. 1e-4 px is far below anything the metrics resolve; metrics
are always computed from the files, so a run and its re-analysis agree exactly.
"""
from __future__ import annotations

import os
import re

import numpy as np

_SEPARATORS = re.compile(r"[\t, ]+")


def results_path(results_dir: str, seq_name: str) -> str:
  return os.path.join(results_dir, f"{seq_name}.txt")


def times_path(results_dir: str, seq_name: str) -> str:
  return os.path.join(results_dir, f"{seq_name}_time.txt")


def _read_rows(path: str, num_cols: int) -> tuple[np.ndarray, list[int]]:
  """Rows of floats and their 1-based line numbers; trailing blank lines are ignored."""
  with open(path) as f:
    lines = f.read().splitlines()
  while lines and not lines[-1].strip():
    lines.pop()
  rows, line_numbers = [], []
  for number, line in enumerate(lines, start=1):
    text = line.strip()
    if not text:
      raise ValueError(f"{path}:{number}: empty line inside the file")
    fields = [v for v in _SEPARATORS.split(text) if v]
    if len(fields) != num_cols:
      raise ValueError(f"{path}:{number}: expected {num_cols} values, got {len(fields)}: {text!r}")
    try:
      rows.append([float(v) for v in fields])
    except ValueError:
      raise ValueError(f"{path}:{number}: not a number: {text!r}") from None
    line_numbers.append(number)
  return np.asarray(rows, dtype=np.float64).reshape(-1, num_cols), line_numbers


def read_boxes(path: str) -> np.ndarray:
  """[N, 4] float64 x,y,w,h. A NaN/inf value or a negative size is a `ValueError` naming the line."""
  boxes, line_numbers = _read_rows(path, 4)
  bad = ~np.isfinite(boxes).all(axis=1)
  if bad.any():
    i = int(np.argmax(bad))
    raise ValueError(f"{path}:{line_numbers[i]}: non-finite box {boxes[i].tolist()}")
  negative = (boxes[:, 2:] < 0).any(axis=1)
  if negative.any():
    i = int(np.argmax(negative))
    raise ValueError(f"{path}:{line_numbers[i]}: negative box size {boxes[i].tolist()}")
  return boxes


def read_times(path: str) -> np.ndarray:
  """[N] float64 seconds per frame."""
  times, line_numbers = _read_rows(path, 1)
  times = times[:, 0]
  bad = ~np.isfinite(times) | (times < 0)
  if bad.any():
    i = int(np.argmax(bad))
    raise ValueError(f"{path}:{line_numbers[i]}: invalid frame time {times[i]}")
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
