"""Track one video or frame folder and draw the boxes (`satracker track`).

    frames, box, sentence, gts = read_frame_folder("data/synthetic/test/seq_0003")
    summary = track_video(config, variables, (load_frame(p) for p in frames), box, sentence, "seq3.gif")

A frame folder is a folder of images (sorted by name), or a TNL2K/LaSOT-layout sequence folder
(`imgs/` or `img/` + `groundtruth.txt` + `language.txt`/`nlp.txt`), whose first ground-truth box
and sentence are then returned as well. Each drawn frame shows the box (and the ground truth when
given) and, in a band below the frame, the frame index, the score, a legend and the sentence
(`visualize.draw_tracking`); the output ends in .gif (Pillow) or .mp4. Without a first box, the
first box is grounded from the sentence (the `nl` protocol).
"""
from __future__ import annotations

import os
import time
from typing import Iterable

import numpy as np
from PIL import Image

from satracker_jax import box_files
from satracker_jax import tracker as tracker_lib
from satracker_jax import visualize
from satracker_jax.evaluation import results_io

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")


def _first_line(path: str) -> str:
  with open(path, encoding="utf-8", errors="replace") as f:
    for line in f:
      if line.strip():
        return line.strip()
  return ""


def _valid(box) -> bool:
  return box.shape == (4,) and bool(np.isfinite(box).all()) and box[2] > 0 and box[3] > 0


def parse_box(text: str, where: str) -> np.ndarray:
  """A box given as text (`--box`): x,y,w,h with w,h > 0, separated as in box files."""
  try:
    box = box_files.parse_row(text, 4, where)
  except ValueError:
    box = np.zeros(0)
  if not _valid(box):
    raise ValueError(f"{where}: expected a box x,y,w,h with w,h > 0, got {text!r}")
  return box


def read_frame_folder(path: str) -> tuple[list[str], np.ndarray | None, str | None, np.ndarray | None]:
  """(frame paths, first box or None, sentence or None, all GT boxes or None) of a frame folder."""
  if not os.path.isdir(path):
    raise FileNotFoundError(f"{path}: not a folder")
  image_dir = path
  for sub in ("imgs", "img"):
    if os.path.isdir(os.path.join(path, sub)):
      image_dir = os.path.join(path, sub)
  frames = sorted(os.path.join(image_dir, n) for n in os.listdir(image_dir)
                  if n.lower().endswith(IMAGE_SUFFIXES))
  if not frames:
    raise FileNotFoundError(f"{path}: no {'/'.join(IMAGE_SUFFIXES)} images in {image_dir}")
  box = sentence = gts = None
  for name in ("groundtruth.txt", "groundtruth_rect.txt"):
    gt_path = os.path.join(path, name)
    if os.path.isfile(gt_path):
      # Read as the data set readers read it (blank line = target absent), by the same parser.
      gts = box_files.read_rows(gt_path, 4, blank_lines_absent=True)
      if not len(gts) or not _valid(gts[0]):
        raise ValueError(f"{gt_path}:1: expected a box x,y,w,h with w,h > 0, got "
                         f"{gts[0].tolist() if len(gts) else 'an empty file'}")
      box = gts[0].copy()
      break
  for name in ("language.txt", "nlp.txt"):
    lang_path = os.path.join(path, name)
    if os.path.isfile(lang_path):
      sentence = _first_line(lang_path).lower() or None
      break
  return frames, box, sentence, gts


def _shrink(image: np.ndarray, max_side: int) -> np.ndarray:
  h, w = image.shape[:2]
  scale = max_side / max(h, w)
  if max_side <= 0 or scale >= 1:
    return image
  size = (max(1, round(w * scale)), max(1, round(h * scale)))
  return np.asarray(Image.fromarray(image).resize(size, Image.BILINEAR))


def track_video(config, variables, frames: Iterable[np.ndarray], box, sentence: str, out: str, *,
                fps: float = 10.0, max_frames: int = 0, max_side: int = 480,
                gt_boxes: np.ndarray | None = None, results: str = "", say=None) -> dict:
  """Tracks `frames` from `box` + `sentence`, writes the drawn video to `out` (and the boxes in
  the raw-result format to `results`). `box=None` is the sentence-only protocol (`nl`): the first
  box is grounded from `sentence` on frame 0 and drawn in its own colour, with its score.
  `say` (print, a logger) hears the step's compile before the first frame (and how long it took).
  Returns {"frames", "fps" (excl. frame 0 and the compile), "out", "first_box", "grounded",
  "grounding_score"}."""
  tracker = tracker_lib.Tracker(config, variables)
  tracker.warmup(say)  # the step's compile (or cache load) before frame 0, not inside the frame rate
  grounded = box is None
  legend = [("tracker", visualize.PRED_COLOR)]
  if grounded:
    legend.append(("grounded from the sentence", visualize.GROUNDED_COLOR))
  if gt_boxes is not None:
    legend.append(("ground truth", visualize.GT_COLOR))
  drawn, boxes, seconds = [], [], 0.0
  grounding_score = None
  for i, frame in enumerate(frames):
    if max_frames and i >= max_frames:
      break
    start = time.perf_counter()
    if i == 0:
      pred, score = tracker.init(frame, box, sentence), None
      if grounded:
        grounding_score = float(tracker.core.last_grounding[0][1])
        note, color = f"grounded, score {grounding_score:.2f}", visualize.GROUNDED_COLOR
      else:
        note, color = "first box given", visualize.PRED_COLOR
    else:
      pred, score = tracker.track(frame)
      seconds += time.perf_counter() - start
      note, color = "", visualize.PRED_COLOR
    boxes.append(np.asarray(pred, np.float64))
    gt = gt_boxes[i] if (gt_boxes is not None and i < len(gt_boxes)) else None
    image = visualize.draw_tracking(frame, pred, score, sentence, gt_box=gt, frame_index=i,
                                    color=color, legend=legend, note=note)
    drawn.append(_shrink(image, max_side))
  if not drawn:
    raise ValueError("no frames to track")
  visualize.write_video(drawn, out, fps=fps)
  if results:
    out_dir, name = os.path.split(os.path.abspath(results))
    results_io.write_results(out_dir, os.path.splitext(name)[0], np.stack(boxes))
  return {"frames": len(drawn), "fps": (len(drawn) - 1) / seconds if seconds > 0 else float("nan"),
          "out": out, "first_box": boxes[0], "grounded": grounded,
          "grounding_score": grounding_score}
