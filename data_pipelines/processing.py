"""One training sample as a pure function of (seed, k): OSTrack's sampling + processing recipe.

No TensorFlow here; `sampler.py` runs `SampleMaker.make(k)` inside a parallel tf.data map.

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
Crops are squares of side ceil(sqrt(w*h)*factor) centred on the box (`satracker_jax.boxes.
crop_params`), resized bilinearly and padded with the frame's mean colour, by the same
`crop_image` the tracker uses at inference (`satracker_jax.boxes`). Boxes in crops are exact
(`boxes.map_box_to_crop`), so `map_box_back` recovers the frame box; they are not clipped to [0, 1].

Bad data never stops training: a sequence without a visible frame, a missing or undecodable frame,
or an empty / undecodable sentence makes the attempt fail, and the next attempt re-draws
everything from (seed, k, a + 1). The sample is then marked `replaced`.
"""
from __future__ import annotations

import functools
import logging
import math
import re
import threading
from typing import Optional, Sequence as TypingSequence

import numpy as np
from PIL import Image

from satracker_jax import boxes as box_lib
from satracker_jax.boxes import crop_image

log = logging.getLogger(__name__)

MAX_ATTEMPTS = 64
# Replacement reasons (bit flags, first failed attempt's reason is what stats count).
REASON_SENTENCE = 1
REASON_NO_VISIBLE_BOX = 2
REASON_MISSING_FRAME = 4
REASON_CORRUPT_FRAME = 8
REASON_NAMES = {REASON_SENTENCE: "bad_sentence", REASON_NO_VISIBLE_BOX: "no_visible_box",
                REASON_MISSING_FRAME: "missing_frame", REASON_CORRUPT_FRAME: "corrupt_frame"}

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


def load_frame(path: str) -> np.ndarray:
  """uint8 HxWx3 RGB; `_Failure` for missing or undecodable files."""
  try:
    with Image.open(path) as img:
      return np.asarray(img.convert("RGB"))
  except FileNotFoundError:
    raise _Failure(REASON_MISSING_FRAME, f"{path}: frame missing") from None
  except Exception as e:  # PIL raises OSError, SyntaxError, ValueError... for broken files
    raise _Failure(REASON_CORRUPT_FRAME, f"{path}: cannot decode frame ({e})") from None


def jittered_box(rng: np.random.Generator, box_xywh: np.ndarray, center_jitter: float,
                 scale_jitter: float) -> np.ndarray:
  """OSTrack `_get_jittered_box` (see the module docstring)."""
  size = box_xywh[2:4] * np.exp(rng.standard_normal(2) * scale_jitter)
  max_offset = math.sqrt(size[0] * size[1]) * center_jitter
  center = box_xywh[0:2] + 0.5 * box_xywh[2:4] + max_offset * (rng.random(2) - 0.5)
  return np.concatenate([center - 0.5 * size, size])


def _grayscale(img: np.ndarray) -> np.ndarray:
  gray = img.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
  return np.repeat(np.clip(np.round(gray), 0, 255).astype(np.uint8)[..., None], 3, axis=-1)


def _brightness(img: np.ndarray, factor: float) -> np.ndarray:
  if factor == 1.0:
    return img
  return np.clip(np.round(img.astype(np.float32) * factor), 0, 255).astype(np.uint8)


