"""Procedural vision-language tracking videos, written in the TNL2K layout (no TensorFlow here).

    generate("/tmp/synth", sequences=100, seed=0, test_sequences=10)
    # /tmp/synth/{train,test}/synth_00000/{imgs/00001.jpg..., groundtruth.txt, language.txt,
    #                                      attributes.json}, /tmp/synth/vocab.txt, meta.json

Each video: a smooth-noise background that scrolls, 2-6 coloured shapes moving in straight lines
(with a little wobble and, for some, a scale change), distractors sharing the target's colour or
shape, shapes passing in front of each other and sometimes an occluder bar drawn over everything.

The language is needed. Each video has a *mode*: why the target cannot be told from the other
shapes without the sentence (probabilities `MODES`, configurable). Every sentence starts with the
target's size, colour and shape ("the small red triangle ..."), so distractors that differ in
one of those are told apart by those words; the rest of the sentence resolves identical *twins*
(same shape, colour and size):
  direction   a twin moves the other way: "... moving left". Needs motion: the one mode that a
              single frame cannot resolve (`SINGLE_FRAME_MODES`).
  vertical    a twin in the other half: "... at the top" / "... at the bottom".
  horizontal  a twin in the other half: "... on the left" / "... on the right".
  none        no twin; the sentence ends with the target's motion ("... moving up").
  absolute    1-3 twins, each in another quadrant: "... at the top left".
  attribute   no twin, but distractors that differ from the target in exactly one of size,
              colour and shape, so each of the three words is needed: "the large red square".
  relation    a twin and an anchor shape: "the small red square left of the blue circle" (also
              "right of", "above", "below"). Layout "opposite": the twin is on the anchor's other
              side; layout "decoy": the twin has the same relation to another shape (a decoy).
              So neither the relation word alone ("the left one") nor the anchor alone ("the
              one next to the circle") always picks the target: both are needed.
Shapes that a mode confines (to a half, a quadrant, a band beside the anchor) stay there for the
whole video, so the sentence holds in every frame, not only the first (checked frame by frame; a
plan that breaks it is drawn again). In the modes added in version 3 no shape changes size, so
the size word holds throughout too.

For grounding (finding the target from the sentence in frame 0), frame 0 always shows the whole
target, and the shapes the sentence is needed against (twins, anchor, decoy, one-word-off
distractors) are at least half visible there; attributes.json gives their frame-0 boxes, so an
evaluation can tell "picked the twin" from "picked nothing". Boxes are tight pixel boxes of the
whole (amodal) shape; a frame where less than 10% of the target shows is written as 0,0,0,0
(absent).

Sequence i depends only on (seed, i) and the mode probabilities (its own numpy Generator), so the
same seed writes identical bytes and a sequence does not change when the train/test split or the
sequence count changes.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
from typing import Mapping, Optional

import numpy as np
from PIL import Image, ImageDraw

# 2: frame 0 always shows the whole target. 3: single-frame modes (absolute, attribute, relation),
# a configurable mode mix, key shapes visible in frame 0, frame-0 boxes in attributes.json, half
# of the "none" videos moving mostly up or down, confined shapes checked in every frame.
GENERATOR_VERSION = 3
VOCAB_FILE = "vocab.txt"
JPEG_QUALITY = 90

SHAPES = ("circle", "square", "triangle", "star", "cross", "diamond")
COLOURS = {
    "red": (220, 40, 40), "green": (40, 175, 60), "blue": (45, 80, 230), "yellow": (240, 210, 40),
    "purple": (150, 60, 200), "orange": (250, 140, 30), "white": (240, 240, 240),
    "cyan": (40, 210, 220),
}
# Shape diameter as a fraction of the frame height.
SIZES = {"small": (0.09, 0.12), "medium": (0.16, 0.19), "large": (0.24, 0.28)}
# Default probabilities of the modes (module docstring); `mode_probabilities` normalises others.
MODES = {"direction": 0.1, "vertical": 0.1, "horizontal": 0.1, "none": 0.1,
         "absolute": 0.2, "attribute": 0.2, "relation": 0.2}
# Modes whose sentence picks the target out of a single frame (grounding can be scored on them).
SINGLE_FRAME_MODES = ("vertical", "horizontal", "none", "absolute", "attribute", "relation")
QUADRANTS = ("top left", "top right", "bottom left", "bottom right")
RELATIONS = ("left of", "right of", "above", "below")
PHRASE_WORDS = ("the", "moving", "left", "right", "up", "down", "at", "top", "bottom", "on",
                "of", "above", "below")
MIN_VISIBLE_FRACTION = 0.1
# A shape the sentence is needed against must show at least this much of itself in frame 0.
KEY_VISIBLE_FRACTION = 0.5


def vocabulary_words() -> list[str]:
  """Every word a generated sentence can contain (the WordPiece vocab is built from these)."""
  return list(PHRASE_WORDS) + list(SIZES) + list(COLOURS) + list(SHAPES)


def mode_probabilities(modes: Optional[Mapping[str, float]] = None) -> dict[str, float]:
  """{mode: probability} over every mode in `MODES` order, normalised to sum 1.

  `modes=None` is the default mix; a mapping names the modes to draw (missing ones get 0), e.g.
  {"relation": 1} for relation videos only. Unknown names and negative or all-zero weights raise.
  """
  if modes is None:
    modes = MODES
  modes = {str(k): float(v) for k, v in modes.items()}
  unknown = sorted(set(modes) - set(MODES))
  if unknown:
    raise ValueError(f"unknown synthetic mode(s) {unknown}; known: {list(MODES)}")
  if any(not math.isfinite(v) or v < 0 for v in modes.values()):
    raise ValueError(f"synthetic mode probabilities must be finite and >= 0, got {modes}")
  total = sum(modes.values())
  if total <= 0:
    raise ValueError(f"synthetic mode probabilities are all zero: {modes}")
  return {m: modes.get(m, 0.0) / total for m in MODES}


def parse_modes(text: str) -> dict[str, float]:
  """'relation=0.5,absolute=0.5' -> {"relation": 0.5, "absolute": 0.5} (for command lines)."""
  out = {}
  for item in filter(None, (s.strip() for s in text.split(","))):
    name, sep, value = item.partition("=")
    if not sep:
      raise ValueError(f"mode weight {item!r}: expected NAME=WEIGHT")
    out[name.strip()] = float(value)
  mode_probabilities(out)  # validates
  return out


# ---------------------------------------------------------------------------------------------
# Drawing.


def _shape_polygon(shape: str, cx: float, cy: float, d: float):
  r = d / 2.0
  if shape == "square":
    return [(cx - r, cy - r), (cx + r, cy - r), (cx + r, cy + r), (cx - r, cy + r)]
  if shape == "diamond":
    return [(cx, cy - r), (cx + r, cy), (cx, cy + r), (cx - r, cy)]
  if shape == "triangle":
    return [(cx, cy - r), (cx + r, cy + r), (cx - r, cy + r)]
  if shape == "star":
    pts = []
    for k in range(10):
      rad = r if k % 2 == 0 else 0.45 * r
      a = -math.pi / 2 + k * math.pi / 5
      pts.append((cx + rad * math.cos(a), cy + rad * math.sin(a)))
    return pts
  if shape == "cross":
    a = 0.3 * r
    return [(cx - a, cy - r), (cx + a, cy - r), (cx + a, cy - a), (cx + r, cy - a), (cx + r, cy + a),
            (cx + a, cy + a), (cx + a, cy + r), (cx - a, cy + r), (cx - a, cy + a), (cx - r, cy + a),
            (cx - r, cy - a), (cx - a, cy - a)]
  raise ValueError(shape)


def _draw_shape(draw: ImageDraw.ImageDraw, shape: str, cx: float, cy: float, d: float, fill, outline=None):
  if shape == "circle":
    r = d / 2.0
    draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=fill, outline=outline)
  else:
    draw.polygon(_shape_polygon(shape, cx, cy, d), fill=fill, outline=outline)


def _smooth_noise(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
  """[H, W] float in [0, 1]: two octaves of bicubically upsampled uniform noise."""
  out = np.zeros((height, width), np.float32)
  for cell, weight in ((24, 0.65), (8, 0.35)):
    small = rng.random((height // cell + 3, width // cell + 3)).astype(np.float32)
    img = Image.fromarray(small, mode="F").resize((width, height), Image.BICUBIC)
    out += weight * np.asarray(img)
  return np.clip(out, 0.0, 1.0)


def _background(rng: np.random.Generator, frames: int, width: int, height: int):
  """A textured plane larger than the frame, and the per-frame top-left of the visible window."""
  speed = rng.uniform(-1.5, 1.5, size=2)
  extra = int(math.ceil(np.abs(speed).max() * frames)) + 2
  tex_h, tex_w = height + extra, width + extra
  noise = np.stack([_smooth_noise(rng, tex_h, tex_w) for _ in range(2)], axis=-1)
  # Muted colours so the saturated shapes stand out, but not trivially.
  c0 = rng.uniform(40, 150, size=3)
  c1 = rng.uniform(60, 190, size=3)
  tex = c0 * noise[..., :1] + c1 * noise[..., 1:] * 0.8
  tex = np.clip(tex, 0, 255).astype(np.uint8)
  start = np.where(speed >= 0, 0, extra - 1).astype(np.float64)
  offsets = [(int(start[0] + speed[0] * t), int(start[1] + speed[1] * t)) for t in range(frames)]
  return tex, offsets


# ---------------------------------------------------------------------------------------------
# Scene planning.


class _Obj:
  """A shape with a straight-line trajectory (plus vertical wobble) and a linear scale change."""

  def __init__(self, shape, colour, size_word, diameter, x0, y0, vx, vy, wobble, phase, scale_rate):
    self.shape, self.colour, self.size_word = shape, colour, size_word
    self.diameter, self.x0, self.y0, self.vx, self.vy = diameter, x0, y0, vx, vy
    self.wobble, self.phase, self.scale_rate = wobble, phase, scale_rate
    self.region = None  # (x_range, y_range) the shape must stay inside, when a mode promises it

  def at(self, t: int, frames: int):
    s = 1.0 + self.scale_rate * t / max(frames - 1, 1)
    cy = self.y0 + self.vy * t + self.wobble * math.sin(2 * math.pi * t / 24.0 + self.phase)
    return self.x0 + self.vx * t, cy, self.diameter * s

  def looks(self):
    return self.shape, self.colour, self.size_word

  def describe(self) -> dict:
    return {"shape": self.shape, "colour": self.colour, "size": self.size_word}


@dataclasses.dataclass
class _Plan:
  """What a video shows; objs[0] is the target. `twins`, `anchor`, `decoy` and `one_off` index
  objs (the shapes the sentence is needed against); `extra` goes into attributes.json."""
  objs: list
  order: list
  bar: Optional[tuple]
  sentence: str
  mode: str
  twins: list
  anchor: Optional[int] = None
  decoy: Optional[int] = None
  one_off: list = dataclasses.field(default_factory=list)
  extra: dict = dataclasses.field(default_factory=dict)

  @property
  def key_objects(self) -> list[int]:
    return self.twins + [i for i in (self.anchor, self.decoy) if i is not None] + self.one_off


def _diameter(rng, size_word, height):
  lo, hi = SIZES[size_word]
  return float(rng.uniform(lo, hi) * height)


def _track(rng, lo: float, hi: float, speed: float, frames: int):
  """Start position so that start + speed * (frames - 1) stays inside [lo, hi]."""
  if hi <= lo:  # the shape just fits: park it in the middle
    return (lo + hi) / 2.0, 0.0
  travel = speed * (frames - 1)
  if abs(travel) > hi - lo:  # too fast for this range: slow down to fit
    speed = math.copysign((hi - lo) / max(frames - 1, 1), speed)
    travel = speed * (frames - 1)
  a, b = lo - min(travel, 0.0), hi - max(travel, 0.0)
  return float(rng.uniform(a, max(a, b))), speed  # b < a only by rounding, when travel = hi - lo


def _place(rng, obj: _Obj, frames, width, height, x_range=None, y_range=None, vx=None, vy=None):
  """Chooses velocity and start so the whole shape stays inside the (sub-)range all along (a
  sub-range is recorded as the shape's region; `_regions_hold` checks it, as a shape larger than
  its range cannot fit)."""
  if x_range is not None or y_range is not None:
    obj.region = (x_range or (0.0, float(width)), y_range or (0.0, float(height)))
  max_d = obj.diameter * (1.0 + max(obj.scale_rate, 0.0))
  margin = max_d / 2.0 + 2.0
  xl, xh = x_range or (0.0, float(width))
  yl, yh = y_range or (0.0, float(height))
  vx = float(rng.uniform(0.4, 1.6) * rng.choice([-1, 1])) if vx is None else vx
  vy = float(rng.uniform(-0.5, 0.5)) if vy is None else vy
  obj.wobble = min(obj.wobble, max((yh - yl) / 2.0 - margin, 0.0) / 2.0)
  obj.x0, obj.vx = _track(rng, xl + margin, xh - margin, vx, frames)
  obj.y0, obj.vy = _track(rng, yl + margin + obj.wobble, yh - margin - obj.wobble, vy, frames)


def _new_obj(rng, shape, colour, size_word, height, scale_rate=0.0):
  return _Obj(shape, colour, size_word, _diameter(rng, size_word, height), 0.0, 0.0, 0.0, 0.0,
              wobble=float(rng.uniform(0.0, 3.0)), phase=float(rng.uniform(0, 2 * math.pi)),
              scale_rate=scale_rate)


def _twin_of(rng, target: _Obj) -> _Obj:
  return _Obj(target.shape, target.colour, target.size_word, target.diameter, 0, 0, 0, 0,
              wobble=target.wobble, phase=float(rng.uniform(0, 2 * math.pi)),
              scale_rate=target.scale_rate)


def _pick(rng, options) -> str:
  return str(options[int(rng.integers(len(options)))])


def _distractor(rng, target: _Obj, height: int, avoid=()) -> _Obj:
  """A shape sharing the target's colour (40%) or shape (30%), or any (30%); never its twin (a
  same colour and shape gets another size word) and never a (shape, colour) in `avoid`."""
  while True:
    kind = rng.random()
    shape, colour, size_word = _pick(rng, SHAPES), _pick(rng, list(COLOURS)), _pick(rng, list(SIZES))
    if kind < 0.4:
      colour = target.colour  # same colour, another shape
      shape = _pick(rng, [s for s in SHAPES if s != target.shape])
    elif kind < 0.7:
      shape = target.shape  # same shape, another colour
      colour = _pick(rng, [c for c in COLOURS if c != target.colour])
    if shape == target.shape and colour == target.colour:
      # Only a twin may look like the target; otherwise the size word must tell them apart.
      size_word = "large" if target.size_word == "small" else "small"
    if (shape, colour) not in avoid:
      return _new_obj(rng, shape, colour, size_word, height)


def _plan_motion_mode(rng, mode, target, frames, width, height):
  """The version-2 modes: (twins, phrase)."""
  twins = []
  if mode != "none":
    twins.append(_twin_of(rng, target))
  if mode == "direction":
    twin = twins[0]
    speed = float(rng.uniform(0.6, 1.6))
    sign = float(rng.choice([-1, 1]))
    _place(rng, target, frames, width, height, vx=sign * speed, vy=float(rng.uniform(-0.3, 0.3)))
    _place(rng, twin, frames, width, height, vx=-sign * float(rng.uniform(0.6, 1.6)),
           vy=float(rng.uniform(-0.3, 0.3)))
    return twins, "moving left" if sign < 0 else "moving right"
  if mode == "vertical":
    twin = twins[0]
    top = rng.random() < 0.5
    halves = [(0.0, height / 2.0), (height / 2.0, float(height))]
    vx = float(rng.uniform(0.4, 1.4) * rng.choice([-1, 1]))
    _place(rng, target, frames, width, height, y_range=halves[0 if top else 1], vx=vx, vy=0.0)
    _place(rng, twin, frames, width, height, y_range=halves[1 if top else 0],
           vx=float(rng.uniform(0.4, 1.4) * rng.choice([-1, 1])), vy=0.0)
    return twins, "at the top" if top else "at the bottom"
  if mode == "horizontal":
    twin = twins[0]
    left = rng.random() < 0.5
    halves = [(0.0, width / 2.0), (width / 2.0, float(width))]
    for obj, half in ((target, halves[0 if left else 1]), (twin, halves[1 if left else 0])):
      obj.wobble = 0.0
      _place(rng, obj, frames, width, height, x_range=half, vx=float(rng.uniform(-0.3, 0.3)),
             vy=float(rng.uniform(0.3, 1.0) * rng.choice([-1, 1])))
    return twins, "on the left" if left else "on the right"
  if rng.random() < 0.5:  # mostly up or down (without this, "moving up" would be rare)
    _place(rng, target, frames, width, height, vx=float(rng.uniform(-0.3, 0.3)),
           vy=float(rng.uniform(0.4, 1.0) * rng.choice([-1, 1])))
  else:
    _place(rng, target, frames, width, height)
  if abs(target.vy) > abs(target.vx):
    return twins, "moving up" if target.vy < 0 else "moving down"
  return twins, "moving left" if target.vx < 0 else "moving right"


def _quadrant_ranges(q: int, width: int, height: int):
  x = (0.0, width / 2.0) if q % 2 == 0 else (width / 2.0, float(width))
  y = (0.0, height / 2.0) if q < 2 else (height / 2.0, float(height))
  return x, y


def _plan_absolute(rng, target, frames, width, height):
  """Target in one quadrant, 1-3 twins in others; each stays in its quadrant."""
  quadrant = int(rng.integers(4))
  n_twins = int(rng.integers(1, 4))
  others = [int(q) for q in rng.permutation([q for q in range(4) if q != quadrant])[:n_twins]]
  twins = [_twin_of(rng, target) for _ in others]
  for obj, q in zip([target] + twins, [quadrant] + others):
    x_range, y_range = _quadrant_ranges(q, width, height)
    _place(rng, obj, frames, width, height, x_range=x_range, y_range=y_range,
           vx=float(rng.uniform(0.2, 0.8) * rng.choice([-1, 1])), vy=float(rng.uniform(-0.4, 0.4)))
  position = QUADRANTS[quadrant]
  return twins, f"at the {position}", {"position": position}


def _plan_attribute(rng, target, height):
  """Distractors that each differ from the target in exactly one word (in random order)."""
  one_off = []
  for word in rng.permutation(["colour", "shape", "size"]):
    shape, colour, size_word = target.looks()
    if word == "colour":
      colour = _pick(rng, [c for c in COLOURS if c != target.colour])
    elif word == "shape":
      shape = _pick(rng, [s for s in SHAPES if s != target.shape])
    else:
      size_word = _pick(rng, [s for s in SIZES if s != target.size_word])
    one_off.append(_new_obj(rng, shape, colour, size_word, height))
  return one_off


def _plan_relation(rng, target, frames, width, height):
  """Target and twin on either side of an anchor ("opposite"), or each beside its own anchor
  ("decoy").

  "a left of b" means: a and b share a strip across the relation's axis (a row for left/right, a
  column for above/below) and a's right edge is left of b's left edge. The axis is cut into three
  bands and every shape stays in its band and strip for the whole video, so this holds in every
  frame. The twin is never <word> the anchor: "opposite" puts it on the anchor's other side in
  the same strip; "decoy" puts it in the other strip (the other half of the frame), <word> a decoy
  shape, with the pairs' bands drawn independently, so "the left one" is right only half the time
  and the anchor has to be read."""
  word = _pick(rng, RELATIONS)
  horizontal = word in ("left of", "right of")
  target_first = word in ("left of", "above")  # the target comes first along the axis
  taken = {(target.shape, target.colour)}
  anchor = _distractor(rng, target, height, avoid=taken)
  taken.add((anchor.shape, anchor.colour))
  twin = _twin_of(rng, target)
  along_len, across_len = (width, height) if horizontal else (height, width)
  bands = [(k * along_len / 3.0, (k + 1) * along_len / 3.0) for k in range(3)]
  decoy = None
  if rng.random() < 0.5:
    layout = "opposite"
    strip = 0.6 * across_len
    s0 = float(rng.uniform(0.0, across_len - strip))
    row = [target, anchor, twin] if target_first else [twin, anchor, target]
    placements = [(obj, bands[k], (s0, s0 + strip)) for k, obj in enumerate(row)]
  else:
    layout = "decoy"
    decoy = _distractor(rng, target, height, avoid=taken)
    halves = [(0.0, across_len / 2.0), (across_len / 2.0, float(across_len))]
    flip = int(rng.integers(2))
    placements = []
    for pair, half in (((target, anchor), halves[flip]), ((twin, decoy), halves[1 - flip])):
      k = int(rng.integers(2))  # the pair takes bands k, k + 1 of the three
      first, second = pair if target_first else pair[::-1]
      placements += [(first, bands[k], half), (second, bands[k + 1], half)]
  for obj, along, across in placements:
    v_along = float(rng.uniform(-0.15, 0.15))
    v_across = float(rng.uniform(0.2, 0.8) * rng.choice([-1, 1]))
    if horizontal:
      _place(rng, obj, frames, width, height, x_range=along, y_range=across, vx=v_along, vy=v_across)
    else:
      _place(rng, obj, frames, width, height, x_range=across, y_range=along, vx=v_across, vy=v_along)
  phrase = f"{word} the {anchor.colour} {anchor.shape}"
  extra = {"relation": word, "layout": layout, "anchor": anchor.describe()}
  return twin, anchor, decoy, phrase, extra, taken


def _plan(rng: np.random.Generator, frames: int, width: int, height: int,
          modes: Optional[Mapping[str, float]] = None) -> _Plan:
  probs = mode_probabilities(modes)
  mode = str(rng.choice(list(probs), p=list(probs.values())))
  scales = mode in ("direction", "vertical", "horizontal", "none")
  target = _new_obj(rng, _pick(rng, SHAPES), _pick(rng, list(COLOURS)), _pick(rng, list(SIZES)),
                    height,
                    scale_rate=float(rng.uniform(-0.2, 0.25)) if scales and rng.random() < 0.5 else 0.0)
  objs, twins, one_off, extra, avoid = [target], [], [], {}, ()
  anchor = decoy = None
  n_objects = int(rng.integers(2, 7))
  if scales:
    twin_objs, phrase = _plan_motion_mode(rng, mode, target, frames, width, height)
  elif mode == "absolute":
    twin_objs, phrase, extra = _plan_absolute(rng, target, frames, width, height)
  elif mode == "attribute":
    twin_objs, phrase = [], ""
    n_objects = int(rng.integers(3, 7))
    one_off_objs = _plan_attribute(rng, target, height)[:n_objects - 1]
    _place(rng, target, frames, width, height)
    for obj in one_off_objs:
      _place(rng, obj, frames, width, height)
    one_off = list(range(1, 1 + len(one_off_objs)))
    objs += one_off_objs
  else:
    twin, anchor_obj, decoy_obj, phrase, extra, avoid = _plan_relation(rng, target, frames, width, height)
    twin_objs = [twin]
    objs.append(anchor_obj)
    anchor = 1
    if decoy_obj is not None:
      objs.append(decoy_obj)
      decoy = 2
    n_objects = len(objs) + 1 + int(rng.integers(0, 2))  # plus the twin, plus 0-1 more
  twins = list(range(len(objs), len(objs) + len(twin_objs)))
  objs += twin_objs

  while len(objs) < n_objects:
    obj = _distractor(rng, target, height, avoid=avoid)
    _place(rng, obj, frames, width, height)
    objs.append(obj)

  order = list(rng.permutation(len(objs)))  # drawing order: later ones pass in front
  bar = None
  if rng.random() < 0.35:
    # A vertical bar across the target's path, drawn over everything.
    xs = [target.at(t, frames)[0] for t in (0, frames - 1)]
    bar_w = float(rng.uniform(0.06, 0.1) * width)
    bar_x = float(rng.uniform(min(xs), max(xs) + 1e-3)) - bar_w / 2
    bar = (bar_x, bar_w, tuple(int(v) for v in rng.integers(60, 200, size=3)))
  sentence = " ".join(["the", target.size_word, target.colour, target.shape] + phrase.split())
  return _Plan(objs=objs, order=order, bar=bar, sentence=sentence, mode=mode, twins=twins,
               anchor=anchor, decoy=decoy, one_off=one_off, extra=extra)


MAX_PLAN_ATTEMPTS = 50


def _regions_hold(objs, frames: int) -> bool:
  """Every shape with a region stays inside it in every frame (what the sentence relies on)."""
  for obj in objs:
    if obj.region is None:
      continue
    (xl, xh), (yl, yh) = obj.region
    for t in range(frames):
      cx, cy, d = obj.at(t, frames)
      r = d / 2.0
      if cx - r < xl or cx + r > xh or cy - r < yl or cy + r > yh:
        return False
  return True


def _inside(xs: np.ndarray, ys: np.ndarray, width: int, height: int) -> bool:
  """The target's pixels do not touch the frame border (so its box is its whole extent)."""
  return xs.min() > 0 and ys.min() > 0 and xs.max() < width - 1 and ys.max() < height - 1


