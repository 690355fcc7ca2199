"""A shortened `satracker demo` end to end: every report file exists and the metrics are finite."""
import json
import math
import os

from PIL import Image

from satracker_jax import cli


def test_short_demo_writes_complete_report(tmp_path, capsys):
  workdir = str(tmp_path / "demo")
  rc = cli.main(["demo", "--workdir", workdir, "--config", "configs/synthetic.py:runlocal",
                 "--steps", "4", "--no-progress"])
  assert rc == 0
  report = os.path.join(workdir, "report")
  for name in ("metrics.json", "per_sequence.csv", "results.md", "success.png", "precision.png",
               "norm_precision.png", "tracked.gif", "demo.json"):
    path = os.path.join(report, name)
    assert os.path.isfile(path) and os.path.getsize(path) > 0, path

  with open(os.path.join(report, "metrics.json")) as f:
    metrics = json.load(f)
  assert set(metrics) == {"full"}
  entry = metrics["full"]
  assert set(entry) == {"auc", "precision", "norm_precision", "num_sequences"}
  assert entry["num_sequences"] == 4  # runlocal holds out 4 test sequences
  for key in ("auc", "precision", "norm_precision"):
    assert math.isfinite(entry[key]) and 0.0 <= entry[key] <= 1.0

  with Image.open(os.path.join(report, "tracked.gif")) as gif:
    assert gif.n_frames == 24  # runlocal videos have 24 frames: one GIF frame each
  out = capsys.readouterr().out
  assert "metrics.json" in out and "tracked.gif" in out  # the summary says where things are

  # A second run finds everything done: no retraining, no re-tracking, same metrics.
  rc = cli.main(["demo", "--workdir", workdir, "--config", "configs/synthetic.py:runlocal",
                 "--steps", "4", "--no-progress"])
  assert rc == 0
  with open(os.path.join(report, "metrics.json")) as f:
    assert json.load(f) == metrics
  assert "already have results" in capsys.readouterr().out
