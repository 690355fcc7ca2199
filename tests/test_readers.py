"""Readers: tiny fixtures in every official layout read back exactly; structural errors name the file."""
import os
import shutil
import time

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
  with pytest.raises(readers.DatasetError, match=r"groundtruth.txt:2: expected 4 values"):
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


def _two_sequences(root):
  for name in ("a", "b"):
    _frames(os.path.join(root, name, "imgs"), 2, width=5)
    _write(os.path.join(root, name, "groundtruth.txt"), "1,1,4,4\n1,1,4,4\n")
    _write(os.path.join(root, name, "language.txt"), f"seq {name}\n")


def test_index_cache_sees_files_edited_in_place(tmp_path):
  # An edit in place changes no folder listing; the cache must still notice it (what `analyze`
  # scores and what training reads). Same sizes: only the mtime tells.
  root = str(tmp_path / "tnl2k")
  _two_sequences(root)
  for annotations_only in (True, False):
    assert readers.load_dataset("tnl2k", root, "train", annotations_only=annotations_only)[0].boxes[1, 0] == 1
  time.sleep(0.05)  # past the file system's timestamp granularity
  _write(os.path.join(root, "a", "groundtruth.txt"), "1,1,4,4\n7,1,4,4\n")
  _write(os.path.join(root, "b", "language.txt"), "seq c\n")
  for annotations_only in (True, False):
    a, b = readers.load_dataset("tnl2k", root, "train", annotations_only=annotations_only)
    assert a.boxes[1, 0] == 7 and b.sentence == "seq c"
  # A file the reader looked for and did not find counts too: a new language file is read.
  os.remove(os.path.join(root, "b", "language.txt"))
  assert readers.load_dataset("tnl2k", root, "train")[1].bad_sentence
  _write(os.path.join(root, "b", "language.txt"), "seq d\n")
  assert readers.load_dataset("tnl2k", root, "train")[1].sentence == "seq d"


