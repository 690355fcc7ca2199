"""The TensorFlow-free input backend (data_pipelines/numpy_sampler.py, `data.backend="numpy"`)
against the tf.data sampler: the same plans, layout and replacements, images within 1 level, and
it runs (with the train loop's dataset choice) where `import tensorflow` fails.

Image tolerance. Both backends decode with libjpeg (Pillow's `draft` scaled decode gives the
graph's DCT-scaled pixels bit for bit) and resample with the same taps and weights; only the
float arithmetic differs (Pillow accumulates in double and resizes columns first, the graph in
float32, rows first), so a value near a .5 rounding edge can land one level apart. Measured on the
textured JPEG frames below (DCT ratios 1 and 2, grayscale, flips, grounding samples): max 1 level,
2 pixels of 983,040 in these 16 samples (4 of 1,966,080 in 32); on 1280x720 synthetic frames
(ratios 1, 2, 4 and 8, 192 samples) 6e-6 of the pixels, max 1. Asserted: max <= 1 and at most
1e-3 of the pixels differ (headroom for other libjpeg/Pillow builds, still far below any visible
or training-relevant difference).
"""
import os
import pickle
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from PIL import Image

from data_pipelines import batches, numpy_sampler, processing, readers, sampler
from satracker_jax import config_utils
from test_ingraph_crop import _frame
from test_sampler import SENTENCES, _config, _truncate, _write_tnl2k

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PLANNED = ("template_box", "search_box", "text_ids", "text_mask", "sample_index", "replaced",
           "debug_sequence", "debug_frames", "debug_template_crop",
           "debug_search_crop", "debug_flip", "debug_dct_ratio", "debug_protocol")


def _write_textured(root, n_seq=3, n_frames=6, size=(320, 240)):
  # Textured JPEG frames with boxes large enough that crops shrink 2-4x (DCT-scaled decoding).
  rng = np.random.default_rng(5)
  for i in range(n_seq):
    d = os.path.join(root, f"seq{i}")
    os.makedirs(os.path.join(d, "imgs"))
    lines = []
    for t in range(n_frames):
      w, h = int(rng.integers(40, 110)), int(rng.integers(40, 110))
      x, y = int(rng.integers(0, size[0] - w)), int(rng.integers(0, size[1] - h))
      img = _frame(size[0], size[1], seed=10 * i + t)
      img[y:y + h, x:x + w, 0] = 230
      Image.fromarray(img).save(os.path.join(d, "imgs", f"{t + 1:05d}.jpg"), quality=90)
      lines.append(f"{x},{y},{w},{h}")
    with open(os.path.join(d, "groundtruth.txt"), "w") as f:
      f.write("\n".join(lines) + "\n")
    with open(os.path.join(d, "language.txt"), "w") as f:
      f.write(SENTENCES[i % len(SENTENCES)] + "\n")


@pytest.fixture(scope="module")
def textured(tmp_path_factory):
  root = str(tmp_path_factory.mktemp("textured"))
  _write_textured(root)
  return root


def _batches(it, n):
  out = [next(it) for _ in range(n)]
  it.close()
  return out


def test_same_plans_as_tf_and_images_within_one_level(tmp_path, textured):
  config = _config(tmp_path, textured, grayscale_prob=0.3, flip_prob=0.5,
                   protocols={"nl_bb": 0.6, "bb": 0.2, "nl": 0.2})
  # Each backend builds its own plans from the config (as in training): equal plans are then a
  # result, not an input.
  want = _batches(sampler.make_dataset(config, batch_size=8, debug=True), 2)
  got = _batches(numpy_sampler.make_dataset(config, batch_size=8, debug=True), 2)
  maker = batches.build_sample_maker(config)
  differing, pixels = 0, 0
  for w, g in zip(want, got):
    assert set(g) == set(w) and set(batches.BATCH_KEYS) <= set(g)
    for key in w:
      assert (g[key].dtype, g[key].shape) == (w[key].dtype, w[key].shape), key
    for key in PLANNED:
      np.testing.assert_array_equal(g[key], w[key], err_msg=key)
    for key in ("template", "search"):
      diff = np.abs(g[key].astype(int) - w[key].astype(int))
      assert diff.max() <= 1, key
      differing, pixels = differing + int((diff > 0).sum()), pixels + diff.size
  assert differing <= 1e-3 * pixels
  # The data exercised what can differ: DCT-scaled decodes, grayscale, flips, grounding samples.
  debug = {key: np.concatenate([w[key] for w in want]) for key in PLANNED}
  assert {1, 2} <= set(debug["debug_dct_ratio"].ravel().tolist())
  assert debug["debug_flip"].any() and (debug["debug_protocol"] == 2).any()
  assert any(maker.plan(k, 0)["grayscale"] for k in debug["sample_index"])


