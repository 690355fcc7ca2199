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

import io
import os
import re

import numpy as np

_SEPARATORS = re.compile(r"[\t, ]+")
_EDGE_COMMAS = re.compile(r"^,+|,+$", re.MULTILINE)


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


def _read_rows(path: str, num_cols: int) -> tuple[np.ndarray, list[int]]:
  """Rows of floats and their 1-based line numbers; trailing blank lines are ignored."""
  with open(path) as f:
    lines = f.read().splitlines()
  while lines and not lines[-1].strip():
    lines.pop()
  fast = _parse_regular(lines, num_cols)
  if fast is not None:
    return fast, list(range(1, len(lines) + 1))
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


def _parse_regular(lines: list[str], num_cols: int) -> np.ndarray | None:
  """All lines at once through numpy's C parser when every line holds `num_cols` numbers (any
  mix of tab / comma / space separators); None sends irregular files to the line-by-line parser,
  whose errors name the line. A LaSOT result folder has 685,360 lines."""
  text = _EDGE_COMMAS.sub("", _SEPARATORS.sub(",", "\n".join(lines)))
  if not text or "\n\n" in text or text.startswith("\n") or text.endswith("\n"):
    return None  # an empty line inside the file: the slow path reports it
  try:
    rows = np.loadtxt(io.StringIO(text), delimiter=",", dtype=np.float64, ndmin=2, comments=None)
  except ValueError:
    return None
  return rows if rows.shape == (len(lines), num_cols) else None


def read_boxes(path: str, allow_invalid: bool = False) -> np.ndarray:
  """[N, 4] float64 x,y,w,h. A NaN/inf value or a negative size is a `ValueError` naming the line.

  `allow_invalid` (the `tnl2k-matlab` toolkit, which carries such rows over) keeps NaN values and
  negative sizes; an infinite value is still an error."""
  boxes, line_numbers = _read_rows(path, 4)
  bad = np.isinf(boxes).any(axis=1) if allow_invalid else ~np.isfinite(boxes).all(axis=1)
  if bad.any():
    i = int(np.argmax(bad))
    raise ValueError(f"{path}:{line_numbers[i]}: non-finite box {boxes[i].tolist()}")
  if allow_invalid:
    return boxes
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
