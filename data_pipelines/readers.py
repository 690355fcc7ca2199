"""Tracking data sets on disk -> `Sequence` records. No TensorFlow here for local data: eval and the
tracker use it.

    sequences = load_dataset("lasot", "/data/LaSOT", "test")
    sequences = load_dataset("otb", "/data/OTB100", annotations_only=True)   # scoring: no frames
    sequences = load_dataset("lasot", "gs://bucket/LaSOT", "train")         # frames are URLs too

A root may be a bucket URL: every file call goes through `data_pipelines/files.py` (local paths
through `os` as before, URLs through `tf.io.gfile`, TensorFlow imported only then), and the
sequences' frames are URLs, which the tf.data sampler reads (`tf.io.read_file`).

Layouts (first line of the language file, lower-cased and stripped, is the sentence):
  lasot       <class>/<class>-N/{img/%08d.jpg, groundtruth.txt, nlp.txt, full_occlusion.txt,
              out_of_view.txt}; split test = the official 280 sequences (or the names in a
              `testing_set.txt` at the root when present), train = the rest, all = everything.
              Or the LaSOT evaluation toolkit's annotation pack: annos/<seq>.txt,
              annos/absent/<seq>.txt (1 = target absent) and testing_set.txt (no frames, no
              sentences: for scoring only).
  tnl2k       [<split>/]<seq>/{imgs/*.jpg|png, groundtruth.txt, language.txt}; a root holding
              split folders (train/, test/, val/) is read from <root>/<split> (all = every one).
              Or the TNL2K evaluation toolkit's annotation pack (its annos.tar.gz unpacked):
              annos/gt_rect/<seq>.txt, annos/absent/<seq>.txt (1 = absent; optional),
              annos/att/<seq>_attribute.txt (17 flags; optional) and
              sequence_evaluation_config/TNL2K_testing_set.txt (no frames, no sentences: scoring).
  synthetic   same as tnl2k (written by `satracker synth`: `<root>/train/<seq>`, `<root>/test/<seq>`)
  otb         OTB-2015, 100 sequences (data_pipelines/otb_sequences.py): the official
              <Video>/{img/%04d.jpg, groundtruth_rect[.k].txt}, or the OTB toolkit's annotation
              pack anno/<seq>.txt (for scoring only); pytracking's frame ranges (Tiger1's first
              5 frames are not scored); the object class stands in for the sentence. One split: test.
  otb99_lang  OTB_videos/<seq>/{img/*.jpg, groundtruth_rect.txt}, OTB_query_<split>/<seq>.txt
  got10k      <split>/<seq>/{%08d.jpg, groundtruth.txt, absence.label, meta_info.ini};
              the sentence is meta_info's `object_class`.

Boxes are pixel x,y,w,h, one line per frame, separated by commas, tabs or spaces (mixed within a
file too; CRLF endings and a missing final newline are fine); an empty or NaN line means
"absent". A frame is visible when its box is finite with w > 0 and h > 0 (LaSOT: and not fully
occluded and not out of view / not absent; GOT-10k: and not marked absent).

`annotations_only=True` (what `satracker analyze` uses) never looks at image folders: scoring
needs the boxes only, so full data sets without their frames and the toolkits' annotation packs
both work, and nothing lists LaSOT's 685,360 test images. Sequences then have `frames == []`.

Bad *content* never raises, so one broken file cannot stop a training run: a language file that is
not UTF-8 (or an empty one) gives sentence "" and `bad_sentence=True`; a missing or corrupt image is
found when it is decoded. *Structural* problems raise `DatasetError` naming the file: a missing
groundtruth file or image folder, unparsable box lines, box and frame counts that disagree.

Frames with numeric names are indexed by number, so a single missing frame inside a sequence is
content (the sampler replaces it), while a sequence whose last frame number disagrees with its box
count is structural.

The index (names, frame naming, boxes, sentences) is cached on first read in an .npz beside the
root (or in `cache_dir`; for a bucket root in `default_url_cache_dir()`, a local folder, when
`cache_dir` is empty) and rebuilt when the listing of the root or of its sequence folders
changes (names or mtimes), when any annotation, flag or sentence file it read changes (size or
mtime; a file it looked for and did not find appears), or when this reader's version changes.
A bucket has no folder mtimes: there the listings count by their names only, so frames replaced
in place under the same names are not noticed (annotation files still are, by size and mtime).
Each process writes its own temporary file and renames it over the cache (atomic: a reader sees
the old index or the new one, never a torn one); a cache that cannot be read is rebuilt, with a
warning.
"""
from __future__ import annotations

