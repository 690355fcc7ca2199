"""What one training sample is, as a pure function of (seed, k): OSTrack's sampling recipe.

No TensorFlow and no pixels here. `SampleMaker.plan(k, attempt)` decides *what* sample k is (data
set, sequence, frames, jittered crop boxes, augmentation draws), reads the two frames' headers
and plans both crops (`crop_window.plan_crop`); `sampler.py` then reads, decodes, crops and
augments in the tf.data graph (`ingraph.py`), outside the GIL. Python's share per sample is a few
hundred microseconds of arithmetic and two header reads.

Recipe for global sample index k (attempt a = 0, 1, ...; randomness of attempt a comes from
`np.random.Generator(PCG64(SeedSequence([seed, k, a])))`, drawn in a fixed order):
  1. data set by weight, then a sequence uniformly (`data.sequence_order="epoch"`: attempt 0 takes
     sequence `perm_e[k mod S]` of a per-epoch permutation of all S sequences instead, so each
     epoch of S samples sees every sequence once; data set weights are then ignored);
  2. template frame uniformly among the visible frames, search frame uniformly among the visible
     frames at most `max_gap` away (it may be the template frame, as in OSTrack);
  3. template crop: `template_factor` (2.0) x the GT box, no jitter;
  4. search crop: `search_factor` (4.0) x a jittered GT box (OSTrack `_get_jittered_box`):
       size' = size * exp(N(0, 1) * scale_jitter)                   (w and h independently)
       centre' = centre + (U(0, 1) - 0.5) * sqrt(w' * h') * center_jitter   (x and y independently)
  5. joint grayscale (p = grayscale_prob) and horizontal flip (p = flip_prob; left/right words of
     the sentence are swapped with it, using a second pre-tokenised copy), then a brightness
     factor U(1 - b, 1 + b) per crop (template and search separately, as OSTrack's per-side
     `ToTensorAndJitter`).
  6. the protocol (`data.protocols`, probabilities of nl_bb / bb / nl; default nl_bb only), drawn
     from a child generator so steps 1-5 are the same draws whatever the mix:
       nl_bb  the sample above;
       bb     the same crops, the sentence dropped ([CLS][SEP], what the tracker sends for "");
       nl     a grounding sample (`satracker_jax.grounding`, as the tracker grounds frame 0): the
              search frame whole (square, centred, mean-padded crop; no jitter), a blank template
              (`template_blank`: the graph writes BLANK_COLOUR, reads no file) with an empty
              template box, and the sentence. A flip mirrors the search box only. A sequence
              whose sentence needs motion (`Sequence.single_frame` False: synthetic `direction`
              videos) gives an nl_bb sample instead: a single frame cannot be grounded from it.
These draws are the ones the earlier all-Python sampler made, in the same order, so a (seed, k)
names the same frames, boxes and flips as before. Crops are squares of side
ceil(sqrt(w*h)*factor) centred on the box (`satracker_jax.boxes.crop_params`), resized with the
tracker's `crop_image` geometry and filter (the few ways the graph's pixels differ from it are
listed and bounded in crop_window.py). Boxes in crops are exact (`boxes.map_box_to_crop`, mirrored
with the flip), so `map_box_back` recovers the frame box; they are not clipped to [0, 1]. Each
sentence and its mirrored form are tokenised once per sequence, when the SampleMaker is built.

Bad data never stops training: a sequence without a visible frame, an empty / undecodable
sentence, or a frame that is missing or has no readable header makes the attempt fail in Python;
a frame that fails to decode fails it in the graph (the sampler drops that attempt and asks for
the next, see sampler.py). Either way attempt a + 1 re-draws everything from (seed, k, a + 1);
the sample is then marked `replaced`, with the reason of attempt 0 (a graph failure counts as
`corrupt_frame`). What fails in the graph is what TensorFlow's decoders reject: data cut off or
broken before the last row the crop needs, bad markers, a PNG whose size is not its header's.
(A JPEG cut off below the crop window still yields its crop, which is then correct; corrupt
entropy-coded data that libjpeg only warns about decodes to garbage, as it did with Pillow.)
"""
from __future__ import annotations

import functools
import logging
import math
import os
import re
import threading
import traceback
from typing import Sequence as TypingSequence

import numpy as np

from data_pipelines import crop_window, frame_header
from satracker_jax import boxes as box_lib
from satracker_jax import grounding

