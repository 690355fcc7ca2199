"""Training data on a bucket (data_pipelines/files.py): a data root may be a URL, which the readers
index and the tf.data sampler reads exactly as the same data in a local folder; the numpy backend
refuses it in one line. The bucket is TensorFlow's in-memory file system `ram://`, a real
scheme-bearing file system reached through `tf.io.gfile` as gs:// is, offline. It keeps no
mtimes (every file reads 0), so an edit here is seen by its size."""
import os
import shutil
import subprocess
import sys
import uuid

import numpy as np
import pytest

from data_pipelines import files, readers, synthetic
from satracker_jax import cli, config_utils

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
tf = pytest.importorskip("tensorflow")


def _upload(local: str, url: str) -> None:
  """Copies the folder `local` to `url`, recursively."""
  for folder, _, names in os.walk(local):
    target = os.path.join(url, os.path.relpath(folder, local)) if folder != local else url
    tf.io.gfile.makedirs(target)
    for name in names:
      tf.io.gfile.copy(os.path.join(folder, name), os.path.join(target, name))


def _write(url: str, text: str) -> None:
  if tf.io.gfile.exists(url):
    tf.io.gfile.remove(url)  # ram:// appends to an existing file opened with "w"
  with tf.io.gfile.GFile(url, "w") as f:
    f.write(text)


@pytest.fixture(scope="module")
def local_root(tmp_path_factory):
  """A tiny synthetic data set in a local folder: 4 videos (3 train, 1 test) of 4 frames."""
  root = str(tmp_path_factory.mktemp("data") / "synthetic")
  synthetic.generate(root, 4, seed=1, frames=4, size=(64, 48), test_sequences=1, progress=False)
  return root


@pytest.fixture
def bucket(local_root, monkeypatch, tmp_path):
  """A copy of `local_root` at a fresh ram:// URL (deleted afterwards); index caches of URL roots
  go to tmp_path/xdg, not to the user's ~/.cache."""
  monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
  url = f"ram://test-bucket-data/{uuid.uuid4().hex}/synthetic"
  _upload(local_root, url)
  yield url
  tf.io.gfile.rmtree(os.path.dirname(url))


def _relative(sequences, root):
  """Everything a Sequence holds, its frame paths relative to `root`."""
  out = []
  for s in sequences:
    assert all(f.startswith(root + "/") for f in s.frames), (root, s.frames[:1])
    out.append({"name": s.name, "frames": [f[len(root) + 1:] for f in s.frames], "boxes": s.boxes,
                "visible": s.visible, "sentence": s.sentence, "bad_sentence": s.bad_sentence,
                "single_frame": s.single_frame, "absent": s.absent, "attributes": s.attributes})
  return out


def test_the_index_of_a_bucket_root_equals_the_index_of_the_local_copy(local_root, bucket, tmp_path):
  for split, annotations_only in (("train", False), ("test", False), ("all", True)):
    want = readers.load_dataset("synthetic", local_root, split, annotations_only=annotations_only,
                                use_cache=False)
    for url in (bucket, bucket + "/"):  # a trailing slash names the same root
      got = readers.load_dataset("synthetic", url, split, annotations_only=annotations_only,
                                 cache_dir=str(tmp_path / "cache"))
      np.testing.assert_equal(_relative(got, bucket), _relative(want, local_root))
  assert [s.name for s in want] == ["synth_00000", "synth_00001", "synth_00002", "synth_00003"]
  assert all(s.frames for s in readers.load_dataset("synthetic", bucket, "train"))