import contextvars
import dataclasses
import hashlib
import json
import logging
import math
import os
import re
import tempfile
import zipfile
from typing import Callable, Optional

import numpy as np

from data_pipelines import files, otb_sequences
from data_pipelines.lasot_split import lasot_test_sequences
from satracker_jax import box_files

IMAGE_EXTS = (".jpg", ".jpeg", ".png")
DATASETS = ("lasot", "tnl2k", "otb", "otb99_lang", "got10k", "synthetic")
# 2: annotation-only indexes, OTB-2015, LaSOT toolkit packs, absent flags; 3: single_frame;
# 4: TNL2K toolkit packs, sequence attributes; 5: the index records the state of every file it read
READER_VERSION = 5
_CACHE_PREFIX = ".satracker_index_"
# Folder names that mark a TNL2K-layout root holding one sub-folder per split.
SPLIT_FOLDERS = ("train", "test", "val")


log = logging.getLogger(__name__)


class DatasetError(ValueError):
  """A structural problem in a data set folder; the message names the file."""


# The files a scan reads (or looks for) and their (size, mtime_ns) just before it reads them,
# collected while `load_dataset` scans: the index cache is valid only while each is as it was.
_FILES_READ: contextvars.ContextVar[Optional[dict]] = contextvars.ContextVar("files_read", default=None)


def _note_read(path: str) -> None:
  read = _FILES_READ.get()
  if read is not None and path not in read:
    read[path] = files.states([path])[0]  # missing: [-1, 0], its appearance changes the data set too


@dataclasses.dataclass
class Sequence:
  name: str
  dataset: str
  frames: list[str]     # absolute paths, one per box
  boxes: np.ndarray     # [N, 4] float64 pixel x,y,w,h; NaN = absent
  visible: np.ndarray   # [N] bool
  sentence: str
  full_occlusion: Optional[np.ndarray] = None  # [N] bool, LaSOT only
  out_of_view: Optional[np.ndarray] = None     # [N] bool, LaSOT only
  bad_sentence: bool = False  # undecodable or empty language file: training replaces its samples
  sentence_file: str = ""  # the language file behind bad_sentence (eval re-reads and names it)
  absent: Optional[np.ndarray] = None  # [N] bool: LaSOT toolkit's absent flags, GOT-10k's absence.label
  # The sentence picks the target out of one frame (grounding, the `nl` protocol, can be trained
  # and scored on it). False only where a data set says so: synthetic `direction` videos, whose
  # sentence ("... moving left") needs motion (attributes.json `single_frame`).
  single_frame: bool = True
  # [K] int per-sequence attribute flags where the data set has them (TNL2K pack: annos/att/).
  attributes: Optional[np.ndarray] = None

  def __len__(self) -> int:
    # One box per frame; counted from the boxes so annotation-only sequences (no frames) work too.
    return len(self.boxes)


# ---------------------------------------------------------------------------------------------
# Parsing helpers.


def read_boxes(path: str) -> np.ndarray:
  """[N, 4] float64 from a groundtruth file; empty / NaN lines become NaN rows
  (`satracker_jax.box_files`, the one box-file parser)."""
  _note_read(path)
  if not files.isfile(path):
    raise DatasetError(f"{path}: groundtruth file missing")
  return box_files.parse_rows(files.read_bytes(path), path, 4, blank_lines_absent=True,
                              error=DatasetError)


def box_visible(boxes: np.ndarray) -> np.ndarray:
  with np.errstate(invalid="ignore"):
    return np.isfinite(boxes).all(axis=1) & (boxes[:, 2] > 0) & (boxes[:, 3] > 0)


def read_sentence(path: str) -> tuple[str, str]:
  """(sentence, bad): first line, lower-cased, stripped; ("", path) if missing, empty or not UTF-8.
  `bad` is the file's path rather than True so the index keeps which file it was (evaluation
  decodes it with replacement characters and names it); "" when the sentence is fine."""
  from satracker_jax.tokenizer import decode_sentence_bytes  # noqa: PLC0415  (numpy-only module)
  _note_read(path)
  if not files.isfile(path):
    return "", path
  data = files.read_bytes(path)
  try:
    text = decode_sentence_bytes(data, path)
  except ValueError:
    return "", path
  lines = text.splitlines()
  sentence = lines[0].strip().lower() if lines else ""
  return sentence, "" if sentence else path