def test_layout_resume_and_thread_count(tmp_path, textured):
  config = _config(tmp_path, textured)
  maker = batches.build_sample_maker(config)
  config.data.workers = "threads:3"
  first = _batches(numpy_sampler.make_dataset(config, sample_maker=maker), 3)
  config.data.workers = "threads:1"  # one thread: the same bytes
  for a, b in zip(first, _batches(numpy_sampler.make_dataset(config, sample_maker=maker), 3)):
    for key in batches.BATCH_KEYS:
      np.testing.assert_array_equal(a[key], b[key])
  config.data.workers = "threads:2"
  resumed = numpy_sampler.make_dataset(config, start_index=4, sample_maker=maker)
  for a, b in zip(first[1:], [next(resumed) for _ in range(2)]):
    for key in batches.BATCH_KEYS:
      np.testing.assert_array_equal(a[key], b[key])
  assert resumed.stats()["next_index"] == 12 and resumed.stats()["samples"] == 8
  resumed.close()
  # Two processes: the tf sampler's rows, and together the single-process global batch.
  for p in range(2):
    tf_part = _batches(sampler.make_dataset(config, process_index=p, process_count=2, sample_maker=maker), 2)
    part = _batches(numpy_sampler.make_dataset(config, process_index=p, process_count=2, sample_maker=maker), 2)
    for n in range(2):
      np.testing.assert_array_equal(part[n]["sample_index"], tf_part[n]["sample_index"])
      for key in batches.BATCH_KEYS:
        np.testing.assert_array_equal(part[n][key], first[n][key][2 * p:2 * p + 2])


def test_bad_data_is_replaced_and_counted_like_tf(tmp_path):
  root = str(tmp_path / "bad")
  _write_tnl2k(root, 12, 1, np.random.default_rng(1), size=(64, 48), ext=".jpg")
  with open(os.path.join(root, "seq2", "groundtruth.txt"), "w") as f:
    f.write("NaN,NaN,NaN,NaN\n")
  with open(os.path.join(root, "seq4", "language.txt"), "w") as f:
    f.write("\n")
  seqs = readers.load_dataset("tnl2k", root, "train", use_cache=False)
  by_name = {seq.name: seq for seq in seqs}
  with open(by_name["seq5"].frames[0], "wb") as f:  # broken header: found by the planner
    f.write(b"\xff\xd8\xff\xe0 this is not a jpeg")
  _truncate(by_name["seq3"].frames[0], 20)  # cut-off scan: found only by the decoder
  os.remove(by_name["seq7"].frames[0])
  config = _config(tmp_path, root, sequence_order="epoch")
  runs = []
  for module in (sampler, numpy_sampler):
    it = module.make_dataset(config, batch_size=12, datasets=[("tnl2k", 1.0, seqs)], debug=True)
    runs.append((next(it), it.stats()))
    it.close()
  (want, want_stats), (got, stats) = runs
  assert stats == want_stats
  assert stats["replaced_by_reason"] == {"bad_sentence": 1, "no_visible_box": 1,
                                         "missing_frame": 1, "corrupt_frame": 2}
  for key in PLANNED:
    np.testing.assert_array_equal(got[key], want[key], err_msg=key)
  # Every attempt failing raises, as in tf.
  for seq in seqs:
    if os.path.exists(seq.frames[0]) and seq.name != "seq5":
      _truncate(seq.frames[0], 20)
  it = numpy_sampler.make_dataset(config, batch_size=12, datasets=[("tnl2k", 1.0, seqs)])
  with pytest.raises(RuntimeError, match="draws in a row hit bad data"):
    next(it)
  it.close()


