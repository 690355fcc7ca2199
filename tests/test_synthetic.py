"""Synthetic generator: deterministic bytes, language-needed scenes (every mode keeps its promise
in every frame), mode probabilities, vocab fits, TFDS builder."""
import filecmp
import json
import os

import numpy as np
import pytest

from data_pipelines import readers, synthetic
from satracker_jax import cli, config_utils
from satracker_jax.tokenizer import WordPieceTokenizer


def _tree(root):
  return sorted(os.path.relpath(os.path.join(d, f), root) for d, _, fs in os.walk(root) for f in fs)


def test_synth_cli_twice_gives_identical_files(tmp_path):
  outs = [str(tmp_path / n) for n in ("a", "b")]
  for out in outs:
    assert cli.main(["synth", "--out", out, "--sequences", "3", "--seed", "7", "--frames", "6",
                     "--size", "96x64", "--split-test", "1", "--no-progress"]) == 0
  files = _tree(outs[0])
  assert files == _tree(outs[1])
  match, mismatch, errors = filecmp.cmpfiles(outs[0], outs[1], files, shallow=False)
  assert not mismatch and not errors and len(match) == len(files)
  assert os.path.isdir(os.path.join(outs[0], "test", "synth_00002"))
  assert sorted(os.listdir(os.path.join(outs[0], "train"))) == ["synth_00000", "synth_00001"]
  # The TNL2K reader reads it back; boxes are the generator's.
  seqs = readers.load_dataset("synthetic", outs[0], "train")
  assert [len(s) for s in seqs] == [6, 6]
  data = synthetic.render_sequence(7, 0, 6, 96, 64)
  np.testing.assert_array_equal(seqs[0].boxes, data["boxes"])
  assert seqs[0].sentence == data["sentence"]


def test_generate_in_worker_processes_writes_the_same_files(tmp_path):
  outs = [str(tmp_path / n) for n in ("one", "two")]
  metas = [synthetic.generate(out, 6, seed=4, frames=4, size=(64, 48), test_sequences=2,
                              progress=False, workers=workers)
           for out, workers in zip(outs, (1, 2))]
  assert metas[0] == metas[1]
  files = _tree(outs[0])
  assert files == _tree(outs[1]) and len(files) > 6 * 4
  match, mismatch, errors = filecmp.cmpfiles(outs[0], outs[1], files, shallow=False)
  assert not mismatch and not errors and len(match) == len(files)
  assert sorted(os.listdir(os.path.join(outs[1], "test"))) == ["synth_00004", "synth_00005"]


def test_other_seed_differs_and_sequences_do_not_depend_on_split():
  a = synthetic.render_sequence(0, 5, 4, 96, 64)
  b = synthetic.render_sequence(1, 5, 4, 96, 64)
  assert not np.array_equal(a["frames"], b["frames"])
  # Sequence 5 of seed 0 is the same whatever the total count (seeded from (seed, index)).
  np.testing.assert_array_equal(a["frames"], synthetic.render_sequence(0, 5, 4, 96, 64)["frames"])


def test_language_is_needed_for_twins():
  modes = {}
  for i in range(40):
    d = synthetic.render_sequence(3, i, 8, 160, 120)
    a = d["attributes"]
    modes[a["mode"]] = modes.get(a["mode"], 0) + 1
    t = a["target"]
    # The sentence always names size, colour and shape.
    assert (d["sentence"] + " ").startswith(f"the {t['size']} {t['colour']} {t['shape']} ")
    assert a["identical_distractor"] == (a["mode"] not in ("none", "attribute"))
    assert a["twins"] == len(a["frame0_boxes"]["twins"]) and a["single_frame"] == (a["mode"] != "direction")
    if a["mode"] == "direction":
      assert d["sentence"].split()[-2:] in (["moving", "left"], ["moving", "right"])
  # A good share of videos has a twin that only the sentence disambiguates.
  assert sum(v for k, v in modes.items() if k != "none") >= 15, modes


def test_twin_moves_the_other_way():
  for i in range(60):
    plan_rng = np.random.default_rng([11, i])
    plan = synthetic._plan(plan_rng, 40, 160, 120)
    sentence = plan.sentence
    if plan.mode != "direction":
      continue
    assert plan.twins == [1]
    target, twin = plan.objs[0], plan.objs[1]
    assert target.looks() == twin.looks() and target.diameter == twin.diameter
    assert np.sign(target.vx) == -np.sign(twin.vx)
    assert sentence.endswith("left") == (target.vx < 0)
    return
  pytest.fail("no direction-mode video among 60")


def _plans(mode, n=40, frames=40, width=160, height=120, seed=5):
  """Plans of `n` videos of one mode (straight from the planner, before rendering)."""
  out = []
  for i in range(n):
    plan = synthetic._plan(np.random.default_rng([seed, i]), frames, width, height, {mode: 1.0})
    assert plan.mode == mode
    out.append(plan)
  return out