def _read_flags(path: str, n: int, extra_zeros: bool = False) -> np.ndarray:
  """LaSOT occlusion / out-of-view flags: 0/1 separated by commas (one line) or newlines.
  `extra_zeros`: trailing flags beyond the n frames are dropped when they are all 0 (a TNL2K
  absent file has 930 for 929 frames)."""
  _note_read(path)
  if not files.isfile(path):
    return np.zeros(n, bool)  # absent flag file = no frame flagged
  fields = [t for t in re.split(rb"[,\s]+", files.read_bytes(path)) if t]
  try:
    flags = np.array([int(float(t)) for t in fields], np.int64) != 0
  except ValueError:
    raise DatasetError(f"{path}: flags must be 0/1 numbers") from None
  if extra_zeros and len(flags) > n and not flags[n:].any():
    flags = flags[:n]
  if len(flags) != n:
    raise DatasetError(f"{path}: {len(flags)} flags for {n} frames")
  return flags


def _text_lines(path: str) -> list[str]:
  return files.read_bytes(path).decode("utf-8-sig").splitlines()


def _listdir(path: str) -> list[str]:
  try:
    return files.listdir(path)
  except FileNotFoundError:
    raise DatasetError(f"{path}: folder missing") from None


def _subdirs(path: str) -> list[str]:
  try:
    return [d for d in files.subdirs(path) if not d.startswith(".")]
  except FileNotFoundError:
    raise DatasetError(f"{path}: folder missing") from None


def _frame_spec(img_dir: str, n_boxes: int, box_file: str, start: Optional[int] = None,
                allow_extra: bool = False) -> dict:
  """How the n_boxes frames of `img_dir` are named (compact enough to cache for LaSOT)."""
  names = [f for f in _listdir(img_dir) if f.lower().endswith(IMAGE_EXTS) and not f.startswith(".")]
  if not names:
    raise DatasetError(f"{img_dir}: no images (.jpg/.png) for {box_file}")
  stems = [os.path.splitext(f)[0] for f in names]
  if all(s.isdigit() for s in stems):
    numbers = {int(s): f for s, f in zip(stems, names)}
    lo, hi = min(numbers), max(numbers)
    if start is not None:
      first = start
    else:
      # Numbering starts at 1 (or 0); a missing first frame must not shift the whole sequence.
      natural = 0 if lo == 0 else 1
      first = natural if natural + n_boxes - 1 == hi else lo
    last = first + n_boxes - 1
    if last > hi or (last < hi and not allow_extra):
      raise DatasetError(f"{box_file}: {n_boxes} boxes but {img_dir} holds frames numbered "
                         f"{lo}..{hi} (expected {first}..{last})")
    model = numbers[lo]
    width = len(os.path.splitext(model)[0])
    ext = os.path.splitext(model)[1]
    # Frames named like their neighbours even when one is missing: the sampler finds it absent.
    return {"start": first, "count": n_boxes, "width": width, "ext": ext}
  if len(names) != n_boxes and not (allow_extra and len(names) > n_boxes):
    raise DatasetError(f"{box_file}: {n_boxes} boxes but {len(names)} images in {img_dir}")
  return {"names": names[:n_boxes]}


def _frames_from_spec(img_dir: str, spec: dict) -> list[str]:
  if "names" in spec:
    return [os.path.join(img_dir, f) for f in spec["names"]]
  fmt = "{:0%dd}%s" % (spec["width"], spec["ext"])
  return [os.path.join(img_dir, fmt.format(i)) for i in range(spec["start"], spec["start"] + spec["count"])]


# ---------------------------------------------------------------------------------------------
# Per-dataset scanners: each returns a list of index records (dicts of plain data, cacheable).


def _record(name, img_dir, spec, boxes, sentence, bad, occl=None, oov=None, absent=None,
            single_frame=True, attributes=None):
  return {"name": name, "img_dir": img_dir, "spec": spec, "boxes": boxes, "sentence": sentence,
          "bad_sentence": bad, "full_occlusion": occl, "out_of_view": oov, "absent": absent,
          "single_frame": bool(single_frame),
          "attributes": None if attributes is None else [int(a) for a in attributes]}


def _lasot_test_names(root: str) -> set[str]:
  listed = os.path.join(root, "testing_set.txt")
  _note_read(listed)
  if files.isfile(listed):
    return {line.strip() for line in _text_lines(listed) if line.strip()}
  return lasot_test_sequences()


