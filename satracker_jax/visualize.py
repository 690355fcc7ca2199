"""Drawing tracker output on frames and writing the frames as a GIF or MP4.

Used by `satracker track` and the demo. GIFs need Pillow only (the default). MP4 goes through
`imageio`'s ffmpeg plugin with the ffmpeg binary that the `imageio-ffmpeg` wheel ships (both are
install requirements, so `--out clip.mp4` works on a fresh install with no system ffmpeg); an
`ffmpeg` binary on PATH is the fallback when those packages were removed, and a clear error names
both when neither is there. Reading videos (`read_video`) has the same rule, except GIF input,
which Pillow reads.
"""
from __future__ import annotations

import contextlib
import itertools
import os
import shutil
import subprocess
import warnings
from typing import Iterable, Iterator, Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

PRED_COLOR = (255, 40, 40)
GT_COLOR = (40, 220, 40)
GROUNDED_COLOR = (255, 190, 0)  # a first box found from the sentence (the `nl` protocol)
BAND_COLOR = (0, 0, 0)
TEXT_COLOR = (255, 255, 255)
SENTENCE_COLOR = (255, 255, 200)
SENTENCE_LINES = 3


def _font(size: int):
  try:
    return ImageFont.load_default(size=size)
  except TypeError:  # Pillow built without FreeType: fixed bitmap font
    return ImageFont.load_default()


def _wrap(draw, text: str, font, width: int, max_lines: int) -> list[str]:
  """Greedy word wrap measured in pixels; the last line ends in "…" when words were left out."""
  lines: list[str] = []
  for word in text.split():
    if lines and draw.textlength(f"{lines[-1]} {word}", font=font) <= width:
      lines[-1] = f"{lines[-1]} {word}"
    else:
      lines.append(word)
  if len(lines) > max_lines:
    lines = lines[:max_lines]
    lines[-1] += " …"
  return lines


def draw_tracking(frame: np.ndarray, box=None, score: float | None = None, sentence: str | None = None,
                  gt_box=None, frame_index: int | None = None, color=PRED_COLOR,
                  legend: Sequence[tuple[str, tuple]] | None = None, note: str = "") -> np.ndarray:
  """Returns `frame` (uint8 HxWx3) with the x,y,w,h boxes drawn on it and a band *below* it:
  the frame index, score and `note` on one line, the legend, then the sentence (wrapped, at most
  3 lines). Only the boxes touch the frame's pixels, so nothing the sentence talks about is hidden
  (a band over a 160x120 frame hid its bottom quarter).

  The prediction is drawn in `color`, the ground truth (optional) in green. `legend` lists
  (label, colour) entries; by default the boxes this call draws. The band's height depends only on
  the frame width, the legend and the sentence, so frames of one video, drawn with the same legend
  and sentence, keep one size (a GIF needs that).
  """
  frame = np.asarray(frame, dtype=np.uint8)
  image = Image.fromarray(frame).convert("RGB")
  draw = ImageDraw.Draw(image)
  height, width = image.height, image.width
  # Line width and font scale with the frame so small synthetic frames and HD video both read well.
  line = max(1, round(min(height, width) / 160))
  font = _font(max(9, round(min(height, width) / 28)))
  for b, c in ((gt_box, GT_COLOR), (box, color)):
    if b is None:
      continue
    x, y, w, h = (float(v) for v in b)
    if not np.isfinite([x, y, w, h]).all() or w <= 0 or h <= 0:
      continue
    draw.rectangle([x, y, x + w - 1, y + h - 1], outline=c, width=line)
  if legend is None:
    legend = ([("tracker", color)] if box is not None else []) + \
             ([("ground truth", GT_COLOR)] if gt_box is not None else [])
  info = "  ".join(([f"#{frame_index}"] if frame_index is not None else []) +
                   ([f"score {score:.2f}"] if score is not None else []) + ([note] if note else []))

  ascent, descent = font.getmetrics()
  line_height = ascent + descent + 2
  pad = 3
  swatch = ascent  # a square the height of a capital letter
  gap = draw.textlength("  ", font=font)
  # Rows of the band: ("text", string, colour) or ("legend", [(x, label, colour), ...]).
  rows: list[tuple] = []
  if frame_index is not None or score is not None or note:
    rows.append(("text", info, TEXT_COLOR))
  entries, x = [], pad
  for label, c in legend:
    entry_width = swatch + 4 + draw.textlength(label, font=font)
    if entries and x + entry_width > width - pad:
      rows.append(("legend", entries))
      entries, x = [], pad
    entries.append((x, label, c))
    x += entry_width + gap
  if entries:
    rows.append(("legend", entries))
  for text in _wrap(draw, sentence or "", font, width - 2 * pad, SENTENCE_LINES):
    rows.append(("text", text, SENTENCE_COLOR))

  band = len(rows) * line_height + (2 * pad if rows else 0)
  out = Image.new("RGB", (width, height + band), BAND_COLOR)
  out.paste(image, (0, 0))
  draw = ImageDraw.Draw(out)
  y = height + pad
  for row in rows:
    if row[0] == "text":
      draw.text((pad, y), row[1], fill=row[2], font=font)
    else:
      for x, label, c in row[1]:
        top = y + 1
        draw.rectangle([x, top, x + swatch - 1, top + swatch - 1], fill=tuple(c))
        draw.text((x + swatch + 4, y), label, fill=TEXT_COLOR, font=font)
    y += line_height
  return np.asarray(out)


