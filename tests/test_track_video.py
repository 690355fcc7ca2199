"""`satracker track`'s pictures hide nothing of the frame, say what each colour is, and `--text`
alone runs the sentence-only protocol (the first box grounded, drawn as such)."""
import numpy as np
import pytest
from PIL import Image

from satracker_jax import config_utils, visualize
from satracker_jax import tracker as tracker_lib

from test_tracker import FakeTokenizer, Oracle, make_sequence

SENTENCE = "the small red circle at the bottom right"
LEGEND = [("tracker", visualize.PRED_COLOR), ("ground truth", visualize.GT_COLOR)]


def _band(drawn, frame):
  return drawn[frame.shape[0]:]


def _has_colour(image, colour):
  return bool((image.reshape(-1, 3) == np.asarray(colour, np.uint8)).all(axis=1).any())


def test_the_sentence_goes_below_the_frame_never_over_it():
  frame = np.random.default_rng(0).integers(0, 256, (120, 160, 3), dtype=np.uint8)
  box = (10, 10, 30, 20)  # top left: every pixel below row 31 is the frame's own
  drawn = visualize.draw_tracking(frame, box, 0.9, SENTENCE, frame_index=3)
  assert drawn.shape[1:] == frame.shape[1:] and drawn.shape[0] > frame.shape[0]
  np.testing.assert_array_equal(drawn[32:frame.shape[0]], frame[32:])  # the bottom right, intact
  band = _band(drawn, frame)
  assert (band != visualize.BAND_COLOR).any(axis=-1).sum() > 50  # the text is in the band


def test_the_legend_shows_each_box_colour_in_the_band():
  frame = np.full((120, 160, 3), 90, np.uint8)
  both = visualize.draw_tracking(frame, (20, 20, 30, 30), 0.5, SENTENCE, gt_box=(22, 21, 30, 30),
                                 frame_index=1)
  assert _has_colour(_band(both, frame), visualize.PRED_COLOR)
  assert _has_colour(_band(both, frame), visualize.GT_COLOR)
  alone = visualize.draw_tracking(frame, (20, 20, 30, 30), 0.5, SENTENCE, frame_index=1)
  assert not _has_colour(_band(alone, frame), visualize.GT_COLOR)  # no ground truth, no entry


def test_frames_of_one_video_keep_one_size():
  """A GIF needs one size: the band depends on the legend and the sentence, not on the score,
  the frame number or whether the target is visible."""
  frame = np.zeros((96, 128, 3), np.uint8)
  shapes = {visualize.draw_tracking(frame, box, score, SENTENCE, gt_box=gt, frame_index=i,
                                    legend=LEGEND).shape
            for i, (box, score, gt) in enumerate([((5, 5, 9, 9), None, (5, 5, 9, 9)),
                                                  ((5, 5, 9, 9), 0.25, None),
                                                  ((50, 40, 9, 9), 1.0, (50, 40, 9, 9))] * 4)}
  assert len(shapes) == 1


def _write_still_video(tmp_path, frames):
  path = str(tmp_path / "clip.gif")
  Image.fromarray(frames[0]).save(path, save_all=True,
                                  append_images=[Image.fromarray(f) for f in frames[1:]])
  return path


@pytest.fixture
def oracle_model(monkeypatch):
  """The track verb with the oracle network of test_tracker.py in place of a checkpoint: it finds
  the box `oracle.gt` wherever the tracker crops (the whole frame when grounding)."""
  from satracker_jax import track_video
  from satracker_jax.cli import common
  config = config_utils.load_config("tiny")
  oracle = Oracle(config.model.search_size // config.model.patch_size)
  tracker_class = tracker_lib.Tracker

  def make_tracker(cfg, variables):
    oracle.tracker = tracker_class(cfg, variables, apply_fn=oracle,
                                         tokenizer=FakeTokenizer(cfg.model.max_text_len))
    return oracle.tracker

  monkeypatch.setattr(track_video.tracker_lib, "Tracker", make_tracker)
  monkeypatch.setattr(common, "load_model", lambda args, overrides, **_: (config, {"params": {}}))
  return oracle


def test_track_text_without_box_grounds_the_first_box_and_draws_it_as_such(tmp_path, oracle_model,
                                                                           capsys, monkeypatch):
  from satracker_jax import cli
  from satracker_jax.evaluation import results_io
  written = []  # the drawn frames, before GIF's palette changes their colours
  write_video = visualize.write_video
  monkeypatch.setattr(visualize, "write_video", lambda frames, path, fps:
                      write_video(written.extend(frames) or written, path, fps))
  frames, gts = make_sequence(96, 128, 1, 5)
  frames = [frames[0].copy() for _ in range(4)]  # a still target: the oracle's box is always right
  for i, frame in enumerate(frames):
    frame[:4, :4] = 60 * i  # Pillow merges identical GIF frames
  oracle_model.gt = gts[0]
  out, results = str(tmp_path / "out.gif"), str(tmp_path / "boxes.txt")
  rc = cli.main(["track", "--video", _write_still_video(tmp_path, frames), "--text", SENTENCE,
                 "--out", out, "--results", results])
  printed = capsys.readouterr().out
  assert rc == 0
  assert "frame 0: first box grounded from the sentence" in printed
  boxes = results_io.read_boxes(results)
  assert boxes.shape == (4, 4)
  np.testing.assert_allclose(boxes[0], gts[0], atol=1.5)  # the grounded box, not a given one
  with Image.open(out) as gif:
    assert gif.n_frames == 4
  first, second = written[:2]
  # Frame 0's box in the grounding colour (on the frame and in the legend); later boxes are the
  # tracker's, and the legend keeps naming the grounding colour.
  assert _has_colour(first[:96], visualize.GROUNDED_COLOR)
  assert not _has_colour(second[:96], visualize.GROUNDED_COLOR)
  assert _has_colour(second[96:], visualize.GROUNDED_COLOR)
  assert _has_colour(second[:96], visualize.PRED_COLOR)


def test_track_protocol_nl_with_a_box_is_refused_in_one_line(tmp_path, oracle_model, capsys):
  from satracker_jax import cli
  frames, _ = make_sequence(48, 64, 2, 1)
  assert cli.main(["track", "--video", _write_still_video(tmp_path, frames), "--text", SENTENCE,
                   "--box", "1,1,5,5", "--protocol", "nl", "--out", str(tmp_path / "o.gif")]) == 2
  err = capsys.readouterr().err.strip()
  assert len(err.splitlines()) == 1 and "--box with --protocol nl" in err, err