def _lasot_in_split(name: str, split: str, test: set[str]) -> bool:
  if split == "all":
    return True
  if split not in ("train", "test"):
    raise DatasetError(f"LaSOT splits are train, test and all; got {split!r}")
  return (split == "test") == (name in test)


def _lasot_order(name: str):
  cls, _, number = name.rpartition("-")
  return (cls, int(number)) if number.isdigit() else (name, 0)


def _scan_lasot(root: str, split: str, frames: bool = True) -> list[dict]:
  test = _lasot_test_names(root)
  if files.isdir(os.path.join(root, "annos")):
    return _scan_lasot_pack(root, split, frames, test)
  records = []
  for cls in _subdirs(root):
    names = [d for d in _subdirs(os.path.join(root, cls)) if re.fullmatch(re.escape(cls) + r"-\d+", d)]
    for name in sorted(names, key=lambda d: int(d.rsplit("-", 1)[1])):
      if not _lasot_in_split(name, split, test):
        continue
      seq_dir = os.path.join(root, cls, name)
      gt = os.path.join(seq_dir, "groundtruth.txt")
      boxes = read_boxes(gt)
      spec = _frame_spec(os.path.join(seq_dir, "img"), len(boxes), gt) if frames else None
      sentence, bad = read_sentence(os.path.join(seq_dir, "nlp.txt"))
      occl = _read_flags(os.path.join(seq_dir, "full_occlusion.txt"), len(boxes))
      oov = _read_flags(os.path.join(seq_dir, "out_of_view.txt"), len(boxes))
      records.append(_record(name, os.path.join(cls, name, "img"), spec, boxes, sentence, bad, occl, oov))
  return records


def _scan_lasot_pack(root: str, split: str, frames: bool, test: set[str]) -> list[dict]:
  """The LaSOT toolkit's `annos/<seq>.txt` + `annos/absent/<seq>.txt` (1 = absent, i.e. fully
  occluded or out of view: the same frames pytracking drops with its two flag files)."""
  anno_dir = os.path.join(root, "annos")
  if frames:
    raise DatasetError(f"{anno_dir}: the LaSOT toolkit's annotation pack holds no frames; it can be "
                       "scored (satracker analyze) but not tracked: give the full LaSOT root")
  if split == "test":
    names = sorted(test, key=_lasot_order)  # every listed test sequence must be there
  else:
    names = sorted((f[:-4] for f in _listdir(anno_dir) if f.endswith(".txt") and not f.startswith(".")),
                   key=_lasot_order)
    names = [n for n in names if _lasot_in_split(n, split, test)]
  records = []
  for name in names:
    boxes = read_boxes(os.path.join(anno_dir, f"{name}.txt"))
    absent_file = os.path.join(anno_dir, "absent", f"{name}.txt")
    if not files.isfile(absent_file):
      # Without it the invisible frames would count as visible: scores would silently differ.
      raise DatasetError(f"{absent_file}: absent flags missing (LaSOT scores need them)")
    absent = _read_flags(absent_file, len(boxes))
    records.append(_record(name, "", None, boxes, "", True, absent=absent))
  return records


def _tnl2k_split_dirs(root: str, split: str) -> list[str]:
  """The sub-folders of `root` (relative; "" = root itself) that hold the split's sequences.

  `root/<split>` when it exists (our synthetic layout, TNL2K's train/test folders); every split
  folder for `all`; the root itself when it holds no split folders (e.g. TNL2K's test archive).
  A root with split folders but not the one asked for is an error saying which ones it has,
  rather than "no sequences" or, worse, silently another split.
  """
  if split and files.isdir(os.path.join(root, split)):
    return [split]
  present = [d for d in SPLIT_FOLDERS if files.isdir(os.path.join(root, d))]
  if not present:
    return [""]
  if split == "all":
    return present
  raise DatasetError(f"{root}: holds the split folder(s) {', '.join(d + '/' for d in present)} but no "
                     f"{split}/; choose --split {' or '.join(present)} (or all)")


TNL2K_PACK_TEST_LIST = os.path.join("sequence_evaluation_config", "TNL2K_testing_set.txt")


