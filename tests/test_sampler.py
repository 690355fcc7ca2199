"""tf.data sampler: batch contract, crop geometry (with flips), determinism, bad-data replacement.

The in-graph crop itself is compared with the tracker's in test_ingraph_crop.py."""
import os

import numpy as np
import pytest
from PIL import Image

from configs import tiny
from data_pipelines import batches, processing, readers, sampler
from satracker_jax import boxes as box_lib
from satracker_jax.tokenizer import WordPieceTokenizer, write_wordpiece_vocab

WORDS = "the a red box on left right moving".split()
SENTENCES = ["the red box on the left", "the red box moving right", "a red box"]
RED, GREY = (220, 30, 30), (128, 128, 128)


def _write_tnl2k(root, n_seq, n_frames, rng, size=(200, 150), ext=".png"):
  for i in range(n_seq):
    d = os.path.join(root, f"seq{i}")
    os.makedirs(os.path.join(d, "imgs"))
    lines = []
    for t in range(n_frames):
      w, h = int(rng.integers(12, 40)), int(rng.integers(12, 40))
      x, y = int(rng.integers(0, size[0] - w)), int(rng.integers(0, size[1] - h))
      img = np.full((size[1], size[0], 3), GREY, np.uint8)
      img[y:y + h, x:x + w] = RED
      Image.fromarray(img).save(os.path.join(d, "imgs", f"{t + 1:05d}{ext}"))
      lines.append(f"{x},{y},{w},{h}")
    with open(os.path.join(d, "groundtruth.txt"), "w") as f:
      f.write("\n".join(lines) + "\n")
    with open(os.path.join(d, "language.txt"), "w") as f:
      f.write(SENTENCES[i % len(SENTENCES)] + "\n")


def _config(tmp_path, root, **data):
  c = tiny.get_config()
  c.seed = 3
  c.data.datasets = {"tnl2k": {"root": root, "weight": 1.0, "split": "train"}}
  c.data.max_gap = 3
  c.data.workers = "threads:2"
  c.data.update(data)
  vocab = str(tmp_path / "vocab.txt")
  write_wordpiece_vocab(WORDS, vocab)
  c.text.vocab_file = vocab
  c.train.batch_size = 4
  return c


@pytest.fixture(scope="module")
def boxes_root(tmp_path_factory):
  root = str(tmp_path_factory.mktemp("tnl2k"))
  _write_tnl2k(root, 3, 6, np.random.default_rng(0))
  return root


def _batches(it, n):
  return [next(it) for _ in range(n)]


def test_batch_contract_and_geometry_with_and_without_flip(tmp_path, boxes_root):
  config = _config(tmp_path, boxes_root, grayscale_prob=0.0, flip_prob=0.5)
  seqs = readers.load_dataset("tnl2k", boxes_root, "train")
  tok = WordPieceTokenizer(config.text.vocab_file, max_len=config.model.max_text_len)
  it = sampler.make_dataset(config, batch_size=8, debug=True)
  batches = _batches(it, 3)
  b = batches[0]
  assert b["template"].shape == (8, 64, 64, 3) and b["template"].dtype == np.uint8
  assert b["search"].shape == (8, 128, 128, 3) and b["search"].dtype == np.uint8
  assert b["template_box"].dtype == np.float32 and b["search_box"].shape == (8, 4)
  assert b["text_ids"].dtype == np.int32 and b["text_mask"].shape == (8, 40)
  assert b["sample_index"].dtype == np.int64 and b["replaced"].dtype == np.int32
  flips, pixel_checks = set(), 0
  for b in batches:
    for i in range(8):
      seq = seqs[b["debug_sequence"][i]]
      t, s = b["debug_frames"][i]
      assert abs(int(t) - int(s)) <= config.data.max_gap
      flip = bool(b["debug_flip"][i])
      flips.add(flip)
      for key, crop_key, frame, out in (("template_box", "debug_template_crop", t, 64),
                                        ("search_box", "debug_search_crop", s, 128)):
        params = processing.crop_params_from_debug(b[crop_key][i], out)
        back = box_lib.map_box_back(processing.unflip_box(b[key][i], flip), params)
        np.testing.assert_allclose(back, seq.boxes[frame], atol=1e-3)  # exact up to float32
      # The pixels agree: the red rectangle sits where search_box says (un-mirrored if flipped).
      crop = b["search"][i][:, ::-1] if flip else b["search"][i]
      box = processing.unflip_box(b["search_box"][i], flip) * 128
      x0, y0, x1, y1 = box_lib.cxcywh_to_xyxy(box)
      if x0 >= 1 and y0 >= 1 and x1 <= 127 and y1 <= 127 and box[2] >= 4 and box[3] >= 4:
        red = (crop[..., 0] > 140) & (crop[..., 1] < 100)
        ys, xs = np.nonzero(red)
        np.testing.assert_allclose([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1],
                                   [x0, y0, x1, y1], atol=1.5)
        pixel_checks += 1
      # Mirrored samples read the mirrored sentence.
      sentence = processing.flip_sentence(seq.sentence)[0] if flip else seq.sentence
      ids, mask = tok.encode(sentence)
      np.testing.assert_array_equal(b["text_ids"][i], ids)
      np.testing.assert_array_equal(b["text_mask"][i], mask)
  assert flips == {False, True} and pixel_checks >= 8
  assert it.stats()["replaced"] == 0 and it.stats()["samples"] == 24


