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

Frames: a uint8 HxWx3 array, or any object with `width`, `height` (pixels of the full frame) and
`crop(params) -> uint8 [out, out, 3]` (`FrameLike`). The offline evaluation hands in JPEGs decoded
at a reduced scale that crop themselves (`evaluation/decode.py`), so a 720p frame is never
expanded to a full-resolution array when the crop shrinks it anyway.

Template update (off by default): with `config.tracker.template_update=True` and
`template_update_interval=K > 0`, every K-th frame whose score exceeds
`template_update_threshold` re-crops the template around the new box (the sentence is kept). The
paper's tracker keeps the first-frame template; this is for experiments only.

Grounding (the `nl` protocol): `init(frame, None, sentence)` finds the target from the sentence
alone first (`grounding.py`: the whole frame as the search crop, a blank template with an empty
TEM mask, no Hann window), then tracks from that box. It runs the SAME compiled step (same shapes;
a window of ones), so `trace_count` stays 1.

`BatchedTracker` tracks N sequences at once (one frame of each per call) with the same single
compiled step at batch N; slots without a frame are padded, so N stays fixed. The N slots are
spread over the local devices (a 1-D `batch` mesh, `NamedSharding`), so one host with 8 GPUs
steps 8 shards of the batch at once; `satracker eval --parallel N` uses it. `submit` / `collect`
split a call in two, so a caller can crop one group of slots while the device steps another
(JAX dispatches the step asynchronously). The network is batched already, so no vmap is involved.
"""
from __future__ import annotations

import concurrent.futures
from typing import Callable, Protocol, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import AxisType, NamedSharding, PartitionSpec as P

from satracker_jax import boxes as box_lib
from satracker_jax import compile_cache, grounding
from satracker_jax.boxes import crop_image
from satracker_jax.models import build_model, decode_box, slb

# A predicted box never shrinks below this (pixels): a collapsed box would make a degenerate
# next crop from which the tracker cannot recover.
MIN_BOX_SIZE = 2.0
BATCH_AXIS = "batch"

ApplyFn = Callable[..., dict]


class FrameLike(Protocol):
  """A frame that crops itself: what `BatchedTracker` needs of a frame, whatever its storage."""
  width: int
  height: int

  def crop(self, params: box_lib.CropParams) -> np.ndarray:
    """The `params` crop (frame pixel coordinates) as uint8 [out_size, out_size, 3]."""


class ArrayFrame:
  """A uint8 HxWx3 RGB array as a `FrameLike` (`boxes.crop_image` does the cropping)."""

  def __init__(self, frame):
    frame = np.asarray(frame)
    if frame.ndim == 2:
      frame = np.stack([frame] * 3, axis=-1)
    if frame.ndim != 3 or frame.shape[-1] not in (3, 4):
      raise ValueError(f"a frame must be HxWx3 (RGB), got shape {frame.shape}")
    if frame.dtype != np.uint8:
      raise ValueError(f"a frame must be uint8 (0..255), got {frame.dtype}")
    self.array = np.ascontiguousarray(frame[..., :3])
    self.height, self.width = self.array.shape[:2]

  def crop(self, params: box_lib.CropParams) -> np.ndarray:
    return crop_image(self.array, params)


def as_frame(frame) -> FrameLike:
  """Arrays become `ArrayFrame`s; anything that already crops itself passes through."""
  if hasattr(frame, "crop") and hasattr(frame, "width") and hasattr(frame, "height"):
    return frame
  return ArrayFrame(frame)


def hann_window(size: int) -> np.ndarray:
  """[size, size] float32 outer product of a Hann window without its zero end points (OSTrack's
  `hann2d(centered=True)`), so border cells are damped, never excluded."""
  w = np.hanning(size + 2)[1:-1]
  return np.outer(w, w).astype(np.float32)


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


def slot_mesh(num_slots: int, devices=None) -> jax.sharding.Mesh:
  """A 1-D `batch` mesh over as many of `devices` (default: `jax.local_devices()`) as divide
  `num_slots`, so every device steps the same number of slots. 8 slots on 8 GPUs use all 8; 6 slots
  on 4 GPUs use 3 (choose a multiple of the device count to use them all)."""
  devices = list(jax.local_devices() if devices is None else devices)
  if not devices:
    raise ValueError("no devices to track on")
  count = max(d for d in range(1, min(len(devices), num_slots) + 1) if num_slots % d == 0)
  # Auto axes: the model is written for GSPMD propagation; only the batch placement is pinned.
  return jax.make_mesh((count,), (BATCH_AXIS,), axis_types=(AxisType.Auto,),
                       devices=devices[:count])


class _Pending:
  """A dispatched step: where the crops were taken, and the device's (future) outputs."""

  def __init__(self, params, frames, out):
    self.params, self.frames, self.out = params, frames, out