def render_sequence(seed: int, index: int, frames: int = 48, width: int = 160, height: int = 120,
                    modes: Optional[Mapping[str, float]] = None) -> dict:
  """One video as arrays: frames uint8 [F, H, W, 3], boxes float64 [F, 4] (0,0,0,0 = absent),
  the sentence and a dict of attributes (mode, target looks, ...). `modes`: mode probabilities
  (`mode_probabilities`; None = `MODES`)."""
  # Tracking starts from frame 0's box (and grounding reads frame 0), so the target must be
  # whole there and the shapes the sentence is needed against must show: a plan that fails this
  # is drawn again, deterministically (attempt number in the seed).
  for attempt in range(MAX_PLAN_ATTEMPTS):
    key = [int(seed), int(index)] + ([attempt] if attempt else [])
    video = _render(np.random.default_rng(key), frames, width, height, modes)
    if video is not None:
      return video
  raise RuntimeError(f"synthetic sequence {index} (seed {seed}): no plan with the target whole in "
                     f"frame 0 after {MAX_PLAN_ATTEMPTS} attempts; frame {width}x{height} too small?")


def _mask(obj: _Obj, t: int, frames: int, width: int, height: int) -> np.ndarray:
  img = Image.new("L", (width, height), 0)
  cx, cy, d = obj.at(t, frames)
  _draw_shape(ImageDraw.Draw(img), obj.shape, cx, cy, d, 255, outline=255)
  return np.asarray(img) > 0


