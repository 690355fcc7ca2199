"""Grounding: finding the target in a frame from the sentence alone (SPEC.md "Protocols", `nl`).

    sample = grounding_sample(frame, None, search_size=256, template_size=128)
    out = step(variables, sample.template[None], sample.template_box[None], sample.search[None],
               text_ids, text_mask, uniform_window(256, 16))      # the tracker's compiled step
    box_xywh = grounded_box(out["box"][0], sample.crop, *frame.shape[:2])

The `nl` protocol gives the tracker a sentence and no box; it must find the target in frame 0
itself, then track from that box. We ground with the tracker's own network and its own compiled
step, on an input that says "no template, read the sentence":

  search     the whole frame: a square crop of side max(H, W), centred on the frame and padded
             with the frame's mean colour (`whole_frame_crop_params`). It is an ordinary
             `boxes.CropParams`, so `boxes.crop_image`, `map_box_to_crop` / `map_box_back` and
             the input pipeline's in-graph crop (`crop_window.plan_crop`) work unchanged. Square
             and unstretched because every tracking crop is square in source pixels: the network
             never sees a squashed shape. The price is padding: 1 - H/W of the crop on a landscape
             frame (25% at 4:3, 44% at 16:9), and the target at search_size / max(H, W) of its
             pixel size (256 / 1280 = 0.2 on 720p: small targets get a few patches only).
             Centred so the padding carries no position cue; the frame mean, as tracking crops
             that leave the image are padded.
  template   empty: a constant grey (`blank_template`), the ImageNet mean in uint8, so after the
             model's normalisation it is ~0 and its tokens are the position embeddings plus the
             patch-embedding bias, the least informative template there is.
  template_box  `EMPTY_TEMPLATE_BOX` = zeros. TEM's target mask m (the fraction of each template
             patch covered by the box, `models.fusion.template_target_mask`) is then 0 on every
             patch, so TEM's search branch attends to the text tokens only (keys m>0 | text_mask)
             and TEM's text branch has no key at all (`models.vit.dot_product_attention` gives a
             zero update, not NaN, for a query whose keys are all masked; tests/test_grounding.py
             checks outputs and gradients are finite). The grey template tokens still take part in
             the ViT's joint self-attention (the one-stream layout has no way to leave them out
             without changing the model); they are the same constant in every grounding input.
  window     none: the Hann window favours the crop centre, i.e. the previous box while tracking;
             here the centre is only the frame centre. A window of ones (`uniform_window`) is an
             exact no-op and has the tracking window's shape, so the SAME compiled step serves
             grounding and tracking (one compilation per config, `Tracker.trace_count` stays 1).

Why this rather than a dedicated grounding pass or head: no new parameters, no second compiled
function, the same backbone and losses (training mixes these samples in with probability, as
UVLTrack does; the head learns "grey template + empty mask + sentence" -> the described object).
What it cannot do: use a template, so twins that only the box could tell apart are decided by the
sentence alone, which is the point of the protocol.

No TensorFlow and no model: numpy and `boxes` only, so the tracker, the evaluation and the input
pipeline (`data_pipelines/` may import it, as it imports `boxes`) all share this geometry.
"""
from __future__ import annotations

import math
from typing import NamedTuple, Optional

import numpy as np

from satracker_jax import boxes as box_lib

# ImageNet mean (models/satracker.py IMAGENET_MEAN) x 255, rounded: normalises to ~0.
BLANK_COLOUR = (124, 116, 104)
# normalised cx, cy, w, h of "no target in the template": an empty TEM target mask.
EMPTY_TEMPLATE_BOX = np.zeros(4, np.float32)
EMPTY_TEMPLATE_BOX.setflags(write=False)


class GroundingSample(NamedTuple):
  """One grounding input: what the model reads, and where the search crop lies in the frame."""
  template: np.ndarray      # uint8 [t, t, 3], blank
  template_box: np.ndarray  # float32 [4], zeros
  search: np.ndarray        # uint8 [s, s, 3], the whole frame
  search_box: Optional[np.ndarray]  # float32 [4] normalised cx,cy,w,h of the target; None if no box
  crop: box_lib.CropParams  # the search crop in the frame (map_box_back maps predictions back)


def whole_frame_crop_params(height: int, width: int, search_size: int) -> box_lib.CropParams:
  """The square crop of side max(H, W), centred on the frame, whose corner is a whole pixel
  (floor of the centred position, so it always covers the frame), resized to `search_size`."""
  height, width, search_size = int(height), int(width), int(search_size)
  if height < 1 or width < 1 or search_size < 1:
    raise ValueError(f"whole_frame_crop_params: need height, width, search_size >= 1, got "
                     f"{height}, {width}, {search_size}")
  side = max(height, width)
  return box_lib.CropParams(x0=float(math.floor((width - side) / 2)),
                            y0=float(math.floor((height - side) / 2)),
                            size=float(side), out_size=search_size)


def blank_template(template_size: int) -> np.ndarray:
  """uint8 [t, t, 3] filled with BLANK_COLOUR (a new array: callers may write into it)."""
  t = int(template_size)
  if t < 1:
    raise ValueError(f"blank_template: template_size must be >= 1, got {template_size}")
  out = np.empty((t, t, 3), np.uint8)
  out[...] = BLANK_COLOUR
  return out


def uniform_window(search_size: int, patch_size: int) -> np.ndarray:
  """float32 [f, f] ones, f = search_size // patch_size: the step's "no Hann window"."""
  f = int(search_size) // int(patch_size)
  return np.ones((f, f), np.float32)


def _check_frame(frame) -> np.ndarray:
  frame = np.asarray(frame)
  if frame.ndim != 3 or frame.shape[-1] != 3 or frame.dtype != np.uint8:
    raise ValueError(f"grounding needs a uint8 HxWx3 frame, got {frame.dtype} {frame.shape}")
  return frame


def grounding_sample(frame, box_xywh, search_size: int, template_size: int,
                     pad_value=None) -> GroundingSample:
  """The grounding input for `frame` (uint8 HxWx3). `box_xywh`: the target's pixel box (a
  training sample's label, or None when grounding for real). `pad_value` as `boxes.crop_image`
  (default: the frame's mean colour)."""
  frame = _check_frame(frame)
  h, w = frame.shape[:2]
  crop = whole_frame_crop_params(h, w, search_size)
  search_box = None
  if box_xywh is not None:
    box = np.asarray(box_xywh, np.float64).reshape(4)
    if not np.isfinite(box).all() or box[2] <= 0 or box[3] <= 0:
      raise ValueError(f"grounding_sample: the box must be a finite x,y,w,h with w,h > 0, got "
                       f"{box.tolist()}")
    search_box = box_lib.map_box_to_crop(box, crop).astype(np.float32)
  return GroundingSample(template=blank_template(template_size),
                         template_box=np.array(EMPTY_TEMPLATE_BOX),
                         search=box_lib.crop_image(frame, crop, pad_value=pad_value),
                         search_box=search_box, crop=crop)


def grounded_box(pred_norm_cxcywh, crop: box_lib.CropParams, height: int, width: int) -> np.ndarray:
  """The network's box (normalised cx,cy,w,h in the whole-frame crop) as a pixel x,y,w,h box
  clipped to the frame. (It may lie partly in the padding; clipping keeps the frame's part.)"""
  box = box_lib.map_box_back(np.asarray(pred_norm_cxcywh, np.float64).reshape(4), crop)
  return box_lib.clip_box_xywh(box, width, height)