def _ffmpeg() -> str | None:
  return shutil.which("ffmpeg")


def _imageio():
  """`imageio.v3` when it and the ffmpeg binary of `imageio-ffmpeg` are importable, else None."""
  try:
    import imageio.v3 as iio  # noqa: PLC0415
    import imageio_ffmpeg  # noqa: PLC0415, F401  (the plugin's binary; checked before any work)
  except ImportError:
    return None
  return iio


def _needs_ffmpeg(what: str) -> RuntimeError:
  return RuntimeError(
      f"{what} needs the `imageio` and `imageio-ffmpeg` packages (install requirements of "
      "satracker-jax: pip install imageio imageio-ffmpeg) or an `ffmpeg` binary on PATH; neither "
      "is available. Write a .gif instead (Pillow only).")


def check_writable(path: str) -> None:
  """Raises before any work is done when `path` cannot be written (bad suffix, no MP4 encoder)."""
  suffix = os.path.splitext(path)[1].lower()
  if suffix not in (".gif", ".mp4"):
    raise ValueError(f"{path}: output must end in .gif or .mp4")
  if suffix == ".mp4" and _imageio() is None and _ffmpeg() is None:
    raise _needs_ffmpeg("writing .mp4")


def write_gif(frames: Iterable[np.ndarray], path: str, fps: float = 10.0) -> str:
  images = [Image.fromarray(np.asarray(f, dtype=np.uint8)) for f in frames]
  if not images:
    raise ValueError("write_gif: no frames")
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  images[0].save(path, save_all=True, append_images=images[1:],
                 duration=max(20, round(1000.0 / fps)), loop=0, optimize=False)
  return path


@contextlib.contextmanager
def _ffmpeg_starts_quietly():
  """imageio-ffmpeg starts ffmpeg with a preexec_fn (os.setpgrp: Ctrl-C reaches us, not ffmpeg),
  so Python runs its at-fork hooks, and JAX's then warns that the fork "will likely lead to a
  deadlock". The child execs ffmpeg at once and runs nothing of JAX's: that one warning, raised
  from `subprocess`, is not shown."""
  with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message=r"os\.fork\(\) was called", category=RuntimeWarning,
                            module="subprocess")
    yield