def test_runs_and_trains_input_without_tensorflow(tmp_path):
  """With `import tensorflow` failing: numpy_sampler yields a batch, and the train loop's
  default_dataset_fn picks it for data.backend=numpy."""
  root = str(tmp_path / "tnl2k")
  _write_tnl2k(root, 2, 4, np.random.default_rng(3), size=(96, 72), ext=".jpg")
  code = textwrap.dedent(r"""
      import sys
      for name in ("tensorflow", "tensorflow_datasets"):
        sys.modules[name] = None  # `import tensorflow` now raises ImportError
      import numpy as np
      from satracker_jax import config_utils
      from satracker_jax.tokenizer import write_wordpiece_vocab
      from data_pipelines import numpy_sampler
      from satracker_jax.train import loop
      root, tmp = sys.argv[1], sys.argv[2]
      config = config_utils.load_config("configs/tiny.py", ["data.backend=numpy"])
      config.data.datasets = {"tnl2k": {"root": root, "weight": 1.0, "split": "train"}}
      config.text.vocab_file = tmp + "/vocab.txt"
      write_wordpiece_vocab("the a red box on left right moving".split(), config.text.vocab_file)
      config.train.batch_size = 4
      batch = next(numpy_sampler.make_dataset(config))
      assert batch["search"].shape == (4, 128, 128, 3) and batch["search"].dtype == np.uint8
      it = loop.default_dataset_fn(config, tmp)(4, 1, 2, 2)  # start 4, process 1 of 2, 2 rows
      assert next(it)["sample_index"].tolist() == [6, 7]
      assert not any(m.startswith("tensorflow") for m in sys.modules if sys.modules[m] is not None)
      config.data.backend = "torch"
      try:
        loop.default_dataset_fn(config, tmp)
        raise AssertionError("an unknown backend was accepted")
      except ValueError as e:
        assert "data.backend='torch'" in str(e)
      print("OK")
  """)
  env = {**os.environ, "JAX_PLATFORMS": "cpu"}
  proc = subprocess.run([sys.executable, "-c", code, root, str(tmp_path)], cwd=REPO, env=env,
                        capture_output=True, text=True, timeout=120)
  assert proc.returncode == 0 and proc.stdout.strip().endswith("OK"), proc.stderr[-3000:]


def _assert_same_batches(got, want):
  assert len(got) == len(want)
  for g, w in zip(got, want):
    assert set(g) == set(w)
    for key in w:
      assert (g[key].dtype, g[key].shape) == (w[key].dtype, w[key].shape), key
      np.testing.assert_array_equal(g[key], w[key], err_msg=key)


def test_worker_processes_give_the_thread_path_bytes(tmp_path, textured):
  # data.workers=processes:2: samples made in 2 spawned processes, `chunk` consecutive ones per
  # task. A batch of 5 rows with chunks of 2 (5 // 2): chunks straddle the batches; process 1 of 2
  # also skips the other process's rows between its chunks.
  config = _config(tmp_path, textured, grayscale_prob=0.3, flip_prob=0.5,
                   protocols={"nl_bb": 0.6, "bb": 0.2, "nl": 0.2})
  maker = batches.build_sample_maker(config)
  kw = dict(batch_size=5, process_index=1, process_count=2, start_index=10, debug=True,
            sample_maker=maker)
  want = _batches(numpy_sampler.make_dataset(config, **kw), 3)
  config.data.workers = "processes:2"
  it = numpy_sampler.make_dataset(config, **kw)
  assert it._on_close.__self__._chunk == 2  # the case this test is about: 5 % chunk != 0
  got = _batches(it, 3)
  _assert_same_batches(got, want)
  assert [b["sample_index"].tolist() for b in got] == [
      [15, 16, 17, 18, 19], [25, 26, 27, 28, 29], [35, 36, 37, 38, 39]]
  assert maker.error is None


def test_sample_maker_pickles_and_the_copy_makes_the_same_sample(tmp_path, textured):
  config = _config(tmp_path, textured, flip_prob=0.5, protocols={"nl_bb": 0.6, "bb": 0.2, "nl": 0.2})
  maker = batches.build_sample_maker(config)
  copy = pickle.loads(pickle.dumps(maker))
  assert copy._lock is not maker._lock and copy.error is None
  make, make_copy = numpy_sampler._SampleFactory(maker), numpy_sampler._SampleFactory(copy)
  for k in (0, 7):
    for a, b in zip(maker.plan_tuple(k, 0), copy.plan_tuple(k, 0)):
      np.testing.assert_array_equal(a, b)
    want, got = make(k), make_copy(k)
    assert set(got) == set(want)
    for key in want:
      np.testing.assert_array_equal(got[key], want[key], err_msg=key)