def _extent(obj, t, frames):
  cx, cy, d = obj.at(t, frames)
  return cx - d / 2, cy - d / 2, cx + d / 2, cy + d / 2


def test_mode_probabilities_are_validated_and_normalised():
  probs = synthetic.mode_probabilities({"relation": 3, "absolute": 1})
  assert list(probs) == list(synthetic.MODES) and probs["relation"] == 0.75 and probs["none"] == 0
  assert sum(synthetic.mode_probabilities().values()) == pytest.approx(1.0)
  with pytest.raises(ValueError, match="unknown synthetic mode"):
    synthetic.mode_probabilities({"relations": 1.0})
  with pytest.raises(ValueError, match="all zero"):
    synthetic.mode_probabilities({"relation": 0.0})
  with pytest.raises(ValueError, match=">= 0"):
    synthetic.mode_probabilities({"relation": -1.0, "absolute": 2.0})
  assert synthetic.parse_modes("relation=0.5, absolute=0.5") == {"relation": 0.5, "absolute": 0.5}
  with pytest.raises(ValueError, match="NAME=WEIGHT"):
    synthetic.parse_modes("relation")


@pytest.mark.parametrize("mode", list(synthetic.MODES))
def test_each_mode_alone_renders_that_mode_with_the_target_whole_in_frame0(mode):
  for i in range(4):
    d = synthetic.render_sequence(1, i, 3, 96, 64, modes={mode: 1.0})
    a = d["attributes"]
    assert a["mode"] == mode and a["sentence"] == d["sentence"]
    x, y, w, h = d["boxes"][0]
    assert w > 0 and h > 0 and x > 0 and y > 0 and x + w < 96 and y + h < 64
    assert a["twins"] == len(a["frame0_boxes"]["twins"])
    assert ("anchor" in a["frame0_boxes"]) == (mode == "relation")
  # Same seed and modes, same video; the modes are part of what a sequence depends on.
  again = synthetic.render_sequence(1, 3, 3, 96, 64, modes={mode: 1.0})
  np.testing.assert_array_equal(again["frames"], d["frames"])
  assert json.dumps(again["attributes"], sort_keys=True) == json.dumps(a, sort_keys=True)


def test_absolute_mode_target_and_twins_keep_their_quadrants():
  frames, width, height = 40, 160, 120
  counts = set()
  for plan in _plans("absolute", frames=frames):
    position = plan.extra["position"]
    assert plan.sentence.endswith(f"at the {position}")
    target = plan.objs[0]
    counts.add(len(plan.twins))
    quadrants = []
    for i in [0] + plan.twins:
      assert plan.objs[i].looks() == target.looks()
      x0, y0, x1, y1 = zip(*(_extent(plan.objs[i], t, frames) for t in range(frames)))
      vertical = "top" if max(y1) <= height / 2 else "bottom" if min(y0) >= height / 2 else None
      horizontal = "left" if max(x1) <= width / 2 else "right" if min(x0) >= width / 2 else None
      assert vertical and horizontal, "a shape left its quadrant"
      quadrants.append(f"{vertical} {horizontal}")
    assert quadrants[0] == position and len(set(quadrants)) == len(quadrants)
    others = [o for k, o in enumerate(plan.objs) if k not in [0] + plan.twins]
    assert all(o.looks() != target.looks() for o in others)
  assert counts == {1, 2, 3}


def test_relation_mode_holds_in_every_frame_and_needs_both_words():
  frames = 40
  layouts, words = set(), set()
  for plan in _plans("relation", n=60, frames=frames):
    target, anchor = plan.objs[0], plan.objs[plan.anchor]
    word, layout = plan.extra["relation"], plan.extra["layout"]
    layouts.add(layout)
    words.add(word)
    assert plan.sentence.endswith(f"{word} the {anchor.colour} {anchor.shape}")
    assert len(plan.twins) == 1 and plan.objs[plan.twins[0]].looks() == target.looks()
    twin = plan.objs[plan.twins[0]]
    # The anchor is the only shape of its colour and shape; only the twin looks like the target.
    for k, o in enumerate(plan.objs):
      if k != plan.anchor:
        assert (o.shape, o.colour) != (anchor.shape, anchor.colour)
      if k not in (0, plan.twins[0]):
        assert o.looks() != target.looks()

    horizontal = word in ("left of", "right of")

    def holds(a, b, t):  # "a <word> b" by whole extents in frame t (the order along the axis)
      ax0, ay0, ax1, ay1 = _extent(a, t, frames)
      bx0, by0, bx1, by1 = _extent(b, t, frames)
      return {"left of": ax1 < bx0, "right of": ax0 > bx1, "above": ay1 < by0, "below": ay0 > by1}[word]

    def half(o, t):  # which half across the axis (the strips of the "decoy" layout)
      x0, y0, x1, y1 = _extent(o, t, frames)
      lo, hi, mid = (y0, y1, 60) if horizontal else (x0, x1, 80)
      return "first" if hi <= mid else "second" if lo >= mid else "both"
    for t in range(frames):
      assert holds(target, anchor, t)
      if layout == "opposite":  # one strip: the twin is on the anchor's other side
        assert holds(anchor, twin, t)
      else:  # the twin is <word> the decoy, in the other half from the target and anchor
        decoy = plan.objs[plan.decoy]
        assert holds(twin, decoy, t)
        assert half(target, t) == half(anchor, t) != half(twin, t) == half(decoy, t) != "both"
  assert layouts == {"opposite", "decoy"} and words == set(synthetic.RELATIONS)


