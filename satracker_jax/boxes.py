"""Box formats, IoU/GIoU and crop geometry shared by the data pipeline, the tracker and the losses.

Formats (last axis = 4):
  cxcywh  centre + size; inside crops everything is normalised to [0, 1] by the crop side.
  xyxy    top-left + bottom-right.
  xywh    top-left + size; pixel boxes in frames / result files (pytracking convention).

Conversions and IoU work on numpy arrays and on jax arrays (also under jit): the array module is
picked from the input. Crop geometry is numpy only (host side). JAX is not imported here: the
input pipeline's worker processes use these functions on numpy arrays only, and importing JAX cost
each of them 1.4 s of CPU at start (an input cannot hold a jax array before JAX is imported).

Crop convention (OSTrack `sample_target`): the crop is a square of side
`ceil(sqrt(w * h) * factor)` pixels centred on the box centre (x + w/2, y + h/2), its top-left
corner rounded to whole pixels, then resized to `out_size`. Coordinates are continuous: pixel i
covers [i, i + 1). Whoever crops pads the parts outside the image. `map_box_to_crop` and
`map_box_back` are exact inverses w.r.t. the pixels actually cropped; OSTrack's own mapping
ignores the rounding of the corner (and uses (out-1)/2 as the centre), so it can differ from ours by
up to half a source pixel. Which output pixels show the image and which source pixels fill them is
`crop_span`, the one place that says so: `crop_image`, the evaluation's reduced-scale crop and
the training pipeline's crop plan all use it.
"""
from __future__ import annotations

import math
import sys
from typing import NamedTuple

import numpy as np
from PIL import Image

_EPS = 1e-7


def _is_jax(a) -> bool:
  jax = sys.modules.get("jax")
  return jax is not None and isinstance(a, jax.Array)


def _xp(a):
  if _is_jax(a):
    import jax.numpy as jnp  # noqa: PLC0415  (already imported: the input is a jax array)
    return jnp
  return np


def _xp2(a, b):
  return _xp(a) if _is_jax(a) else _xp(b)


def _split(box):
  """The four coordinates of [..., 4] boxes. A JAX array is split once (the gradient of a split is
  one concatenation; indexing each coordinate made a padded gradient array per read)."""
  if _is_jax(box):
    import jax.numpy as jnp  # noqa: PLC0415  (already imported: the input is a jax array)
    return tuple(jnp.squeeze(part, -1) for part in jnp.split(box, 4, axis=-1))
  return box[..., 0], box[..., 1], box[..., 2], box[..., 3]


def cxcywh_to_xyxy(box):
  xp = _xp(box)
  cx, cy, w, h = _split(xp.asarray(box))
  return xp.stack([cx - 0.5 * w, cy - 0.5 * h, cx + 0.5 * w, cy + 0.5 * h], axis=-1)


def xyxy_to_cxcywh(box):
  xp = _xp(box)
  x0, y0, x1, y1 = _split(xp.asarray(box))
  return xp.stack([0.5 * (x0 + x1), 0.5 * (y0 + y1), x1 - x0, y1 - y0], axis=-1)


def xywh_to_xyxy(box):
  xp = _xp(box)
  x, y, w, h = _split(xp.asarray(box))
  return xp.stack([x, y, x + w, y + h], axis=-1)


def xyxy_to_xywh(box):
  xp = _xp(box)
  x0, y0, x1, y1 = _split(xp.asarray(box))
  return xp.stack([x0, y0, x1 - x0, y1 - y0], axis=-1)


def xywh_to_cxcywh(box):
  xp = _xp(box)
  x, y, w, h = _split(xp.asarray(box))
  return xp.stack([x + 0.5 * w, y + 0.5 * h, w, h], axis=-1)


def cxcywh_to_xywh(box):
  xp = _xp(box)
  cx, cy, w, h = _split(xp.asarray(box))
  return xp.stack([cx - 0.5 * w, cy - 0.5 * h, w, h], axis=-1)


def box_iou(a_xyxy, b_xyxy):
  """Element-wise IoU of xyxy boxes (broadcasting over leading axes); 0 for empty unions."""
  xp = _xp2(a_xyxy, b_xyxy)
  iou, _, _ = _iou_parts(xp, xp.asarray(a_xyxy), xp.asarray(b_xyxy))
  return iou


def generalized_box_iou(a_xyxy, b_xyxy):
  """Element-wise GIoU of xyxy boxes, in [-1, 1]; finite for zero-size boxes."""
  xp = _xp2(a_xyxy, b_xyxy)
  iou, union, (a, b) = _iou_parts(xp, xp.asarray(a_xyxy), xp.asarray(b_xyxy))
  enclose_w = xp.maximum(xp.maximum(a[2], b[2]) - xp.minimum(a[0], b[0]), 0.0)
  enclose_h = xp.maximum(xp.maximum(a[3], b[3]) - xp.minimum(a[1], b[1]), 0.0)
  enclose = enclose_w * enclose_h
  return iou - (enclose - union) / (enclose + _EPS)