def _bbox(mask: np.ndarray) -> list[int]:
  ys, xs = np.nonzero(mask)
  return [int(xs.min()), int(ys.min()), int(xs.max() - xs.min() + 1), int(ys.max() - ys.min() + 1)]


def _frame0_key_boxes(plan: _Plan, frames: int, width: int, height: int) -> Optional[dict]:
  """{object index: amodal frame-0 box} of the key objects, or None when frame 0 breaks a promise:
  the target not whole (hidden in part, or touching the border) or a key object showing less
  than KEY_VISIBLE_FRACTION of itself (hidden by shapes drawn after it or by the bar). Runs before
  the background is made, so a rejected plan costs one frame of masks."""
  masks = [_mask(obj, 0, frames, width, height) for obj in plan.objs]
  bar_mask = np.zeros((height, width), bool)
  if plan.bar is not None:
    bx, bw, _ = plan.bar
    img = Image.new("L", (width, height), 0)
    ImageDraw.Draw(img).rectangle([bx, 0, bx + bw, height], fill=255)
    bar_mask = np.asarray(img) > 0

  def shown(i):
    cover = bar_mask.copy()
    for j in plan.order[plan.order.index(i) + 1:]:
      cover |= masks[j]
    return (masks[i] & ~cover).sum(), masks[i].sum()

  ys, xs = np.nonzero(masks[0])
  visible, total = shown(0)
  if not total or visible < total or not _inside(xs, ys, width, height):
    return None
  out = {}
  for i in plan.key_objects:
    visible, total = shown(i)
    if not total or visible < KEY_VISIBLE_FRACTION * total:
      return None
    out[i] = _bbox(masks[i])
  return out