def test_the_bucket_root_index_is_cached_locally_and_sees_edits_in_the_bucket(local_root, bucket,
                                                                             tmp_path, monkeypatch):
  first = readers.load_dataset("synthetic", bucket, "train")  # cache_dir "": the local default
  cache = readers.default_url_cache_dir()
  assert cache.startswith(str(tmp_path / "xdg"))
  assert [n for n in os.listdir(cache) if n.startswith(".satracker_index_synthetic_train")]
  assert not [n for n in files.listdir(bucket) if n.startswith(".satracker")]  # nothing in the bucket
  calls = []
  real = readers._SCANNERS["synthetic"]
  monkeypatch.setitem(readers._SCANNERS, "synthetic", lambda *a: calls.append(1) or real(*a))
  again = readers.load_dataset("synthetic", bucket, "train")
  assert not calls  # served from the local index
  np.testing.assert_equal(_relative(again, bucket), _relative(first, bucket))
  # An annotation edited in place in the bucket (ram:// has no mtimes: the edit changes the size).
  gt = os.path.join(bucket, "train", "synth_00001", "groundtruth.txt")
  lines = tf.io.gfile.GFile(gt).read().splitlines()
  x, rest = lines[1].split(",", 1)
  _write(gt, "\n".join([lines[0], f"{x}0,{rest}", *lines[2:]]) + "\n")  # x -> 10 x
  edited = readers.load_dataset("synthetic", bucket, "train")
  assert calls and edited[1].boxes[1, 0] == 10 * first[1].boxes[1, 0] > 0
  np.testing.assert_equal(edited[0].boxes, first[0].boxes)
  # A sentence file that appears; a new video (a new name in the split's listing).
  calls.clear()
  tf.io.gfile.remove(os.path.join(bucket, "train", "synth_00002", "language.txt"))
  assert readers.load_dataset("synthetic", bucket, "train")[2].bad_sentence and calls
  _write(os.path.join(bucket, "train", "synth_00002", "language.txt"), "a new sentence\n")
  assert readers.load_dataset("synthetic", bucket, "train")[2].sentence == "a new sentence"
  calls.clear()
  _upload(os.path.join(local_root, "train", "synth_00000"), os.path.join(bucket, "train", "synth_00009"))
  assert readers.load_dataset("synthetic", bucket, "train")[-1].name == "synth_00009" and calls


def test_the_tf_sampler_makes_the_same_first_batch_from_the_bucket(local_root, bucket, tmp_path):
  from data_pipelines import sampler
  vocab = str(tmp_path / "vocab.txt")  # the tokenizer reads a local vocab file
  shutil.copy(os.path.join(local_root, "vocab.txt"), vocab)

  def first_batch(root):
    config = config_utils.load_config(os.path.join(REPO, "configs", "synthetic.py"), [
        "data.backend=tf", f"data.datasets.synthetic.root={root}", f"text.vocab_file={vocab}",
        f"data.cache_dir={tmp_path / 'cache'}", "train.batch_size=4", "data.workers=threads:2",
        "model.template_size=32", "model.search_size=64",
        "data.protocols.nl_bb=0.4", "data.protocols.bb=0.2", "data.protocols.nl=0.4"])
    it = sampler.make_dataset(config, debug=True)
    try:
      return next(it), it.stats()
    finally:
      it.close()

  want, want_stats = first_batch(local_root)
  got, got_stats = first_batch(bucket)
  assert sorted(got) == sorted(want)
  for key in want:
    np.testing.assert_array_equal(got[key], want[key], err_msg=key)
  assert got_stats == want_stats and got_stats["replaced"] == 0


def test_a_missing_or_broken_frame_on_a_bucket_is_replaced_with_its_reason(bucket):
  from data_pipelines import processing
  frame = os.path.join(bucket, "train", "synth_00000", "imgs", "00001.jpg")
  assert processing.frame_header_or_failure(frame).width == 64
  missing, broken = frame.replace("00001", "00099"), frame.replace("00001", "00002")
  _write(broken, "not an image")
  with pytest.raises(processing._Failure) as e:
    processing.frame_header_or_failure(missing)
  assert e.value.reason == processing.REASON_MISSING_FRAME and str(e.value).startswith(missing)
  with pytest.raises(processing._Failure) as e:
    processing.frame_header_or_failure(broken)
  assert e.value.reason == processing.REASON_CORRUPT_FRAME
  with pytest.raises(FileNotFoundError):
    files.read_bytes(missing)
  assert files.states([missing, frame])[0] == files.MISSING and files.states([frame])[0][0] > 0


def _synthetic_config(root: str, backend: str):
  return config_utils.load_config(os.path.join(REPO, "configs", "synthetic.py"),
                                  [f"data.backend={backend}", f"data.datasets.synthetic.root={root}"])


