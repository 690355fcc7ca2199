"""Box files: one row of numbers per line. The one parser of every file of boxes (or per-frame
times) the project reads: data sets' ground truth (`data_pipelines/readers.py`), raw tracking
results and their time files (`evaluation/results_io.py`), and `satracker track`'s frame folders
and `--box` argument (`track_video.py`). numpy only, so `data_pipelines/` may import it.

    boxes = read_rows("groundtruth.txt", 4, blank_lines_absent=True)  # [N, 4] float64, NaN: absent
    box = parse_row("10,20,30,40", 4, where="--box")                  # [4] float64
    boxes = parse_rows(data, "gs://b/seq/groundtruth.txt", 4)         # bytes the caller read

The format, the same for every caller: values separated by commas, tabs or any white space, mixed
freely (pytracking / OSTrack write tabs, LaSOT commas, OTB either, with or without a space after
the comma); a UTF-8 byte-order mark, CRLF endings and a missing final newline are fine; blank lines
at the end are formatting, not rows. Row i is line i + 1 of the file. Callers differ only in what
a blank line inside the file means: in ground truth the target is absent there (a NaN row), a
result file may not have one. Every error names the file and line (`path:line: ...`).
"""
from __future__ import annotations

import io
import re

import numpy as np

_SEPARATORS = re.compile(r"[,\s]+")
# Inside a line (str.splitlines already split at \n, \r, \f, \v, ...) the separators numpy's
# parser is handed as commas.
_RUNS = re.compile(r"[,\t \f\v]+")
_EDGE_COMMAS = re.compile(r"^,+|,+$", re.MULTILINE)


def split_fields(line: str) -> list[str]:
  """The values of one line (no empty strings)."""
  return [t for t in _SEPARATORS.split(line.strip()) if t]


def parse_row(text: str, columns: int, where: str,
              error: type[Exception] = ValueError) -> np.ndarray:
  """[columns] float64 from one line; `error(f"{where}: ...")` when it holds another number of
  values or something that is not a number (NaN and inf are numbers: the caller decides)."""
  fields = split_fields(text)
  if len(fields) != columns:
    raise error(f"{where}: expected {columns} values, got {len(fields)}: {text.strip()!r}")
  try:
    return np.array([float(t) for t in fields], np.float64)
  except ValueError:
    raise error(f"{where}: not a number in {text.strip()!r}") from None


def read_rows(path: str, columns: int = 4, *, blank_lines_absent: bool = False,
              error: type[Exception] = ValueError) -> np.ndarray:
  """[N, columns] float64, row i from line i + 1 of `path`.

  A blank line inside the file is a NaN row with `blank_lines_absent` (ground truth: the target
  is absent in that frame), else `error` naming the line. A missing file is `FileNotFoundError`.
  """
  with open(path, "rb") as f:
    data = f.read()
  return parse_rows(data, path, columns, blank_lines_absent=blank_lines_absent, error=error)


def parse_rows(data: bytes, path: str, columns: int = 4, *, blank_lines_absent: bool = False,
               error: type[Exception] = ValueError) -> np.ndarray:
  """`read_rows` of the bytes of the file `path`, read by the caller (a data set on a bucket is
  read through `data_pipelines/files.py`)."""
  text = data.decode("utf-8-sig", errors="replace")
  lines = text.splitlines()
  while lines and not lines[-1].strip():
    lines.pop()
  regular = _parse_regular(lines, columns)
  if regular is not None:
    return regular
  rows = np.full((len(lines), columns), np.nan, np.float64)
  for i, line in enumerate(lines):
    if split_fields(line):
      rows[i] = parse_row(line, columns, f"{path}:{i + 1}", error)
    elif not blank_lines_absent:
      raise error(f"{path}:{i + 1}: empty line inside the file")
  return rows


def _parse_regular(lines: list[str], columns: int) -> np.ndarray | None:
  """All lines at once through numpy's C parser when every line holds `columns` numbers; None
  sends files with blank lines or bad rows to the line-by-line parser, which knows what a blank
  line means and names a bad one. LaSOT's test ground truth has 685,360 lines."""
  text = _EDGE_COMMAS.sub("", _RUNS.sub(",", "\n".join(lines)))
  if not text or "\n\n" in text or text.startswith("\n") or text.endswith("\n"):
    return None
  try:
    rows = np.loadtxt(io.StringIO(text), delimiter=",", dtype=np.float64, ndmin=2, comments=None)
  except ValueError:
    return None
  return rows if rows.shape == (len(lines), columns) else None