def _scan_tnl2k_pack(root: str, split: str, frames: bool) -> list[dict]:
  """The TNL2K toolkit's annotation pack: `annos/gt_rect/<seq>.txt` (absent frames are 0,0,0,0),
  `annos/absent/<seq>.txt` (one 0/1 per frame; trailing extra 0 rows ignored),
  `annos/att/<seq>_attribute.txt` (17 0/1 values), the test list in
  `sequence_evaluation_config/TNL2K_testing_set.txt` (every listed sequence must be there; without
  the list, every gt_rect file). A missing absent or attribute file leaves that field None: the
  `tnl2k-matlab` report then says every frame counted as present."""
  gt_dir = os.path.join(root, "annos", "gt_rect")
  if frames:
    raise DatasetError(f"{gt_dir}: the TNL2K toolkit's annotation pack holds no frames; it can be "
                       "scored (satracker analyze) but not tracked: give the full TNL2K root")
  if split not in ("test", "all"):
    raise DatasetError(f"{root}: the TNL2K toolkit's annotation pack holds the test split only; "
                       f"got --split {split!r}")
  listed = os.path.join(root, TNL2K_PACK_TEST_LIST)
  _note_read(listed)
  if files.isfile(listed):
    names = [line.strip() for line in _text_lines(listed) if line.strip()]
  else:
    names = sorted(f[:-4] for f in _listdir(gt_dir) if f.endswith(".txt") and not f.startswith("."))
  records = []
  for name in names:
    boxes = read_boxes(os.path.join(gt_dir, f"{name}.txt"))
    absent_file = os.path.join(root, "annos", "absent", f"{name}.txt")
    _note_read(absent_file)
    absent = _read_flags(absent_file, len(boxes), extra_zeros=True) if files.isfile(absent_file) else None
    att_file = os.path.join(root, "annos", "att", f"{name}_attribute.txt")
    attributes = None
    _note_read(att_file)
    if files.isfile(att_file):
      fields = [t for t in re.split(rb"[,\s]+", files.read_bytes(att_file)) if t]
      try:
        attributes = [int(float(t)) for t in fields]
      except ValueError:
        raise DatasetError(f"{att_file}: attributes must be 0/1 numbers") from None
    records.append(_record(name, "", None, boxes, "", True, absent=absent, attributes=attributes))
  return records


def _scan_tnl2k(root: str, split: str, frames: bool = True) -> list[dict]:
  if files.isdir(os.path.join(root, "annos", "gt_rect")):
    return _scan_tnl2k_pack(root, split, frames)
  records = []
  for sub in _tnl2k_split_dirs(root, split):
    base = os.path.join(root, sub)
    for name in _subdirs(base):
      seq_dir = os.path.join(base, name)
      gt = os.path.join(seq_dir, "groundtruth.txt")
      has_imgs = frames and files.isdir(os.path.join(seq_dir, "imgs"))
      if not has_imgs and not files.exists(gt):
        continue  # not a sequence folder (e.g. an archive's side folder)
      boxes = read_boxes(gt)
      spec = _frame_spec(os.path.join(seq_dir, "imgs"), len(boxes), gt) if frames else None
      sentence, bad = read_sentence(os.path.join(seq_dir, "language.txt"))
      records.append(_record(name, os.path.join(sub, name, "imgs"), spec, boxes, sentence, bad))
  return records


def _scan_synthetic(root: str, split: str, frames: bool = True) -> list[dict]:
  """TNL2K layout plus each video's attributes.json `single_frame` (written by `satracker synth`;
  a missing or unreadable file means True)."""
  records = _scan_tnl2k(root, split, frames)
  for r in records:
    seq_dir = os.path.join(root, os.path.dirname(r["img_dir"]))
    _note_read(os.path.join(seq_dir, "attributes.json"))
    try:
      attributes = json.loads(files.read_bytes(os.path.join(seq_dir, "attributes.json")))
      r["single_frame"] = bool(attributes.get("single_frame", True))
    except (OSError, ValueError, AttributeError):
      pass
  return records


def _otb_range(video: str, boxes: np.ndarray) -> tuple[np.ndarray, int]:
  """(scored boxes, first image number): pytracking's start frames and Tiger1's initOmit."""
  omit = otb_sequences.INIT_OMIT.get(video, 0)
  return boxes[omit:], otb_sequences.START_FRAME.get(video, 1) + omit