def test_attribute_mode_needs_every_word():
  kinds_seen = set()
  for plan in _plans("attribute"):
    target = plan.objs[0]
    assert plan.sentence == f"the {target.size_word} {target.colour} {target.shape}"
    assert not plan.twins and all(o.looks() != target.looks() for o in plan.objs[1:])
    kinds = set()
    for i in plan.one_off:
      differs = [name for name, a, b in zip(("shape", "colour", "size"), plan.objs[i].looks(),
                                            target.looks()) if a != b]
      assert len(differs) == 1
      kinds.add(differs[0])
    assert len(kinds) == len(plan.one_off) >= 2  # at least two of the three words are needed
    assert target.scale_rate == 0  # the size word holds in every frame
    kinds_seen |= kinds
  assert kinds_seen == {"shape", "colour", "size"}


def test_generate_records_modes_and_mode_probabilities(tmp_path):
  config = config_utils.load_config("configs/synthetic.py:runlocal", [
      "data.synthetic.sequences=4", "data.synthetic.test_sequences=1", "data.synthetic.frames=2",
      "data.synthetic.size=64x48", "data.synthetic.modes.relation=1.0",
      "data.synthetic.modes.absolute=0.0", "data.synthetic.modes.attribute=0.0",
      "data.synthetic.modes.direction=0.0", "data.synthetic.modes.vertical=0.0",
      "data.synthetic.modes.horizontal=0.0", "data.synthetic.modes.none=0.0"])
  meta = synthetic.generate_from_config(config, str(tmp_path), progress=False)
  assert meta["generator_version"] == synthetic.GENERATOR_VERSION == 3
  assert meta["modes"]["relation"] == 4 and meta["mode_probabilities"]["relation"] == 1.0
  with open(tmp_path / "meta.json") as f:
    assert json.load(f) == meta
  with open(tmp_path / "test" / "synth_00003" / "attributes.json") as f:
    attrs = json.load(f)
  assert attrs["mode"] == "relation" and attrs["relation"] in synthetic.RELATIONS
  with pytest.raises(ValueError, match="unknown synthetic mode"):
    synthetic.generate(str(tmp_path / "bad"), 2, modes={"nope": 1.0})
  assert not os.path.exists(tmp_path / "bad")  # refused before writing anything


def test_vocabulary_covers_every_word_of_every_mode():
  vocab = set(synthetic.vocabulary_words())
  used = set()
  for mode in synthetic.MODES:
    for plan in _plans(mode, n=150, frames=8):
      used |= set(plan.sentence.split())
  assert used <= vocab, used - vocab
  # Every relation, position and motion word is reachable (nothing in the vocabulary is dead).
  assert vocab - used <= set(), vocab - used


def test_synthetic_vocab_fits_the_config(tmp_path):
  config = config_utils.load_config("configs/synthetic.py")
  path = str(tmp_path / "vocab.txt")
  from satracker_jax.tokenizer import write_wordpiece_vocab
  size = write_wordpiece_vocab(synthetic.vocabulary_words(), path)
  assert size <= config.model.bert.vocab_size
  tok = WordPieceTokenizer(path, max_len=config.model.max_text_len)
  for i in range(20):
    sentence = synthetic.render_sequence(0, i, 2, 64, 48, modes={"relation": 1, "absolute": 1})["sentence"]
    ids, mask = tok.encode(sentence)
    assert tok.unk_id not in ids[mask == 1]  # every generated word is a whole vocab entry
    assert len(tok.tokenize(sentence)) == len(sentence.split())
  synthetic.resolve_vocab_file(config, root=str(tmp_path))
  assert config.text.vocab_file == os.path.join(str(tmp_path), "vocab.txt")