class BatchedTracker:
  """N independent tracking slots advanced together by one batched, jitted step.

      bt = BatchedTracker(config, variables, num_slots=4)
      bt.init(slot, frame0, box, sentence)          # (re)start a sequence in a slot
      results = bt.track([frame_or_None, ...])      # N entries; None = slot idle this call
      # results[i] = (box_xywh, score) for slots given a frame, else None
      bt.release(slot)

  `track` is `collect(submit(frames))`: `submit` crops and dispatches the step without waiting
  for it; `collect` waits, maps the boxes back and advances the slots. At most one submitted call
  is outstanding per tracker (the next crops need its boxes).

  Idle slots are padded (a mean-grey search crop; their outputs are discarded), so the compiled
  batch size is always N and there is exactly one compilation. `devices` (default: all local
  devices) get equal shares of the slots (`slot_mesh`); the variables are replicated on them once.
  `crop_pool` (an Executor) crops the slots of a call in parallel (Pillow releases the GIL).
  `share_with=other` (a tracker of the same config and slot count) reuses its compiled step and
  its device copy of the variables: two such trackers are two waves of slots, one compilation.
  """

  def __init__(self, config, variables, num_slots: int, apply_fn: ApplyFn | None = None,
               tokenizer=None, devices=None, crop_pool: concurrent.futures.Executor | None = None,
               share_with: "BatchedTracker | None" = None):
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
    self.crop_pool = crop_pool
    self.mesh = slot_mesh(self.num_slots, devices)
    self._replicated = NamedSharding(self.mesh, P())
    self._batch_sharding = NamedSharding(self.mesh, P(BATCH_AXIS))
    if share_with is not None:
      if share_with.num_slots != self.num_slots or share_with.mesh != self.mesh:
        raise ValueError("share_with needs a tracker with the same slot count and devices")
      self.variables, self._step, self._traces = (share_with.variables, share_with._step,
                                                  share_with._traces)
    else:
      # Each block's weights in a buffer of their own, once (slb.unstack_rows: no slicing per step).
      if "params" in variables:
        variables = dict(variables, params=slb.unstack_rows(variables["params"]))
      self.variables = jax.device_put(variables, self._replicated)
      self._traces = [0]
      step = make_step_fn(apply_fn if apply_fn is not None else model_apply_fn(config))
      traces = self._traces

      def counted_step(*args):
        # Runs only while jax traces, i.e. once per compilation.
        traces[0] += 1
        return step(*args)
      self._step = jax.jit(counted_step)
    self._window = jax.device_put(tracking_window(config), self._replicated)
    self._uniform_window = jax.device_put(
        grounding.uniform_window(self.search_size, m.patch_size), self._replicated)

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
    self._pending: _Pending | None = None
    # The last call's crop placements and raw outputs (debugging, visualisation, test oracles).
    self.last_search_params: list[box_lib.CropParams | None] = [None] * n
    self.last_output: dict | None = None
    # (box_xywh, score) of the last grounding per slot (None: the slot was given its box).
    self.last_grounding: list[tuple[np.ndarray, float] | None] = [None] * n

  @property
  def num_devices(self) -> int:
    return int(self.mesh.devices.size)

  @property
  def trace_count(self) -> int:
    """Compilations of the step (shared by trackers made with `share_with`)."""
    return self._traces[0]

  # -- slots ---------------------------------------------------------------------------------------
  def init(self, slot: int, frame, box_xywh=None, sentence: str = "") -> np.ndarray:
    """(Re)starts `slot` on `frame`: from `box_xywh` (pixel x,y,w,h), or, with `box_xywh=None`,
    from the box `ground` finds for `sentence`. Returns the box tracking starts from."""
    frame = as_frame(frame)
    if box_xywh is None:
      box, _ = self.ground(slot, frame, sentence)
    else:
      box = np.asarray(box_xywh, np.float64).reshape(4)
      if not np.isfinite(box).all() or box[2] <= 0 or box[3] <= 0:
        raise ValueError(f"init box must be a finite x,y,w,h with w,h > 0, got {box.tolist()}")
      self.last_grounding[slot] = None
    self._set_text(slot, sentence)
    self._set_template(slot, frame, box)
    self._boxes[slot] = box
    self._frame_index[slot] = 0
    self._active[slot] = True
    return box.copy()

  def ground(self, slot: int, frame, sentence: str,
             allow_empty: bool = False) -> tuple[np.ndarray, float]:
    """The box (pixel x,y,w,h, clipped to the frame) and score of the target `sentence` describes
    in `frame`, found by one step of the compiled network on `slot` (the other slots' state is
    untouched; their outputs are discarded). Does not start tracking: `init` does.
    `allow_empty=True` grounds from an empty sentence too (the "sentence masked" control)."""
    if not allow_empty and (not sentence or not str(sentence).strip()):
      raise ValueError("grounding needs a sentence: give init a box, or a non-empty sentence")
    if self._pending is not None:
      raise RuntimeError("ground() while a submitted step is outstanding: collect() it first")
    frame = as_frame(frame)
    crop = grounding.whole_frame_crop_params(frame.height, frame.width, self.search_size)
    templates, template_boxes = self._templates.copy(), self._template_boxes.copy()
    text_ids, text_mask = self._text_ids.copy(), self._text_mask.copy()
    templates[slot] = grounding.blank_template(self.template_size)
    template_boxes[slot] = grounding.EMPTY_TEMPLATE_BOX
    ids, mask = self.tokenizer.encode(sentence)
    text_ids[slot], text_mask[slot] = np.asarray(ids, np.int32), np.asarray(mask, np.int32)
    search = np.stack([self._idle_search] * self.num_slots)
    search[slot] = frame.crop(crop)
    self.last_search_params = [None] * self.num_slots
    self.last_search_params[slot] = crop
    put = lambda x: jax.device_put(x, self._batch_sharding)
    out = self._step(self.variables, put(templates), put(template_boxes), put(search),
                     put(text_ids), put(text_mask), self._uniform_window)
    self.last_output = out
    pred = np.asarray(out["box"], np.float64)[slot]
    score = float(np.asarray(out["score"], np.float64)[slot])
    box = grounding.grounded_box(pred, crop, frame.height, frame.width)
    if not np.isfinite(box).all():
      raise ValueError(f"grounding gave a non-finite box for {sentence!r}")
    box = _clip_to_image(box, frame.width, frame.height)
    self.last_grounding[slot] = (box.copy(), score if np.isfinite(score) else 0.0)
    return box, self.last_grounding[slot][1]

  def _set_text(self, slot: int, sentence: str) -> None:
    ids, mask = self.tokenizer.encode(sentence or "")
    self._text_ids[slot] = np.asarray(ids, np.int32)
    self._text_mask[slot] = np.asarray(mask, np.int32)
    self._device_template = None

  def release(self, slot: int) -> None:
    self._active[slot] = False

  def active(self, slot: int) -> bool:
    return bool(self._active[slot])

  def box_of(self, slot: int) -> np.ndarray:
    """The slot's current box (pixel x,y,w,h): where its next search crop is centred."""
    return self._boxes[slot].copy()

  def search_params(self, slot: int) -> box_lib.CropParams:
    """Where the slot's next search crop lies (frame pixels): 4x around its current box."""
    return self.search_params_at(self._boxes[slot])

  def search_params_at(self, box_xywh) -> box_lib.CropParams:
    return box_lib.crop_params(box_xywh, self.search_factor, self.search_size)

  def template_params(self, box_xywh) -> box_lib.CropParams:
    return box_lib.crop_params(box_xywh, self.template_factor, self.template_size)

  def _set_template(self, slot: int, frame: FrameLike, box: np.ndarray) -> None:
    params = self.template_params(box)
    self._templates[slot] = frame.crop(params)
    self._template_boxes[slot] = box_lib.map_box_to_crop(box, params).astype(np.float32)
    self._device_template = None

  # -- tracking ------------------------------------------------------------------------------------
  def track(self, frames: Sequence[np.ndarray | FrameLike | None]
            ) -> list[tuple[np.ndarray, float] | None]:
    return self.collect(self.submit(frames))

  def submit(self, frames: Sequence[np.ndarray | FrameLike | None]) -> _Pending:
    """Crops every slot given a frame and dispatches the step; returns before it finishes."""
    if len(frames) != self.num_slots:
      raise ValueError(f"track() takes one entry per slot ({self.num_slots}), got {len(frames)}")
    if self._pending is not None:
      raise RuntimeError("submit() called again before collect(): the next crops need its boxes")
    frames = [None if f is None else as_frame(f) for f in frames]
    params: list[box_lib.CropParams | None] = [None] * self.num_slots
    for i, frame in enumerate(frames):
      if frame is None:
        continue
      if not self._active[i]:
        raise ValueError(f"slot {i} got a frame but was never init()ed (or was released)")
      params[i] = self.search_params(i)
    search = np.empty((self.num_slots, self.search_size, self.search_size, 3), np.uint8)

    def crop(i):
      search[i] = self._idle_search if frames[i] is None else frames[i].crop(params[i])
    if self.crop_pool is not None and self.num_slots > 1:
      for f in [self.crop_pool.submit(crop, i) for i in range(self.num_slots)]:
        f.result()
    else:
      for i in range(self.num_slots):
        crop(i)
    self.last_search_params = params
    self._pending = _Pending(params, frames, self.step(search))
    return self._pending

  def collect(self, pending: _Pending) -> list[tuple[np.ndarray, float] | None]:
    """Waits for `pending`'s step, maps its boxes back to the frames and advances the slots."""
    if pending is not self._pending:
      raise RuntimeError("collect() takes the result of this tracker's last submit()")
    self._pending = None
    out = pending.out
    pred = np.asarray(out["box"], np.float64)
    scores = np.asarray(out["score"], np.float64)
    self.last_output = out
    results: list[tuple[np.ndarray, float] | None] = [None] * self.num_slots
    for i, p in enumerate(pending.params):
      if p is None:
        continue
      frame = pending.frames[i]
      box = box_lib.map_box_back(pred[i], p)
      if np.isfinite(box).all():
        self._boxes[i] = _clip_to_image(box, frame.width, frame.height)
      # else: keep the previous box (a non-finite output must not poison the next crops)
      self._frame_index[i] += 1
      score = float(scores[i]) if np.isfinite(scores[i]) else 0.0
      if (self.template_update and self._frame_index[i] % self.template_update_interval == 0
          and score > self.template_update_threshold):
        self._set_template(i, frame, self._boxes[i])
      results[i] = (self._boxes[i].copy(), score)
    return results

  def warmup(self, say: Callable[[str], None] | None = None) -> compile_cache.CompileWatch:
    """Compiles the step now (on idle inputs) so the first tracked frame is not charged for it;
    returns how long that took and whether it came from the compilation cache. `say` (print, a
    logger) is told before ("compiling the tracker step ...") and after (ready in N s, cached?)."""
    with compile_cache.CompileWatch(f"tracker step ({self.num_slots} slot(s))", say=say) as watch:
      jax.block_until_ready(self.step(np.stack([self._idle_search] * self.num_slots)))
    if say is not None:
      say(watch.line())
    return watch

  def step(self, search: np.ndarray) -> dict:
    """One device step on a prepared [N, Hs, Ws, 3] uint8 search batch with the current
    templates/text (what `satracker bench track` times as "device step"). Returns without
    waiting: the outputs are device arrays, sharded over the slots' devices."""
    if self._device_template is None:
      self._device_template = tuple(
          jax.device_put(x, self._batch_sharding)
          for x in (self._templates, self._template_boxes, self._text_ids, self._text_mask))
    template, template_box, text_ids, text_mask = self._device_template
    return self._step(self.variables, template, template_box,
                      jax.device_put(search, self._batch_sharding), text_ids, text_mask,
                      self._window)


