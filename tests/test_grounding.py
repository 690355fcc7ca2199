"""Grounding input (satracker_jax/grounding.py): the whole frame as the search crop, an empty
template whose TEM mask is empty, finite outputs and gradients, and one compiled step for both."""
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from satracker_jax import boxes as box_lib
from satracker_jax import config_utils, grounding, model_io, tracker
from satracker_jax.models import decode_box, fusion

FRAME_SHAPES = [(120, 160), (160, 120), (64, 64), (121, 161), (720, 1280), (33, 500), (1, 7)]


@pytest.mark.parametrize("height,width", FRAME_SHAPES)
def test_whole_frame_crop_covers_the_frame_centred(height, width):
  c = grounding.whole_frame_crop_params(height, width, 128)
  assert c.size == max(height, width) and c.out_size == 128
  assert c.x0 == int(c.x0) and c.y0 == int(c.y0)  # whole-pixel corner: exact crop geometry
  assert c.x0 <= 0 and c.y0 <= 0 and c.x0 + c.size >= width and c.y0 + c.size >= height
  # Centred to half a pixel: the padding is (almost) the same on both sides.
  assert abs(c.x0 + c.size / 2 - width / 2) <= 0.5 and abs(c.y0 + c.size / 2 - height / 2) <= 0.5


@pytest.mark.parametrize("height,width", FRAME_SHAPES[:6])
def test_box_round_trips_through_the_grounding_crop(height, width):
  rng = np.random.default_rng(height * 10_000 + width)
  c = grounding.whole_frame_crop_params(height, width, 256)
  for _ in range(20):
    w, h = rng.uniform(1, width), rng.uniform(1, height)
    box = np.array([rng.uniform(0, width - w), rng.uniform(0, height - h), w, h])
    norm = box_lib.map_box_to_crop(box, c)
    assert np.all(norm >= 0) and np.all(norm <= 1)  # the whole frame is inside the crop
    np.testing.assert_allclose(box_lib.map_box_back(norm, c), box, atol=1e-9)
    # grounded_box: the same mapping, then clipped to the frame (a no-op for a box inside it).
    np.testing.assert_allclose(grounding.grounded_box(norm, c, height, width), box, atol=1e-9)


def test_grounded_box_clips_a_prediction_reaching_into_the_padding():
  c = grounding.whole_frame_crop_params(120, 160, 128)  # y0 = -20: 20 padding rows above
  # centre y = -20 + 0.15 * 160 = 4 px, height 16 px: rows -4..12, of which 0..12 are in the frame.
  box = grounding.grounded_box([0.5, 0.15, 0.2, 0.1], c, 120, 160)
  np.testing.assert_allclose(box, [64.0, 0.0, 32.0, 12.0], atol=1e-9)


def test_search_is_the_frame_resized_between_mean_coloured_bands():
  yy, xx = np.mgrid[0:120, 0:160]
  frame = np.stack([xx * 1.5, yy * 2.0, (xx + yy) % 256], -1).astype(np.uint8)
  sample = grounding.grounding_sample(frame, None, search_size=128, template_size=64)
  search = sample.search
  assert search.shape == (128, 128, 3) and search.dtype == np.uint8
  # 160 px -> 128 px: the frame's 120 rows become rows 16..111, the rest is padding.
  expected = np.asarray(Image.fromarray(frame).resize((128, 96), Image.BILINEAR, box=(0, 0, 160, 120)))
  np.testing.assert_array_equal(search[16:112], expected)
  pad = np.round(frame[::4, ::4].reshape(-1, 3).mean(0)).astype(np.uint8)
  assert (search[:16] == pad).all() and (search[112:] == pad).all()
  assert sample.search_box is None


def test_grounding_sample_template_and_boxes():
  frame = np.random.default_rng(0).integers(0, 256, (90, 200, 3), dtype=np.uint8)
  box = [30.5, 20.0, 40.0, 25.0]
  s = grounding.grounding_sample(frame, box, search_size=64, template_size=32)
  assert s.template.shape == (32, 32, 3) and s.template.dtype == np.uint8
  assert (s.template == np.uint8(grounding.BLANK_COLOUR)).all()
  assert s.template_box.dtype == np.float32 and not s.template_box.any()
  np.testing.assert_allclose(box_lib.map_box_back(s.search_box, s.crop), box, atol=1e-4)
  # The blank template normalises to ~0 (it is the ImageNet mean).
  from satracker_jax.models.satracker import normalize_image
  assert float(jnp.abs(normalize_image(s.template[None])).max()) < 0.05
  s.template[0, 0] = 0  # a fresh array each time: writing into one does not change the next
  assert (grounding.blank_template(32) == np.uint8(grounding.BLANK_COLOUR)).all()