def test_planner_bug_in_a_worker_process_raises(tmp_path, textured):
  # A monkeypatch does not reach a spawned worker: the bug travels in the maker's pickled state
  # (every visible frame index past the end: `plan` fails with an IndexError, a bug, not bad
  # data). A SampleMaker subclass defined here would work too, but each worker would then import
  # this module, and with it TensorFlow (test_ingraph_crop): ~3 s.
  config = _config(tmp_path, textured)
  config.data.workers = "processes:2"
  maker = batches.build_sample_maker(config)
  maker.visible_frames = [np.array([10 ** 6]) for _ in maker.visible_frames]
  it = numpy_sampler.make_dataset(config, batch_size=4, sample_maker=maker)
  try:
    with pytest.raises(RuntimeError, match="sample planner failed") as raised:
      next(it)
    assert "IndexError" in str(raised.value)  # the worker's traceback
  finally:
    it.close()
  assert maker.error is None  # the parent's copy never planned: the worker's error travelled


@pytest.mark.parametrize("backend, workers, message", [
    ("tf", "processes:2", "data.workers=processes:2 needs data.backend=numpy"),
    ("numpy", "processes:0", "data.workers='processes:0': expected threads or processes"),
    ("numpy", "threads:-1", "data.workers='threads:-1': expected threads or processes"),
    ("numpy", "cores", "data.workers='cores': expected threads or processes"),
])
def test_config_check_refuses_bad_data_workers(backend, workers, message):
  config = config_utils.load_config("configs/tiny.py")
  config.data.backend = backend
  config.data.workers = workers
  with pytest.raises(config_utils.ConfigError, match=message):
    config_utils.validate_data(config)


def test_config_check_accepts_data_workers():
  for workers, parsed in (("threads", ("threads", -1)), ("threads:3", ("threads", 3)),
                          ("processes", ("processes", -1)), ("processes:2", ("processes", 2))):
    config = config_utils.load_config("configs/tiny.py", ["data.backend=numpy",
                                                          f"data.workers={workers}"])
    assert config_utils.parse_workers(config.data.workers) == parsed
  config_utils.validate_data(config_utils.load_config("configs/tiny.py"))  # tf, threads


@pytest.mark.parametrize("old", ["threads", "num_parallel_calls", "processes"])
def test_the_old_input_parallelism_names_fail_in_one_line_naming_data_workers(old):
  # On the command line...
  with pytest.raises(config_utils.ConfigError) as raised:
    config_utils.load_config("configs/tiny.py", [f"data.{old}=2"])
  message = str(raised.value)
  assert f"data.{old} was replaced by data.workers" in message and "\n" not in message
  # ... and in a config file of one's own that still sets it.
  config = config_utils.load_config("configs/tiny.py")
  config.data[old] = 2
  with pytest.raises(config_utils.ConfigError, match=f"data.{old} was replaced by data.workers"):
    config_utils.validate_data(config)


def test_minus_one_means_one_per_usable_cpu_not_per_node_cpu(tmp_path, textured, monkeypatch, caplog):
  # 8 SLURM tasks on a 64-CPU node, each bound to 2 CPUs: 2 threads / worker processes each.
  monkeypatch.setattr(os, "cpu_count", lambda: 64)
  monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {4, 5}, raising=False)
  monkeypatch.setattr(batches, "_CPUS_LOGGED", False, raising=False)
  config = _config(tmp_path, textured)
  maker = batches.build_sample_maker(config)
  with caplog.at_level("INFO", logger="data_pipelines.batches"):
    for workers in ("threads", "processes"):
      config.data.workers = workers
      it = numpy_sampler.make_dataset(config, sample_maker=maker)  # no worker starts before next()
      assert it._on_close.__self__._pool._max_workers == 2
      it.close()
  lines = [r.getMessage() for r in caplog.records if "CPUs usable" in r.getMessage()]
  assert lines == ["input workers: 2 CPUs usable by this process (os.sched_getaffinity; the node has 64)"]


def test_a_bug_in_the_decode_step_raises_instead_of_counting_a_corrupt_frame(tmp_path, textured,
                                                                            monkeypatch):
  config = _config(tmp_path, textured)
  maker = batches.build_sample_maker(config)

  def buggy_decode(*args):
    raise TypeError("a bug in the decode step")

  monkeypatch.setattr(numpy_sampler, "decode_window", buggy_decode)
  it = numpy_sampler.make_dataset(config, sample_maker=maker)
  try:
    with pytest.raises(TypeError, match="a bug in the decode step"):
      next(it)
  finally:
    it.close()
  assert maker.error is None