def _render(rng: np.random.Generator, frames: int, width: int, height: int,
            modes: Optional[Mapping[str, float]]) -> Optional[dict]:
  plan = _plan(rng, frames, width, height, modes)
  objs, order, bar = plan.objs, plan.order, plan.bar
  if not _regions_hold(objs, frames):
    return None
  key_boxes = _frame0_key_boxes(plan, frames, width, height)
  if key_boxes is None:
    return None
  tex, offsets = _background(rng, frames, width, height)
  video = np.empty((frames, height, width, 3), np.uint8)
  boxes = np.zeros((frames, 4), np.float64)
  target_rank = order.index(0)
  for t in range(frames):
    ox, oy = offsets[t]
    img = Image.fromarray(np.ascontiguousarray(tex[oy:oy + height, ox:ox + width]))
    draw = ImageDraw.Draw(img)
    target_mask = Image.new("L", (width, height), 0)
    cover = Image.new("L", (width, height), 0)  # what is drawn over the target
    for rank, i in enumerate(order):
      obj = objs[i]
      cx, cy, d = obj.at(t, frames)
      fill = COLOURS[obj.colour]
      _draw_shape(draw, obj.shape, cx, cy, d, fill, outline=tuple(int(c * 0.55) for c in fill))
      if i == 0:
        _draw_shape(ImageDraw.Draw(target_mask), obj.shape, cx, cy, d, 255, outline=255)
      elif rank > target_rank:
        _draw_shape(ImageDraw.Draw(cover), obj.shape, cx, cy, d, 255, outline=255)
    if bar is not None:
      bx, bw, colour = bar
      draw.rectangle([bx, 0, bx + bw, height], fill=colour)
      ImageDraw.Draw(cover).rectangle([bx, 0, bx + bw, height], fill=255)
    video[t] = np.asarray(img)
    m = np.asarray(target_mask) > 0
    ys, xs = np.nonzero(m)
    if t == 0 and not len(xs):
      return None
    if len(xs):
      shown = (m & ~(np.asarray(cover) > 0)).sum() / m.sum()
      if t == 0 and (shown < 1.0 or not _inside(xs, ys, width, height)):
        return None
      if shown >= MIN_VISIBLE_FRACTION:
        boxes[t] = [xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1]
  target = objs[0]
  frame0 = {"twins": [key_boxes[i] for i in plan.twins]}
  if plan.anchor is not None:
    frame0["anchor"] = key_boxes[plan.anchor]
  if plan.decoy is not None:
    frame0["decoy"] = key_boxes[plan.decoy]
  if plan.one_off:
    frame0["one_off"] = [key_boxes[i] for i in plan.one_off]
  attributes = {
      "mode": plan.mode, "sentence": plan.sentence, "num_objects": len(objs),
      "occluder_bar": bar is not None, "target": target.describe(),
      "identical_distractor": bool(plan.twins), "twins": len(plan.twins),
      "single_frame": plan.mode in SINGLE_FRAME_MODES, "frame0_boxes": frame0,
      "absent_frames": int((boxes[:, 2] <= 0).sum()), **plan.extra,
  }
  return {"frames": video, "boxes": boxes, "sentence": plan.sentence, "attributes": attributes}


