"""Frames for offline evaluation: decoded at the coarsest scale the crop allows and cropped
without ever becoming a full-resolution array.

    frame = decode_frame("00042.jpg", scale=decode_scale(crop_side, out_size))
    search = frame.crop(params)        # params in full-frame pixels, as for boxes.crop_image

Why: the tracker keeps a 128..256 pixel crop of each frame. On a 720p JPEG (one core, CPU time,
`satracker bench eval`'s stage table) a full decode to an array costs ~2.5 ms and
`boxes.crop_image` of it ~2 ms more (its padding colour is a mean over the whole frame); decoding
at the crop's scale and cropping the Pillow image directly costs ~1.8 ms together. JPEG's DCT can
decode at 1/2, 1/4 or 1/8 of the size directly (`Image.draft`, libjpeg's scaled IDCT). We decode
at scale 1/k only when the crop shrinks the frame at least k times anyway (`decode_scale`), so the
crop is still a downscale of the decoded pixels, never an upscale. The padding colour is computed
only for crops that leave the image, from Pillow's histogram of the sampled pixels.

Exact geometry: a 1/k decode maps full-frame coordinate x to x/k (each 8x8 block becomes an
8/k x 8/k one), so crops divide their corners by k and end at the frame's true extent W/k x H/k
(when W or H is not a multiple of k, the decoded image's last, partial pixel reaches beyond it).
Boxes stay in full-frame pixels throughout. Pixel values differ from a crop of the full decode by
the DCT-domain downscale (about half a grey level on average on the synthetic 720p videos); at
scale 1 the crop equals `boxes.crop_image` of the decoded array bit for bit (tests hold both).

PNG and other formats ignore the draft request and decode at scale 1, the slower exact path.
"""
from __future__ import annotations

import io

import numpy as np
from PIL import Image

from satracker_jax import boxes as box_lib

SCALES = (8, 4, 2, 1)  # the reductions libjpeg's scaled IDCT offers
# boxes.crop_image pads with the mean of every 4th pixel each way; the same pixels at scale 1.
PAD_STRIDE = 4


class FrameError(Exception):
  """A frame that cannot be read (missing, truncated, not an image); the message names the file."""

  def __init__(self, path: str, reason: str):
    super().__init__(f"{path}: {reason}")
    self.path = path


def decode_scale(crop_side: float, out_size: int) -> int:
  """The coarsest JPEG scale 1/k (k in 1, 2, 4, 8) at which a `crop_side`-pixel square crop
  resized to `out_size` is still a downscale (k <= crop_side / out_size)."""
  ratio = float(crop_side) / float(out_size)
  return next((k for k in SCALES if k <= ratio), 1)


class DecodedFrame:
  """A decoded frame at scale 1/`scale` that crops itself in full-frame coordinates
  (`tracker.FrameLike`). `width`, `height`: the full frame's size; `requested_scale`: the k asked
  of the decoder (PNGs and tiny frames may come back at a finer scale)."""

  def __init__(self, image: Image.Image, width: int, height: int, scale: int, requested_scale: int):
    self.image = image
    self.width, self.height = int(width), int(height)
    self.scale = int(scale)
    self.requested_scale = int(requested_scale)
    self._pad = None

  def pad_value(self) -> np.ndarray:
    """Mean colour of every 4th full-frame pixel each way (at scale 1 exactly `crop_image`'s),
    computed only when a crop leaves the image."""
    if self._pad is None:
      stride = max(PAD_STRIDE // self.scale, 1)
      w, h = self.image.size
      # Nearest-neighbour affine sampling of pixels 0, s, 2s, ...: Pillow samples at
      # floor(s * (x + 0.5) + c), so c = 0.5 - s / 2 lands on s * x.
      c = 0.5 - stride / 2.0
      grid = self.image.transform((-(-w // stride), -(-h // stride)), Image.AFFINE,
                                  (stride, 0, c, 0, stride, c), Image.NEAREST)
      # Per-channel sums from Pillow's histogram: integer sums are exact, so this equals numpy's
      # float mean of the same pixels bit for bit, 10x faster than numpy's strided reduction.
      hist = np.asarray(grid.histogram(), np.int64).reshape(3, 256)
      self._pad = (hist @ np.arange(256, dtype=np.int64)) / float(grid.width * grid.height)
    return self._pad

  def crop(self, params: box_lib.CropParams) -> np.ndarray:
    """`boxes.crop_image` of the frame, cropped straight from the decoded Pillow image: the same
    geometry (`boxes.crop_span`, in decoded pixels; the content spans W/k x H/k of them) and the
    same resampling (`boxes.render_crop`), without converting the frame to an array first."""
    k = float(self.scale)
    scaled = box_lib.CropParams(params.x0 / k, params.y0 / k, params.size / k, params.out_size)
    span = box_lib.crop_span(scaled, self.width / k, self.height / k, self.image.width,
                             self.image.height)
    return box_lib.render_crop(span, params.out_size, self.image.crop, self.pad_value)

  def to_array(self) -> np.ndarray:
    """The decoded pixels as uint8 [h, w, 3] (at this frame's scale)."""
    return np.asarray(self.image)


def _source(path: str):
  """What Pillow opens: the path itself, or a URL's bytes."""
  if "://" not in path:
    return path
  from data_pipelines import files  # noqa: PLC0415  (TensorFlow's file systems, for URLs only)
  return io.BytesIO(files.read_bytes(path))


def decode_frame(path: str, scale: int = 1) -> DecodedFrame:
  """Decodes `path` at scale 1/`scale` (JPEG; other formats at 1) into a `DecodedFrame`.
  A missing, truncated or undecodable file is a `FrameError` naming it. A frame on a bucket (a URL)
  is read through `data_pipelines/files.py` and decoded from memory."""
  try:
    with Image.open(_source(path)) as image:
      width, height = image.size
      if scale > 1:
        # Pillow picks the largest reduction whose result is at least the requested size, so
        # asking for ceil(W/k) x ceil(H/k) never reduces more than k.
        image.draft("RGB", (-(-width // scale), -(-height // scale)))
      image.load()
      if image.mode != "RGB":
        image = image.convert("RGB")
  except FileNotFoundError:
    raise FrameError(path, "frame file missing") from None
  except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
    raise FrameError(path, f"cannot decode frame ({type(e).__name__}: {e})") from None
  actual = next((k for k in SCALES if image.size == (-(-width // k), -(-height // k))), None)
  if actual is None:
    raise FrameError(path, f"decoder returned {image.size} for a {width}x{height} image")
  return DecodedFrame(image, width, height, actual, scale)