@pytest.mark.parametrize("module", [numpy_sampler, sampler], ids=["numpy", "tf"])
def test_file_names_that_are_not_utf8_are_sampled(tmp_path, module):
  # POSIX file names are bytes; Python lists a non-UTF-8 one with surrogate escapes.
  root = str(tmp_path / "tnl2k")
  _write_tnl2k(root, 2, 3, np.random.default_rng(2), size=(96, 72), ext=".jpg")
  os.rename(os.path.join(root, "seq1"), os.path.join(os.fsencode(root), b"seq\xff\xfe"))
  config = _config(tmp_path, root)
  it = module.make_dataset(config, batch_size=8, debug=True)
  try:
    batch = next(it)
  finally:
    it.close()
  assert set(batch["debug_sequence"].tolist()) == {0, 1} and not batch["replaced"].any()
  assert it.stats()["replaced"] == 0


def _write_marker_videos(root, sides, frame=1024):
  """One 2-frame JPEG video per box side: a red square (the target) centred off the 8x8 JPEG
  grid on a mid-grey, lightly textured frame."""
  rng = np.random.default_rng(11)
  for i, side in enumerate(sides):
    d = os.path.join(root, f"seq{i}")
    os.makedirs(os.path.join(d, "imgs"))
    lines = []
    for t in range(2):
      x, y = 301 + 7 * t, 277 + 5 * t
      img = np.clip(rng.normal(128, 6, (frame, frame, 3)), 0, 255).astype(np.uint8)
      img[y:y + side, x:x + side] = (230, 20, 20)
      Image.fromarray(img).save(os.path.join(d, "imgs", f"{t + 1:05d}.jpg"), quality=95)
      lines.append(f"{x},{y},{side},{side}")
    with open(os.path.join(d, "groundtruth.txt"), "w") as f:
      f.write("\n".join(lines) + "\n")
    with open(os.path.join(d, "language.txt"), "w") as f:
      f.write("the red box\n")


def _red_centroid(crop):
  """(x, y) in pixel-index coordinates: the redness-weighted centroid of a uint8 [H, W, 3] crop."""
  redness = np.clip(crop[..., 0].astype(float) - crop[..., 1].astype(float) - 40, 0, None)
  ys, xs = np.mgrid[:crop.shape[0], :crop.shape[1]]
  return np.array([(xs * redness).sum(), (ys * redness).sum()]) / redness.sum()


@pytest.mark.parametrize("module", [sampler, numpy_sampler], ids=["tf", "numpy"])
def test_marker_lands_where_the_box_says_in_dct_scaled_crops(tmp_path_factory, tmp_path, module):
  # The geometry a model learns from: the target's centre in the crop is the label's centre, also
  # when the frame was decoded at 1/2, 1/4 or 1/8 scale (crop shrink 3, 6, 12). Required: within
  # 1 px. Measured: at most 0.11 px in both backends. Asserted: 0.25 px, because a window off by
  # one decoded pixel at 1/8 scale moves the marker by only 0.4-0.7 px here (tried), which 1 px
  # would let through.
  root = str(tmp_path_factory.getbasetemp() / "marker_videos")
  if not os.path.isdir(root):
    _write_marker_videos(root, sides=(96, 192, 384))
  config = _config(tmp_path, root, grayscale_prob=0.0, brightness_jitter=0.0, flip_prob=0.5,
                   search_scale_jitter=0.0, search_center_jitter=0.5, jpeg_dct_oversample=1.0,
                   sequence_order="epoch")
  it = module.make_dataset(config, batch_size=12, debug=True)
  try:
    batch = next(it)
  finally:
    it.close()
  seen = set()
  for name, size in (("template", config.model.template_size), ("search", config.model.search_size)):
    ratios = batch["debug_dct_ratio"][:, 0 if name == "template" else 1]
    for row in range(len(ratios)):
      want = batch[f"{name}_box"][row, :2] * size - 0.5  # centre, pixel-index coordinates
      got = _red_centroid(batch[name][row])
      assert np.abs(got - want).max() <= 0.25, (name, row, int(ratios[row]), got, want)
      seen.add(int(ratios[row]))
  assert {2, 4, 8} <= seen