@pytest.mark.parametrize("frame,box,match", [
    (np.zeros((10, 10, 3), np.float32), None, "uint8 HxWx3"),
    (np.zeros((10, 10), np.uint8), None, "uint8 HxWx3"),
    (np.zeros((10, 10, 3), np.uint8), [1, 1, 0, 3], "w,h > 0"),
    (np.zeros((10, 10, 3), np.uint8), [1, np.nan, 2, 3], "finite"),
])
def test_grounding_sample_rejects_bad_input(frame, box, match):
  with pytest.raises(ValueError, match=match):
    grounding.grounding_sample(frame, box, search_size=32, template_size=16)


@pytest.mark.parametrize("grid", [1, 2, 8])
def test_empty_template_box_gives_an_empty_tem_target_mask(grid):
  empty = fusion.template_target_mask(jnp.asarray(grounding.EMPTY_TEMPLATE_BOX)[None], grid)
  assert empty.shape == (1, grid * grid) and not np.asarray(empty).any()
  # The same function on a real template box (the tracker's usual 0.5, 0.5, 0.5, 0.5) is not empty.
  real = fusion.template_target_mask(jnp.float32([[0.5, 0.5, 0.5, 0.5]]), grid)
  assert float(real.sum()) > 0


# -- the model on a grounding input ------------------------------------------------------------

MICRO = ["model.vit.depth=2", "model.vit.dim=32", "model.vit.heads=2", "model.bert.dim=32",
         "model.bert.heads=2", "model.bert.intermediate=64", "model.text_layer_map=(0,1)",
         "model.tem_layers=(0,1)", "model.sam_layers=(1,)", "model.dm_layers=(1,)",
         "model.fusion_heads=2", "model.head_channels=16", "model.search_size=64",
         "model.template_size=32", "model.max_text_len=8", "model.dm_dim=16"]


@pytest.fixture(scope="module")
def micro():
  """A micro SATracker whose fusion gates are open (tanh(0.5)), so TEM and SAM really contribute:
  with the initial zero gates a NaN in them would still reach the output, but a wrong value would
  not."""
  config = config_utils.load_config("configs/tiny.py", MICRO)
  variables = model_io.random_variables(config, seed=1)
  opened = []

  def open_gate(path, x):
    if str(path[-1].key).endswith("gate"):
      opened.append(path)
      return jnp.full_like(x, 0.5)
    return x
  params = jax.tree_util.tree_map_with_path(open_gate, variables["params"])
  assert len(opened) == 2 * 2 + 2  # TEM at stages 0 and 1, SAM at stage 1: two gates each
  return config, {**variables, "params": params}


def _grounding_inputs(config, text_ids, text_mask):
  """A batch of grounding inputs of one frame, one row per sentence (text_ids/text_mask [B, L])."""
  frame = np.random.default_rng(3).integers(0, 256, (48, 80, 3), dtype=np.uint8)
  s = grounding.grounding_sample(frame, [10, 12, 14, 9], config.model.search_size,
                                 config.model.template_size)
  b = len(text_ids)
  rows = lambda a: np.repeat(a[None], b, axis=0)
  return (rows(s.template), rows(s.template_box), rows(s.search), np.asarray(text_ids, np.int32),
          np.asarray(text_mask, np.int32)), rows(s.search_box)


# Rows: a sentence; no text at all (every TEM / SAM key from the text is masked, and TEM's text
# branch has no key either); another sentence.
ROWS_IDS = [[101, 7, 9, 102, 0, 0, 0, 0], [101, 7, 9, 102, 0, 0, 0, 0], [101, 12, 30, 102, 0, 0, 0, 0]]
ROWS_MASK = [[1, 1, 1, 1, 0, 0, 0, 0], [0] * 8, [1, 1, 1, 1, 0, 0, 0, 0]]


@pytest.fixture(scope="module")
def grounded(micro):
  """The micro model's outputs on the three grounding rows, and the gradient of a loss over them
  (one compilation for both)."""
  config, variables = micro
  model = tracker.build_model(config.model)
  inputs, target = _grounding_inputs(config, ROWS_IDS, ROWS_MASK)

  def loss(params):
    o = model.apply({**variables, "params": params}, *inputs, train=False)
    return jnp.mean(o["score_map"]) + jnp.mean(jnp.abs(o["pred_box"] - target)), o
  grads, out = jax.jit(jax.grad(loss, has_aux=True))(variables["params"])
  return out, grads