# ---------------------------------------------------------------------------------------------
# Writing.


def sequence_name(index: int) -> str:
  return f"synth_{index:05d}"


def write_sequence(seq_dir: str, data: dict) -> None:
  img_dir = os.path.join(seq_dir, "imgs")
  os.makedirs(img_dir, exist_ok=True)
  for t, frame in enumerate(data["frames"]):
    Image.fromarray(frame).save(os.path.join(img_dir, f"{t + 1:05d}.jpg"), quality=JPEG_QUALITY)
  with open(os.path.join(seq_dir, "groundtruth.txt"), "w") as f:
    f.writelines(",".join(str(int(v)) for v in box) + "\n" for box in data["boxes"])
  with open(os.path.join(seq_dir, "language.txt"), "w") as f:
    f.write(data["sentence"] + "\n")
  with open(os.path.join(seq_dir, "attributes.json"), "w") as f:
    json.dump(data["attributes"], f, indent=1, sort_keys=True)
    f.write("\n")


def parse_size(text) -> tuple[int, int]:
  """'160x120' or (160, 120) -> (width, height): WxH, the one frame-size syntax of every verb.
  Anything else is a ValueError that shows the form expected (H,W swapped into WxH when given)."""
  if not isinstance(text, str):
    w, h = text
    return int(w), int(h)
  parts = text.lower().replace(" ", "").split("x")
  if len(parts) == 2 and all(p.isdigit() and int(p) > 0 for p in parts):
    return int(parts[0]), int(parts[1])
  example = "640x480"
  pair = text.replace(" ", "").split(",")
  if len(pair) == 2 and all(p.isdigit() for p in pair):  # the H,W form `bench track` once took
    example = f"{pair[1]}x{pair[0]} if you meant height,width; {pair[0]}x{pair[1]} if width,height"
  raise ValueError(f"{text!r}: expected WxH, e.g. {example}")


