"""Procedural vision-language tracking videos, written in the TNL2K layout (no TensorFlow here).

    generate("/tmp/synth", sequences=100, seed=0, test_sequences=10)
    # /tmp/synth/{train,test}/synth_00000/{imgs/00001.jpg..., groundtruth.txt, language.txt,
    #                                      attributes.json}, /tmp/synth/vocab.txt, meta.json

Each video: a smooth-noise background that scrolls, 2-6 coloured shapes moving in straight lines
(with a little wobble and, for some, a scale change), distractors sharing the target's colour or
shape, shapes passing in front of each other and sometimes an occluder bar drawn over everything.

The language is needed: in most videos an identical twin of the target (same shape, colour and
size) is on screen, and only the sentence says which one is meant, by motion ("the small red
triangle moving left" while the twin moves right) or by position ("... at the top", "... on the
left", each twin confined to its half). Every sentence names the target's size, colour and shape,
so the other distractors are told apart by those words. Boxes are tight pixel boxes of the whole
(amodal) shape; a frame where less than 10% of the target shows is written as 0,0,0,0 (absent).

Sequence i depends only on (seed, i) (its own numpy Generator), so the same seed writes identical
bytes and a sequence does not change when the train/test split or the sequence count changes.
"""
from __future__ import annotations

import json
import math
import os
from typing import Optional

import numpy as np
from PIL import Image, ImageDraw

GENERATOR_VERSION = 2  # 2: frame 0 always shows the whole target
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
# Why each video's target is ambiguous without the sentence (probabilities of the modes).
MODES = {"direction": 0.3, "vertical": 0.15, "horizontal": 0.15, "none": 0.4}
PHRASE_WORDS = ("the", "moving", "left", "right", "up", "down", "at", "top", "bottom", "on")
MIN_VISIBLE_FRACTION = 0.1


def vocabulary_words() -> list[str]:
  """Every word a generated sentence can contain (the WordPiece vocab is built from these)."""
  return list(PHRASE_WORDS) + list(SIZES) + list(COLOURS) + list(SHAPES)


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

  def at(self, t: int, frames: int):
    s = 1.0 + self.scale_rate * t / max(frames - 1, 1)
    cy = self.y0 + self.vy * t + self.wobble * math.sin(2 * math.pi * t / 24.0 + self.phase)
    return self.x0 + self.vx * t, cy, self.diameter * s

  def looks(self):
    return self.shape, self.colour, self.size_word


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
  return float(rng.uniform(a, b)), speed


def _place(rng, obj: _Obj, frames, width, height, x_range=None, y_range=None, vx=None, vy=None):
  """Chooses velocity and start so the whole shape stays inside the (sub-)range all along."""
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


def _plan(rng: np.random.Generator, frames: int, width: int, height: int):
  colours = list(COLOURS)
  mode = str(rng.choice(list(MODES), p=list(MODES.values())))
  target = _new_obj(rng, str(rng.choice(SHAPES)), str(rng.choice(colours)),
                    str(rng.choice(list(SIZES))), height,
                    scale_rate=float(rng.uniform(-0.2, 0.25)) if rng.random() < 0.5 else 0.0)
  objs = [target]
  twin = None
  if mode != "none":
    twin = _Obj(target.shape, target.colour, target.size_word, target.diameter, 0, 0, 0, 0,
                wobble=target.wobble, phase=float(rng.uniform(0, 2 * math.pi)),
                scale_rate=target.scale_rate)
    objs.append(twin)
  if mode == "direction":
    speed = float(rng.uniform(0.6, 1.6))
    sign = float(rng.choice([-1, 1]))
    _place(rng, target, frames, width, height, vx=sign * speed, vy=float(rng.uniform(-0.3, 0.3)))
    _place(rng, twin, frames, width, height, vx=-sign * float(rng.uniform(0.6, 1.6)),
           vy=float(rng.uniform(-0.3, 0.3)))
    phrase = "moving left" if sign < 0 else "moving right"
  elif mode == "vertical":
    top = rng.random() < 0.5
    halves = [(0.0, height / 2.0), (height / 2.0, float(height))]
    vx = float(rng.uniform(0.4, 1.4) * rng.choice([-1, 1]))
    _place(rng, target, frames, width, height, y_range=halves[0 if top else 1], vx=vx, vy=0.0)
    _place(rng, twin, frames, width, height, y_range=halves[1 if top else 0],
           vx=float(rng.uniform(0.4, 1.4) * rng.choice([-1, 1])), vy=0.0)
    phrase = "at the top" if top else "at the bottom"
  elif mode == "horizontal":
    left = rng.random() < 0.5
    halves = [(0.0, width / 2.0), (width / 2.0, float(width))]
    for obj, half in ((target, halves[0 if left else 1]), (twin, halves[1 if left else 0])):
      obj.wobble = 0.0
      _place(rng, obj, frames, width, height, x_range=half, vx=float(rng.uniform(-0.3, 0.3)),
             vy=float(rng.uniform(0.3, 1.0) * rng.choice([-1, 1])))
    phrase = "on the left" if left else "on the right"
  else:
    _place(rng, target, frames, width, height)
    if abs(target.vy) > abs(target.vx):
      phrase = "moving up" if target.vy < 0 else "moving down"
    else:
      phrase = "moving left" if target.vx < 0 else "moving right"

  n_objects = int(rng.integers(2, 7))
  while len(objs) < n_objects:
    kind = rng.random()
    shape, colour = str(rng.choice(SHAPES)), str(rng.choice(colours))
    size_word = str(rng.choice(list(SIZES)))
    if kind < 0.4:
      colour = target.colour  # same colour, another shape
      shape = str(rng.choice([s for s in SHAPES if s != target.shape]))
    elif kind < 0.7:
      shape = target.shape  # same shape, another colour
      colour = str(rng.choice([c for c in colours if c != target.colour]))
    if shape == target.shape and colour == target.colour:
      # Only the twin may look like the target; otherwise the size word must tell them apart.
      size_word = "large" if target.size_word == "small" else "small"
    obj = _new_obj(rng, shape, colour, size_word, height)
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
  sentence = f"the {target.size_word} {target.colour} {target.shape} {phrase}"
  return objs, order, bar, sentence, mode


