"""Online tracking with a trained SATracker: host-side cropping + one jitted step per frame.

    tracker = Tracker(config, variables)
    tracker.init(frame0, box_xywh, "the red car on the left")
    for frame in frames[1:]:
      box_xywh, score = tracker.track(frame)

Frame 0 crops the template (`config.data.template_factor` = 2.0x the box, `template_size` pixels)
and tokenises the sentence once. Every later frame crops the search region
(`config.data.search_factor` = 4.0x the previous box, `search_size` pixels) around the previous
box, runs the network once, multiplies the score map by a Hann window (`config.tracker.hann_window`;
penalises large jumps, as in OSTrack), decodes the argmax cell, maps the box back to the frame and
clips it to the image. Same factors as training, so test crops look like training crops.

Shapes: cropping and resizing run on the host (numpy + Pillow) into fixed-size arrays, so the
compiled step only ever sees one set of shapes: exactly one compilation per tracker, whatever the
frame sizes, sequences or number of frames. `trace_count` counts compilations (tests pin it at 1).
Crops are padded with the frame's mean colour where they leave the image.

Template update (off by default): with `config.tracker.template_update=True` and
`template_update_interval=K > 0`, every K-th frame whose score exceeds
`template_update_threshold` re-crops the template around the new box (the sentence is kept). The
paper's tracker keeps the first-frame template; this is for experiments only.

`BatchedTracker` tracks N sequences at once (one frame of each per call) with the same single
compiled step at batch N; slots without a frame are padded, so N stays fixed. `satracker eval
--parallel N` uses it. The network is batched already, so no vmap is involved.
"""
from __future__ import annotations

from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from satracker_jax import boxes as box_lib
from satracker_jax.boxes import crop_image
from satracker_jax.models import build_model, decode_box

# A predicted box never shrinks below this (pixels): a collapsed box would make a degenerate
# next crop from which the tracker cannot recover.
MIN_BOX_SIZE = 2.0

ApplyFn = Callable[..., dict]


def hann_window(size: int) -> np.ndarray:
  """[size, size] float32 outer product of a Hann window without its zero end points (OSTrack's
  `hann2d(centered=True)`), so border cells are damped, never excluded."""
  w = np.hanning(size + 2)[1:-1]
  return np.outer(w, w).astype(np.float32)


def _as_frame(frame) -> np.ndarray:
  frame = np.asarray(frame)
  if frame.ndim == 2:
    frame = np.stack([frame] * 3, axis=-1)
  if frame.ndim != 3 or frame.shape[-1] not in (3, 4):
    raise ValueError(f"a frame must be HxWx3 (RGB), got shape {frame.shape}")
  if frame.dtype != np.uint8:
    raise ValueError(f"a frame must be uint8 (0..255), got {frame.dtype}")
  return np.ascontiguousarray(frame[..., :3])


def _clip_to_image(box_xywh: np.ndarray, width: int, height: int) -> np.ndarray:
  box = box_lib.clip_box_xywh(box_xywh, width, height, min_size=MIN_BOX_SIZE)
  # A box squeezed against the right/bottom edge keeps its minimum size inside the image.
  box[0] = max(0.0, min(box[0], width - box[2]))
  box[1] = max(0.0, min(box[1], height - box[3]))
  return box


def model_apply_fn(config) -> ApplyFn:
  """`apply_fn(variables, template, template_box, search, text_ids, text_mask) -> out dict` of the
  config's model in inference mode."""
  model = build_model(config.model)

  def apply_fn(variables, template, template_box, search, text_ids, text_mask):
    return model.apply(variables, template, template_box, search, text_ids, text_mask, train=False)
  return apply_fn


def make_step_fn(apply_fn: ApplyFn) -> Callable[..., dict]:
  """The tracker's device step (what `jax.jit` compiles and `satracker export` serialises).

  step(variables, template u8 [B,Ht,Wt,3], template_box f32 [B,4], search u8 [B,Hs,Ws,3],
       text_ids i32 [B,L], text_mask i32 [B,L], window f32 [Hf,Wf])
    -> {"box": [B,4] normalised cx,cy,w,h in the search crop, "score": [B],
        "score_map", "size_map", "offset_map": the head's maps}
  A window of ones is "no Hann window" (multiplying by 1 is exact), so one function serves both.
  """
  def step(variables, template, template_box, search, text_ids, text_mask, window):
    out = apply_fn(variables, template, template_box, search, text_ids, text_mask)
    box, score = decode_box(out["score_map"], out["size_map"], out["offset_map"], window)
    return {"box": box, "score": score, "score_map": out["score_map"],
            "size_map": out["size_map"], "offset_map": out["offset_map"]}
  return step


