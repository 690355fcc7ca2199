"""`satracker track`: track one video or frame folder and draw the boxes.

  satracker track --checkpoint runs/tiny --frames data/synthetic/seq_0003 --out seq3.gif
  satracker track --checkpoint runs/tiny --video clip.mp4 --text "the dog on the left" \
      --box 120,80,60,40 --out clip_tracked.mp4

`--frames DIR` is a folder of images (sorted by name), or a TNL2K/LaSOT-layout sequence folder
(`imgs/` or `img/` + `groundtruth.txt` + `language.txt`/`nlp.txt`), in which case `--box` defaults
to the first ground-truth box and `--text` to the sentence. Otherwise both are required. Each output
frame shows the box, the score and the sentence (and the ground truth with `--show-gt`); `--out`
ends in .gif (Pillow) or .mp4 (needs imageio or ffmpeg). `--results FILE.txt` also writes the
boxes in the raw-result format.
"""
from __future__ import annotations

import argparse
import itertools
import os
import sys
import time

import numpy as np
from PIL import Image

from satracker_jax import visualize

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")


def _first_line(path: str) -> str:
  with open(path, encoding="utf-8", errors="replace") as f:
    for line in f:
      if line.strip():
        return line.strip()
  return ""


def _parse_box(text: str, where: str) -> np.ndarray:
  fields = [v for v in text.replace("\t", ",").replace(" ", ",").split(",") if v]
  try:
    box = np.array([float(v) for v in fields], np.float64)
  except ValueError:
    box = np.zeros(0)
  if box.shape != (4,) or not np.isfinite(box).all() or box[2] <= 0 or box[3] <= 0:
    raise SystemExit(f"{where}: expected a box x,y,w,h with w,h > 0, got {text!r}")
  return box


def frame_folder(path: str) -> tuple[list[str], np.ndarray | None, str | None, np.ndarray | None]:
  """(frame paths, first box or None, sentence or None, all GT boxes or None) of a frame folder."""
  if not os.path.isdir(path):
    raise SystemExit(f"--frames {path}: not a folder")
  image_dir = path
  for sub in ("imgs", "img"):
    if os.path.isdir(os.path.join(path, sub)):
      image_dir = os.path.join(path, sub)
  frames = sorted(os.path.join(image_dir, n) for n in os.listdir(image_dir)
                  if n.lower().endswith(IMAGE_SUFFIXES))
  if not frames:
    raise SystemExit(f"--frames {path}: no {'/'.join(IMAGE_SUFFIXES)} images in {image_dir}")
  box = sentence = gts = None
  for name in ("groundtruth.txt", "groundtruth_rect.txt"):
    gt_path = os.path.join(path, name)
    if os.path.isfile(gt_path):
      box = _parse_box(_first_line(gt_path), gt_path)
      gts = _read_gt(gt_path)
      break
  for name in ("language.txt", "nlp.txt"):
    lang_path = os.path.join(path, name)
    if os.path.isfile(lang_path):
      sentence = _first_line(lang_path).lower() or None
      break
  return frames, box, sentence, gts


def _read_gt(path: str) -> np.ndarray | None:
  rows = []
  with open(path) as f:
    for line in f:
      fields = [v for v in line.strip().replace("\t", ",").replace(" ", ",").split(",") if v]
      try:
        rows.append([float(v) for v in fields] if len(fields) == 4 else [np.nan] * 4)
      except ValueError:
        rows.append([np.nan] * 4)
  return np.asarray(rows, np.float64) if rows else None


def _shrink(image: np.ndarray, max_side: int) -> np.ndarray:
  h, w = image.shape[:2]
  scale = max_side / max(h, w)
  if max_side <= 0 or scale >= 1:
    return image
  size = (max(1, round(w * scale)), max(1, round(h * scale)))
  return np.asarray(Image.fromarray(image).resize(size, Image.BILINEAR))