MAX_PLAN_ATTEMPTS = 50


def _inside(xs: np.ndarray, ys: np.ndarray, width: int, height: int) -> bool:
  """The target's pixels do not touch the frame border (so its box is its whole extent)."""
  return xs.min() > 0 and ys.min() > 0 and xs.max() < width - 1 and ys.max() < height - 1


def render_sequence(seed: int, index: int, frames: int = 48, width: int = 160, height: int = 120) -> dict:
  """One video as arrays: frames uint8 [F, H, W, 3], boxes float64 [F, 4] (0,0,0,0 = absent),
  the sentence and a dict of attributes (mode, target looks, ...)."""
  # Tracking starts from frame 0's box, so the target must be whole there: a plan that hides
  # any of it in frame 0 is drawn again, deterministically (attempt number in the seed).
  for attempt in range(MAX_PLAN_ATTEMPTS):
    key = [int(seed), int(index)] + ([attempt] if attempt else [])
    video = _render(np.random.default_rng(key), frames, width, height)
    if video is not None:
      return video
  raise RuntimeError(f"synthetic sequence {index} (seed {seed}): no plan with the target whole in "
                     f"frame 0 after {MAX_PLAN_ATTEMPTS} attempts; frame {width}x{height} too small?")


def _render(rng: np.random.Generator, frames: int, width: int, height: int) -> Optional[dict]:
  objs, order, bar, sentence, mode = _plan(rng, frames, width, height)
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
  attributes = {
      "mode": mode, "sentence": sentence, "num_objects": len(objs), "occluder_bar": bar is not None,
      "target": {"shape": target.shape, "colour": target.colour, "size": target.size_word},
      "identical_distractor": mode != "none",
      "absent_frames": int((boxes[:, 2] <= 0).sum()),
  }
  return {"frames": video, "boxes": boxes, "sentence": sentence, "attributes": attributes}


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
  """'160x120' or (160, 120) -> (width, height)."""
  if isinstance(text, str):
    w, _, h = text.lower().partition("x")
    return int(w), int(h)
  w, h = text
  return int(w), int(h)


def split_of(index: int, sequences: int, test_sequences: int) -> str:
  """The last `test_sequences` indices are the held-out test split."""
  return "test" if index >= sequences - test_sequences else "train"


def generate(out_dir: str, sequences: int, seed: int = 0, frames: int = 48, size=(160, 120),
             test_sequences: int = 0, progress: bool = True) -> dict:
  """Writes `sequences` videos (the last `test_sequences` under test/, the rest under train/),
  vocab.txt and meta.json; returns meta.json's content."""
  from satracker_jax.tokenizer import write_wordpiece_vocab  # noqa: PLC0415
  width, height = parse_size(size)
  if not 0 <= test_sequences <= sequences:
    raise ValueError(f"test_sequences={test_sequences} must lie in [0, sequences={sequences}]")
  if frames < 2 or width < 32 or height < 32:
    raise ValueError(f"need frames >= 2 and a frame of at least 32x32, got {frames}, {width}x{height}")
  os.makedirs(out_dir, exist_ok=True)
  iterator = range(sequences)
  if progress:
    from tqdm import tqdm  # noqa: PLC0415
    iterator = tqdm(iterator, desc="synth", unit="seq")
  modes = {m: 0 for m in MODES}
  for i in iterator:
    data = render_sequence(seed, i, frames, width, height)
    modes[data["attributes"]["mode"]] += 1
    write_sequence(os.path.join(out_dir, split_of(i, sequences, test_sequences), sequence_name(i)), data)
  vocab_size = write_wordpiece_vocab(vocabulary_words(), os.path.join(out_dir, VOCAB_FILE))
  meta = {"generator_version": GENERATOR_VERSION, "seed": int(seed), "sequences": int(sequences),
          "test_sequences": int(test_sequences), "frames": int(frames), "size": [width, height],
          "vocab_size": vocab_size, "modes": modes}
  with open(os.path.join(out_dir, "meta.json"), "w") as f:
    json.dump(meta, f, indent=1, sort_keys=True)
    f.write("\n")
  return meta


def generate_from_config(config, root: str, progress: bool = True) -> dict:
  """Generates `config.data.synthetic` (sequences, frames, size, seed, test_sequences) into root."""
  s = config.data.synthetic
  return generate(root, sequences=int(s.sequences), seed=int(s.seed), frames=int(s.frames),
                  size=s.size, test_sequences=int(s.test_sequences), progress=progress)


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
