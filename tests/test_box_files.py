"""The one box-file parser (`satracker_jax.box_files`): the format every caller accepts, what a
blank line means, errors naming the file and line, and the callers reading a file alike."""
import os

import numpy as np
import pytest

from satracker_jax import box_files

ROWS = np.array([[1, 2, 3, 4], [5.5, 6, 7, 8], [9, 10, 11, 12.25], [-1, 0, 1e3, 2]], np.float64)


@pytest.mark.parametrize("text", [
    "1\t2\t3\t4\n5.5\t6\t7\t8\n9\t10\t11\t12.25\n-1\t0\t1000\t2\n",      # pytracking / OSTrack
    "1,2,3,4\r\n5.5,6,7,8\r\n9,10,11,12.25\r\n-1,0,1e3,2",              # LaSOT, CRLF, no final newline
    "\ufeff1, 2, 3, 4\n5.5 6 7 8\n9,\t10 ,11,12.25\n-1 0 1000 2\n\n \n",  # BOM, mixed, trailing blanks
])
def test_every_separator_mix_reads_the_same(tmp_path, text):
  path = tmp_path / "boxes.txt"
  path.write_bytes(text.encode("utf-8"))
  np.testing.assert_array_equal(box_files.read_rows(str(path), 4), ROWS)


def test_blank_line_inside_is_absent_or_an_error(tmp_path):
  path = tmp_path / "gt.txt"
  path.write_text("1,2,3,4\n\nNaN,NaN,NaN,NaN\n5,6,7,8\n")
  rows = box_files.read_rows(str(path), 4, blank_lines_absent=True)
  assert rows.shape == (4, 4) and np.isnan(rows[1:3]).all()
  np.testing.assert_array_equal(rows[[0, 3]], [[1, 2, 3, 4], [5, 6, 7, 8]])
  with pytest.raises(ValueError, match=f"{path}:2: empty line inside the file"):
    box_files.read_rows(str(path), 4)


class Custom(ValueError):
  pass


@pytest.mark.parametrize("line, message", [
    ("1,2,3", "expected 4 values, got 3"),
    ("1,2,three,4", "not a number in '1,2,three,4'"),
])
def test_bad_lines_are_the_callers_error_naming_file_and_line(tmp_path, line, message):
  path = tmp_path / "gt.txt"
  path.write_text(f"1,2,3,4\n\n{line}\n")
  with pytest.raises(Custom, match=f"gt.txt:3: {message}"):
    box_files.read_rows(str(path), 4, blank_lines_absent=True, error=Custom)


def test_one_column_and_one_line():
  np.testing.assert_array_equal(box_files.parse_row(" 10,\t20 30 , 40 ", 4, "--box"), [10, 20, 30, 40])
  with pytest.raises(ValueError, match="--box: expected 4 values, got 2"):
    box_files.parse_row("10 20", 4, "--box")


def test_fast_and_line_by_line_parsers_agree(tmp_path):
  # A blank line sends the whole file down the line-by-line path; the rows around it must be the
  # ones numpy's parser gives the same lines.
  rng = np.random.default_rng(0)
  rows = np.round(rng.uniform(-100, 1000, (50, 4)), 4)
  lines = ["\t".join(f"{v:g}" for v in r) for r in rows]
  fast, slow = tmp_path / "fast.txt", tmp_path / "slow.txt"
  fast.write_text("\n".join(lines) + "\n")
  slow.write_text("\n".join(lines[:25] + [""] + lines[25:]) + "\n")
  a = box_files.read_rows(str(fast), 4)
  b = box_files.read_rows(str(slow), 4, blank_lines_absent=True)
  np.testing.assert_array_equal(a, np.delete(b, 25, axis=0))


def test_every_caller_reads_a_box_file_alike(tmp_path):
  """Ground truth (data sets), raw results (scoring) and `satracker track`'s frame folder go
  through the one parser: the same file gives the same boxes."""
  from PIL import Image
  from data_pipelines import readers
  from satracker_jax import track_video
  from satracker_jax.evaluation import results_io
  folder = tmp_path / "seq"
  os.makedirs(folder / "imgs")
  for i in range(4):
    Image.new("RGB", (8, 8)).save(folder / "imgs" / f"{i + 1:05d}.png")
  (folder / "groundtruth.txt").write_text("1\t2\t3\t4\n5.5,6,7,8\n9 10 11 12.25\n-1, 0, 1e3, 2\n")
  path = str(folder / "groundtruth.txt")
  _, first, _, gts = track_video.read_frame_folder(str(folder))
  for boxes in (readers.read_boxes(path), results_io.read_boxes(path), gts):
    np.testing.assert_array_equal(boxes, ROWS)
  np.testing.assert_array_equal(first, ROWS[0])
  np.testing.assert_array_equal(track_video.parse_box("1\t2, 3 4", "--box"), ROWS[0])
