"""`satracker eval` runner: raw results + metrics.json, resumable, serial == batched."""
import copy
import json
import os

import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from satracker_jax import config_utils
from satracker_jax.evaluation import provenance as provenance_lib
from satracker_jax.evaluation import results_io, runner

from test_tracker import FakeTokenizer, make_sequence


class BrightnessNet:
  """A cheap stand-in network (no model compile): the score map is the mean red-minus-green of each
  cell of the search crop, so it follows the red target; the box size is fixed."""

  def __init__(self, feat):
    self.feat = feat

  def __call__(self, variables, template, template_box, search, text_ids, text_mask):
    b, s = search.shape[0], search.shape[1]
    x = search.astype(jnp.float32)
    redness = (x[..., 0] - x[..., 1]) / 255.0
    cells = redness.reshape(b, self.feat, s // self.feat, self.feat, s // self.feat).mean(axis=(2, 4))
    score = 8.0 * cells[..., None] + 0.0 * variables["w"]
    size = jnp.full((b, self.feat, self.feat, 2), 0.22, jnp.float32)
    offset = jnp.full((b, self.feat, self.feat, 2), 0.5, jnp.float32)
    return {"score_map": score, "size_map": size, "offset_map": offset}


def write_sequences(root, specs, ext="png"):
  """Writes `<root>/test/<seq>/{imgs/*.<ext>, groundtruth.txt, language.txt}` (the synthetic/TNL2K
  layout) and loads it back through the dataset reader, as `satracker eval` does."""
  from data_pipelines.readers import load_dataset
  for name, (h, w), n, seed in specs:
    frames, gts = make_sequence(h, w, n, seed)
    seq_dir = os.path.join(root, "test", name)
    os.makedirs(os.path.join(seq_dir, "imgs"), exist_ok=True)
    for i, frame in enumerate(frames):
      Image.fromarray(frame).save(os.path.join(seq_dir, "imgs", f"{i + 1:05d}.{ext}"))
    np.savetxt(os.path.join(seq_dir, "groundtruth.txt"), gts, fmt="%d", delimiter=",")
    with open(os.path.join(seq_dir, "language.txt"), "w") as f:
      f.write(f"the red box {name}\n")
  names = {name for name, *_ in specs}
  return [s for s in load_dataset("synthetic", root, "test", use_cache=False) if s.name in names]


@pytest.fixture()
def setup(tmp_path):
  config = config_utils.load_config("tiny")
  feat = config.model.search_size // config.model.patch_size
  sequences = write_sequences(str(tmp_path / "data"), [("seq_a", (96, 128), 7, 0), ("seq_b", (120, 100), 5, 1)])
  kwargs = dict(apply_fn=BrightnessNet(feat), tokenizer=FakeTokenizer(config.model.max_text_len),
                progress=False)
  return config, {"w": jnp.zeros(())}, sequences, kwargs, tmp_path


def test_eval_writes_results_and_metrics_then_resumes(setup, capsys):
  config, variables, sequences, kwargs, tmp_path = setup
  out = str(tmp_path / "results")
  metrics = runner.evaluate(config, variables, sequences, out, **kwargs)
  for seq in sequences:
    boxes = results_io.read_boxes(results_io.results_path(out, seq.name))
    times = results_io.read_times(results_io.times_path(out, seq.name))
    assert boxes.shape == (len(seq.frames), 4) and times.shape == (len(seq.frames),)
    np.testing.assert_allclose(boxes[0], seq.boxes[0], atol=1e-3)  # frame 0 = the init box
  with open(os.path.join(out, "metrics.json")) as f:
    on_disk = json.load(f)
  assert on_disk == json.loads(json.dumps(metrics))
  m = metrics["satracker"]
  assert m["num_sequences"] == 2 and 0.0 <= m["auc"] <= 1.0
  # The stand-in follows the red target (its fixed box size caps the AUC); a broken uncrop loses it.
  assert m["precision"] > 0.9 and m["auc"] > 0.3

  # Second run: nothing is re-tracked (files untouched), the metrics are recomputed identically.
  stamps = _stamps(out)
  capsys.readouterr()
  again = runner.evaluate(config, variables, sequences, out, parallel=2, **kwargs)
  assert "2 of 2 sequences already have results" in capsys.readouterr().out
  assert again == metrics
  assert stamps == _stamps(out)

  # A truncated result (an interrupted write) is redone, only that one.
  with open(results_io.results_path(out, "seq_b"), "w") as f:
    f.write("1\t2\t3\t4\n")
  runner.evaluate(config, variables, sequences, out, **kwargs)
  assert "1 of 2 sequences already have results" in capsys.readouterr().out


def _stamps(out):
  return {p: os.stat(os.path.join(out, p)).st_mtime_ns for p in os.listdir(out)
          if p.endswith(".txt")}


def test_batched_eval_equals_serial(setup):
  config, variables, sequences, kwargs, tmp_path = setup
  # A third sequence so a slot that finishes picks up the next one.
  sequences += write_sequences(str(tmp_path / "data"), [("seq_c", (80, 90), 4, 2)])
  serial, batched = str(tmp_path / "serial"), str(tmp_path / "batched")
  runner.evaluate(config, variables, sequences, serial, parallel=1, write_report=False, **kwargs)
  runner.evaluate(config, variables, sequences, batched, parallel=2, write_report=False, **kwargs)
  for seq in sequences:
    np.testing.assert_allclose(results_io.read_boxes(results_io.results_path(batched, seq.name)),
                               results_io.read_boxes(results_io.results_path(serial, seq.name)), atol=1e-3)


def test_checkpoint_config_mismatch_is_an_error(tiny_config, tiny_variables):
  from satracker_jax import model_io
  model_io.check_variables(tiny_config, tiny_variables, "same config")
  other = config_utils.load_config("tiny", ["model.head_channels=32"])
  with pytest.raises(ValueError, match="head"):
    model_io.check_variables(other, tiny_variables, "other config")


# -- the pipelined runner ----------------------------------------------------------------------------
def _boxes(out, sequences):
  return {s.name: results_io.read_boxes(results_io.results_path(out, s.name)) for s in sequences}


@pytest.fixture()
def jpeg_setup(setup):
  """JPEG videos large enough that the search crop (4x a ~80 px target -> 128 px) is a >= 2x
  downscale, so the runner decodes at 1/2."""
  config, variables, _, kwargs, tmp_path = setup
  sequences = write_sequences(str(tmp_path / "jpeg"), [("jpg_a", (360, 480), 6, 3),
                                                       ("jpg_b", (352, 464), 5, 4),
                                                       ("jpg_c", (368, 500), 4, 5)], ext="jpg")
  return config, variables, sequences, kwargs, tmp_path


def test_full_decode_eval_equals_the_single_stream_tracker(jpeg_setup):
  """The pipeline (decode-ahead pool, crops from Pillow images, 2 slots) tracks exactly as a
  `Tracker` fed `visualize.load_frame` arrays."""
  from satracker_jax import tracker as tracker_lib
  from satracker_jax.visualize import load_frame
  config, variables, sequences, kwargs, tmp_path = jpeg_setup
  out = str(tmp_path / "full")
  summary = runner.track_sequences(config, variables, sequences, out, parallel=2, workers=3,
                                   reduced_decode=False, **kwargs)
  assert summary.decode_scales == {1: sum(len(s.frames) for s in sequences)}
  tracker = tracker_lib.Tracker(config, variables, apply_fn=kwargs["apply_fn"],
                                tokenizer=kwargs["tokenizer"])
  for seq in sequences:
    frames = [load_frame(p) for p in seq.frames]
    tracker.init(frames[0], seq.boxes[0], seq.sentence)
    expected = [seq.boxes[0]] + [tracker.track(f)[0] for f in frames[1:]]
    np.testing.assert_allclose(_boxes(out, [seq])[seq.name], np.stack(expected), atol=1e-4)


def test_reduced_decode_results_do_not_depend_on_workers_or_slots(jpeg_setup):
  config, variables, sequences, kwargs, tmp_path = jpeg_setup
  runs = {}
  for parallel, workers, waves in ((1, 1, 1), (3, 4, 1), (2, 2, 1), (2, 3, 2)):
    out = str(tmp_path / f"p{parallel}w{workers}v{waves}")
    summary = runner.track_sequences(config, variables, sequences, out, parallel=parallel,
                                     workers=workers, waves=waves, **kwargs)
    assert summary.decode_scales.get(2, 0) > 0  # the reduced-scale path ran
    assert summary.waves == waves and sorted(summary.tracked) == sorted(s.name for s in sequences)
    runs[(parallel, workers, waves)] = _boxes(out, sequences)
  first = runs[(1, 1, 1)]
  for boxes in runs.values():
    for name in first:
      np.testing.assert_array_equal(boxes[name], first[name])
  # Reduced decoding changes pixels by the DCT downscale only (tests/test_decode.py): the
  # stand-in network still finds the target, every predicted centre inside its true box.
  for seq in sequences:
    centre = first[seq.name][:, :2] + first[seq.name][:, 2:] / 2
    gt = seq.boxes
    assert ((centre >= gt[:, :2]) & (centre <= gt[:, :2] + gt[:, 2:])).all(), seq.name


# -- results that cannot go stale ----------------------------------------------------------------------
def test_results_are_retracked_when_model_config_or_data_change(setup, capsys):
  config, variables, sequences, kwargs, tmp_path = setup
  out = str(tmp_path / "results")
  runner.evaluate(config, variables, sequences, out, write_report=False, **kwargs)
  with open(os.path.join(out, provenance_lib.PROVENANCE_FILE)) as f:
    record = json.load(f)["sequences"]
  assert set(record) == {"seq_a", "seq_b"} and set(record["seq_a"]) == {"model", "config", "data", "protocol"}

  def retracked(run):
    before = _stamps(out)
    run()
    after = _stamps(out)
    return sorted(os.path.basename(p)[:-4] for p in before if after.get(p) != before[p]
                  and not p.endswith("_time.txt"))

  same = lambda: runner.evaluate(config, {"w": jnp.zeros(())}, sequences, out,
                                 write_report=False, **kwargs)
  assert retracked(same) == []  # equal weights (another array object) -> same fingerprint
  # Other weights (e.g. the 4-step demo model, then the 2,500-step one): everything again.
  other_model = lambda: runner.evaluate(config, {"w": jnp.ones(())}, sequences, out,
                                        write_report=False, **kwargs)
  assert retracked(other_model) == ["seq_a", "seq_b"]
  assert retracked(other_model) == []
  # A tracker setting changes the results too.
  no_window = config_utils.load_config("tiny", ["tracker.hann_window=False"])
  other_config = lambda: runner.evaluate(no_window, {"w": jnp.ones(())}, sequences, out,
                                         write_report=False, **kwargs)
  assert retracked(other_config) == ["seq_a", "seq_b"]
  # New ground truth for one sequence (a regenerated video): only that one.
  sequences[1].boxes = sequences[1].boxes + 1.0
  assert retracked(other_config) == ["seq_b"]
  # The caller may name the model itself (a checkpoint step); that replaces the fingerprint.
  named = lambda: runner.evaluate(no_window, {"w": jnp.ones(())}, sequences, out,
                                  write_report=False, model_fingerprint="step-2500", **kwargs)
  assert retracked(named) == ["seq_a", "seq_b"]
  assert retracked(named) == []


def test_fingerprint_variables_sees_every_leaf():
  base = {"params": {"a": np.arange(10000, dtype=np.float32).reshape(100, 100),
                     "b": np.zeros(3, np.float32)}}
  fp = provenance_lib.fingerprint_variables(base)
  assert fp == provenance_lib.fingerprint_variables(jax_tree_copy(base))
  changed = jax_tree_copy(base)
  changed["params"]["b"][1] = 1e-3
  assert provenance_lib.fingerprint_variables(changed) != fp
  reshaped = {"params": {"a": base["params"]["a"].reshape(10000, 1), "b": base["params"]["b"]}}
  assert provenance_lib.fingerprint_variables(reshaped) != fp


def test_config_fingerprint_follows_the_vocabulary_content_not_its_path(tiny_config, tmp_path):
  """A re-generated vocab.txt at the same path is another model input; a copy elsewhere is not."""
  a, b = tmp_path / "a" / "vocab.txt", tmp_path / "b" / "vocab.txt"
  for path, words in ((a, "x y z"), (b, "x y z")):
    path.parent.mkdir()
    path.write_text("\n".join(words.split()) + "\n")
  fingerprints = []
  for path in (a, b, a):
    config = copy.deepcopy(tiny_config)
    config.text.vocab_file = str(path)
    fingerprints.append(provenance_lib.config_fingerprint(config))
    a.write_text("x y w\n")  # after the first: same path, other content
  assert fingerprints[0] == fingerprints[1] != fingerprints[2]


def jax_tree_copy(tree):
  import jax
  return jax.tree.map(np.array, tree)


# -- bad input is loud and loses nothing ---------------------------------------------------------------
class RecordingTokenizer(FakeTokenizer):
  def __init__(self, max_len):
    super().__init__(max_len)
    self.seen = []

  def encode(self, text):
    self.seen.append(text)
    return super().encode(text)


def test_non_utf8_sentence_is_decoded_with_replacement_warned_and_counted(setup, capsys):
  from data_pipelines.readers import load_dataset
  config, variables, _, kwargs, tmp_path = setup
  root = str(tmp_path / "data")
  language = os.path.join(root, "test", "seq_b", "language.txt")
  with open(language, "wb") as f:
    f.write(b"the red \xff box\n")
  sequences = load_dataset("synthetic", root, "test", use_cache=False)
  tok = RecordingTokenizer(config.model.max_text_len)
  out = str(tmp_path / "results")
  runner.evaluate(config, variables, sequences, out, **{**kwargs, "tokenizer": tok})
  err = capsys.readouterr().err
  assert f"{language}: not valid UTF-8 (byte 0xff at offset 8)" in err
  assert "the red \ufffd box" in tok.seen
  with open(os.path.join(out, runner.SUMMARY_FILE)) as f:
    summary = json.load(f)
  assert list(summary["bad_sentences"]) == ["seq_b"] and language in summary["bad_sentences"]["seq_b"]


def test_a_bad_frame_fails_its_sequence_and_the_others_finish(setup, capsys):
  config, variables, sequences, kwargs, tmp_path = setup
  sequences += write_sequences(str(tmp_path / "data"), [("seq_c", (80, 90), 4, 2)])
  missing = sequences[0].frames[3]
  os.remove(missing)
  corrupt = sequences[2].frames[0]
  with open(corrupt, "wb") as f:
    f.write(b"\x89PNG but not really")
  out = str(tmp_path / "results")
  with pytest.raises(runner.EvaluationFailed) as info:
    runner.evaluate(config, variables, sequences, out, parallel=2, **kwargs)
  failed = info.value.failed
  assert set(failed) == {"seq_a", "seq_c"}
  assert failed["seq_a"].startswith(f"{missing}: frame file missing")
  assert failed["seq_c"].startswith(f"{corrupt}: cannot decode")
  # seq_b was tracked and scored alone; nothing of the failed ones was written or scored.
  assert info.value.metrics["satracker"]["num_sequences"] == 1
  assert sorted(os.listdir(out)) == sorted(
      ["seq_b.txt", "seq_b_time.txt", provenance_lib.PROVENANCE_FILE, runner.SUMMARY_FILE, "metrics.json",
       "per_sequence.csv", "results.md", "success.png", "precision.png", "norm_precision.png"])
  with open(os.path.join(out, runner.SUMMARY_FILE)) as f:
    assert set(json.load(f)["failed"]) == {"seq_a", "seq_c"}


def test_eval_verb_prints_failures_and_exits_nonzero(setup, monkeypatch, capsys):
  import argparse
  from satracker_jax.cli import common
  from satracker_jax.cli import eval as eval_verb
  config, variables, sequences, kwargs, tmp_path = setup
  os.remove(sequences[1].frames[2])
  monkeypatch.setattr(common, "load_model", lambda args, overrides, **_: (config, variables))
  real = runner.evaluate
  monkeypatch.setattr(runner, "evaluate", lambda *a, **k: real(
      *a, **{**k, "apply_fn": kwargs["apply_fn"], "tokenizer": kwargs["tokenizer"]}))
  parser = argparse.ArgumentParser()
  eval_verb.add_arguments(parser)
  args = parser.parse_args(["--dataset", "synthetic", "--root", str(tmp_path / "data"),
                            "--out", str(tmp_path / "results"), "--no-progress"])
  assert eval_verb.run(args, []) == 1
  out = capsys.readouterr().out
  assert "1 of 2 sequences failed" in out and sequences[1].frames[2] in out
  assert "| satracker" in out  # the other sequence was scored


def test_bench_eval_runs_on_small_jpeg_videos(capsys):
  from satracker_jax.bench import eval as bench_eval
  result = bench_eval.run("configs/tiny.py", frame_size=(192, 144), sequences=2, frames=4,
                          parallel=2, workers=2, model=False)
  assert set(result["runs"]) == {"host only", "host only, full decode"}
  for r in result["runs"].values():
    assert r["frames"] == 8 and r["frames_per_s"] > 0 and r["frames_per_cpu_s"] > 0
  assert result["stages_ms_per_frame"]["frames"] > 0
  assert "host only" in capsys.readouterr().out


class SentenceNet:
  """A stand-in network that reads the sentence: with words it boxes the red pixels of the search
  crop exactly; with an empty sentence ([CLS][SEP] only) it answers a corner of the crop."""

  def __init__(self, feat):
    self.feat = feat

  def __call__(self, variables, template, template_box, search, text_ids, text_mask):
    f, (b, s) = self.feat, search.shape[:2]
    x = search.astype(jnp.float32)
    red = (x[..., 0] - x[..., 1]) > 120.0                       # [b, s, s]
    rows, cols = red.any(axis=2), red.any(axis=1)
    first = lambda m: jnp.argmax(m, axis=1)
    last = lambda m: s - 1 - jnp.argmax(m[:, ::-1], axis=1)
    y0, y1, x0, x1 = first(rows), last(rows), first(cols), last(cols)
    box = jnp.stack([(x0 + x1 + 1) / 2, (y0 + y1 + 1) / 2, x1 - x0 + 1, y1 - y0 + 1], -1) / s
    has_words = text_mask.sum(axis=1) > 2
    box = jnp.where(has_words[:, None], box, jnp.array([0.06, 0.06, 0.1, 0.1]))
    col = jnp.clip((box[:, 0] * f).astype(jnp.int32), 0, f - 1)
    row = jnp.clip((box[:, 1] * f).astype(jnp.int32), 0, f - 1)
    peak = (jnp.arange(f)[None, :, None] == row[:, None, None]) & (jnp.arange(f)[None, None, :] == col[:, None, None])
    score = jnp.where(peak, 10.0, -10.0)[..., None] + 0.0 * variables["w"]
    size = jnp.broadcast_to(box[:, None, None, 2:], (b, f, f, 2))
    offset = jnp.stack([box[:, 0] * f - col, box[:, 1] * f - row], -1)
    return {"score_map": score, "size_map": size,
            "offset_map": jnp.broadcast_to(offset[:, None, None, :], (b, f, f, 2))}


def test_protocols_end_to_end(setup):
  """nl grounds frame 0 from the sentence (accuracy reported; masked text loses it), bb drops the
  sentence, and metrics.json / provenance carry the protocol."""
  config, variables, sequences, kwargs, tmp_path = setup
  kwargs = {**kwargs, "apply_fn": SentenceNet(config.model.search_size // config.model.patch_size)}
  results = {}
  for protocol, mask in (("nl_bb", False), ("bb", False), ("nl", False), ("nl", True)):
    out = str(tmp_path / f"{protocol}{'_masked' if mask else ''}")
    metrics = runner.evaluate(config, variables, sequences, out, protocol=protocol, mask_text=mask,
                              **kwargs)["satracker"]
    with open(os.path.join(out, "metrics.json")) as f:
      assert json.load(f)["satracker"]["protocol"] == protocol
    with open(os.path.join(out, provenance_lib.PROVENANCE_FILE)) as f:
      assert {v["protocol"] for v in json.load(f)["sequences"].values()} == {
          protocol + ("+masked_text" if mask else "")}
    results[(protocol, mask)] = metrics
  assert results[("nl", False)]["grounding_accuracy"] == 1.0
  assert results[("nl", True)]["grounding_accuracy"] == 0.0
  assert "grounding_accuracy" not in results[("nl_bb", False)]
  # With the sentence the net follows the target; without it (bb) it drifts to a corner.
  assert results[("nl_bb", False)]["auc"] > results[("bb", False)]["auc"] + 0.3
  first_line = results_io.read_boxes(results_io.results_path(str(tmp_path / "nl"), "seq_a"))[0]
  np.testing.assert_allclose(first_line, sequences[0].boxes[0], atol=1.5)  # the grounded box
  with pytest.raises(ValueError, match="protocol"):
    runner.evaluate(config, variables, sequences, str(tmp_path / "x"), protocol="bbox", **kwargs)


def test_eval_verb_toolkit_rescores_without_retracking(setup, monkeypatch, capsys):
  """`satracker eval --toolkit tnl2k-matlab` on a synthetic data set: the toolkit goes into
  metrics.json and provenance.json; results made under another toolkit are re-scored, not tracked
  again (the toolkit is no part of a result's fingerprint)."""
  import argparse
  from satracker_jax.cli import common
  from satracker_jax.cli import eval as eval_verb
  config, variables, sequences, kwargs, tmp_path = setup
  monkeypatch.setattr(common, "load_model", lambda args, overrides, **_: (config, variables))
  real = runner.evaluate
  monkeypatch.setattr(runner, "evaluate", lambda *a, **k: real(
      *a, **{**k, "apply_fn": kwargs["apply_fn"], "tokenizer": kwargs["tokenizer"]}))
  parser = argparse.ArgumentParser()
  eval_verb.add_arguments(parser)
  out = str(tmp_path / "results")
  base = ["--dataset", "synthetic", "--root", str(tmp_path / "data"), "--out", out, "--no-progress"]

  def metrics_and_provenance():
    with open(os.path.join(out, "metrics.json")) as f, \
         open(os.path.join(out, provenance_lib.PROVENANCE_FILE)) as g:
      return json.load(f)["satracker"], json.load(g)

  assert eval_verb.run(parser.parse_args(base), []) == 0
  first, provenance = metrics_and_provenance()
  assert first["toolkit"] == "pytracking" and provenance["toolkit"] == "pytracking"
  stamps = _stamps(out)
  capsys.readouterr()
  assert eval_verb.run(parser.parse_args(base + ["--toolkit", "tnl2k-matlab"]), []) == 0
  printed = capsys.readouterr().out
  assert "2 of 2 sequences already have results" in printed and "tnl2k-matlab" in printed
  assert stamps == _stamps(out)  # not re-tracked
  second, provenance = metrics_and_provenance()
  assert second["toolkit"] == "tnl2k-matlab"
  assert provenance["toolkit"] == "tnl2k-matlab" and provenance["toolkits"] == ["tnl2k-matlab"]
  assert set(provenance["sequences"]) == {"seq_a", "seq_b"}
  # The same boxes under other rules: the curves' denominators differ by MATLAB's eps only here
  # (no absent flags, no border boxes, nothing to repair), and results.md says so.
  assert second["auc"] == pytest.approx(first["auc"], abs=1e-12)
  assert "No absent flags for 2 of 2 sequences" in open(os.path.join(out, "results.md")).read()


@pytest.mark.parametrize("first_box", [np.nan, 0.0], ids=["nan", "zero"])
def test_nl_tracks_a_sequence_whose_first_gt_box_is_invalid(setup, first_box):
  # Under `nl` the tracker grounds frame 0 itself: an absent first GT box (a NaN or 0,0,0,0
  # line) must not stop the evaluation. The grounding cannot hit it (IoU -1).
  config, variables, sequences, kwargs, tmp_path = setup
  kwargs = {**kwargs, "apply_fn": SentenceNet(config.model.search_size // config.model.patch_size)}
  sequences[1].boxes[0] = first_box
  sequences[1].visible[0] = False
  out = str(tmp_path / "nl")
  metrics = runner.evaluate(config, variables, sequences, out, protocol="nl", **kwargs)["satracker"]
  assert metrics["num_sequences"] == 2 and metrics["grounding_accuracy"] == 0.5
  with open(os.path.join(out, runner.GROUNDING_FILE)) as f:
    grounded = json.load(f)["sequences"]
  assert grounded["seq_b"]["iou"] == -1.0 and grounded["seq_a"]["iou"] > 0.5
  assert len(results_io.read_boxes(results_io.results_path(out, "seq_b"))) == len(sequences[1])


def test_eval_says_when_it_replaces_results_of_another_model(setup, capsys):
  # Issue 25: `eval --out DIR` holding another model's results replaced them without a word.
  config, _, sequences, kwargs, tmp_path = setup
  out = str(tmp_path / "results")
  run = lambda w, source: runner.evaluate(config, {"w": jnp.full((), w)}, sequences, out,
                                          write_report=False, model_info={"source": source}, **kwargs)
  run(0.0, "runs/a")
  assert "replacing" not in capsys.readouterr().out
  run(0.0, "runs/a")  # the same model: skipped, nothing replaced
  assert "replacing" not in capsys.readouterr().out
  run(1.0, "runs/b")
  lines = [line for line in capsys.readouterr().out.splitlines() if "replacing" in line]
  old, new = (provenance_lib.fingerprint_variables({"w": jnp.full((), w)}) for w in (0.0, 1.0))
  assert lines == [f"replacing the results of another model in {out}: 2 of 2 sequences (seq_a, "
                   f"seq_b) were tracked by runs/a (model {old}); now tracking with runs/b (model {new})"]


def test_a_tokenizer_that_cannot_be_built_costs_no_results(setup):
  """Another model whose vocabulary file is missing fails before the results of the model
  already in --out are judged stale: nothing deleted, provenance unchanged."""
  config, variables, sequences, kwargs, tmp_path = setup
  out = str(tmp_path / "results")
  runner.track_sequences(config, variables, sequences, out, **kwargs)
  with open(os.path.join(out, "provenance.json")) as f:
    before = f.read()
  other = copy.deepcopy(config)
  other.text.tokenizer, other.text.vocab_file = "wordpiece", str(tmp_path / "missing_vocab.txt")
  with pytest.raises(FileNotFoundError, match="missing_vocab.txt"):
    runner.track_sequences(other, variables, sequences, out, model_fingerprint="another-model",
                           **dict(kwargs, tokenizer=None))
  with open(os.path.join(out, "provenance.json")) as f:
    assert f.read() == before
  for s in sequences:
    assert results_io.read_boxes(results_io.results_path(out, s.name)).shape[0] > 0