def split_of(index: int, sequences: int, test_sequences: int) -> str:
  """The last `test_sequences` indices are the held-out test split."""
  return "test" if index >= sequences - test_sequences else "train"


# Everything a generated folder holds: what `generate` writes, the readers' index caches and
# synthetic_store's `.complete` stamp. `clear_generated` deletes nothing else.
GENERATED_NAMES = ("train", "test", VOCAB_FILE, "meta.json", ".complete")
INDEX_PREFIX = ".satracker_index_"


def clear_generated(root: str) -> None:
  """Deletes `root`, which must hold nothing but GENERATED_NAMES and index caches (else a
  ValueError naming the first other file: a mistyped root never costs user data)."""
  foreign = [n for n in sorted(os.listdir(root))
             if n not in GENERATED_NAMES and not n.startswith(INDEX_PREFIX)]
  if foreign:
    raise ValueError(f"{os.path.join(root, foreign[0])}: the synthetic data root {root} holds files "
                     f"the generator did not write; refusing to clear it for re-generation "
                     f"(choose another root or remove them)")
  shutil.rmtree(root)


def _describe(meta: dict) -> str:
  size = "x".join(str(v) for v in meta.get("size", ()))
  return (f"seed {meta.get('seed')}, {meta.get('sequences')} videos ({meta.get('test_sequences')} "
          f"test), {meta.get('frames')} frames of {size}, generator version "
          f"{meta.get('generator_version')}")