def _iou_parts(xp, a, b):
  """IoU, union and the two boxes' coordinates (x0, y0, x1, y1 each)."""
  a, b = _split(a), _split(b)
  # Sizes are clamped at 0 so an inverted (x1 < x0) prediction counts as empty, not negative.
  area_a = xp.maximum(a[2] - a[0], 0.0) * xp.maximum(a[3] - a[1], 0.0)
  area_b = xp.maximum(b[2] - b[0], 0.0) * xp.maximum(b[3] - b[1], 0.0)
  inter_w = xp.maximum(xp.minimum(a[2], b[2]) - xp.maximum(a[0], b[0]), 0.0)
  inter_h = xp.maximum(xp.minimum(a[3], b[3]) - xp.maximum(a[1], b[1]), 0.0)
  inter = inter_w * inter_h
  union = area_a + area_b - inter
  return inter / (union + _EPS), union, (a, b)


class CropParams(NamedTuple):
  """Where a square crop lies in the source image: top-left (x0, y0) and side in source pixels."""
  x0: float
  y0: float
  size: float
  out_size: int

  @property
  def resize_factor(self) -> float:
    """Output pixels per source pixel (OSTrack's `resize_factor`)."""
    return self.out_size / self.size


def crop_params(box_xywh, factor: float, out_size: int) -> CropParams:
  """Crop of side ceil(sqrt(w*h)*factor) centred on the box; sides below 1 pixel become 1 (no raise,
  so a collapsed tracker box keeps tracking instead of crashing)."""
  x, y, w, h = (float(v) for v in np.asarray(box_xywh, np.float64).reshape(4))
  side = math.ceil(math.sqrt(max(w, 0.0) * max(h, 0.0)) * factor)
  side = max(side, 1)
  # Python's round (half to even) as in OSTrack, so crops match its pixels.
  x0 = float(round(x + 0.5 * w - 0.5 * side))
  y0 = float(round(y + 0.5 * h - 0.5 * side))
  return CropParams(x0=x0, y0=y0, size=float(side), out_size=int(out_size))


def map_box_to_crop(box_xywh, params: CropParams) -> np.ndarray:
  """Pixel x,y,w,h box(es) in the frame -> normalised cx,cy,w,h in the crop."""
  box = np.asarray(box_xywh, np.float64)
  cx, cy, w, h = _split(xywh_to_cxcywh(box))
  s = params.size
  return np.stack([(cx - params.x0) / s, (cy - params.y0) / s, w / s, h / s], axis=-1)


def map_box_back(box_norm_cxcywh, params: CropParams) -> np.ndarray:
  """Normalised cx,cy,w,h box(es) in the crop -> pixel x,y,w,h in the frame."""
  box = np.asarray(box_norm_cxcywh, np.float64)
  cx, cy, w, h = _split(box)
  s = params.size
  return cxcywh_to_xywh(np.stack([params.x0 + cx * s, params.y0 + cy * s, w * s, h * s], axis=-1))


def clip_box_xywh(box_xywh, width: float, height: float, min_size: float = 0.0) -> np.ndarray:
  """Clips a pixel x,y,w,h box to the image (pytracking trackers' last step)."""
  x0, y0, x1, y1 = _split(xywh_to_xyxy(np.asarray(box_xywh, np.float64)))
  x0 = np.clip(x0, 0.0, width)
  y0 = np.clip(y0, 0.0, height)
  x1 = np.clip(x1, 0.0, width)
  y1 = np.clip(y1, 0.0, height)
  return np.stack([x0, y0, np.maximum(x1 - x0, min_size), np.maximum(y1 - y0, min_size)], axis=-1)


class CropSpan(NamedTuple):
  """Where a square crop meets the image (`crop_span`): the output pixels that show it, the
  source span resampled onto them, and the whole source pixels the resampling reads."""
  x_lo: int    # output columns [x_lo, x_hi) and rows [y_lo, y_hi) cover the image;
  y_lo: int    # the rest of the out_size x out_size crop is padding
  x_hi: int
  y_hi: int
  sx0: float   # the continuous source span (inside the image) resampled onto those pixels
  sy0: float
  sx1: float
  sy1: float
  ix0: int     # the whole source pixels [ix0, ix1) x [iy0, iy1) the bilinear filter reads:
  iy0: int     # the span plus a margin for the filter's support, clipped to the pixels there are
  ix1: int
  iy1: int

  @property
  def empty(self) -> bool:
    """The crop misses the image: all padding."""
    return (self.x_hi <= self.x_lo or self.y_hi <= self.y_lo or self.sx1 <= self.sx0
            or self.sy1 <= self.sy0)

  def covers(self, out_size: int) -> bool:
    """The image fills the whole crop: no padding."""
    visible = (self.x_lo, self.y_lo, self.x_hi, self.y_hi)
    return not self.empty and visible == (0, 0, out_size, out_size)