def _scan_otb(root: str, split: str, frames: bool = True) -> list[dict]:
  if split not in ("test", "all"):
    raise DatasetError(f"OTB-2015 has one split, test (all is the same); got {split!r}")
  pack = os.path.join(root, "anno")
  if not frames and files.isdir(pack):
    return [_otb_pack_record(pack, name) for name in otb_sequences.SEQUENCES]
  records = []
  for name in otb_sequences.SEQUENCES:
    video, target = otb_sequences.video_and_target(name)
    seq_dir = os.path.join(root, video)
    if not files.isdir(seq_dir):
      hint = " (or an anno/ folder: the OTB toolkit's annotation pack)" if not frames else ""
      raise DatasetError(f"{seq_dir}: OTB-2015 sequence folder missing; {root} must hold the 100 "
                         f"sequence folders{hint}")
    gt = os.path.join(seq_dir, f"groundtruth_rect.{target}.txt" if target else "groundtruth_rect.txt")
    boxes, start = _otb_range(video, read_boxes(gt))
    spec = None
    if frames:
      spec = _frame_spec(os.path.join(seq_dir, "img"), len(boxes), gt, start=start, allow_extra=True)
    records.append(_record(name, os.path.join(video, "img"), spec, boxes,
                           otb_sequences.OBJECT_CLASS[name], False))
  return records


def _otb_pack_record(pack: str, name: str) -> dict:
  candidates = [os.path.join(pack, f"{n}.txt") for n in otb_sequences.annotation_names(name)]
  path = next((c for c in candidates if files.isfile(c)), candidates[0])
  boxes, _ = _otb_range(otb_sequences.video_and_target(name)[0], read_boxes(path))
  return _record(name, "", None, boxes, otb_sequences.OBJECT_CLASS[name], False)


def _scan_otb99_lang(root: str, split: str, frames: bool = True) -> list[dict]:
  query_dir = os.path.join(root, f"OTB_query_{split}")
  names = sorted(os.path.splitext(f)[0] for f in _listdir(query_dir) if f.endswith(".txt"))
  records = []
  for name in names:
    # Jogging-1 / Skating2-2: one video folder, one groundtruth_rect.<k>.txt per target.
    video, k = name, ""
    m = re.fullmatch(r"(.+)-(\d)", name)
    if m and not files.isdir(os.path.join(root, "OTB_videos", name)):
      video, k = m.group(1), m.group(2)
    seq_dir = os.path.join(root, "OTB_videos", video)
    gt = os.path.join(seq_dir, f"groundtruth_rect.{k}.txt" if k else "groundtruth_rect.txt")
    # The same frame ranges as OTB-2015 (OTB99-Lang annotates OTB-100's videos).
    boxes, start = _otb_range(video, read_boxes(gt))
    spec = None
    if frames:
      # OTB folders may hold more images than annotated frames (annotation ends early).
      spec = _frame_spec(os.path.join(seq_dir, "img"), len(boxes), gt, start=start, allow_extra=True)
    sentence, bad = read_sentence(os.path.join(query_dir, name + ".txt"))
    records.append(_record(name, os.path.join("OTB_videos", video, "img"), spec, boxes, sentence, bad))
  return records


def _got10k_class(path: str) -> tuple[str, bool]:
  _note_read(path)
  if not files.isfile(path):
    return "", True
  text = files.read_bytes(path).decode("utf-8", errors="replace")
  m = re.search(r"^\s*object_class\s*:\s*(.*)$", text, re.MULTILINE)
  sentence = m.group(1).strip().lower() if m else ""
  return sentence, not sentence


def _scan_got10k(root: str, split: str, frames: bool = True) -> list[dict]:
  base = os.path.join(root, split)
  records = []
  for name in _subdirs(base):
    seq_dir = os.path.join(base, name)
    gt = os.path.join(seq_dir, "groundtruth.txt")
    boxes = read_boxes(gt)
    spec = None
    if frames:
      n_frames = len([f for f in _listdir(seq_dir) if f.lower().endswith(IMAGE_EXTS)])
      if len(boxes) == 1 and n_frames > 1:
        # GOT-10k test/val-style folders annotate only the first frame.
        boxes = np.concatenate([boxes, np.full((n_frames - 1, 4), np.nan)])
      spec = _frame_spec(seq_dir, len(boxes), gt)
    sentence, bad = _got10k_class(os.path.join(seq_dir, "meta_info.ini"))
    absent = None
    absence_file = os.path.join(seq_dir, "absence.label")
    if files.isfile(absence_file):
      absent = _read_flags(absence_file, len(boxes))
    records.append(_record(name, os.path.join(split, name), spec, boxes, sentence, bad, absent=absent))
  return records


# name -> scanner(root, split, frames): frames=False reads annotations only (no image folders).
_SCANNERS: dict[str, Callable[[str, str, bool], list[dict]]] = {
    "lasot": _scan_lasot, "tnl2k": _scan_tnl2k, "synthetic": _scan_synthetic, "otb": _scan_otb,
    "otb99_lang": _scan_otb99_lang, "got10k": _scan_got10k,
}