def add_arguments(parser: argparse.ArgumentParser) -> None:
  parser.add_argument("--checkpoint", default="", help="training workdir or its checkpoints/ folder")
  parser.add_argument("--config", default="", help="config file[:arg] (checked against the checkpoint)")
  source = parser.add_mutually_exclusive_group(required=True)
  source.add_argument("--frames", help="folder of frames, or a TNL2K/LaSOT-layout sequence folder")
  source.add_argument("--video", help="video file (.gif via Pillow; .mp4 etc. need imageio or ffmpeg)")
  parser.add_argument("--text", default=None, help="the sentence describing the target")
  parser.add_argument("--box", default=None, help="first-frame box x,y,w,h in pixels")
  parser.add_argument("--out", required=True, help="output .gif or .mp4")
  parser.add_argument("--fps", type=float, default=10.0)
  parser.add_argument("--max-frames", type=int, default=0, help="track only the first N frames (0 = all)")
  parser.add_argument("--max-side", type=int, default=480, help="shrink drawn frames to this longest side")
  parser.add_argument("--show-gt", action="store_true", help="also draw the ground truth (frame folders)")
  parser.add_argument("--results", default="", help="also write the boxes here (x,y,w,h per line)")


def run(args, overrides) -> int:
  try:
    visualize.check_writable(args.out)  # before loading a model and tracking for minutes
  except (ValueError, RuntimeError) as e:
    raise SystemExit(f"--out: {e}") from None
  gts = None
  if args.frames:
    paths, default_box, default_text, gts = frame_folder(args.frames)
    frames = (visualize.load_frame(p) for p in paths)
  else:
    default_box = default_text = None
    frames = visualize.read_video(args.video)
    try:
      first = next(frames)
    except FileNotFoundError:
      raise SystemExit(f"--video {args.video}: no such file") from None
    except RuntimeError as e:
      raise SystemExit(f"--video: {e}") from None
    except StopIteration:
      raise SystemExit(f"--video {args.video}: no frames") from None
    frames = itertools.chain([first], frames)
  box = _parse_box(args.box, "--box") if args.box else default_box
  if box is None:
    raise SystemExit("--box x,y,w,h is required (no groundtruth.txt to take the first box from)")
  sentence = args.text if args.text is not None else default_text
  if sentence is None:
    raise SystemExit("--text is required (no language.txt / nlp.txt beside the frames)")

  from satracker_jax import tracker as tracker_lib
  from satracker_jax.evaluation.runner import load_model
  config, variables = load_model(args.checkpoint, args.config, overrides)
  tracker = tracker_lib.Tracker(config, variables)

  drawn, boxes, seconds = [], [], 0.0
  for i, frame in enumerate(frames):
    if args.max_frames and i >= args.max_frames:
      break
    start = time.perf_counter()
    if i == 0:
      tracker.init(frame, box, sentence)
      pred, score = box, None
    else:
      pred, score = tracker.track(frame)
      seconds += time.perf_counter() - start
    boxes.append(np.asarray(pred, np.float64))
    gt = gts[i] if (args.show_gt and gts is not None and i < len(gts)) else None
    image = visualize.draw_tracking(frame, pred, score, sentence, gt_box=gt, frame_index=i)
    drawn.append(_shrink(image, args.max_side))
  if not drawn:
    raise SystemExit("no frames to track")
  visualize.write_video(drawn, args.out, fps=args.fps)
  if args.results:
    from satracker_jax.evaluation import results_io
    out_dir, name = os.path.split(os.path.abspath(args.results))
    results_io.write_results(out_dir, os.path.splitext(name)[0], np.stack(boxes))
  fps = (len(drawn) - 1) / seconds if seconds > 0 else float("nan")
  print(f"tracked {len(drawn)} frames ({fps:.1f} frames/s incl. first-call compile); wrote {args.out}",
        file=sys.stdout)
  return 0
