"""Readers: tiny fixtures in every official layout read back exactly; structural errors name the file."""
import os

import numpy as np
import pytest
from PIL import Image

from data_pipelines import readers

NAN = float("nan")


def _frames(folder, n, start=1, width=8, ext=".jpg"):
  os.makedirs(folder, exist_ok=True)
  for i in range(start, start + n):
    Image.new("RGB", (16, 12), (i * 20, 0, 0)).save(os.path.join(folder, f"{i:0{width}d}{ext}"))


def _write(path, text, mode="w"):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, mode) as f:
    f.write(text)


def _lasot(root):
  # airplane-1 is in the official test split, airplane-2 is not.
  for name, sentence in (("airplane-1", "White Airplane flying\nsecond line"), ("airplane-2", "")):
    d = os.path.join(root, "airplane", name)
    _frames(os.path.join(d, "img"), 3)
    _write(os.path.join(d, "groundtruth.txt"), "1,2,3,4\n5,6,7,8\n9,10,11,12\n")
    _write(os.path.join(d, "nlp.txt"), sentence)
    _write(os.path.join(d, "full_occlusion.txt"), "0,1,0")
    _write(os.path.join(d, "out_of_view.txt"), "0,0,1")


def test_lasot_split_flags_and_sentence(tmp_path):
  root = str(tmp_path / "lasot")
  _lasot(root)
  test = readers.load_dataset("lasot", root, "test")
  assert [s.name for s in test] == ["airplane-1"]
  s = test[0]
  assert s.sentence == "white airplane flying" and not s.bad_sentence
  assert s.frames[2] == os.path.join(root, "airplane", "airplane-1", "img", "00000003.jpg")
  np.testing.assert_array_equal(s.boxes[1], [5, 6, 7, 8])
  np.testing.assert_array_equal(s.full_occlusion, [False, True, False])
  np.testing.assert_array_equal(s.out_of_view, [False, False, True])
  np.testing.assert_array_equal(s.visible, [True, False, False])
  train = readers.load_dataset("lasot", root, "train")
  assert [t.name for t in train] == ["airplane-2"] and train[0].bad_sentence and train[0].sentence == ""
  # A testing_set.txt at the root overrides the embedded official list.
  _write(os.path.join(root, "testing_set.txt"), "airplane-2\n")
  assert [t.name for t in readers.load_dataset("lasot", root, "test")] == ["airplane-2"]


def test_official_lasot_test_split_has_280_sequences():
  from data_pipelines.lasot_split import lasot_test_sequences
  names = lasot_test_sequences()
  assert len(names) == 280 and len({n.rsplit("-", 1)[0] for n in names}) == 70


def test_tnl2k_bad_sentences_absent_boxes_and_png(tmp_path):
  root = str(tmp_path / "tnl2k")
  cases = {"seqA": (b"The RED car\n", "1,1,4,4\nNaN,NaN,NaN,NaN\n\n0,0,0,3\n"),
           "seqB": (b"caf\xe9 latin-1\n", "1 1 4 4\n1 1 4 4\n1 1 4 4\n1 1 4 4"),
           "seqC": (b"\n", "1,1,4,4\n1,1,4,4\n1,1,4,4\n1,1,4,4\n")}
  for name, (sentence, gt) in cases.items():
    d = os.path.join(root, name)
    _frames(os.path.join(d, "imgs"), 4, width=5, ext=".png")
    _write(os.path.join(d, "language.txt"), sentence, "wb")
    _write(os.path.join(d, "groundtruth.txt"), gt)
  seqs = {s.name: s for s in readers.load_dataset("tnl2k", root, "test")}
  a, b, c = seqs["seqA"], seqs["seqB"], seqs["seqC"]
  assert a.sentence == "the red car" and not a.bad_sentence
  np.testing.assert_array_equal(a.visible, [True, False, False, False])  # NaN, empty, zero-width
  assert np.isnan(a.boxes[2]).all()
  assert a.frames[0].endswith(os.path.join("seqA", "imgs", "00001.png"))
  assert (b.sentence, b.bad_sentence) == ("", True)  # not UTF-8: kept, marked
  assert (c.sentence, c.bad_sentence) == ("", True)  # empty
  assert b.visible.all()


def test_otb99_lang_tab_separated_and_split(tmp_path):
  root = str(tmp_path / "otb")
  for name in ("Biker", "Jogging"):
    _frames(os.path.join(root, "OTB_videos", name, "img"), 3, width=4)
  _write(os.path.join(root, "OTB_videos", "Biker", "groundtruth_rect.txt"), "1\t2\t3\t4\n2\t3\t4\t5\n3\t4\t5\t6\n")
  _write(os.path.join(root, "OTB_videos", "Jogging", "groundtruth_rect.1.txt"), "1,1,5,5\n1,1,5,5\n1,1,5,5\n")
  _write(os.path.join(root, "OTB_query_test", "Biker.txt"), "The man riding a bike\n")
  _write(os.path.join(root, "OTB_query_train", "Jogging-1.txt"), "a woman jogging on the left\n")
  test = readers.load_dataset("otb99_lang", root, "test")
  assert [s.name for s in test] == ["Biker"]
  np.testing.assert_array_equal(test[0].boxes[2], [3, 4, 5, 6])
  assert test[0].sentence == "the man riding a bike"
  train = readers.load_dataset("otb99_lang", root, "train")
  assert train[0].name == "Jogging-1" and train[0].frames[0].endswith(os.path.join("Jogging", "img", "0001.jpg"))