def test_tfds_builder_builds_offline(tmp_path):
  tfds_synthetic = pytest.importorskip("data_pipelines.tfds_synthetic")
  builder = tfds_synthetic.SyntheticTracking(
      config=tfds_synthetic.SyntheticTracking.make_config(sequences=3, test_sequences=1, frames=4,
                                                          width=64, height=48, seed=2,
                                                          modes="relation=1,absolute=1"),
      data_dir=str(tmp_path))
  assert builder.builder_config.name.startswith("n3_t1_f4_64x48_s2_m")  # modes are in the name
  assert str(builder.info.version).endswith(f".{synthetic.GENERATOR_VERSION}")
  builder.download_and_prepare()
  examples = list(builder.as_dataset(split="train").as_numpy_iterator())
  assert len(examples) == 2 and builder.info.splits["test"].num_examples == 1
  ex = sorted(examples, key=lambda e: e["name"])[0]
  ref = synthetic.render_sequence(2, 0, 4, 64, 48, modes={"relation": 1, "absolute": 1})
  assert ex["frames"].shape == (4, 48, 64, 3)
  np.testing.assert_array_equal(ex["boxes"], ref["boxes"].astype(np.float32))
  assert ex["sentence"].decode() == ref["sentence"]
  assert json.loads(ex["attributes"].decode()) == ref["attributes"]
  assert ex["mode"].decode() in ("relation", "absolute")
  default = tfds_synthetic.SyntheticTracking.make_config(sequences=3, modes=",".join(
      f"{m}={p}" for m, p in synthetic.MODES.items()))
  assert "_m" not in default.name  # the default mix written out is the default config


def test_cli_arguments():
  import argparse
  from satracker_jax.cli import synth as synth_cli
  parser = argparse.ArgumentParser()
  synth_cli.add_arguments(parser)
  args = parser.parse_args(["--out", "x", "--size", "64x48", "--modes", "relation=0.5,absolute=0.5"])
  assert synthetic.parse_size(args.size) == (64, 48) and args.split_test is None  # None: 10% held out
  assert synthetic.parse_modes(args.modes)["relation"] == 0.5


def test_synth_into_another_generation_refuses_in_one_line_or_replaces_it_whole(tmp_path, capsys):
  out = str(tmp_path / "DIR")
  args = ["synth", "--out", out, "--sequences", "4", "--frames", "2", "--size", "48x40",
          "--split-test", "1", "--no-progress"]
  assert cli.main(args + ["--seed", "0"]) == 0
  readers.load_dataset("synthetic", out, "train")  # an index cache in the folder changes nothing
  assert cli.main(args + ["--seed", "0"]) == 0  # the same request again: the same bytes
  files = {f: open(os.path.join(out, f), "rb").read() for f in _tree(out)}
  capsys.readouterr()

  assert cli.main(args + ["--seed", "1"]) == 2  # a usage error: one line, exit status 2
  err = capsys.readouterr().err
  assert len(err.splitlines()) == 1, err
  assert err.startswith(f"satracker synth: {out} holds another generation (seed 0, 4 videos")
  assert "seed 1" in err and "--force" in err
  assert {f: open(os.path.join(out, f), "rb").read() for f in _tree(out)} == files  # untouched

  # --force with another seed and fewer videos: only the new generation is left.
  assert cli.main(["synth", "--out", out, "--sequences", "2", "--frames", "2", "--size", "48x40",
                   "--split-test", "1", "--seed", "1", "--force", "--no-progress"]) == 0
  assert sorted(os.listdir(os.path.join(out, "train")) + os.listdir(os.path.join(out, "test"))) == [
      "synth_00000", "synth_00001"]
  with open(os.path.join(out, "meta.json")) as f:
    assert json.load(f)["seed"] == 1
  data = synthetic.render_sequence(1, 0, 2, 48, 40)
  np.testing.assert_array_equal(readers.load_dataset("synthetic", out, "train")[0].boxes, data["boxes"])

  # A folder of someone else's files is neither written into nor cleared, even with --force.
  other = tmp_path / "mine"
  other.mkdir()
  (other / "notes.txt").write_text("keep me")
  for force, why in (([], "no meta.json"), (["--force"], "notes.txt")):
    assert cli.main(["synth", "--out", str(other), "--sequences", "2", "--frames", "2", "--size",
                     "48x40", "--no-progress", *force]) == 2
    assert why in capsys.readouterr().err
  assert os.listdir(other) == ["notes.txt"] and (other / "notes.txt").read_text() == "keep me"


def test_synth_refuses_no_videos_in_one_line(tmp_path, capsys):
  from satracker_jax import cli
  assert cli.main(["synth", "--out", str(tmp_path / "D"), "--sequences", "0", "--no-progress"]) == 2
  err = capsys.readouterr().err.strip()
  assert len(err.splitlines()) == 1 and "sequences=0: generate at least 1 video" in err, err
  assert not (tmp_path / "D").exists()