def crop_span(params: CropParams, width: float, height: float, pixel_width: int | None = None,
              pixel_height: int | None = None) -> CropSpan:
  """The crop geometry: which part of the `params` crop shows an image `width` x `height` source
  pixels large, and from where. The one home of this arithmetic: `crop_image`, the evaluation's
  reduced-scale crop (evaluation/decode.py) and the training pipeline's in-graph crop
  (data_pipelines/crop_window.py) all take their numbers from here, so they crop the same pixels.
  TensorFlow gets no twin of it: crop_window.py computes the span in Python when it plans a
  sample and hands the graph plain numbers (window, placement, affine).

  The visible rectangle is rounded to whole output pixels and its source span follows from the
  rounded edges, so the resampling maps exactly those output pixels onto exactly that span.
  `width`/`height` may be fractional (a 1/k-scale decode's frame ends at W/k); `pixel_width`/
  `pixel_height` (default: the same) are the pixels the image actually has, which bound the
  read region.
  """
  out = int(params.out_size)
  scale = out / params.size  # output pixels per source pixel

  def visible(origin, limit):
    lo = int(round((max(origin, 0.0) - origin) * scale))
    hi = int(round((min(origin + params.size, float(limit)) - origin) * scale))
    lo, hi = max(lo, 0), min(hi, out)
    src_lo = min(max(origin + lo / scale, 0.0), float(limit))
    src_hi = min(max(origin + hi / scale, 0.0), float(limit))
    return lo, hi, src_lo, src_hi

  x_lo, x_hi, sx0, sx1 = visible(params.x0, width)
  y_lo, y_hi, sy0, sy1 = visible(params.y0, height)
  pixel_width = width if pixel_width is None else pixel_width
  pixel_height = height if pixel_height is None else pixel_height
  margin = int(math.ceil(max(1.0, 1.0 / scale))) + 1
  ix0, iy0 = max(int(math.floor(sx0)) - margin, 0), max(int(math.floor(sy0)) - margin, 0)
  ix1 = min(int(math.ceil(sx1)) + margin, pixel_width)
  iy1 = min(int(math.ceil(sy1)) + margin, pixel_height)
  return CropSpan(x_lo, y_lo, x_hi, y_hi, sx0, sy0, sx1, sy1, ix0, iy0, ix1, iy1)


def render_crop(span: CropSpan, out_size: int, read_region, pad_value) -> np.ndarray:
  """uint8 [out, out, 3]: the `span` part resampled (Pillow BILINEAR with a box), the rest
  padded with `pad_value()` (called only when the crop leaves the image).

  `read_region((ix0, iy0, ix1, iy1))` returns those source pixels as an RGB Pillow image. Pillow's
  filter weights depend on the box's float offsets, so resampling the same region with the same
  relative box is what makes every caller's crops agree bit for bit. The array is read-only when
  the image fills the crop (no copy is made).
  """
  out = int(out_size)
  if not span.covers(out):
    crop = np.empty((out, out, 3), np.uint8)
    crop[...] = np.clip(np.round(pad_value()), 0, 255).astype(np.uint8)
    if span.empty:
      return crop
  region = read_region((span.ix0, span.iy0, span.ix1, span.iy1)).resize(
      (span.x_hi - span.x_lo, span.y_hi - span.y_lo), Image.BILINEAR,
      box=(span.sx0 - span.ix0, span.sy0 - span.iy0, span.sx1 - span.ix0, span.sy1 - span.iy0))
  if span.covers(out):
    return np.asarray(region)
  crop[span.y_lo:span.y_hi, span.x_lo:span.x_hi] = np.asarray(region)
  return crop


def crop_image(frame: np.ndarray, params: CropParams, pad_value=None) -> np.ndarray:
  """The square `params` crop of a uint8 HxWx3 frame, resized to out_size x out_size (bilinear);
  a new array the caller owns.

  Only the part inside the image is resampled (a crop of a large box near the border can be
  mostly padding; building the padded square first would cost its full area), and only the source
  pixels the filter reads are handed to Pillow, not the whole frame. Parts outside the image get
  `pad_value` (default: the frame's mean colour).
  """
  h, w = frame.shape[:2]

  def pad():
    if pad_value is not None:
      return pad_value
    # Every 4th pixel each way: the padding colour need not be exact, and a full-frame mean
    # costs as much as the crop itself on HD frames.
    return frame[::4, ::4].reshape(-1, 3).mean(axis=0)

  def read_region(box):
    x0, y0, x1, y1 = box
    return Image.fromarray(np.ascontiguousarray(frame[y0:y1, x0:x1]))

  crop = render_crop(crop_span(params, w, h), params.out_size, read_region, pad)
  return crop if crop.flags.writeable else crop.copy()