def step_input_specs(config, batch_size: int = 1) -> dict[str, jax.ShapeDtypeStruct]:
  """Shapes/dtypes of the step's inputs after `variables`, in call order."""
  m = config.model
  t, s, L = m.template_size, m.search_size, m.max_text_len
  f = s // m.patch_size
  return {
      "template": jax.ShapeDtypeStruct((batch_size, t, t, 3), jnp.uint8),
      "template_box": jax.ShapeDtypeStruct((batch_size, 4), jnp.float32),
      "search": jax.ShapeDtypeStruct((batch_size, s, s, 3), jnp.uint8),
      "text_ids": jax.ShapeDtypeStruct((batch_size, L), jnp.int32),
      "text_mask": jax.ShapeDtypeStruct((batch_size, L), jnp.int32),
      "window": jax.ShapeDtypeStruct((f, f), jnp.float32),
  }


def tracking_window(config) -> np.ndarray:
  f = config.model.search_size // config.model.patch_size
  if config.tracker.hann_window:
    return hann_window(f)
  return np.ones((f, f), np.float32)


class BatchedTracker:
  """N independent tracking slots advanced together by one batched, jitted step.

      bt = BatchedTracker(config, variables, num_slots=4)
      bt.init(slot, frame0, box, sentence)          # (re)start a sequence in a slot
      results = bt.track([frame_or_None, ...])      # N entries; None = slot idle this call
      # results[i] = (box_xywh, score) for slots given a frame, else None
      bt.release(slot)

  Idle slots are padded (a mean-grey search crop; their outputs are discarded), so the compiled
  batch size is always N and there is exactly one compilation.
  """

  def __init__(self, config, variables, num_slots: int, apply_fn: ApplyFn | None = None,
               tokenizer=None):
    if num_slots < 1:
      raise ValueError(f"num_slots must be >= 1, got {num_slots}")
    m = config.model
    self.config = config
    self.num_slots = int(num_slots)
    self.template_size = int(m.template_size)
    self.search_size = int(m.search_size)
    self.template_factor = float(config.data.template_factor)
    self.search_factor = float(config.data.search_factor)
    tcfg = config.tracker
    self.template_update = bool(tcfg.template_update) and int(tcfg.template_update_interval) > 0
    self.template_update_interval = int(tcfg.template_update_interval)
    self.template_update_threshold = float(tcfg.template_update_threshold)
    if tokenizer is None:
      from satracker_jax.tokenizer import build_tokenizer
      tokenizer = build_tokenizer(config.text, max_len=m.max_text_len)
    self.tokenizer = tokenizer
    self.variables = variables
    self.trace_count = 0
    step = make_step_fn(apply_fn if apply_fn is not None else model_apply_fn(config))

    def counted_step(*args):
      # Runs only while jax traces, i.e. once per compilation.
      self.trace_count += 1
      return step(*args)
    self._step = jax.jit(counted_step)
    self._window = jnp.asarray(tracking_window(config))

    n, t, s, L = self.num_slots, self.template_size, self.search_size, m.max_text_len
    self._templates = np.zeros((n, t, t, 3), np.uint8)
    self._template_boxes = np.tile(np.float32([0.5, 0.5, 0.5, 0.5]), (n, 1))
    self._text_ids = np.zeros((n, L), np.int32)
    self._text_mask = np.zeros((n, L), np.int32)
    self._text_mask[:, 0] = 1  # idle slots still attend to one token (no all-masked softmax)
    self._boxes = np.zeros((n, 4), np.float64)
    self._frame_index = np.zeros((n,), np.int64)
    self._active = np.zeros((n,), bool)
    self._device_template = None  # uploaded lazily, only when a template changed
    self._idle_search = np.full((s, s, 3), 114, np.uint8)
    # The last call's crop placements and raw outputs (debugging, visualisation, test oracles).
    self.last_search_params: list[box_lib.CropParams | None] = [None] * n
    self.last_output: dict | None = None

  # -- slots ---------------------------------------------------------------------------------------
  def init(self, slot: int, frame, box_xywh, sentence: str) -> None:
    frame = _as_frame(frame)
    box = np.asarray(box_xywh, np.float64).reshape(4)
    if not np.isfinite(box).all() or box[2] <= 0 or box[3] <= 0:
      raise ValueError(f"init box must be a finite x,y,w,h with w,h > 0, got {box.tolist()}")
    ids, mask = self.tokenizer.encode(sentence or "")
    self._text_ids[slot] = np.asarray(ids, np.int32)
    self._text_mask[slot] = np.asarray(mask, np.int32)
    self._set_template(slot, frame, box)
    self._boxes[slot] = box
    self._frame_index[slot] = 0
    self._active[slot] = True

  def release(self, slot: int) -> None:
    self._active[slot] = False

  def active(self, slot: int) -> bool:
    return bool(self._active[slot])

  def _set_template(self, slot: int, frame: np.ndarray, box: np.ndarray) -> None:
    params = box_lib.crop_params(box, self.template_factor, self.template_size)
    self._templates[slot] = crop_image(frame, params)
    self._template_boxes[slot] = box_lib.map_box_to_crop(box, params).astype(np.float32)
    self._device_template = None

  # -- tracking ------------------------------------------------------------------------------------
  def track(self, frames: Sequence[np.ndarray | None]) -> list[tuple[np.ndarray, float] | None]:
    if len(frames) != self.num_slots:
      raise ValueError(f"track() takes one entry per slot ({self.num_slots}), got {len(frames)}")
    frames = list(frames)
    search = np.empty((self.num_slots, self.search_size, self.search_size, 3), np.uint8)
    params: list[box_lib.CropParams | None] = [None] * self.num_slots
    shapes = [None] * self.num_slots
    for i, frame in enumerate(frames):
      if frame is None:
        search[i] = self._idle_search
        continue
      if not self._active[i]:
        raise ValueError(f"slot {i} got a frame but was never init()ed (or was released)")
      frame = _as_frame(frame)
      shapes[i] = frame.shape[:2]
      params[i] = box_lib.crop_params(self._boxes[i], self.search_factor, self.search_size)
      search[i] = crop_image(frame, params[i])
      frames[i] = frame
    self.last_search_params = params
    out = self.step(search)
    pred = np.asarray(out["box"], np.float64)
    scores = np.asarray(out["score"], np.float64)
    self.last_output = out
    results: list[tuple[np.ndarray, float] | None] = [None] * self.num_slots
    for i, p in enumerate(params):
      if p is None:
        continue
      h, w = shapes[i]
      box = box_lib.map_box_back(pred[i], p)
      if np.isfinite(box).all():
        self._boxes[i] = _clip_to_image(box, w, h)
      # else: keep the previous box (a non-finite output must not poison the next crops)
      self._frame_index[i] += 1
      score = float(scores[i]) if np.isfinite(scores[i]) else 0.0
      if (self.template_update and self._frame_index[i] % self.template_update_interval == 0
          and score > self.template_update_threshold):
        self._set_template(i, frames[i], self._boxes[i])
      results[i] = (self._boxes[i].copy(), score)
    return results

  def warmup(self) -> None:
    """Compiles the step now (on idle inputs) so the first tracked frame is not charged for it."""
    jax.block_until_ready(self.step(np.stack([self._idle_search] * self.num_slots)))

  def step(self, search: np.ndarray) -> dict:
    """One device step on a prepared [N, Hs, Ws, 3] uint8 search batch with the current
    templates/text (what `satracker bench track` times as "device step")."""
    if self._device_template is None:
      self._device_template = (jnp.asarray(self._templates), jnp.asarray(self._template_boxes),
                               jnp.asarray(self._text_ids), jnp.asarray(self._text_mask))
    template, template_box, text_ids, text_mask = self._device_template
    return self._step(self.variables, template, template_box, jnp.asarray(search), text_ids,
                      text_mask, self._window)