def write_mp4(frames: Iterable[np.ndarray], path: str, fps: float = 25.0) -> str:
  frames = [np.asarray(f, dtype=np.uint8) for f in frames]
  if not frames:
    raise ValueError("write_mp4: no frames")
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  # H.264 with yuv420p needs even sides; pad by one pixel rather than resample.
  h, w = frames[0].shape[:2]
  ph, pw = h + h % 2, w + w % 2
  frames = [np.pad(f, ((0, ph - h), (0, pw - w), (0, 0)), mode="edge") for f in frames]
  iio = _imageio()
  if iio is not None:
    # macro_block_size=1: the plugin would otherwise resize every frame up to a multiple of 16.
    with _ffmpeg_starts_quietly():
      iio.imwrite(path, np.stack(frames), plugin="FFMPEG", fps=fps, codec="libx264",
                  macro_block_size=1)
    return path
  binary = _ffmpeg()
  if binary is None:
    raise _needs_ffmpeg("writing .mp4")
  cmd = [binary, "-y", "-loglevel", "error", "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{pw}x{ph}",
         "-r", str(fps), "-i", "-", "-pix_fmt", "yuv420p", "-vcodec", "libx264", path]
  subprocess.run(cmd, input=b"".join(f.tobytes() for f in frames), check=True)
  return path


def write_video(frames: Iterable[np.ndarray], path: str, fps: float = 10.0) -> str:
  """Dispatches on the suffix: .gif (Pillow) or .mp4 (imageio / ffmpeg)."""
  check_writable(path)
  if path.lower().endswith(".gif"):
    return write_gif(frames, path, fps)
  return write_mp4(frames, path, fps)


def read_video(path: str) -> Iterator[np.ndarray]:
  """Yields uint8 HxWx3 RGB frames of a video file (GIF via Pillow; others via imageio / ffmpeg)."""
  if not os.path.exists(path):
    raise FileNotFoundError(path)
  if path.lower().endswith(".gif"):
    with Image.open(path) as image:
      for i in range(getattr(image, "n_frames", 1)):
        image.seek(i)
        yield np.asarray(image.convert("RGB"))
    return
  iio = _imageio()
  if iio is not None:
    with iio.imopen(path, "r", plugin="FFMPEG") as video:
      frames = video.iter()
      with _ffmpeg_starts_quietly():  # ffmpeg starts with the first frame
        first = next(frames, None)
      for frame in () if first is None else itertools.chain([first], frames):
        yield np.asarray(frame)[..., :3].astype(np.uint8)
    return
  binary = _ffmpeg()
  if binary is None:
    raise _needs_ffmpeg(f"reading {os.path.basename(path)}")
  probe = shutil.which("ffprobe")
  if probe is None:
    raise _needs_ffmpeg(f"reading {os.path.basename(path)} (ffprobe missing)")
  size = subprocess.run([probe, "-v", "error", "-select_streams", "v:0", "-show_entries",
                         "stream=width,height", "-of", "csv=p=0", path],
                        capture_output=True, text=True, check=True).stdout.strip().split(",")
  w, h = int(size[0]), int(size[1])
  proc = subprocess.Popen([binary, "-loglevel", "error", "-i", path, "-f", "rawvideo", "-pix_fmt", "rgb24", "-"],
                          stdout=subprocess.PIPE)
  try:
    while True:
      buf = proc.stdout.read(w * h * 3)
      if len(buf) < w * h * 3:
        break
      yield np.frombuffer(buf, np.uint8).reshape(h, w, 3)
  finally:
    proc.stdout.close()
    proc.wait()


def load_frame(path: str) -> np.ndarray:
  """uint8 HxWx3 RGB (grey and RGBA images are converted)."""
  with Image.open(path) as image:
    return np.asarray(image.convert("RGB"))


def montage(frames: Sequence[np.ndarray], columns: int) -> np.ndarray:
  """Tiles equally sized frames into one image (for side-by-side demo GIFs)."""
  h, w = frames[0].shape[:2]
  rows = -(-len(frames) // columns)
  out = np.zeros((rows * h, columns * w, 3), np.uint8)
  for i, f in enumerate(frames):
    r, c = divmod(i, columns)
    out[r * h:(r + 1) * h, c * w:(c + 1) * w] = f
  return out