# ---------------------------------------------------------------------------------------------
# Index cache.


def _listing_dirs(name: str, root: str, split: str) -> list[str]:
  """The folders whose listings define the data set (their entries' mtimes change when sequences
  or files in a sequence folder are added, removed or renamed)."""
  dirs = [root]
  if name == "lasot":
    dirs += [os.path.join(root, c) for c in _subdirs(root)] + [os.path.join(root, "annos", "absent")]
  elif name == "tnl2k" and files.isdir(os.path.join(root, "annos", "gt_rect")):
    dirs += [os.path.join(root, "annos", sub) for sub in ("gt_rect", "absent", "att")]
    dirs.append(os.path.join(root, "sequence_evaluation_config"))
  elif name in ("tnl2k", "synthetic"):
    dirs += [os.path.join(root, sub) for sub in _tnl2k_split_dirs(root, split) if sub]
  elif name == "otb":
    dirs.append(os.path.join(root, "anno"))
  elif name == "otb99_lang":
    dirs += [os.path.join(root, "OTB_videos"), os.path.join(root, f"OTB_query_{split}")]
  elif name == "got10k":
    dirs.append(os.path.join(root, split))
  return dirs


def _fingerprint(name: str, root: str, split: str, frames: bool = True) -> str:
  h = hashlib.sha1(f"{READER_VERSION}|{name}|{split}|{'frames' if frames else 'annotations'}"
                   .encode("utf-8", "surrogateescape"))
  for d in _listing_dirs(name, root, split):
    if not files.isdir(d):
      continue
    for entry, mtime in files.listing(d):
      if entry.startswith(_CACHE_PREFIX):
        continue  # our own cache file must not invalidate itself
      h.update(f"{d}/{entry}:{mtime}\n".encode("utf-8", "surrogateescape"))
  return h.hexdigest()


def default_url_cache_dir() -> str:
  """Where the index of a bucket root goes when `cache_dir` is empty: a local folder (the index is
  written with a local rename, and a bucket may be read-only), one per user."""
  base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
  return os.path.join(base, "satracker-jax", "index")


def _cache_path(name: str, root: str, split: str, cache_dir: str, frames: bool = True) -> str:
  # Annotation-only indexes have no frame naming: a separate file, so neither evicts the other.
  kind = "" if frames else "_annotations"
  if not cache_dir and files.is_url(root):
    cache_dir = default_url_cache_dir()
  if cache_dir:
    tag = hashlib.sha1(os.fsencode(files.absolute(root))).hexdigest()[:12]
    return os.path.join(cache_dir, f"{_CACHE_PREFIX}{name}_{split}{kind}_{tag}.npz")
  return os.path.join(root, f"{_CACHE_PREFIX}{name}_{split}{kind}.npz")


def _files_unchanged(root: str, states: list[list]) -> bool:
  """Whether every file of `states` ([[path relative to root, size, mtime_ns]]) is unchanged."""
  now = files.states(os.path.join(root, rel) for rel, _, _ in states)
  return now == [[size, mtime] for _, size, mtime in states]


def _save_index(path: str, fingerprint: str, records: list[dict], file_states: list) -> None:
  meta, boxes, flags = [], [], []
  for r in records:
    m = {k: r[k] for k in ("name", "img_dir", "spec", "sentence", "bad_sentence", "single_frame")}
    if r.get("attributes") is not None:
      m["attributes"] = r["attributes"]
    m["n"] = len(r["boxes"])
    m["flags"] = [k for k in ("full_occlusion", "out_of_view", "absent") if r[k] is not None]
    meta.append(m)
    boxes.append(r["boxes"])
    flags.extend(r[k] for k in m["flags"])
  arrays = {
      "meta": np.array(json.dumps({"fingerprint": fingerprint, "files": file_states, "sequences": meta})),
      "boxes": np.concatenate(boxes) if boxes else np.zeros((0, 4)),
      "flags": np.concatenate(flags).astype(np.uint8) if flags else np.zeros(0, np.uint8),
  }
  tmp = None
  try:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    # A name of its own (processes of one run index the same root at once), starting with the
    # cache prefix, so that it never changes the fingerprint; renamed over the cache atomically.
    fd, tmp = tempfile.mkstemp(prefix=os.path.basename(path) + ".", suffix=".tmp",
                               dir=os.path.dirname(path))
    with os.fdopen(fd, "wb") as f:
      np.savez(f, **arrays)
    os.chmod(tmp, 0o644)  # mkstemp's 0600 would hide the cache from other users of the data set
    os.replace(tmp, path)
  except OSError:
    pass  # a read-only data set is fine: we just rescan next time
  finally:
    if tmp is not None and os.path.exists(tmp):
      os.remove(tmp)


