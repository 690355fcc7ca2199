"""Tracker geometry (crop -> network -> uncrop) with an oracle network, and one compile per config."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from satracker_jax import config_utils
from satracker_jax import boxes as box_lib
from satracker_jax import tracker as tracker_lib


class FakeTokenizer:
  """Stands in for the WordPiece tokenizer: the geometry does not depend on the words."""

  def __init__(self, max_len):
    self.max_len = max_len

  def encode(self, text):
    ids = np.zeros(self.max_len, np.int32)
    mask = np.zeros(self.max_len, np.int32)
    words = text.split()[: self.max_len - 2]
    ids[: len(words) + 2] = [101] + [5 + len(w) for w in words] + [102]
    mask[: len(words) + 2] = 1
    return ids, mask


class Oracle:
  """A test double of the network that knows the ground truth: given where the tracker placed the
  search crop (read back from the tracker through a host callback), it returns a score map peaked
  at the GT centre cell and size/offset maps that encode the GT box exactly in crop coordinates."""

  def __init__(self, feat_size):
    self.feat_size = feat_size
    self.gt = None  # pixel x,y,w,h of the frame being tracked; set by the test before track()
    self.tracker = None

  def _maps(self, search):
    f = self.feat_size
    b = search.shape[0]
    score = np.full((b, f, f, 1), -10.0, np.float32)
    size = np.full((b, f, f, 2), 0.25, np.float32)
    offset = np.full((b, f, f, 2), 0.5, np.float32)
    for i, params in enumerate(self.tracker.core.last_search_params):
      if params is None:
        continue
      cx, cy, w, h = box_lib.map_box_to_crop(self.gt, params)
      col, row = min(int(cx * f), f - 1), min(int(cy * f), f - 1)
      score[i, row, col, 0] = 10.0
      size[i, row, col] = (w, h)
      offset[i, row, col] = (cx * f - col, cy * f - row)
    return score, size, offset

  def __call__(self, variables, template, template_box, search, text_ids, text_mask):
    f, b = self.feat_size, search.shape[0]
    shapes = (jax.ShapeDtypeStruct((b, f, f, 1), jnp.float32),
              jax.ShapeDtypeStruct((b, f, f, 2), jnp.float32),
              jax.ShapeDtypeStruct((b, f, f, 2), jnp.float32))
    score, size, offset = jax.pure_callback(self._maps, shapes, search)
    return {"score_map": score, "size_map": size, "offset_map": offset}


def make_sequence(height, width, num_frames, seed):
  """Frames of a textured background with a solid box moving and changing size; GT boxes."""
  rng = np.random.default_rng(seed)
  background = rng.integers(0, 120, (height, width, 3), dtype=np.uint8)
  frames, gts = [], []
  x, y, w, h = width * 0.3, height * 0.35, width * 0.18, height * 0.2
  for _ in range(num_frames):
    frame = background.copy()
    x0, y0 = int(round(x)), int(round(y))
    frame[y0:y0 + int(round(h)), x0:x0 + int(round(w))] = (230, 40, 40)
    frames.append(frame)
    gts.append(np.array([x0, y0, round(w), round(h)], np.float64))
    x += rng.uniform(-3, 5)
    y += rng.uniform(-3, 4)
    w *= rng.uniform(0.95, 1.05)
    h *= rng.uniform(0.95, 1.05)
  return frames, np.stack(gts)


def test_hann_window_is_symmetric_and_positive():
  w = tracker_lib.hann_window(8)
  assert w.shape == (8, 8) and (w > 0).all()
  np.testing.assert_allclose(w, w.T)
  np.testing.assert_allclose(w, w[::-1, ::-1])


@pytest.mark.parametrize("box", [(30.0, 20.0, 24.0, 16.0), (-10.0, 50.0, 40.0, 30.0), (100.0, 70.0, 40.0, 30.0)])
def test_crop_puts_target_where_map_box_to_crop_says(box):
  frame = np.zeros((100, 130, 3), np.uint8)
  frame[...] = 60
  x, y, w, h = box
  frame[max(int(y), 0):int(y + h), max(int(x), 0):int(x + w)] = 250
  params = box_lib.crop_params(box, 4.0, 128)
  crop = box_lib.crop_image(frame, params)
  assert crop.shape == (128, 128, 3) and crop.dtype == np.uint8
  # Expected target extent in crop pixels, clipped to the image part of the crop.
  visible = box_lib.clip_box_xywh(np.array(box), 130, 100)
  cx, cy, cw, ch = box_lib.map_box_to_crop(visible, params) * 128
  rows, cols = np.nonzero(crop[..., 0] > 155)
  assert abs(cols.min() - (cx - cw / 2)) <= 1.0 and abs(cols.max() + 1 - (cx + cw / 2)) <= 1.0
  assert abs(rows.min() - (cy - ch / 2)) <= 1.0 and abs(rows.max() + 1 - (cy + ch / 2)) <= 1.0
  # Outside the image the crop is padded with the frame's mean colour.
  if box[0] < 0:
    mean = frame.reshape(-1, 3).mean(0)
    np.testing.assert_allclose(crop[64, 0], np.round(mean), atol=1)


def test_oracle_tracker_returns_ground_truth_and_compiles_once():
  config = config_utils.load_config("tiny")
  feat = config.model.search_size // config.model.patch_size
  oracle = Oracle(feat)
  tracker = tracker_lib.Tracker(config, {"params": {}}, apply_fn=oracle,
                                tokenizer=FakeTokenizer(config.model.max_text_len))
  oracle.tracker = tracker
  for (height, width), seed in (((96, 128), 0), ((150, 110), 1)):
    frames, gts = make_sequence(height, width, 8, seed)
    tracker.init(frames[0], gts[0], "the red box")
    for frame, gt in zip(frames[1:], gts[1:]):
      oracle.gt = gt
      box, score = tracker.track(frame)
      np.testing.assert_allclose(box, gt, atol=1.0)
      assert 0.0 < score <= 1.0
  assert tracker.trace_count == 1


def test_grounding_init_finds_the_target_then_tracks_on_the_same_compiled_step():
  """`init(frame, None, sentence)`: the whole frame is the search crop, the template is blank with
  an empty box, the window is uniform; the oracle reads where the crop lies, so the grounded box
  must come back as the GT (geometry), and grounding + tracking compile once."""
  config = config_utils.load_config("tiny")
  feat = config.model.search_size // config.model.patch_size
  seen = {}

  class Spy(Oracle):
    def __call__(self, variables, template, template_box, search, text_ids, text_mask):
      seen.setdefault("template_box", []).append(template_box)
      return super().__call__(variables, template, template_box, search, text_ids, text_mask)

  oracle = Spy(feat)
  tracker = tracker_lib.Tracker(config, {"params": {}}, apply_fn=oracle,
                                tokenizer=FakeTokenizer(config.model.max_text_len))
  oracle.tracker = tracker
  frames, gts = make_sequence(150, 110, 5, 3)
  oracle.gt = gts[0]
  start = tracker.init(frames[0], None, "the red box")
  np.testing.assert_allclose(start, gts[0], atol=1.5)
  grounded, score = tracker.core.last_grounding[0]
  np.testing.assert_allclose(grounded, start)
  crop = tracker.last_search_params
  assert crop.size == 150 and crop.out_size == config.model.search_size  # the whole frame
  for frame, gt in zip(frames[1:], gts[1:]):
    oracle.gt = gt
    box, _ = tracker.track(frame)
    np.testing.assert_allclose(box, gt, atol=1.0)
  assert tracker.trace_count == 1
  with pytest.raises(ValueError, match="needs a sentence"):
    tracker.init(frames[0], None, "")
  tracker.init(frames[0], gts[0], "the red box")  # a given box is not grounded
  assert tracker.core.last_grounding[0] is None


def test_batched_tracker_matches_single_and_pads_idle_slots():
  config = config_utils.load_config("tiny")
  feat = config.model.search_size // config.model.patch_size
  oracle = Oracle(feat)
  tok = FakeTokenizer(config.model.max_text_len)
  bt = tracker_lib.BatchedTracker(config, {"params": {}}, num_slots=3, apply_fn=oracle, tokenizer=tok)
  oracle.tracker = type("T", (), {"core": bt})()
  frames, gts = make_sequence(96, 128, 4, 2)
  bt.init(1, frames[0], gts[0], "a box")
  for frame, gt in zip(frames[1:], gts[1:]):
    oracle.gt = gt
    results = bt.track([None, frame, None])
    assert results[0] is None and results[2] is None
    np.testing.assert_allclose(results[1][0], gt, atol=1.0)
  with pytest.raises(ValueError, match="never init"):
    bt.track([frames[0], None, None])
  assert bt.trace_count == 1


def test_init_rejects_bad_input():
  config = config_utils.load_config("tiny")
  t = tracker_lib.Tracker(config, {"params": {}}, apply_fn=Oracle(8),
                          tokenizer=FakeTokenizer(config.model.max_text_len))
  frame = np.zeros((64, 64, 3), np.uint8)
  with pytest.raises(ValueError, match="w,h > 0"):
    t.init(frame, (1, 1, 0, 5), "x")
  with pytest.raises(ValueError, match="uint8"):
    t.init(frame.astype(np.float32), (1, 1, 5, 5), "x")


def test_template_update_refreshes_template_without_recompiling():
  config = config_utils.load_config("tiny", ["tracker.template_update=True",
                                              "tracker.template_update_interval=2",
                                              "tracker.template_update_threshold=0.5"])
  oracle = Oracle(config.model.search_size // config.model.patch_size)
  tracker = tracker_lib.Tracker(config, {"params": {}}, apply_fn=oracle,
                                tokenizer=FakeTokenizer(config.model.max_text_len))
  oracle.tracker = tracker
  frames, gts = make_sequence(96, 128, 5, 3)
  tracker.init(frames[0], gts[0], "the red box")
  first = tracker.core._templates[0].copy()
  for i, (frame, gt) in enumerate(zip(frames[1:], gts[1:]), start=1):
    oracle.gt = gt
    tracker.track(frame)
    changed = not np.array_equal(tracker.core._templates[0], first)
    assert changed == (i >= 2), i  # refreshed at frame 2 (score ~1 > 0.5), not before
  assert tracker.trace_count == 1


def test_draw_and_write_gif(tmp_path):
  from PIL import Image
  from satracker_jax import visualize
  frames, gts = make_sequence(60, 80, 3, 4)
  drawn = [visualize.draw_tracking(f, g, 0.9, "the red box moving right", gt_box=g, frame_index=i)
           for i, (f, g) in enumerate(zip(frames, gts))]
  # The frame with the boxes on it, the text in a band below it (tests/test_track_video.py).
  assert drawn[0].shape[1:] == frames[0].shape[1:] and drawn[0].shape[0] > frames[0].shape[0]
  assert not np.array_equal(drawn[0][:60], frames[0])
  path = visualize.write_gif(drawn, str(tmp_path / "t.gif"), fps=5)
  with Image.open(path) as image:
    assert image.n_frames == 3
  with pytest.raises(ValueError, match=".gif or .mp4"):
    visualize.write_video(drawn, str(tmp_path / "t.avi"))


def test_frames_that_crop_themselves_track_like_arrays(tmp_path):
  """`Tracker` takes any `FrameLike` (the evaluation's decoded JPEGs) as well as arrays; at full
  scale the crops, hence the boxes, are identical."""
  from PIL import Image
  from satracker_jax.evaluation.decode import decode_frame
  config = config_utils.load_config("tiny")
  frames, gts = make_sequence(96, 128, 5, 6)
  paths = []
  for i, frame in enumerate(frames):
    paths.append(str(tmp_path / f"{i}.png"))
    Image.fromarray(frame).save(paths[-1])
  runs = []
  for as_input in (lambda i: frames[i], lambda i: decode_frame(paths[i], 1)):
    oracle = Oracle(config.model.search_size // config.model.patch_size)
    tracker = tracker_lib.Tracker(config, {"params": {}}, apply_fn=oracle,
                                  tokenizer=FakeTokenizer(config.model.max_text_len))
    oracle.tracker = tracker
    tracker.init(as_input(0), gts[0], "the red box")
    boxes, searches = [], []
    for i in range(1, len(frames)):
      oracle.gt = gts[i] + 3.0  # off the target: the crops must still agree exactly
      boxes.append(tracker.track(as_input(i))[0])
      searches.append(tracker.last_search_params)
    runs.append((np.stack(boxes), searches, tracker.core._templates[0].copy()))
  np.testing.assert_array_equal(runs[0][0], runs[1][0])
  assert runs[0][1] == runs[1][1]
  np.testing.assert_array_equal(runs[0][2], runs[1][2])


def test_submit_collect_split_and_its_guard():
  config = config_utils.load_config("tiny")
  oracle = Oracle(config.model.search_size // config.model.patch_size)
  bt = tracker_lib.BatchedTracker(config, {"params": {}}, num_slots=2, apply_fn=oracle,
                                  tokenizer=FakeTokenizer(config.model.max_text_len))
  oracle.tracker = type("T", (), {"core": bt})()
  frames, gts = make_sequence(96, 128, 3, 7)
  bt.init(0, frames[0], gts[0], "a box")
  oracle.gt = gts[1]
  pending = bt.submit([frames[1], None])
  with pytest.raises(RuntimeError, match="before collect"):
    bt.submit([frames[2], None])  # the next crop needs this call's box
  results = bt.collect(pending)
  np.testing.assert_allclose(results[0][0], gts[1], atol=1.0)
  np.testing.assert_allclose(bt.box_of(0), gts[1], atol=1.0)
  assert results[1] is None and bt.num_devices == 1 and bt.trace_count == 1


def test_cropping_slots_in_a_pool_changes_nothing():
  """The runner crops the slots in a thread pool on accelerator hosts; same crops, same outputs."""
  import concurrent.futures
  config = config_utils.load_config("tiny")
  f = config.model.search_size // config.model.patch_size

  def pixel_net(variables, template, template_box, search, text_ids, text_mask):
    # Every search pixel reaches the output: a cell's score is its mean red-minus-green.
    b, s = search.shape[0], search.shape[1]
    x = search.astype(jnp.float32)
    cells = (x[..., 0] - x[..., 1]).reshape(b, f, s // f, f, s // f).mean(axis=(2, 4)) / 255.0
    return {"score_map": 8.0 * cells[..., None], "size_map": jnp.full((b, f, f, 2), 0.2),
            "offset_map": jnp.full((b, f, f, 2), 0.5)}

  videos = [make_sequence(96, 128, 4, seed) for seed in (8, 9, 10)]
  runs = []
  with concurrent.futures.ThreadPoolExecutor(2) as pool:
    for crop_pool in (None, pool):
      bt = tracker_lib.BatchedTracker(config, {"params": {}}, num_slots=3, apply_fn=pixel_net,
                                      tokenizer=FakeTokenizer(config.model.max_text_len),
                                      crop_pool=crop_pool)
      for slot, (frames, gts) in enumerate(videos):
        bt.init(slot, frames[0], gts[0], "a box")
      out = []
      for t in range(1, 4):
        out.append([r[0] for r in bt.track([v[0][t] for v in videos])])
        out.append(np.asarray(bt.last_output["score_map"]))
      runs.append(out)
  for a, b in zip(*runs):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_waves_share_one_compiled_step_and_the_variables():
  config = config_utils.load_config("tiny")
  oracle = Oracle(config.model.search_size // config.model.patch_size)
  tok = FakeTokenizer(config.model.max_text_len)
  first = tracker_lib.BatchedTracker(config, {"params": {}}, num_slots=2, apply_fn=oracle,
                                     tokenizer=tok)
  second = tracker_lib.BatchedTracker(config, {"params": {}}, num_slots=2, apply_fn=oracle,
                                      tokenizer=tok, share_with=first)
  frames, gts = make_sequence(96, 128, 3, 11)
  for bt in (first, second):
    oracle.tracker = type("T", (), {"core": bt})()
    bt.init(1, frames[0], gts[0], "a box")
    oracle.gt = gts[1]
    np.testing.assert_allclose(bt.track([None, frames[1]])[1][0], gts[1], atol=1.0)
  assert first.trace_count == second.trace_count == 1 and second.variables is first.variables
  with pytest.raises(ValueError, match="same slot count"):
    tracker_lib.BatchedTracker(config, {"params": {}}, num_slots=3, apply_fn=oracle, tokenizer=tok,
                               share_with=first)
