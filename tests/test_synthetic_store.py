"""A generated synthetic data set records what produced it and is generated again when the request
differs (data_pipelines/synthetic_store.py)."""
import json
import os

import pytest

from data_pipelines import synthetic, synthetic_store
from satracker_jax import config_utils


def _config(**synthetic_fields):
  config = config_utils.load_config("configs/synthetic.py:runlocal")
  config.data.synthetic.update(dict(sequences=3, frames=3, size="96x72", seed=0, test_sequences=1))
  config.data.synthetic.update(synthetic_fields)
  return config


def _frame(root, index=2):
  with open(os.path.join(root, "test", synthetic.sequence_name(index), "imgs", "00001.jpg"), "rb") as f:
    return f.read()


def test_same_request_reuses_another_one_regenerates(tmp_path):
  root = str(tmp_path / "synthetic")
  fp, generated = synthetic_store.ensure_generated(_config(), root, progress=False)
  assert generated
  with open(os.path.join(root, ".complete")) as f:
    recorded = json.load(f)
  assert recorded == fp and recorded["seed"] == 0 and recorded["sequences"] == 3
  assert recorded["size"] == [96, 72] and recorded["generator_version"] == synthetic.GENERATOR_VERSION
  seed0 = _frame(root)
  stamp = os.stat(os.path.join(root, "meta.json")).st_mtime_ns

  assert synthetic_store.ensure_generated(_config(), root, progress=False) == (fp, False)
  assert os.stat(os.path.join(root, "meta.json")).st_mtime_ns == stamp  # not rewritten

  fp1, generated = synthetic_store.ensure_generated(_config(seed=1), root, progress=False)
  assert generated and fp1["seed"] == 1 and _frame(root) != seed0
  with open(os.path.join(root, "meta.json")) as f:
    assert json.load(f)["seed"] == 1


def test_fewer_sequences_leave_no_old_video_behind(tmp_path):
  root = str(tmp_path / "synthetic")
  synthetic_store.ensure_generated(_config(sequences=4), root, progress=False)
  assert os.path.isdir(os.path.join(root, "train", synthetic.sequence_name(2)))
  _, generated = synthetic_store.ensure_generated(_config(sequences=3), root, progress=False)
  assert generated
  names = sorted(os.listdir(os.path.join(root, "train")) + os.listdir(os.path.join(root, "test")))
  assert names == [synthetic.sequence_name(i) for i in range(3)]


def test_generator_version_and_unrecorded_roots_regenerate(tmp_path, monkeypatch):
  root = str(tmp_path / "synthetic")
  synthetic_store.ensure_generated(_config(), root, progress=False)
  monkeypatch.setattr(synthetic, "GENERATOR_VERSION", synthetic.GENERATOR_VERSION + 1)
  assert synthetic_store.ensure_generated(_config(), root, progress=False)[1]
  open(os.path.join(root, ".complete"), "w").close()  # a root from before fingerprints
  assert synthetic_store.ensure_generated(_config(), root, progress=False)[1]


def test_a_root_with_foreign_files_is_never_cleared(tmp_path):
  root = tmp_path / "synthetic"
  root.mkdir()
  (root / "my_notes.txt").write_text("keep me")
  with pytest.raises(ValueError, match=r"my_notes\.txt.*refusing to clear"):
    synthetic_store.ensure_generated(_config(), str(root), progress=False)
  assert (root / "my_notes.txt").read_text() == "keep me"