def test_protocol_mix_bb_drops_the_sentence_nl_grounds_the_whole_frame(tmp_path, boxes_root):
  """data.protocols: the same (seed, k) frames under any mix; bb rows carry [CLS][SEP]; nl rows
  are the tracker's grounding input (whole frame, blank template, empty template box)."""
  from satracker_jax import grounding
  base = _config(tmp_path, boxes_root, grayscale_prob=0.0, flip_prob=0.5)
  mixed = _config(tmp_path, boxes_root, grayscale_prob=0.0, flip_prob=0.5,
                  protocols={"nl_bb": 0.4, "bb": 0.3, "nl": 0.3})
  tok = WordPieceTokenizer(base.text.vocab_file, max_len=base.model.max_text_len)
  seqs = readers.load_dataset("tnl2k", boxes_root, "train")
  ref = _batches(sampler.make_dataset(base, batch_size=8, debug=True), 3)
  got = _batches(sampler.make_dataset(mixed, batch_size=8, debug=True), 3)
  seen = set()
  empty_ids, _ = tok.encode("")
  for r, b in zip(ref, got):
    np.testing.assert_array_equal(r["debug_frames"], b["debug_frames"])  # same draws
    np.testing.assert_array_equal(r["debug_sequence"], b["debug_sequence"])
    for i in range(8):
      protocol = processing.PROTOCOLS[b["debug_protocol"][i]]
      seen.add(protocol)
      if protocol == "bb":
        np.testing.assert_array_equal(b["text_ids"][i], empty_ids)
        np.testing.assert_array_equal(b["search"][i], r["search"][i])
      elif protocol == "nl":
        np.testing.assert_array_equal(b["text_ids"][i], r["text_ids"][i])
        assert (b["template"][i] == grounding.BLANK_COLOUR).all()
        np.testing.assert_array_equal(b["template_box"][i], 0.0)
        seq = seqs[b["debug_sequence"][i]]
        s = b["debug_frames"][i][1]
        flip = bool(b["debug_flip"][i])
        crop = processing.crop_params_from_debug(b["debug_search_crop"][i], 128)
        assert crop == grounding.whole_frame_crop_params(150, 200, 128)
        back = box_lib.map_box_back(processing.unflip_box(b["search_box"][i], flip), crop)
        np.testing.assert_allclose(back, seq.boxes[s], atol=1e-3)
      else:
        for key in ("template", "search", "text_ids", "template_box"):
          np.testing.assert_array_equal(b[key][i], r[key][i])
  assert seen == {"nl_bb", "bb", "nl"}
  with pytest.raises(ValueError, match="unknown protocol"):
    processing.protocol_probabilities({"grounding": 1.0})


def test_flip_sentence_swaps_left_and_right():
  assert processing.flip_sentence("the car on the left, moving right") == ("the car on the right, moving left", True)
  assert processing.flip_sentence("leftmost man") == ("rightmost man", True)
  assert processing.flip_sentence("a red box") == ("a red box", False)


def test_determinism_resume_and_process_split(tmp_path, boxes_root):
  config = _config(tmp_path, boxes_root)
  maker = batches.build_sample_maker(config)
  config.data.workers = "threads"  # tf.data's autotuner on TensorFlow's shared threads
  first = _batches(sampler.make_dataset(config, sample_maker=maker), 3)
  # A fresh SampleMaker on a single tf.data thread gives the same bytes.
  config.data.workers = "threads:1"
  again = _batches(sampler.make_dataset(config, sample_maker=batches.build_sample_maker(config)), 3)
  config.data.workers = "threads:3"
  for a, b in zip(first, again):
    for key in batches.BATCH_KEYS:
      np.testing.assert_array_equal(a[key], b[key])
  # Resuming at sample 4 (the second global batch) continues the same stream.
  resumed = sampler.make_dataset(config, start_index=4, sample_maker=maker)
  for a, b in zip(first[1:], _batches(resumed, 2)):
    for key in batches.BATCH_KEYS:
      np.testing.assert_array_equal(a[key], b[key])
  assert resumed.stats()["next_index"] == 12
  # Two processes: disjoint halves whose concatenation is the single-process global batch.
  parts = [_batches(sampler.make_dataset(config, process_index=p, process_count=2, sample_maker=maker), 2)
           for p in range(2)]
  for n in range(2):
    idx = [parts[p][n]["sample_index"] for p in range(2)]
    assert not set(idx[0]) & set(idx[1])
    for key in batches.BATCH_KEYS:
      np.testing.assert_array_equal(np.concatenate([parts[0][n][key], parts[1][n][key]]), first[n][key])
  # Another seed draws other samples (the plan decides every pixel, so comparing plans suffices).
  config.seed = 4
  other = batches.build_sample_maker(config)
  crops = lambda m: np.array([m.plan(k, 0)["debug_search_crop"] for k in range(4)])
  assert not np.array_equal(crops(other), crops(maker))