def test_got10k_class_name_and_absence(tmp_path):
  root = str(tmp_path / "got")
  d = os.path.join(root, "train", "GOT-10k_Train_000001")
  _frames(d, 3)
  _write(os.path.join(d, "groundtruth.txt"), "1,1,4,4\n1,1,4,4\n1,1,4,4\n")
  _write(os.path.join(d, "absence.label"), "0\n1\n0\n")
  _write(os.path.join(d, "meta_info.ini"), "[METAINFO]\nurl: x\nobject_class: Ball\nmotion_class: rolling\n")
  (s,) = readers.load_dataset("got10k", root, "train")
  assert s.sentence == "ball"
  np.testing.assert_array_equal(s.visible, [True, False, True])


def test_structural_errors_name_the_file(tmp_path):
  root = str(tmp_path / "tnl2k")
  d = os.path.join(root, "seq")
  _frames(os.path.join(d, "imgs"), 3, width=5)
  _write(os.path.join(d, "language.txt"), "x\n")
  with pytest.raises(readers.DatasetError, match="groundtruth.txt: groundtruth file missing"):
    readers.load_dataset("tnl2k", root, "test", use_cache=False)
  _write(os.path.join(d, "groundtruth.txt"), "1,1,4,4\n1,1,4,4\n")
  with pytest.raises(readers.DatasetError, match=r"groundtruth.txt: 2 boxes but .*imgs"):
    readers.load_dataset("tnl2k", root, "test", use_cache=False)
  _write(os.path.join(d, "groundtruth.txt"), "1,1,4,4\n1,1,4\n1,1,4,4\n")
  with pytest.raises(readers.DatasetError, match=r"groundtruth.txt:2: expected 4 numbers"):
    readers.load_dataset("tnl2k", root, "test", use_cache=False)


def test_index_cache_reused_and_invalidated(tmp_path, monkeypatch):
  root = str(tmp_path / "tnl2k")
  for name in ("a", "b"):
    _frames(os.path.join(root, name, "imgs"), 2, width=5)
    _write(os.path.join(root, name, "groundtruth.txt"), "1,1,4,4\n1,1,4,4\n")
    _write(os.path.join(root, name, "language.txt"), f"seq {name}\n")
  first = readers.load_dataset("tnl2k", root, "train")
  assert os.path.isfile(os.path.join(root, ".satracker_index_tnl2k_train.npz"))
  calls = []
  real = readers._SCANNERS["tnl2k"]
  monkeypatch.setitem(readers._SCANNERS, "tnl2k", lambda *a: calls.append(1) or real(*a))
  again = readers.load_dataset("tnl2k", root, "train")
  assert not calls  # served from the cache
  assert [s.frames for s in again] == [s.frames for s in first]
  np.testing.assert_array_equal(again[1].boxes, first[1].boxes)
  # A new sequence changes the root's listing: the index is rebuilt.
  _frames(os.path.join(root, "c", "imgs"), 1, width=5)
  _write(os.path.join(root, "c", "groundtruth.txt"), "1,1,4,4\n")
  _write(os.path.join(root, "c", "language.txt"), "seq c\n")
  assert [s.name for s in readers.load_dataset("tnl2k", root, "train")] == ["a", "b", "c"] and calls
  # A separate cache_dir works too.
  cache = str(tmp_path / "cache")
  readers.load_dataset("tnl2k", root, "train", cache_dir=cache)
  assert len(os.listdir(cache)) == 1


def test_missing_first_frame_is_content_not_structure(tmp_path):
  root = str(tmp_path / "tnl2k")
  d = os.path.join(root, "seq")
  _frames(os.path.join(d, "imgs"), 3, width=5)
  os.remove(os.path.join(d, "imgs", "00001.jpg"))
  _write(os.path.join(d, "groundtruth.txt"), "1,1,4,4\n1,1,4,4\n1,1,4,4\n")
  _write(os.path.join(d, "language.txt"), "x\n")
  (s,) = readers.load_dataset("tnl2k", root, "test", use_cache=False)
  assert s.frames[0].endswith("00001.jpg") and not os.path.exists(s.frames[0])


def test_readers_and_generator_do_not_import_tensorflow():
  import subprocess
  import sys
  code = ("import sys; import data_pipelines.readers, data_pipelines.synthetic, "
          "data_pipelines.processing; sys.exit('tensorflow' in sys.modules)")
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  assert subprocess.run([sys.executable, "-c", code], cwd=root).returncode == 0