log = logging.getLogger(__name__)

MAX_ATTEMPTS = 64
PLAN_BAD, PLAN_OK, PLAN_EXHAUSTED = 0, 1, 2  # `plan(k, a)["ok"]`
DCT_OVERSAMPLE = 1.0  # default `data.jpeg_dct_oversample`, see crop_window.py
# Replacement reasons (bit flags, first failed attempt's reason is what stats count).
REASON_SENTENCE = 1
REASON_NO_VISIBLE_BOX = 2
REASON_MISSING_FRAME = 4
REASON_CORRUPT_FRAME = 8
REASON_NAMES = {REASON_SENTENCE: "bad_sentence", REASON_NO_VISIBLE_BOX: "no_visible_box",
                REASON_MISSING_FRAME: "missing_frame", REASON_CORRUPT_FRAME: "corrupt_frame"}
PROTOCOLS = ("nl_bb", "bb", "nl")  # index = the plan's `protocol`


def protocol_probabilities(spec) -> np.ndarray:
  """`data.protocols` ({name: weight}, missing names 0; None: nl_bb only) -> [3] probabilities."""
  spec = {"nl_bb": 1.0} if not spec else dict(spec)
  unknown = sorted(set(spec) - set(PROTOCOLS))
  if unknown:
    raise ValueError(f"data.protocols: unknown protocol(s) {unknown}; choose from {PROTOCOLS}")
  p = np.array([float(spec.get(name, 0.0)) for name in PROTOCOLS])
  if (p < 0).any() or p.sum() <= 0:
    raise ValueError(f"data.protocols={spec}: weights must be >= 0 with a positive sum")
  return p / p.sum()

_LR_SWAP = {"left": "right", "right": "left", "leftmost": "rightmost", "rightmost": "leftmost",
            "leftward": "rightward", "rightward": "leftward", "leftwards": "rightwards",
            "rightwards": "leftwards"}
_LR_PATTERN = re.compile(r"\b(" + "|".join(sorted(_LR_SWAP, key=len, reverse=True)) + r")\b")


def flip_sentence(sentence: str) -> tuple[str, bool]:
  """The sentence as seen in a mirrored image, and whether it mentions left/right at all."""
  flipped, n = _LR_PATTERN.subn(lambda m: _LR_SWAP[m.group(1)], sentence)
  return flipped, n > 0


def _rng(seed: int, k: int, attempt: int) -> np.random.Generator:
  return np.random.Generator(np.random.PCG64(np.random.SeedSequence([int(seed), int(k), int(attempt)])))


class _Failure(Exception):
  def __init__(self, reason: int, detail: str):
    super().__init__(detail)
    self.reason = reason


def frame_header_or_failure(path: str) -> frame_header.FrameHeader:
  """The frame's codec and size; `_Failure` for missing files and unreadable headers."""
  try:
    return frame_header.read_header(path)
  except FileNotFoundError:
    raise _Failure(REASON_MISSING_FRAME, f"{path}: frame missing") from None
  except (OSError, frame_header.HeaderError) as e:
    raise _Failure(REASON_CORRUPT_FRAME, f"{path}: no image header ({e})") from None


def jittered_box(rng: np.random.Generator, box_xywh: np.ndarray, center_jitter: float,
                 scale_jitter: float) -> np.ndarray:
  """OSTrack `_get_jittered_box` (see the module docstring)."""
  size = box_xywh[2:4] * np.exp(rng.standard_normal(2) * scale_jitter)
  max_offset = math.sqrt(size[0] * size[1]) * center_jitter
  center = box_xywh[0:2] + 0.5 * box_xywh[2:4] + max_offset * (rng.random(2) - 0.5)
  return np.concatenate([center - 0.5 * size, size])


def _crop_fields(prefix: str, path: str, params: box_lib.CropParams, dct_oversample: float,
                 header=None) -> dict:
  header = header or frame_header_or_failure(path)
  plan = crop_window.plan_crop(params, header.width, header.height,
                               jpeg=header.codec == frame_header.JPEG, dct_oversample=dct_oversample)
  # os.fsencode: a file name that is not UTF-8 (listed as surrogate escapes) keeps its bytes.
  return {f"{prefix}_path": os.fsencode(path), f"{prefix}_decoder": plan.decoder,
          f"{prefix}_window": plan.window, f"{prefix}_place": plan.place,
          f"{prefix}_affine": plan.affine, f"{prefix}_hw": (header.height, header.width),
          f"{prefix}_ratio": plan.ratio}


