"""Where the in-graph crop reads its pixels: the decode window and resize of one square crop.

No TensorFlow here. `plan_crop` turns `boxes.CropParams` (the tracker's crop) and the frame size
into the numbers `ingraph.render_crop` needs, so the graph does pixel work only:

  window    rows/columns to decode, in the coordinates of the decoded image (see `ratio`);
  ratio     JPEG DCT scaling (1, 2, 4 or 8): libjpeg decodes at 1/ratio size, skipping most of
            the IDCT, colour conversion and upsampling work (not the entropy decoding); decoded
            pixel j covers source pixels [ratio*j, ratio*(j+1)), so the geometry stays continuous
            (pixel i covers [i, i + 1));
  place     output rectangle (y, x, h, w) inside the out_size x out_size crop that covers the
            image; the rest is padding;
  affine    scale and translation (y, x) of `tf.raw_ops.ScaleAndTranslate` mapping `place` onto
            the decoded window.

The geometry is `satracker_jax.boxes.crop_span`, the function `boxes.crop_image` uses: the same
output rectangle, the same source span for it, the same source pixels read. It is computed here,
in Python, once per planned crop, and the graph gets only the resulting numbers: TensorFlow needs
no twin of the formula, so the two cannot drift apart. The filter is a triangle ("bilinear") one
whose support widens with the shrink factor, which is what Pillow's BILINEAR resize with a box does.
`ScaleAndTranslate(kernel_type="triangle", antialias=True)` computes the same taps and
normalised weights (taps outside the image are dropped and the rest renormalised, as Pillow does).

Choices that make the in-graph crop differ from the tracker's, all bounded by
tests/test_ingraph_crop.py:
  * Pillow rounds to uint8 between its horizontal and vertical passes, the graph keeps float32:
    at most 1 level apart (PNG, or JPEG at ratio 1).
  * DCT scaling: ratio r is the largest of 1, 2, 4, 8 with r * `oversample` <= the crop's shrink
    factor (source pixels per output pixel), so the decoded window keeps >= `oversample` pixels
    per output pixel and the triangle filter still does the final antialiasing. libjpeg's reduced
    IDCT is not a box filter, so edges differ. Measured on the DCT-scaled ones among 150 random
    crops of 1280x720 synthetic JPEG frames, inside the image part, against crop_image of the
    full decode:
    `data.jpeg_dct_oversample` = 1 (the default: DCT scaling as soon as the crop shrinks the
    frame 2x): mean |diff| 0.61 levels (worst crop 1.63), 99th percentile <= 9.5, max 37;
    = 2: mean 0.23 (worst 0.41), p99 <= 3, max 11; = 0 turns DCT scaling off (ratio 1: within
    1 level). On those frames (median search crop 534 px for 256 output pixels) 1 decodes 2.4x
    fewer pixels than 2 and costs ~15% less CPU per sample; choose 2 (or 0) for crops closer to
    the tracker's.
  * Padding colour: the tracker pads with the mean of every 4th pixel of the whole frame; the
    graph decodes only the window, so it pads with the mean of every 4th pixel of the decoded
    window (the visible part of the crop plus the resampling margin). Only crops that reach past
    the image border are padded at all; their padding is then the local rather than the global
    mean colour. When the crop misses the image entirely, the window is the margin-wide strip
    of the image nearest to it.
  * JPEG windows are widened by `_JPEG_EDGE` decoded pixels each way (clipped to the image):
    libjpeg's fancy chroma upsampling treats a cropped window's first and last columns as image
    edges, which changes them by up to 3 levels; the widened window keeps every pixel the filter
    reads identical to a full decode (`dct_method="INTEGER_ACCURATE"` matches Pillow's decode
    bit for bit).
"""
from __future__ import annotations

from typing import NamedTuple

from satracker_jax.boxes import CropParams, crop_span

JPEG_RATIOS = (1, 2, 4, 8)
FULL_DECODE = len(JPEG_RATIOS)  # decoder of non-JPEG frames: decode all, then slice the window
_JPEG_EDGE = 2


class CropWindow(NamedTuple):
  decoder: int                              # `ingraph` branch: JPEG_RATIOS index, or FULL_DECODE
  ratio: int                                # JPEG DCT scaling; 1 for other formats
  window: tuple[int, int, int, int]         # y, x, h, w in decoded (1/ratio) pixels
  place: tuple[int, int, int, int]          # y, x, h, w of the resampled part in the output
  affine: tuple[float, float, float, float]  # scale y, scale x, translation y, translation x


def dct_ratio(params: CropParams, oversample: float = 1.0) -> int:
  """Largest JPEG scale denominator that keeps >= `oversample` decoded pixels per output pixel
  (1 when oversample <= 0: DCT scaling off)."""
  shrink = params.size / params.out_size
  if oversample <= 0:
    return 1
  return max([1] + [r for r in JPEG_RATIOS if r * oversample <= shrink])


def plan_crop(params: CropParams, width: int, height: int, jpeg: bool = False,
              dct_oversample: float = 0.0) -> CropWindow:
  """The decode window, output placement and resampling of the `params` crop of a frame.

  JPEG frames are decoded at DCT scale `dct_ratio(params, dct_oversample)` (0: full scale)."""
  span = crop_span(params, width, height)
  x_lo, y_lo, x_hi, y_hi, sx0, sy0, sx1, sy1, ix0, iy0, ix1, iy1 = span
  ratio, edge = 1, 0
  if jpeg:
    ratio = dct_ratio(params, dct_oversample)
    edge = _JPEG_EDGE
  # libjpeg's scaled output is ceil(size / ratio) pixels; the last one may cover a partial block.
  dw, dh = -(-width // ratio), -(-height // ratio)
  jx0, jy0 = max(ix0 // ratio - edge, 0), max(iy0 // ratio - edge, 0)
  jx1, jy1 = min(-(-ix1 // ratio) + edge, dw), min(-(-iy1 // ratio) + edge, dh)
  decoder = JPEG_RATIOS.index(ratio) if jpeg else FULL_DECODE
  window = (jy0, jx0, jy1 - jy0, jx1 - jx0)
  place = (y_lo, x_lo, max(y_hi - y_lo, 0), max(x_hi - x_lo, 0))
  if span.empty:
    return CropWindow(decoder, ratio, window, (0, 0, 0, 0), (1.0, 1.0, 0.0, 0.0))
  # Output pixel i of `place` samples source sx0 + (i + 0.5) * (sx1 - sx0) / w, i.e. decoded
  # coordinate (that) / ratio - jx0; ScaleAndTranslate samples (i + 0.5 - t) / s.
  scale_x = place[3] / ((sx1 - sx0) / ratio)
  scale_y = place[2] / ((sy1 - sy0) / ratio)
  trans_x = -scale_x * (sx0 / ratio - jx0)
  trans_y = -scale_y * (sy0 / ratio - jy0)
  return CropWindow(decoder, ratio, window, place, (scale_y, scale_x, trans_y, trans_x))
