"""`satracker eval` runner: raw results + metrics.json, resumable, serial == batched."""
import json
import os

import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from satracker_jax import config_utils
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


def write_sequences(root, specs):
  """Writes `<root>/test/<seq>/{imgs/*.png, groundtruth.txt, language.txt}` (the synthetic/TNL2K
  layout) and loads it back through the dataset reader, as `satracker eval` does."""
  from data_pipelines.readers import load_dataset
  for name, (h, w), n, seed in specs:
    frames, gts = make_sequence(h, w, n, seed)
    seq_dir = os.path.join(root, "test", name)
    os.makedirs(os.path.join(seq_dir, "imgs"), exist_ok=True)
    for i, frame in enumerate(frames):
      Image.fromarray(frame).save(os.path.join(seq_dir, "imgs", f"{i + 1:05d}.png"))
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
  stamps = {p: os.stat(os.path.join(out, p)).st_mtime_ns for p in os.listdir(out) if p.endswith(".txt")}
  capsys.readouterr()
  again = runner.evaluate(config, variables, sequences, out, parallel=2, **kwargs)
  assert "2 of 2 sequences already have results" in capsys.readouterr().out
  assert again == metrics
  assert stamps == {p: os.stat(os.path.join(out, p)).st_mtime_ns for p in stamps}

  # A truncated result (an interrupted write) is redone, only that one.
  with open(results_io.results_path(out, "seq_b"), "w") as f:
    f.write("1\t2\t3\t4\n")
  runner.evaluate(config, variables, sequences, out, **kwargs)
  assert "1 of 2 sequences already have results" in capsys.readouterr().out


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