class Tracker:
  """Single-sequence tracker: `init(frame, box_xywh, sentence)` (or `init(frame, None, sentence)`:
  grounded from the sentence) then `track(frame) -> (box, score)`.

  `box` is pixel x,y,w,h (float, clipped to the frame); `score` is the sigmoid of the chosen
  cell's logit times the Hann window there (so it also drops when the target jumps far).

  `apply_fn(variables, template, template_box, search, text_ids, text_mask) -> out dict` replaces
  the model (tests inject an oracle); `tokenizer` replaces `build_tokenizer(config.text, ...)`.
  Reuse one Tracker for many sequences: `init` restarts it, nothing recompiles. It runs on one
  device (the first local one unless `device` is given).
  """

  def __init__(self, config, variables, apply_fn: ApplyFn | None = None, tokenizer=None,
               device=None):
    self._core = BatchedTracker(config, variables, 1, apply_fn=apply_fn, tokenizer=tokenizer,
                                devices=None if device is None else [device])
    self.config = config

  def init(self, frame, box_xywh=None, sentence: str = "") -> np.ndarray:
    """Starts on `frame` from `box_xywh`, or with `box_xywh=None` from the box grounded from
    `sentence` (the `nl` protocol). Returns the start box."""
    return self._core.init(0, frame, box_xywh, sentence)

  def ground(self, frame, sentence: str) -> tuple[np.ndarray, float]:
    """The box `sentence` describes in `frame` (and its score), without starting to track."""
    return self._core.ground(0, frame, sentence)

  def track(self, frame) -> tuple[np.ndarray, float]:
    box, score = self._core.track([frame])[0]
    return box, score

  def warmup(self, say: Callable[[str], None] | None = None) -> compile_cache.CompileWatch:
    return self._core.warmup(say)

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