class SampleMaker:
  """Maps a global sample index k to one training sample (numpy arrays); thread-safe.

  `datasets`: [(name, weight, [Sequence, ...]), ...]; `tokenizer`: has encode(str) -> (ids, mask).
  """

  def __init__(self, datasets, data_config, template_size: int, search_size: int, tokenizer,
               seed: int, max_text_len: int):
    self.cfg = data_config
    self.seed = int(seed)
    self.template_size = int(template_size)
    self.search_size = int(search_size)
    self.max_text_len = int(max_text_len)
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
    self.order = str(data_config.get("sequence_order", "random"))
    if self.order not in ("random", "epoch"):
      raise ValueError(f"data.sequence_order={self.order!r}: expected 'random' or 'epoch'")
    self._warned = 0
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
    vis = self.visible_frames[seq_id]
    if len(vis) == 0:
      raise _Failure(REASON_NO_VISIBLE_BOX, f"{seq.dataset}/{seq.name}: no visible box")
    if self.bad_text[seq_id]:
      raise _Failure(REASON_SENTENCE, f"{seq.dataset}/{seq.name}: empty or undecodable sentence")
    t = int(vis[min(int(u_t * len(vis)), len(vis) - 1)])
    gap = int(c.max_gap)
    lo = int(np.searchsorted(vis, t - gap, side="left"))
    hi = int(np.searchsorted(vis, t + gap, side="right"))
    s = int(vis[lo + min(int(u_s * (hi - lo)), hi - lo - 1)])

    template_frame = load_frame(seq.frames[t])
    search_frame = template_frame if s == t else load_frame(seq.frames[s])
    t_box, s_box = seq.boxes[t], seq.boxes[s]
    t_params = box_lib.crop_params(t_box, float(c.template_factor), self.template_size)
    jbox = jittered_box(jitter_rng, s_box, float(c.search_center_jitter), float(c.search_scale_jitter))
    s_params = box_lib.crop_params(jbox, float(c.search_factor), self.search_size)
    template = crop_image(template_frame, t_params)
    search = crop_image(search_frame, s_params)
    template_box = box_lib.map_box_to_crop(t_box, t_params)
    search_box = box_lib.map_box_to_crop(s_box, s_params)

    if u_gray < float(c.grayscale_prob):
      template, search = _grayscale(template), _grayscale(search)
    flip = bool(u_flip < float(c.flip_prob))
    if flip:
      # Mirroring a crop centred on its own window equals cropping the mirrored frame.
      template, search = template[:, ::-1], search[:, ::-1]
      template_box = np.array([1.0 - template_box[0], *template_box[1:]])
      search_box = np.array([1.0 - search_box[0], *search_box[1:]])
    b = float(c.brightness_jitter)
    template = _brightness(template, max(0.0, 1.0 - b) + b_t * (1.0 + b - max(0.0, 1.0 - b)))
    search = _brightness(search, max(0.0, 1.0 - b) + b_s * (1.0 + b - max(0.0, 1.0 - b)))
    side = int(flip)
    return {
        "template": np.ascontiguousarray(template), "template_box": template_box.astype(np.float32),
        "search": np.ascontiguousarray(search), "search_box": search_box.astype(np.float32),
        "text_ids": self.text_ids[side, seq_id], "text_mask": self.text_mask[side, seq_id],
        "debug_sequence": np.int32(seq_id), "debug_frames": np.array([t, s], np.int32),
        "debug_template_crop": np.array([t_params.x0, t_params.y0, t_params.size], np.float64),
        "debug_search_crop": np.array([s_params.x0, s_params.y0, s_params.size], np.float64),
        "debug_flip": np.int32(flip),
    }

  def make(self, k: int) -> dict:
    k = int(k)
    reason = 0
    for attempt in range(MAX_ATTEMPTS):
      try:
        out = self._attempt(k, attempt)
      except _Failure as failure:
        if attempt == 0:
          reason = failure.reason
          self._warn(k, str(failure))
        continue
      out["sample_index"] = np.int64(k)
      out["replaced"] = np.int32(attempt > 0)
      out["replace_reason"] = np.int32(reason)
      return out
    raise RuntimeError(f"sample {k}: {MAX_ATTEMPTS} draws in a row hit bad data; the data sets are "
                       "mostly unusable (see the warnings above)")

  def _warn(self, k: int, detail: str) -> None:
    with self._lock:
      self._warned += 1
      if self._warned <= 20:
        log.warning("sample %d replaced: %s", k, detail)
      elif self._warned == 21:
        log.warning("more samples replaced; further warnings suppressed (see the sampler stats)")

  def output_signature(self) -> dict:
    """{key: (dtype, shape)} of `make`'s output, in a fixed order."""
    ht, hs, length = self.template_size, self.search_size, self.max_text_len
    return {
        "template": (np.uint8, (ht, ht, 3)), "template_box": (np.float32, (4,)),
        "search": (np.uint8, (hs, hs, 3)), "search_box": (np.float32, (4,)),
        "text_ids": (np.int32, (length,)), "text_mask": (np.int32, (length,)),
        "sample_index": (np.int64, ()), "replaced": (np.int32, ()), "replace_reason": (np.int32, ()),
        "debug_sequence": (np.int32, ()), "debug_frames": (np.int32, (2,)),
        "debug_template_crop": (np.float64, (3,)), "debug_search_crop": (np.float64, (3,)),
        "debug_flip": (np.int32, ()),
    }


def crop_params_from_debug(row: TypingSequence[float], out_size: int) -> box_lib.CropParams:
  """Rebuilds a sample's CropParams from its `debug_*_crop` row (x0, y0, size)."""
  return box_lib.CropParams(x0=float(row[0]), y0=float(row[1]), size=float(row[2]), out_size=int(out_size))


def unflip_box(box_norm_cxcywh: np.ndarray, flipped: bool) -> np.ndarray:
  box = np.array(box_norm_cxcywh, np.float64)
  if flipped:
    box[..., 0] = 1.0 - box[..., 0]
  return box