def _check_out_dir(out_dir: str, request: dict, replace: bool) -> None:
  """Two generations never mix in one folder: one that holds anything but this very request
  (another seed, count, size, mode mix or generator version; or files without a meta.json, e.g.
  an interrupted run) is refused, or with `replace` cleared whole (`clear_generated`). The same
  request again rewrites the same bytes."""
  if not os.path.isdir(out_dir):
    return
  if not [n for n in os.listdir(out_dir) if not n.startswith(INDEX_PREFIX)]:
    return
  try:
    with open(os.path.join(out_dir, "meta.json")) as f:
      meta = json.load(f)
  except (OSError, ValueError):
    meta = None
  if isinstance(meta, dict) and all(meta.get(k) == v for k, v in request.items()):
    return
  if not replace:
    held = (f"another generation ({_describe(meta)})" if isinstance(meta, dict)
            else "files but no meta.json (an unfinished generation, or not ours)")
    raise ValueError(f"{out_dir} holds {held}; writing {_describe(request)} there would mix two "
                     "data sets: choose another folder, or --force to replace it whole")
  clear_generated(out_dir)


def _write_one(job) -> str:
  """Renders and writes sequence i (one task of `generate`); returns its mode."""
  out_dir, seed, i, frames, width, height, probs, sequences, test_sequences = job
  data = render_sequence(seed, i, frames, width, height, modes=probs)
  write_sequence(os.path.join(out_dir, split_of(i, sequences, test_sequences), sequence_name(i)), data)
  return data["attributes"]["mode"]