def _load_index(path: str, root: str, fingerprint: str) -> Optional[list[dict]]:
  try:
    with np.load(path, allow_pickle=False) as z:
      meta = json.loads(str(z["meta"]))
      boxes, flags = z["boxes"], z["flags"].astype(bool)
  except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as e:
    log.warning("%s: index cache unreadable (%s: %s); rebuilding it", path, type(e).__name__, e)
    return None
  if meta.get("fingerprint") != fingerprint or not _files_unchanged(root, meta.get("files") or []):
    return None
  records, b, f = [], 0, 0
  for m in meta["sequences"]:
    n = m["n"]
    r = _record(m["name"], m["img_dir"], m["spec"], boxes[b:b + n], m["sentence"], m["bad_sentence"],
                single_frame=m.get("single_frame", True), attributes=m.get("attributes"))
    b += n
    for k in m["flags"]:
      r[k] = flags[f:f + n]
      f += n
    records.append(r)
  return records


# ---------------------------------------------------------------------------------------------
# Entry point.


def _to_sequence(dataset: str, root: str, r: dict) -> Sequence:
  boxes = np.asarray(r["boxes"], np.float64).reshape(-1, 4)
  visible = box_visible(boxes)
  for key in ("full_occlusion", "out_of_view", "absent"):
    if r[key] is not None:
      visible &= ~np.asarray(r[key], bool)
  frames = [] if r["spec"] is None else _frames_from_spec(os.path.join(root, r["img_dir"]), r["spec"])
  flags = lambda key: None if r[key] is None else np.asarray(r[key], bool)
  return Sequence(
      name=r["name"], dataset=dataset, frames=frames, boxes=boxes,
      visible=visible, sentence=r["sentence"], bad_sentence=bool(r["bad_sentence"]),
      sentence_file=r["bad_sentence"] if isinstance(r["bad_sentence"], str) else "",
      full_occlusion=flags("full_occlusion"), out_of_view=flags("out_of_view"), absent=flags("absent"),
      single_frame=bool(r.get("single_frame", True)),
      attributes=None if r.get("attributes") is None else np.asarray(r["attributes"], np.int64))


def load_dataset(name: str, root: str, split: str = "test", cache_dir: str = "",
                 use_cache: bool = True, annotations_only: bool = False) -> list[Sequence]:
  """All sequences of one split of a data set, sorted by name (LaSOT: by class, then number).

  `annotations_only`: boxes, flags and sentences without looking at any image folder (scoring);
  the sequences' `frames` are then empty.
  """
  if name not in _SCANNERS:
    raise ValueError(f"unknown data set {name!r}; choose from {', '.join(DATASETS)}")
  if not root or not files.isdir(root):
    raise DatasetError(f"{root!r}: {name} root folder missing")
  root = files.absolute(root)
  frames = not annotations_only
  records = None
  if use_cache:
    fingerprint = _fingerprint(name, root, split, frames)
    path = _cache_path(name, root, split, cache_dir, frames)
    records = _load_index(path, root, fingerprint) if os.path.isfile(path) else None
  if records is None:
    read: dict = {}
    token = _FILES_READ.set(read)
    try:
      records = _SCANNERS[name](root, split, frames)
    finally:
      _FILES_READ.reset(token)
    if use_cache and records:  # no index for a root that is not this data set (or not this split)
      states = [[files.relative(p, root), *state] for p, state in sorted(read.items())]
      _save_index(path, fingerprint, records, states)
  if not records:
    raise DatasetError(f"{root}: no {name} sequences found for split {split!r}")
  return [_to_sequence(name, root, r) for r in records]


def sequence_summary(sequences: list[Sequence]) -> dict:
  """Counts worth printing when a data set is loaded."""
  n_frames = sum(len(s) for s in sequences)
  n_visible = int(sum(int(s.visible.sum()) for s in sequences))
  return {"sequences": len(sequences), "frames": n_frames, "visible_frames": n_visible,
          "bad_sentences": sum(s.bad_sentence for s in sequences),
          "mean_length": n_frames / max(len(sequences), 1) if sequences else math.nan}