class SampleMaker:
  """Maps (global sample index k, attempt) to the plan of one training sample; thread-safe.

  `datasets`: [(name, weight, [Sequence, ...]), ...]; `tokenizer`: has encode(str) -> (ids, mask).
  """

  def __init__(self, datasets, data_config, template_size: int, search_size: int, tokenizer,
               seed: int, max_text_len: int):
    self.cfg = data_config
    self.seed = int(seed)
    self.template_size = int(template_size)
    self.search_size = int(search_size)
    self.max_text_len = int(max_text_len)
    self.dct_oversample = float(data_config.get("jpeg_dct_oversample", DCT_OVERSAMPLE))
    self.sequences = []
    self.dataset_names, weights, self.dataset_members = [], [], []
    for name, weight, seqs in datasets:
      if weight <= 0 or not seqs:
        continue
      start = len(self.sequences)
      self.sequences.extend(seqs)
      self.dataset_names.append(name)
      weights.append(float(weight))
      self.dataset_members.append(np.arange(start, len(self.sequences)))
    if not self.sequences:
      raise ValueError("no sequences to sample from (all data sets empty or weight 0)")
    self.weights = np.asarray(weights) / np.sum(weights)
    self.visible_frames = [np.flatnonzero(s.visible) for s in self.sequences]
    self._tokenize(tokenizer)
    self.protocol_cdf = np.cumsum(protocol_probabilities(data_config.get("protocols", None)))
    empty_ids, empty_mask = tokenizer.encode("")
    self.empty_text = (np.asarray(empty_ids, np.int32), np.asarray(empty_mask, np.int32))
    self.order = str(data_config.get("sequence_order", "random"))
    if self.order not in ("random", "epoch"):
      raise ValueError(f"data.sequence_order={self.order!r}: expected 'random' or 'epoch'")
    self._warned = 0
    self._lock = threading.Lock()
    self.error = None  # traceback of an unexpected exception in `plan` (a bug, not bad data)
    self._signature = self._plan_signature()

  def __getstate__(self) -> dict:
    # Pickled once into each of the numpy backend's worker processes (`data.workers=processes`);
    # a lock does not pickle, and each copy needs its own anyway.
    state = dict(self.__dict__)
    del state["_lock"]
    return state

  def __setstate__(self, state: dict) -> None:
    self.__dict__.update(state)
    self._lock = threading.Lock()

  def _tokenize(self, tokenizer) -> None:
    # Text is per sequence: tokenise each distinct sentence (and its mirrored form) once, here.
    cache = {}
    n = len(self.sequences)
    self.text_ids = np.zeros((2, n, self.max_text_len), np.int32)
    self.text_mask = np.zeros((2, n, self.max_text_len), np.int32)
    self.bad_text = np.zeros(n, bool)
    for i, seq in enumerate(self.sequences):
      sentence = seq.sentence.strip()
      if getattr(seq, "bad_sentence", False) or not sentence:
        self.bad_text[i] = True
        continue
      for side, text in enumerate((sentence, flip_sentence(sentence)[0])):
        if text not in cache:
          cache[text] = tokenizer.encode(text)
        self.text_ids[side, i], self.text_mask[side, i] = cache[text]

  @functools.lru_cache(maxsize=4)
  def _epoch_permutation(self, epoch: int) -> np.ndarray:
    return np.random.default_rng([self.seed, int(epoch), 0x5E0]).permutation(len(self.sequences))

  def _choose_sequence(self, rng: np.random.Generator, k: int, attempt: int) -> int:
    u_dataset, u_sequence = rng.random(2)
    if self.order == "epoch" and attempt == 0:
      n = len(self.sequences)
      return int(self._epoch_permutation(k // n)[k % n])
    d = int(np.searchsorted(np.cumsum(self.weights), u_dataset, side="right"))
    members = self.dataset_members[min(d, len(self.dataset_members) - 1)]
    return int(members[min(int(u_sequence * len(members)), len(members) - 1)])

  def _attempt(self, k: int, attempt: int) -> dict:
    c = self.cfg
    rng = _rng(self.seed, k, attempt)
    seq_id = self._choose_sequence(rng, k, attempt)
    seq = self.sequences[seq_id]
    u_t, u_s = rng.random(2)
    jitter_rng = rng.spawn(1)[0]  # keeps the augmentation draws independent of the frame draws
    u_gray, u_flip, b_t, b_s = jitter_rng.random(4)
    protocol_rng = rng.spawn(1)[0]  # a second child: the draws above do not depend on the mix
    protocol = min(int(np.searchsorted(self.protocol_cdf, protocol_rng.random(), side="right")), 2)
    if PROTOCOLS[protocol] == "nl" and not getattr(seq, "single_frame", True):
      # The sentence needs motion ("... moving left" with a twin moving right): one frame cannot
      # be grounded from it, so this sample is a tracking one (box + sentence) instead.
      protocol = PROTOCOLS.index("nl_bb")
    vis = self.visible_frames[seq_id]
    if len(vis) == 0:
      raise _Failure(REASON_NO_VISIBLE_BOX, f"{seq.dataset}/{seq.name}: no visible box")
    if self.bad_text[seq_id] and PROTOCOLS[protocol] != "bb":
      raise _Failure(REASON_SENTENCE, f"{seq.dataset}/{seq.name}: empty or undecodable sentence")
    t = int(vis[min(int(u_t * len(vis)), len(vis) - 1)])
    gap = int(c.max_gap)
    lo = int(np.searchsorted(vis, t - gap, side="left"))
    hi = int(np.searchsorted(vis, t + gap, side="right"))
    s = int(vis[lo + min(int(u_s * (hi - lo)), hi - lo - 1)])

    t_box, s_box = seq.boxes[t], seq.boxes[s]
    t_params = box_lib.crop_params(t_box, float(c.template_factor), self.template_size)
    jbox = jittered_box(jitter_rng, s_box, float(c.search_center_jitter), float(c.search_scale_jitter))
    s_params = box_lib.crop_params(jbox, float(c.search_factor), self.search_size)
    blank = PROTOCOLS[protocol] == "nl"
    s_header = None
    if blank:
      s_header = frame_header_or_failure(seq.frames[s])
      s_params = grounding.whole_frame_crop_params(s_header.height, s_header.width, self.search_size)
    out = _crop_fields("template", seq.frames[t], t_params, self.dct_oversample)
    out.update(_crop_fields("search", seq.frames[s], s_params, self.dct_oversample, s_header))
    template_box = (np.array(grounding.EMPTY_TEMPLATE_BOX, np.float64) if blank
                    else box_lib.map_box_to_crop(t_box, t_params))
    search_box = box_lib.map_box_to_crop(s_box, s_params)

    flip = bool(u_flip < float(c.flip_prob))
    if flip:
      # Mirroring a crop centred on its own window equals cropping the mirrored frame.
      search_box[0] = 1.0 - search_box[0]
      if not blank:  # the empty template box stays empty
        template_box[0] = 1.0 - template_box[0]
    b = float(c.brightness_jitter)
    lo_b = max(0.0, 1.0 - b)
    side = int(flip)
    text_ids, text_mask = self.text_ids[side, seq_id], self.text_mask[side, seq_id]
    if PROTOCOLS[protocol] == "bb":
      text_ids, text_mask = self.empty_text
    out.update({
        "template_box": template_box, "search_box": search_box,
        "text_ids": text_ids, "text_mask": text_mask,
        "template_blank": int(blank), "debug_protocol": protocol,
        # No grayscale for grounding: with no template, a colour word would then name nothing.
        "grayscale": int(u_gray < float(c.grayscale_prob) and not blank), "flip": int(flip),
        "brightness": (lo_b + b_t * (1.0 + b - lo_b), lo_b + b_s * (1.0 + b - lo_b)),
        "debug_sequence": seq_id, "debug_frames": (t, s),
        "debug_template_crop": (t_params.x0, t_params.y0, t_params.size),
        "debug_search_crop": (s_params.x0, s_params.y0, s_params.size),
        "debug_flip": int(flip),
        "debug_dct_ratio": (out.pop("template_ratio"), out.pop("search_ratio")),
    })
    return out

  def _check(self, k: int, attempt: int):
    """(plan, 0, "") or (None, reason, detail) of attempt `attempt` as far as Python can tell."""
    try:
      return self._attempt(k, attempt), 0, ""
    except _Failure as failure:
      return None, failure.reason, str(failure)

  def plan(self, k: int, attempt: int) -> dict:
    """Attempt `attempt` of sample k: {"ok": PLAN_OK, ...plan_signature() fields}, {"ok": PLAN_BAD},
    or, for attempt MAX_ATTEMPTS, {"ok": PLAN_EXHAUSTED} (every attempt failed).

    The graph asks for attempt a + 1 only after attempt a failed, in Python (ok 0) or while
    decoding; so for a > 0, attempt 0's outcome fixes the replacement reason.
    """
    k, attempt = int(k), int(attempt)
    if attempt >= MAX_ATTEMPTS:
      return {"ok": PLAN_EXHAUSTED, "sample_index": k}
    out, reason, detail = self._check(k, attempt)
    if attempt == 0:
      first_reason = reason
      if reason:
        self._warn(k, detail)
    else:
      first, first_reason, _ = self._check(k, 0)
      if first is not None:
        first_reason = REASON_CORRUPT_FRAME
        if attempt == 1:
          frames = sorted({os.fsdecode(first["template_path"]), os.fsdecode(first["search_path"])})
          self._warn(k, f"{' or '.join(frames)}: cannot decode frame")
    if out is None:
      return {"ok": PLAN_BAD}
    out.update(ok=PLAN_OK, attempt=attempt, replace_reason=first_reason, sample_index=k)
    return out

  def plan_tuple(self, k, attempt) -> tuple:
    """`plan` as a tuple of arrays in `plan_signature` order (the tf.numpy_function body)."""
    signature = self._signature
    try:
      out = self.plan(k, attempt)
    except Exception:  # a bug, not bad data: keep it for the iterator to raise
      with self._lock:
        if self.error is None:
          self.error = traceback.format_exc()
      out = {"ok": PLAN_BAD}
    return tuple(np.asarray(out[key] if key in out else (b"" if dtype is object else 0), dtype)
                 if not shape else np.asarray(out[key], dtype) if key in out else np.zeros(shape, dtype)
                 for key, (dtype, shape) in signature.items())

  def _warn(self, k: int, detail: str) -> None:
    with self._lock:
      self._warned += 1
      if self._warned <= 20:
        log.warning("sample %d replaced: %s", k, detail)
      elif self._warned == 21:
        log.warning("more samples replaced; further warnings suppressed (see the sampler stats)")

  def plan_signature(self) -> dict:
    """{key: (dtype, shape)} of `plan_tuple`'s output, in a fixed order."""
    return dict(self._signature)

  def _plan_signature(self) -> dict:
    length = self.max_text_len
    crop = lambda p: {f"{p}_path": (object, ()), f"{p}_decoder": (np.int32, ()),
                      f"{p}_window": (np.int32, (4,)), f"{p}_place": (np.int32, (4,)),
                      f"{p}_affine": (np.float32, (4,)), f"{p}_hw": (np.int32, (2,))}
    return {
        "ok": (np.int32, ()), **crop("template"), **crop("search"),
        "template_box": (np.float32, (4,)), "search_box": (np.float32, (4,)),
        "text_ids": (np.int32, (length,)), "text_mask": (np.int32, (length,)),
        "grayscale": (np.int32, ()), "flip": (np.int32, ()), "brightness": (np.float32, (2,)),
        "template_blank": (np.int32, ()), "debug_protocol": (np.int32, ()),
        "sample_index": (np.int64, ()), "attempt": (np.int32, ()), "replace_reason": (np.int32, ()),
        "debug_sequence": (np.int32, ()), "debug_frames": (np.int32, (2,)),
        "debug_template_crop": (np.float64, (3,)), "debug_search_crop": (np.float64, (3,)),
        "debug_flip": (np.int32, ()), "debug_dct_ratio": (np.int32, (2,)),
    }


def crop_params_from_debug(row: TypingSequence[float], out_size: int) -> box_lib.CropParams:
  """Rebuilds a sample's CropParams from its `debug_*_crop` row (x0, y0, size)."""
  return box_lib.CropParams(x0=float(row[0]), y0=float(row[1]), size=float(row[2]), out_size=int(out_size))


def unflip_box(box_norm_cxcywh: np.ndarray, flipped: bool) -> np.ndarray:
  box = np.array(box_norm_cxcywh, np.float64)
  if flipped:
    box[..., 0] = 1.0 - box[..., 0]
  return box