def test_unreadable_index_cache_is_rebuilt_with_a_warning(tmp_path, caplog):
  root = str(tmp_path / "tnl2k")
  _two_sequences(root)
  want = readers.load_dataset("tnl2k", root, "train")
  cache = os.path.join(root, ".satracker_index_tnl2k_train.npz")
  with open(cache, "r+b") as f:  # torn: what a reader saw when two processes shared a temp file
    f.truncate(os.path.getsize(cache) // 2)
  with caplog.at_level("WARNING", logger="data_pipelines.readers"):
    got = readers.load_dataset("tnl2k", root, "train")
  assert [s.name for s in got] == [s.name for s in want]
  assert f"{cache}: index cache unreadable (BadZipFile" in caplog.text
  caplog.clear()
  readers.load_dataset("tnl2k", root, "train")  # rewritten whole: read without a warning
  assert not caplog.text


def test_index_cache_writer_leaves_other_writers_temp_files_alone(tmp_path):
  # Every training process of a run indexes the same root at start. Another process's file in
  # flight (here under the name all of them used to share) must be neither overwritten nor
  # renamed over the cache; ours is written under a name of its own and leaves nothing behind.
  root = str(tmp_path / "tnl2k")
  _two_sequences(root)
  cache = os.path.join(root, ".satracker_index_tnl2k_train.npz")
  _write(cache + ".tmp.npz", "another process, half way through")
  readers.load_dataset("tnl2k", root, "train")
  with open(cache + ".tmp.npz") as f:
    assert f.read() == "another process, half way through"
  assert sorted(n for n in os.listdir(root) if n.startswith(".satracker")) == [
      ".satracker_index_tnl2k_train.npz", ".satracker_index_tnl2k_train.npz.tmp.npz"]
  assert [s.name for s in readers.load_dataset("tnl2k", root, "train")] == ["a", "b"]


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


# ---------------------------------------------------------------------------------------------
# Annotation-only reading (what `satracker analyze` needs), OTB-2015, split folders.


def test_lasot_without_image_folders_reads_annotations_only(tmp_path):
  root = str(tmp_path / "lasot")
  _lasot(root)
  for name in ("airplane-1", "airplane-2"):
    shutil.rmtree(os.path.join(root, "airplane", name, "img"))
  with pytest.raises(readers.DatasetError, match="img: folder missing"):
    readers.load_dataset("lasot", root, "test", use_cache=False)  # tracking needs the frames
  (s,) = readers.load_dataset("lasot", root, "test", annotations_only=True)
  assert s.name == "airplane-1" and s.frames == [] and len(s) == 3
  np.testing.assert_array_equal(s.visible, [True, False, False])
  np.testing.assert_array_equal(s.boxes[2], [9, 10, 11, 12])


def _lasot_pack(root):
  # The LaSOT evaluation toolkit's layout: annos/<seq>.txt, annos/absent/<seq>.txt, testing_set.txt.
  _write(os.path.join(root, "testing_set.txt"), "bird-2\r\nairplane-1\r\n")
  _write(os.path.join(root, "annos", "airplane-1.txt"), "1,2,3,4\n5,6,7,8\n9,10,11,12")
  _write(os.path.join(root, "annos", "absent", "airplane-1.txt"), "0\n1\n0\n")
  _write(os.path.join(root, "annos", "bird-2.txt"), "1,1,5,5\n1,1,5,5\n")
  _write(os.path.join(root, "annos", "absent", "bird-2.txt"), "0\n0\n")
  _write(os.path.join(root, "annos", "cat-1.txt"), "1,1,5,5\n")  # not in testing_set.txt
  _write(os.path.join(root, "annos", "absent", "cat-1.txt"), "1\n")


def test_lasot_toolkit_annotation_pack(tmp_path):
  from satracker_jax.evaluation import metrics
  root = str(tmp_path / "LaSOT_Evaluation_Toolkit")
  _lasot_pack(root)
  seqs = readers.load_dataset("lasot", root, "test", annotations_only=True)
  assert [s.name for s in seqs] == ["airplane-1", "bird-2"]  # LaSOT order: class, then number
  a = seqs[0]
  np.testing.assert_array_equal(a.absent, [False, True, False])
  np.testing.assert_array_equal(a.visible, [True, False, True])
  # The metrics read the absent flags as LaSOT's "target not visible".
  np.testing.assert_array_equal(metrics.target_visible_of(a, "lasot"), [True, False, True])
  assert [s.name for s in readers.load_dataset("lasot", root, "all", annotations_only=True)] == [
      "airplane-1", "bird-2", "cat-1"]
  # A pack holds no frames: tracking it is a clear error, not a crash later.
  with pytest.raises(readers.DatasetError, match="annotation pack holds no frames"):
    readers.load_dataset("lasot", root, "test", use_cache=False)
  # A missing absent file would silently change LaSOT scores: refused, naming the file.
  os.remove(os.path.join(root, "annos", "absent", "bird-2.txt"))
  with pytest.raises(readers.DatasetError, match=r"absent[/\\]bird-2.txt"):
    readers.load_dataset("lasot", root, "test", annotations_only=True, use_cache=False)


def _tnl2k_pack(root):
  # The TNL2K toolkit's annos.tar.gz unpacked, plus its sequence_evaluation_config/.
  _write(os.path.join(root, "sequence_evaluation_config", "TNL2K_testing_set.txt"), "seqB\nseqA\n")
  _write(os.path.join(root, "annos", "gt_rect", "seqA.txt"), "1,2,3,4\n0,0,0,0\n5,6,7,8\n")
  _write(os.path.join(root, "annos", "absent", "seqA.txt"), "0\n1\n0\n0\n")  # one extra 0
  _write(os.path.join(root, "annos", "att", "seqA_attribute.txt"), "1\r\n0\r\n1\r\n")
  _write(os.path.join(root, "annos", "gt_rect", "seqB.txt"), "1,1,5,5\n1,1,5,5\n")
  _write(os.path.join(root, "annos", "gt_rect", "seqC.txt"), "1,1,5,5\n")  # not in the test list


def test_tnl2k_toolkit_annotation_pack(tmp_path):
  root = str(tmp_path / "TNL2K_evaluation_toolkit")
  _tnl2k_pack(root)
  for _ in range(2):  # the second load comes from the index cache
    b, a = readers.load_dataset("tnl2k", root, "test", annotations_only=True)
    assert [b.name, a.name] == ["seqB", "seqA"]  # the list's order, seqC left out
    assert a.frames == [] and a.sentence == "" and len(a) == 3
    np.testing.assert_array_equal(a.absent, [False, True, False])  # trailing extra 0 ignored
    np.testing.assert_array_equal(a.visible, [True, False, True])
    np.testing.assert_array_equal(a.boxes[1], [0, 0, 0, 0])  # absent rows stay 0,0,0,0
    np.testing.assert_array_equal(a.attributes, [1, 0, 1])
    # No absent / attribute file: None, so tnl2k-matlab can say it counted every frame as present.
    assert b.absent is None and b.attributes is None
  # A pack holds no frames: tracking it is a clear error.
  with pytest.raises(readers.DatasetError, match="annotation pack holds no frames"):
    readers.load_dataset("tnl2k", root, "test", use_cache=False)
  with pytest.raises(readers.DatasetError, match="test split only"):
    readers.load_dataset("tnl2k", root, "train", annotations_only=True, use_cache=False)
  # An absent file whose extra rows are not 0, or a listed sequence without ground truth: named.
  _write(os.path.join(root, "annos", "absent", "seqA.txt"), "0\n1\n0\n1\n")
  with pytest.raises(readers.DatasetError, match=r"absent[/\\]seqA.txt: 4 flags for 3 frames"):
    readers.load_dataset("tnl2k", root, "test", annotations_only=True, use_cache=False)
  os.remove(os.path.join(root, "annos", "absent", "seqA.txt"))
  os.remove(os.path.join(root, "annos", "gt_rect", "seqB.txt"))
  with pytest.raises(readers.DatasetError, match=r"gt_rect[/\\]seqB.txt: groundtruth file missing"):
    readers.load_dataset("tnl2k", root, "test", annotations_only=True, use_cache=False)


def test_tnl2k_without_image_folders(tmp_path):
  root = str(tmp_path / "TNL2K_test")
  _write(os.path.join(root, "seqA", "groundtruth.txt"), "1,1,4,4\r\n2,2,4,4\r\n")
  _write(os.path.join(root, "seqA", "language.txt"), "the red car\n")
  os.makedirs(os.path.join(root, "not_a_sequence"))
  (s,) = readers.load_dataset("tnl2k", root, annotations_only=True)
  assert (s.name, s.sentence, s.frames, len(s)) == ("seqA", "the red car", [], 2)


def _otb_video(root, video, boxes, n_images=None, start=1, width=4, gt="groundtruth_rect.txt", sep=","):
  d = os.path.join(root, video)
  if n_images:
    _frames(os.path.join(d, "img"), n_images, start=start, width=width)
  _write(os.path.join(d, gt), "\r\n".join(sep.join(str(v) for v in b) for b in boxes))


def _otb_full(root, with_images=True):
  """All 100 OTB-2015 videos, 2-7 boxes each; the quirky ones laid out as in the official zips."""
  from data_pipelines import otb_sequences
  box = (1, 1, 4, 4)
  done = set()
  for name in otb_sequences.SEQUENCES:
    video, target = otb_sequences.video_and_target(name)
    gt = f"groundtruth_rect.{target}.txt" if target else "groundtruth_rect.txt"
    if video == "Tiger1":  # 7 annotated frames, results omit the first 5
      boxes = [(i, 1, 4, 4) for i in range(7)]
      _otb_video(root, video, boxes, with_images and 7, sep="\t")
    elif video == "David":  # annotation starts at image 300 (the folder has earlier images)
      _otb_video(root, video, [box, box, box], with_images and 5, start=298)
      assert otb_sequences.START_FRAME[video] == 300
    elif video == "Board":  # 5-digit image names
      _otb_video(root, video, [box, box], with_images and 2, width=5)
    elif video == "Diving":  # more images than boxes: the extra ones are unused
      _otb_video(root, video, [box, box], with_images and 4)
    elif video in otb_sequences.START_FRAME:  # BlurCar1 starts at image 247, ...
      start = otb_sequences.START_FRAME[video]
      _otb_video(root, video, [box, box], with_images and 2, start=start)
    else:
      _otb_video(root, video, [box, box], with_images and video not in done and 2, gt=gt)
    done.add(video)


def test_otb_official_layout_with_frame_ranges(tmp_path):
  root = str(tmp_path / "OTB100")
  _otb_full(root)
  seqs = {s.name: s for s in readers.load_dataset("otb", root)}
  assert len(seqs) == 100
  tiger = seqs["Tiger1"]
  # pytracking's initOmit: GT rows [5:], tracking from image 6.
  assert len(tiger) == 2 and tiger.frames[0].endswith(os.path.join("Tiger1", "img", "0006.jpg"))
  np.testing.assert_array_equal(tiger.boxes[:, 0], [5, 6])
  assert seqs["David"].frames[0].endswith(os.path.join("David", "img", "0300.jpg"))
  assert seqs["BlurCar1"].frames[0].endswith(os.path.join("BlurCar1", "img", "0247.jpg"))
  assert seqs["Board"].frames[1].endswith("00002.jpg")
  assert len(seqs["Diving"].frames) == 2
  assert seqs["Jogging_2"].frames[0].endswith(os.path.join("Jogging", "img", "0001.jpg"))
  assert seqs["Human4_2"].sentence == "person" and seqs["Biker"].sentence == "person head"
  # Annotation-only reading needs no image folder at all.
  bare = str(tmp_path / "OTB100_annotations")
  _otb_full(bare, with_images=False)
  again = {s.name: s for s in readers.load_dataset("otb", bare, annotations_only=True)}
  np.testing.assert_array_equal(again["Tiger1"].boxes, tiger.boxes)
  assert again["David"].frames == []


def test_otb_toolkit_anno_pack_accepts_both_spellings(tmp_path):
  from data_pipelines import otb_sequences
  root = str(tmp_path / "otb_toolkit")
  for name in otb_sequences.SEQUENCES:
    video, target = otb_sequences.video_and_target(name)
    # The OTB toolkit spells multi-target sequences Jogging-1; pytracking Jogging_1.
    stem = f"{video}-{target}" if target and video == "Jogging" else name
    rows = 8 if name == "Tiger1" else 3
    _write(os.path.join(root, "anno", f"{stem}.txt"), "".join(f"{i},2,3,4\n" for i in range(rows)))
  seqs = {s.name: s for s in readers.load_dataset("otb", root, annotations_only=True)}
  assert len(seqs) == 100 and len(seqs["Jogging_1"]) == 3
  np.testing.assert_array_equal(seqs["Tiger1"].boxes[:, 0], [5, 6, 7])
  os.remove(os.path.join(root, "anno", "Woman.txt"))
  with pytest.raises(readers.DatasetError, match=r"Woman.txt: groundtruth file missing"):
    readers.load_dataset("otb", root, annotations_only=True)
  with pytest.raises(readers.DatasetError, match="one split"):
    readers.load_dataset("otb", root, "train", annotations_only=True)


def test_split_folders_say_which_splits_exist(tmp_path):
  root = str(tmp_path / "synth")
  for split, name in (("train", "s0"), ("train", "s1"), ("test", "s2")):
    d = os.path.join(root, split, name)
    _frames(os.path.join(d, "imgs"), 2, width=5)
    _write(os.path.join(d, "groundtruth.txt"), "1,1,4,4\n1,1,4,4\n")
    _write(os.path.join(d, "language.txt"), f"seq {name}\n")
  for dataset in ("tnl2k", "synthetic"):
    assert [s.name for s in readers.load_dataset(dataset, root)] == ["s2"]  # default split: test
    assert [s.name for s in readers.load_dataset(dataset, root, "train")] == ["s0", "s1"]
    assert [s.name for s in readers.load_dataset(dataset, root, "all")] == ["s0", "s1", "s2"]
    with pytest.raises(readers.DatasetError, match=r"train/, test/ but no val/"):
      readers.load_dataset(dataset, root, "val")


def test_synth_output_is_read_as_written_by_every_verb(tmp_path, capsys):
  """`satracker synth --out DIR` with its defaults, then the verbs that take --dataset tnl2k /
  synthetic with their default splits (eval and analyze: test; training: train; track: one
  sequence folder)."""
  from satracker_jax import cli, track_video
  out = str(tmp_path / "DIR")
  assert cli.main(["synth", "--out", out, "--sequences", "3", "--frames", "3", "--size", "48x40",
                   "--no-progress"]) == 0
  assert sorted(os.listdir(out)) == ["meta.json", "test", "train", "vocab.txt"]
  for dataset in ("tnl2k", "synthetic"):
    test = readers.load_dataset(dataset, out)  # eval's and analyze's default split
    assert [s.name for s in test] == ["synth_00002"] and len(test[0].frames) == 3
    assert [s.name for s in readers.load_dataset(dataset, out, "train")] == ["synth_00000", "synth_00001"]
  # analyze, end to end, on what synth wrote (a perfect tracker: AUC 20/21).
  from satracker_jax.evaluation import results_io
  results = str(tmp_path / "perfect")
  results_io.write_results(results, "synth_00002", test[0].boxes)
  assert cli.main(["analyze", "--dataset", "synthetic", "--root", out, "--results", f"p={results}",
                   "--out", str(tmp_path / "report")]) == 0
  assert "95.24" in capsys.readouterr().out
  # track on a sequence folder takes its frames, first box and sentence.
  frames, box, sentence, _ = track_video.read_frame_folder(os.path.join(out, "test", "synth_00002"))
  assert len(frames) == 3 and sentence == test[0].sentence
  np.testing.assert_array_equal(box, test[0].boxes[0])


def test_a_root_of_another_data_set_gets_no_index_file(tmp_path):
  """A mistaken --dataset / --root / --split fails without leaving an index in the user's folder."""
  root = tmp_path / "not_lasot"
  (root / "some_video").mkdir(parents=True)
  for kwargs in ({}, {"annotations_only": True}):
    with pytest.raises(readers.DatasetError, match="no lasot sequences"):
      readers.load_dataset("lasot", str(root), **kwargs)
  assert sorted(os.listdir(root)) == ["some_video"]