def test_the_numpy_backend_refuses_a_bucket_root_in_one_line_saying_what_reads_it(bucket):
  from data_pipelines import numpy_sampler
  from satracker_jax.train import loop
  want = (f"data.datasets.synthetic.root={bucket}: data.backend=numpy reads a local or mounted "
          "folder only; data.backend=tf reads a bucket directly")
  with pytest.raises(config_utils.ConfigError) as e:
    loop.check_data_roots(_synthetic_config(bucket, "numpy"))
  assert str(e.value).startswith(want) and "\n" not in str(e.value)
  with pytest.raises(ValueError) as e:
    numpy_sampler.make_dataset(_synthetic_config(bucket, "numpy"))
  assert str(e.value).startswith(want) and "\n" not in str(e.value)
  loop.check_data_roots(_synthetic_config(bucket, "tf"))  # the tf backend takes it


def test_a_missing_bucket_root_is_one_line_naming_the_field(bucket, tmp_path, monkeypatch, capsys):
  from satracker_jax.train import loop
  missing = bucket + "-nope"
  with pytest.raises(config_utils.ConfigError, match=(
      rf"^data\.datasets\.synthetic\.root={missing}: no such folder; give the synthetic data "
      r"set's root \(--config\.data\.datasets\.synthetic\.root=DIR\)$")):
    loop.check_data_roots(_synthetic_config(missing, "tf"))
  monkeypatch.chdir(tmp_path)
  assert cli.main(["train", "--config", os.path.join(REPO, "configs", "synthetic.py"),
                   "--workdir", "w", f"--config.data.datasets.synthetic.root={missing}"]) == 2
  err = capsys.readouterr().err
  assert err == (f"satracker train: data.datasets.synthetic.root={missing}: no such folder; give "
                 "the synthetic data set's root (--config.data.datasets.synthetic.root=DIR)\n"), err
  assert os.listdir(tmp_path) == []  # no workdir, no index


def test_a_local_root_is_read_without_tensorflow(local_root, tmp_path):
  """The file layer imports TensorFlow for URLs only: eval and the tracker read local data
  sets without it."""
  code = ("import sys; from data_pipelines import readers; "
          f"s = readers.load_dataset('synthetic', {local_root!r}, 'train', cache_dir={str(tmp_path)!r}); "
          "assert len(s) == 3 and s[0].frames; sys.exit('tensorflow' in sys.modules)")
  assert subprocess.run([sys.executable, "-c", code], cwd=REPO).returncode == 0


def test_eval_tracks_a_data_set_on_a_bucket_as_the_same_data_in_a_folder(local_root, bucket, tmp_path, monkeypatch):
  """Frames, sentences and provenance read from the URL; the same boxes as from the local copy."""
  import argparse
  import jax.numpy as jnp
  from satracker_jax.cli import common
  from satracker_jax.cli import eval as eval_verb
  from satracker_jax.evaluation import results_io, runner
  from test_runner import BrightnessNet
  from test_tracker import FakeTokenizer
  config = config_utils.load_config("tiny")
  kwargs = dict(apply_fn=BrightnessNet(config.model.search_size // config.model.patch_size),
                tokenizer=FakeTokenizer(config.model.max_text_len), progress=False)
  variables = {"w": jnp.zeros(())}
  boxes = {}
  for where, root in (("local", local_root), ("bucket", bucket)):
    sequences = readers.load_dataset("synthetic", root, "test")
    assert sequences and all(f.startswith(root) for f in sequences[0].frames)
    out = str(tmp_path / where)
    summary = runner.track_sequences(config, variables, sequences, out, **kwargs)
    assert not summary.failed
    boxes[where] = {s.name: results_io.read_boxes(results_io.results_path(out, s.name)) for s in sequences}
  assert boxes["local"].keys() == boxes["bucket"].keys()
  for name in boxes["local"]:
    np.testing.assert_array_equal(boxes["local"][name], boxes["bucket"][name])
  # The verb itself takes the URL (it used to refuse it).
  monkeypatch.setattr(common, "load_model", lambda args, overrides, **_: (config, variables))
  real = runner.evaluate
  monkeypatch.setattr(runner, "evaluate", lambda *a, **k: real(
      *a, **{**k, "apply_fn": kwargs["apply_fn"], "tokenizer": kwargs["tokenizer"]}))
  parser = argparse.ArgumentParser()
  eval_verb.add_arguments(parser)
  args = parser.parse_args(["--dataset", "synthetic", "--root", bucket, "--out", str(tmp_path / "verb"),
                            "--no-progress"])
  assert eval_verb.run(args, []) == 0
