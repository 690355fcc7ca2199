"""Box formats, IoU/GIoU and crop geometry shared by the data pipeline, the tracker and the losses.

Formats (last axis = 4):
  cxcywh  centre + size; inside crops everything is normalised to [0, 1] by the crop side.
  xyxy    top-left + bottom-right.
  xywh    top-left + size; pixel boxes in frames / result files (pytracking convention).

Conversions and IoU work on numpy arrays and on jax arrays (also under jit): the array module is
picked from the input. Crop geometry is numpy only (host side).

Crop convention (OSTrack `sample_target`): the crop is a square of side
`ceil(sqrt(w * h) * factor)` pixels centred on the box centre (x + w/2, y + h/2), its top-left
corner rounded to whole pixels, then resized to `out_size`. Coordinates are continuous: pixel i
covers [i, i + 1). Whoever crops pads the parts outside the image. `map_box_to_crop` and
`map_box_back` are exact inverses w.r.t. the pixels actually cropped; OSTrack's own mapping
ignores the rounding of the corner (and uses (out-1)/2 as the centre), so it can differ from ours by
up to half a source pixel.
"""
from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image

_EPS = 1e-7


def _xp(a):
  return jnp if isinstance(a, jax.Array) else np


def _xp2(a, b):
  return jnp if isinstance(a, jax.Array) or isinstance(b, jax.Array) else np


def _split(box):
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
  enclose_w = xp.maximum(xp.maximum(a[..., 2], b[..., 2]) - xp.minimum(a[..., 0], b[..., 0]), 0.0)
  enclose_h = xp.maximum(xp.maximum(a[..., 3], b[..., 3]) - xp.minimum(a[..., 1], b[..., 1]), 0.0)
  enclose = enclose_w * enclose_h
  return iou - (enclose - union) / (enclose + _EPS)


def _iou_parts(xp, a, b):
  # Sizes are clamped at 0 so an inverted (x1 < x0) prediction counts as empty, not negative.
  area_a = xp.maximum(a[..., 2] - a[..., 0], 0.0) * xp.maximum(a[..., 3] - a[..., 1], 0.0)
  area_b = xp.maximum(b[..., 2] - b[..., 0], 0.0) * xp.maximum(b[..., 3] - b[..., 1], 0.0)
  inter_w = xp.maximum(xp.minimum(a[..., 2], b[..., 2]) - xp.maximum(a[..., 0], b[..., 0]), 0.0)
  inter_h = xp.maximum(xp.minimum(a[..., 3], b[..., 3]) - xp.maximum(a[..., 1], b[..., 1]), 0.0)
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


def crop_image(frame: np.ndarray, params: CropParams, pad_value=None) -> np.ndarray:
  """The square `params` crop of a uint8 HxWx3 frame, resized to out_size x out_size (bilinear).

  Only the part inside the image is resampled (a crop of a large box near the border can be
  mostly padding; building the padded square first would cost its full area). Parts outside the
  image get `pad_value` (default: the frame's mean colour).
  """
  h, w = frame.shape[:2]
  out = params.out_size
  if pad_value is None:
    # Every 4th pixel each way: the padding colour need not be exact, and a full-frame mean
    # costs as much as the crop itself on HD frames.
    pad_value = frame[::4, ::4].reshape(-1, 3).mean(axis=0)
  crop = np.empty((out, out, 3), np.uint8)
  crop[...] = np.clip(np.round(pad_value), 0, 255).astype(np.uint8)
  scale = out / params.size  # output pixels per source pixel

  def visible(origin, limit):
    # Output pixel range covering the image, rounded to whole output pixels, and its source span.
    lo = int(round((max(origin, 0.0) - origin) * scale))
    hi = int(round((min(origin + params.size, float(limit)) - origin) * scale))
    lo, hi = max(lo, 0), min(hi, out)
    src_lo = min(max(origin + lo / scale, 0.0), float(limit))
    src_hi = min(max(origin + hi / scale, 0.0), float(limit))
    return lo, hi, src_lo, src_hi

  x_lo, x_hi, sx0, sx1 = visible(params.x0, w)
  y_lo, y_hi, sy0, sy1 = visible(params.y0, h)
  if x_hi <= x_lo or y_hi <= y_lo or sx1 <= sx0 or sy1 <= sy0:
    return crop
  # Hand Pillow only the source pixels the resampling filter reads (plus a margin for its
  # support), not the whole frame.
  margin = int(np.ceil(max(1.0, 1.0 / scale))) + 1
  ix0, iy0 = max(int(np.floor(sx0)) - margin, 0), max(int(np.floor(sy0)) - margin, 0)
  ix1, iy1 = min(int(np.ceil(sx1)) + margin, w), min(int(np.ceil(sy1)) + margin, h)
  region = Image.fromarray(np.ascontiguousarray(frame[iy0:iy1, ix0:ix1])).resize(
      (x_hi - x_lo, y_hi - y_lo), Image.BILINEAR, box=(sx0 - ix0, sy0 - iy0, sx1 - ix0, sy1 - iy0))
  crop[y_lo:y_hi, x_lo:x_hi] = np.asarray(region)
  return crop