def generate(out_dir: str, sequences: int, seed: int = 0, frames: int = 48, size=(160, 120),
             test_sequences: int = 0, progress: bool = True,
             modes: Optional[Mapping[str, float]] = None, workers: int = 1,
             replace: bool = False) -> dict:
  """Writes `sequences` videos (the last `test_sequences` under test/, the rest under train/),
  vocab.txt and meta.json; returns meta.json's content. `modes`: mode probabilities (None =
  `MODES`; see `mode_probabilities`). `workers` > 1: videos rendered in that many processes (the
  bytes do not change: each video depends on (seed, index) only). A folder holding another
  generation raises ValueError, or with `replace` is cleared first (`_check_out_dir`)."""
  from satracker_jax.tokenizer import write_wordpiece_vocab  # noqa: PLC0415
  width, height = parse_size(size)
  if sequences < 1:
    raise ValueError(f"sequences={sequences}: generate at least 1 video")
  if not 0 <= test_sequences <= sequences:
    raise ValueError(f"test_sequences={test_sequences} must lie in [0, sequences={sequences}]")
  if frames < 2 or width < 32 or height < 32:
    raise ValueError(f"need frames >= 2 and a frame of at least 32x32, got {frames}, {width}x{height}")
  probs = mode_probabilities(modes)  # bad weights fail before anything is written
  request = {"generator_version": GENERATOR_VERSION, "seed": int(seed), "sequences": int(sequences),
             "test_sequences": int(test_sequences), "frames": int(frames), "size": [width, height],
             "mode_probabilities": probs}
  _check_out_dir(out_dir, request, replace)
  os.makedirs(out_dir, exist_ok=True)
  jobs = [(out_dir, seed, i, frames, width, height, probs, sequences, test_sequences)
          for i in range(sequences)]
  counts = {m: 0 for m in MODES}
  pool = None
  if workers > 1 and sequences > 1:
    import concurrent.futures  # noqa: PLC0415
    import multiprocessing  # noqa: PLC0415
    pool = concurrent.futures.ProcessPoolExecutor(
        workers, mp_context=multiprocessing.get_context("spawn"))
    done = pool.map(_write_one, jobs, chunksize=max(1, min(32, sequences // (4 * workers))))
  else:
    done = map(_write_one, jobs)
  if progress:
    from tqdm import tqdm  # noqa: PLC0415
    done = tqdm(done, total=sequences, desc="synth", unit="seq")
  try:
    for mode in done:
      counts[mode] += 1
  finally:
    if pool is not None:
      pool.shutdown(cancel_futures=True)
  vocab_size = write_wordpiece_vocab(vocabulary_words(), os.path.join(out_dir, VOCAB_FILE))
  meta = {**request, "vocab_size": vocab_size, "modes": counts}
  with open(os.path.join(out_dir, "meta.json"), "w") as f:
    json.dump(meta, f, indent=1, sort_keys=True)
    f.write("\n")
  return meta


def generate_from_config(config, root: str, progress: bool = True) -> dict:
  """Generates `config.data.synthetic` (sequences, frames, size, seed, test_sequences and the
  optional mode probabilities `modes`) into root."""
  s = config.data.synthetic
  modes = s.get("modes", None)
  return generate(root, sequences=int(s.sequences), seed=int(s.seed), frames=int(s.frames),
                  size=s.size, test_sequences=int(s.test_sequences), progress=progress,
                  modes=None if modes is None else dict(modes.items()))


def resolve_vocab_file(config, root: Optional[str] = None) -> None:
  """Replaces the `{synthetic_root}` placeholder of `config.text.vocab_file` (configs/synthetic.py)
  with the synthetic data set's root, in place."""
  vocab = config.text.get("vocab_file", "")
  if "{synthetic_root}" not in vocab:
    return
  root = root or config.data.datasets.synthetic.root
  if not root:
    raise ValueError("config.text.vocab_file refers to {synthetic_root} but "
                     "config.data.datasets.synthetic.root is empty (generate the data first)")
  config.text.vocab_file = vocab.replace("{synthetic_root}", root)