def _truncate(path, keep):
  with open(path, "rb") as f:
    data = f.read()
  with open(path, "wb") as f:
    f.write(data[:data.find(b"\xff\xda") + keep])  # header intact, scan data cut short


def test_bad_data_is_replaced_and_counted(tmp_path):
  # 12 one-frame sequences; an epoch of 12 samples draws each exactly once (sequence_order=epoch).
  root = str(tmp_path / "bad")
  _write_tnl2k(root, 12, 1, np.random.default_rng(1), size=(64, 48), ext=".jpg")
  with open(os.path.join(root, "seq2", "groundtruth.txt"), "w") as f:
    f.write("NaN,NaN,NaN,NaN\n")
  with open(os.path.join(root, "seq6", "groundtruth.txt"), "w") as f:
    f.write("10,10,0,5\n")  # zero-size box: absent
  with open(os.path.join(root, "seq4", "language.txt"), "w") as f:
    f.write("\n")
  seqs = readers.load_dataset("tnl2k", root, "train", use_cache=False)
  by_name = {seq.name: seq for seq in seqs}
  # Frames that break after indexing: a corrupt header (found by the Python planner), a cut-off
  # scan (found only by the in-graph decoder), a deleted file.
  with open(by_name["seq5"].frames[0], "wb") as f:
    f.write(b"\xff\xd8\xff\xe0 this is not a jpeg")
  _truncate(by_name["seq3"].frames[0], 20)
  os.remove(by_name["seq7"].frames[0])
  bad = {i for i, seq in enumerate(seqs) if seq.name in {"seq2", "seq3", "seq4", "seq5", "seq6", "seq7"}}
  config = _config(tmp_path, root, sequence_order="epoch")
  it = sampler.make_dataset(config, batch_size=12, datasets=[("tnl2k", 1.0, seqs)], debug=True)
  batch = next(it)
  assert batch["template"].shape[0] == 12
  assert int(batch["replaced"].sum()) == 6
  stats = it.stats()
  assert stats["replaced"] == 6
  assert stats["replaced_by_reason"] == {"bad_sentence": 1, "no_visible_box": 2,
                                         "missing_frame": 1, "corrupt_frame": 2}
  # Replacements come from good sequences only, and are the same on every run.
  assert not set(batch["debug_sequence"].tolist()) & bad
  kept = batch["debug_sequence"][batch["replaced"] == 0]
  assert sorted(kept.tolist()) == sorted(set(range(12)) - bad)  # each good sequence once
  again = next(sampler.make_dataset(config, batch_size=12, datasets=[("tnl2k", 1.0, seqs)], debug=True))
  for key in batches.BATCH_KEYS:
    np.testing.assert_array_equal(again[key], batch[key])
  next(it)
  assert it.stats()["replaced"] == 12  # the next epoch again meets each bad item once


def test_all_bad_data_raises_instead_of_shifting_the_stream(tmp_path):
  root = str(tmp_path / "allbad")
  _write_tnl2k(root, 2, 1, np.random.default_rng(2), size=(64, 48), ext=".jpg")
  seqs = readers.load_dataset("tnl2k", root, "train", use_cache=False)
  for seq in seqs:
    _truncate(seq.frames[0], 20)
  config = _config(tmp_path, root)
  it = sampler.make_dataset(config, batch_size=2, datasets=[("tnl2k", 1.0, seqs)])
  with pytest.raises(RuntimeError, match="draws in a row hit bad data"):
    next(it)


def test_a_bug_in_the_planner_is_raised_not_replaced(tmp_path, boxes_root):
  config = _config(tmp_path, boxes_root)
  maker = batches.build_sample_maker(config)

  def broken(k, attempt):
    raise ZeroDivisionError("planner bug")

  maker._attempt = broken  # not bad data: must surface, not count as a replacement
  with pytest.raises(RuntimeError, match="ZeroDivisionError: planner bug"):
    next(sampler.make_dataset(config, sample_maker=maker))
