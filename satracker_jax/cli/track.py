"""`satracker track`: track one video or frame folder and draw the boxes.

  satracker track --checkpoint runs/tiny --frames data/synthetic/test/seq_0003 --out seq3.gif
  satracker track --checkpoint runs/tiny --video clip.mp4 --text "the dog on the left" \
      --box 120,80,60,40 --out clip_tracked.mp4
  satracker track --checkpoint runs/tiny --video clip.mp4 --text "the dog on the left" \
      --out clip_grounded.gif                        # no --box: the first box found from the text

`--frames DIR` is a folder of images (sorted by name), or a TNL2K/LaSOT-layout sequence folder
(`imgs/` or `img/` + `groundtruth.txt` + `language.txt`/`nlp.txt`), in which case `--box` defaults
to the first ground-truth box and `--text` to the sentence. `--text` without a first box (no
`--box`, no ground truth) is the sentence-only protocol (`nl`): the first box is grounded from the
sentence on frame 0 and drawn as such; `--protocol` picks one explicitly. Each output frame shows
the box (and the ground truth with `--show-gt`) and, below the frame, the frame index, the score,
a legend and the sentence; `--out` ends in .gif (Pillow) or .mp4 (imageio with the ffmpeg binary
of imageio-ffmpeg, both installed with the package). `--results FILE.txt` also writes the boxes in
the raw-result format. The work is `satracker_jax.track_video.track_video`.
"""
from __future__ import annotations

import argparse
import itertools
import sys

from satracker_jax import visualize
from satracker_jax.cli import common

PROTOCOLS = ("nl_bb", "bb", "nl")  # as `eval --protocol`


def add_arguments(parser: argparse.ArgumentParser) -> None:
  common.add_model_arguments(parser, "config file[:arg] (checked against the checkpoint)")
  source = parser.add_mutually_exclusive_group(required=True)
  source.add_argument("--frames", help="folder of frames, or a TNL2K/LaSOT-layout sequence folder")
  source.add_argument("--video", help="video file (.gif via Pillow; .mp4 etc. via imageio-ffmpeg)")
  parser.add_argument("--text", default=None,
                      help="the sentence describing the target (default: the folder's "
                           "language.txt / nlp.txt)")
  parser.add_argument("--box", default=None,
                      help="first-frame box x,y,w,h in pixels (default: the folder's first "
                           "ground-truth box; without one, the box is grounded from --text)")
  parser.add_argument("--protocol", choices=PROTOCOLS, default=None,
                      help="nl_bb: first box + sentence; bb: first box only (sentence not used); "
                           "nl: sentence only, the first box grounded on frame 0 (default: nl_bb "
                           "when a first box is known, else nl)")
  parser.add_argument("--out", required=True, help="output .gif or .mp4")
  parser.add_argument("--fps", type=float, default=10.0, help="frames per second of the output")
  parser.add_argument("--max-frames", type=int, default=0, help="track only the first N frames (0 = all)")
  parser.add_argument("--max-side", type=int, default=480,
                      help="shrink drawn frames (with the text band below them) to this longest side")
  parser.add_argument("--show-gt", action="store_true",
                      help="also draw the ground truth (frame folders with groundtruth.txt)")
  parser.add_argument("--results", default="",
                      help="also write the boxes here, in the raw-result format of `eval`: one "
                           "frame per line, x y w h separated by tabs (default: not written)")


def _open_video(path: str):
  frames = visualize.read_video(path)
  try:
    first = next(frames)
  except FileNotFoundError:
    raise SystemExit(f"--video {path}: no such file") from None
  except (RuntimeError, OSError, ValueError) as e:  # not a video imageio / ffmpeg can decode
    raise SystemExit(f"--video {path}: {e}") from None
  except StopIteration:
    raise SystemExit(f"--video {path}: no frames") from None
  return itertools.chain([first], frames)


def run(args, overrides) -> int:
  from satracker_jax import track_video as tv  # noqa: PLC0415
  try:
    visualize.check_writable(args.out)  # before loading a model and tracking for minutes
  except (ValueError, RuntimeError) as e:
    raise SystemExit(f"--out: {e}") from None
  gts = None
  if args.frames:
    try:
      paths, default_box, default_text, gts = tv.read_frame_folder(args.frames)
    except (FileNotFoundError, ValueError) as e:
      raise SystemExit(f"--frames {e}") from None
    frames = (visualize.load_frame(p) for p in paths)
  else:
    default_box = default_text = None
    frames = _open_video(args.video)
  try:
    box = tv.parse_box(args.box, "--box") if args.box else default_box
  except ValueError as e:
    raise SystemExit(str(e)) from None
  sentence = args.text if args.text is not None else default_text
  protocol = args.protocol or ("nl_bb" if box is not None else "nl")
  if protocol == "nl":
    if args.box:
      raise SystemExit("--box with --protocol nl: the nl protocol grounds the first box from the "
                       "sentence; drop --box, or use --protocol nl_bb")
    box = None
    if not sentence:
      raise SystemExit("give --text (the sentence the first box is grounded from) or --box x,y,w,h "
                       "(no groundtruth.txt / language.txt beside the frames)")
  elif box is None:
    raise SystemExit(f"--protocol {protocol} needs --box x,y,w,h (no groundtruth.txt to take the "
                     "first box from); --text alone grounds the first box from the sentence")
  elif protocol == "bb":
    sentence = ""
  elif not sentence:
    raise SystemExit("--text is required with a first box (no language.txt / nlp.txt beside the "
                     "frames); --protocol bb tracks from the box alone")

  config, variables = common.load_model(args, overrides, needs_vocab=True)
  try:
    summary = tv.track_video(config, variables, frames, box, sentence, args.out, fps=args.fps,
                             max_frames=args.max_frames, max_side=args.max_side,
                             gt_boxes=gts if args.show_gt else None, results=args.results,
                             say=lambda line: print(line, flush=True))
  except ValueError as e:
    raise SystemExit(str(e)) from None
  if summary["grounded"]:
    print("frame 0: first box grounded from the sentence: " +
          ",".join(f"{v:.1f}" for v in summary["first_box"]) +
          f" (score {summary['grounding_score']:.2f})", file=sys.stdout)
  print(f"tracked {summary['frames']} frames ({summary['fps']:.1f} frames/s after the compile); "
        f"wrote {args.out}", file=sys.stdout)
  return 0