def test_model_on_a_grounding_input_is_finite_with_finite_gradients(grounded):
  out, grads = grounded
  for name in ("score_map", "size_map", "offset_map", "pred_box", "vision_tokens", "text_tokens"):
    assert np.isfinite(np.asarray(out[name])).all(), name
  # The rows share the parameters: a NaN from any row (the text-free one included) would show here.
  assert all(np.isfinite(np.asarray(g)).all() for g in jax.tree.leaves(grads))
  assert any(np.abs(np.asarray(g)).max() > 0 for g in jax.tree.leaves(grads))


def test_the_grounding_output_reads_the_sentence(grounded):
  # With an empty template TEM's search branch attends to the text only: other words (rows 0 and
  # 2, same frame) give another score map, so the sentence is what grounding can go on.
  score = np.asarray(grounded[0]["score_map"])
  assert np.abs(score[0] - score[2]).max() > 1e-4


def test_one_compiled_step_serves_tracking_and_grounding(micro):
  config, variables = micro
  m = config.model
  traces = []
  step = tracker.make_step_fn(tracker.model_apply_fn(config))

  def counted(*args):
    traces.append(1)
    return step(*args)
  jitted = jax.jit(counted)
  rng = np.random.default_rng(0)
  track_inputs = (rng.integers(0, 256, (1, m.template_size, m.template_size, 3), dtype=np.uint8),
                  np.float32([[0.5, 0.5, 0.5, 0.5]]),
                  rng.integers(0, 256, (1, m.search_size, m.search_size, 3), dtype=np.uint8),
                  np.int32(ROWS_IDS[:1]), np.int32(ROWS_MASK[:1]))
  jitted(variables, *track_inputs, tracker.hann_window(m.search_size // m.patch_size))
  inputs, _ = _grounding_inputs(config, ROWS_IDS[:1], ROWS_MASK[:1])
  window = grounding.uniform_window(m.search_size, m.patch_size)
  out = jitted(variables, *inputs, window)
  assert len(traces) == 1
  # A window of ones is exactly "no window": the step's box is the head's plain argmax decode.
  plain, _ = decode_box(out["score_map"], out["size_map"], out["offset_map"])
  np.testing.assert_array_equal(np.asarray(out["box"]), np.asarray(plain))


def test_motion_sentences_never_become_grounding_samples(tmp_path):
  """Synthetic `direction` videos ("... moving left" beside a twin moving right) cannot be
  grounded from one frame: the reader marks them (Sequence.single_frame), the sampler turns their
  nl draws into nl_bb samples, and grounding samples are never grayscale (a colour word would
  then name nothing). The other modes' nl draws stay nl."""
  from data_pipelines import processing, readers, synthetic
  from satracker_jax.tokenizer import WordPieceTokenizer
  root = str(tmp_path / "synth")
  synthetic.generate(root, sequences=6, seed=0, frames=3, size=(64, 48), test_sequences=0,
                     modes={"direction": 0.5, "absolute": 0.5}, progress=False)
  seqs = readers.load_dataset("synthetic", root, "train")
  modes = {}
  for s in seqs:
    with open(os.path.join(root, "train", s.name, "attributes.json")) as f:
      modes[s.name] = json.load(f)["mode"]
  assert {s.name: s.single_frame for s in seqs} == {n: m != "direction" for n, m in modes.items()}
  assert set(modes.values()) == {"direction", "absolute"}
  tok = WordPieceTokenizer(os.path.join(root, synthetic.VOCAB_FILE), max_len=16)
  data = config_utils.load_config("configs/tiny.py").data
  data.update(grayscale_prob=1.0, max_gap=5)
  data.protocols = {"nl": 1.0}  # (update() would merge it into the default {"nl_bb": 1.0})
  maker = processing.SampleMaker([("synthetic", 1.0, seqs)], data, 64, 128, tok, seed=0,
                                 max_text_len=16)
  seen = set()
  for k in range(40):
    plan = maker.plan(k, 0)
    assert plan["ok"] == processing.PLAN_OK
    mode = modes[seqs[int(plan["debug_sequence"])].name]
    protocol = processing.PROTOCOLS[int(plan["debug_protocol"])]
    assert protocol == ("nl_bb" if mode == "direction" else "nl"), (mode, protocol)
    assert int(plan["grayscale"]) == (protocol != "nl")
    seen.add(mode)
  assert seen == {"direction", "absolute"}
