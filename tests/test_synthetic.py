"""Synthetic generator: deterministic bytes, language-needed scenes, vocab fits, TFDS builder."""
import filecmp
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
    assert d["sentence"].startswith(f"the {t['size']} {t['colour']} {t['shape']} ")
    assert a["identical_distractor"] == (a["mode"] != "none")
    if a["mode"] == "direction":
      assert d["sentence"].split()[-2:] in (["moving", "left"], ["moving", "right"])
  # A good share of videos has a twin that only the sentence disambiguates.
  assert sum(v for k, v in modes.items() if k != "none") >= 15, modes


def test_twin_moves_the_other_way():
  for i in range(60):
    plan_rng = np.random.default_rng([11, i])
    objs, _, _, sentence, mode = synthetic._plan(plan_rng, 40, 160, 120)
    if mode != "direction":
      continue
    target, twin = objs[0], objs[1]
    assert target.looks() == twin.looks() and target.diameter == twin.diameter
    assert np.sign(target.vx) == -np.sign(twin.vx)
    assert sentence.endswith("left") == (target.vx < 0)
    return
  pytest.fail("no direction-mode video among 60")


def test_synthetic_vocab_fits_the_config(tmp_path):
  config = config_utils.load_config("configs/synthetic.py")
  path = str(tmp_path / "vocab.txt")
  from satracker_jax.tokenizer import write_wordpiece_vocab
  size = write_wordpiece_vocab(synthetic.vocabulary_words(), path)
  assert size <= config.model.bert.vocab_size
  tok = WordPieceTokenizer(path, max_len=config.model.max_text_len)
  for i in range(20):
    sentence = synthetic.render_sequence(0, i, 2, 64, 48)["sentence"]
    ids, mask = tok.encode(sentence)
    assert tok.unk_id not in ids[mask == 1]  # every generated word is a whole vocab entry
    assert len(tok.tokenize(sentence)) == len(sentence.split())
  synthetic.resolve_vocab_file(config, root=str(tmp_path))
  assert config.text.vocab_file == os.path.join(str(tmp_path), "vocab.txt")


def test_tfds_builder_builds_offline(tmp_path):
  tfds_synthetic = pytest.importorskip("data_pipelines.tfds_synthetic")
  builder = tfds_synthetic.SyntheticTracking(
      config=tfds_synthetic.SyntheticTracking.make_config(sequences=3, test_sequences=1, frames=4,
                                                          width=64, height=48, seed=2),
      data_dir=str(tmp_path))
  builder.download_and_prepare()
  examples = list(builder.as_dataset(split="train").as_numpy_iterator())
  assert len(examples) == 2 and builder.info.splits["test"].num_examples == 1
  ex = sorted(examples, key=lambda e: e["name"])[0]
  ref = synthetic.render_sequence(2, 0, 4, 64, 48)
  assert ex["frames"].shape == (4, 48, 64, 3)
  np.testing.assert_array_equal(ex["boxes"], ref["boxes"].astype(np.float32))
  assert ex["sentence"].decode() == ref["sentence"]


def test_cli_arguments():
  import argparse
  from satracker_jax.cli import synth as synth_cli
  parser = argparse.ArgumentParser()
  synth_cli.add_arguments(parser)
  args = parser.parse_args(["--out", "x", "--size", "64x48"])
  assert synthetic.parse_size(args.size) == (64, 48) and args.split_test == 0