class Tracker:
  """Single-sequence tracker: `init(frame, box_xywh, sentence)` then `track(frame) -> (box, score)`.

  `box` is pixel x,y,w,h (float, clipped to the frame); `score` is the sigmoid of the chosen
  cell's logit times the Hann window there (so it also drops when the target jumps far).

  `apply_fn(variables, template, template_box, search, text_ids, text_mask) -> out dict` replaces
  the model (tests inject an oracle); `tokenizer` replaces `build_tokenizer(config.text, ...)`.
  Reuse one Tracker for many sequences: `init` restarts it, nothing recompiles.
  """

  def __init__(self, config, variables, apply_fn: ApplyFn | None = None, tokenizer=None):
    self._core = BatchedTracker(config, variables, 1, apply_fn=apply_fn, tokenizer=tokenizer)
    self.config = config

  def init(self, frame, box_xywh, sentence: str) -> None:
    self._core.init(0, frame, box_xywh, sentence)

  def track(self, frame) -> tuple[np.ndarray, float]:
    box, score = self._core.track([frame])[0]
    return box, score

  def warmup(self) -> None:
    self._core.warmup()

  @property
  def trace_count(self) -> int:
    return self._core.trace_count

  @property
  def last_search_params(self) -> box_lib.CropParams | None:
    return self._core.last_search_params[0]

  @property
  def last_output(self) -> dict | None:
    return self._core.last_output

  @property
  def box(self) -> np.ndarray:
    return self._core._boxes[0].copy()

  @property
  def core(self) -> BatchedTracker:
    return self._core
