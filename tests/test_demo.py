"""A shortened `satracker demo` end to end: every report file exists, the metrics are finite, and a
re-run reuses exactly what the same request produced and nothing else (issue 13)."""
import json
import math
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from satracker_jax import cli

# runlocal data (12 short videos) and a model shrunk further than tiny: every code path of the
# demo, a fraction of the compile time (each demo run compiles a train step and a tracker step).
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RUNLOCAL = ["--config", "configs/synthetic.py:runlocal", "--no-progress"] + [f"--config.{o}" for o in (
    "model.vit.depth=2", "model.vit.dim=64", "model.vit.heads=2", "model.bert.dim=64",
    "model.bert.heads=2", "model.bert.intermediate=128", "model.text_layer_map=(0,1)",
    "model.tem_layers=(0,)", "model.sam_layers=(1,)", "model.dm_layers=(1,)", "model.fusion_heads=2",
    "model.head_channels=16", "model.search_size=64", "model.template_size=32",
    "model.max_text_len=16", "model.dm_dim=32")]


def _demo(workdir, *args):
  rc = cli.main(["demo", "--workdir", str(workdir), *RUNLOCAL, *args])
  assert rc == 0


def _read_json(path):
  with open(path) as f:
    return json.load(f)


def _mtimes(folder, suffix=""):
  """Modification times of a folder's entries (the readers' index caches aside: a copied folder
  gets new ones)."""
  return {n: os.stat(os.path.join(folder, n)).st_mtime_ns for n in sorted(os.listdir(folder))
          if n.endswith(suffix) and not n.startswith(".satracker_index_")}


@pytest.fixture(scope="module")
def four_step_demo(tmp_path_factory):
  """`satracker demo --steps 4` once, as a user runs it (a fresh process, its whole console kept);
  each test works on its own copy of the workdir."""
  workdir = tmp_path_factory.mktemp("demo4") / "demo"
  env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
  p = subprocess.run([sys.executable, "-c", "import sys; from satracker_jax import cli; "
                      "sys.exit(cli.main(sys.argv[1:]))", "demo", "--workdir", str(workdir),
                      *RUNLOCAL, "--steps", "4"], cwd=REPO, env=env, stdout=subprocess.PIPE,
                     stderr=subprocess.STDOUT, text=True, timeout=600)
  assert p.returncode == 0, p.stdout[-4000:]
  (workdir / "console.txt").write_text(p.stdout)
  return workdir


def _copy(four_step_demo, tmp_path):
  workdir = tmp_path / "demo"
  shutil.copytree(four_step_demo, workdir)
  return workdir


def test_short_demo_writes_complete_report(four_step_demo, tmp_path, capsys):
  workdir = _copy(four_step_demo, tmp_path)
  report = os.path.join(workdir, "report")
  for name in ("metrics.json", "per_sequence.csv", "results.md", "success.png", "precision.png",
               "norm_precision.png", "tracked.gif", "demo.json"):
    path = os.path.join(report, name)
    assert os.path.isfile(path) and os.path.getsize(path) > 0, path

  metrics = _read_json(os.path.join(report, "metrics.json"))
  assert set(metrics) == {"full"}
  entry = metrics["full"]
  assert {"auc", "precision", "norm_precision", "num_sequences"} <= set(entry)
  assert entry["num_sequences"] == 4  # runlocal holds out 4 test sequences
  for key in ("auc", "precision", "norm_precision"):
    assert math.isfinite(entry[key]) and 0.0 <= entry[key] <= 1.0
  demo = _read_json(os.path.join(report, "demo.json"))
  assert set(demo["phase_seconds"]) == {"data", "train", "evaluate", "report"}
  assert demo["variants"]["full"]["final_step"] == 4

  with Image.open(os.path.join(report, "tracked.gif")) as gif:
    assert gif.n_frames == 24  # runlocal videos have 24 frames: one GIF frame each

  # The console: the demo's own lines, the results table once, no library notices or warnings.
  console = (workdir / "console.txt").read_text()
  assert sum(line.startswith("| Tracker") for line in console.splitlines()) == 1, console
  for noise in ("WARNING", "oneDNN", "I0000", "absl"):
    assert noise not in console, console

  # A second identical request finds everything done: no re-generation, no retraining, no
  # re-tracking, same metrics; the last line gives the elapsed time and the AUC.
  results = os.path.join(workdir, "results", "full", "nl_bb")
  before = _mtimes(results, ".txt"), _mtimes(os.path.join(workdir, "synthetic"))
  capsys.readouterr()
  _demo(workdir, "--steps", "4")
  out = capsys.readouterr().out
  assert (_mtimes(results, ".txt"), _mtimes(os.path.join(workdir, "synthetic"))) == before
  assert _read_json(os.path.join(report, "metrics.json")) == metrics
  assert "already trained (4 steps)" in out and "training 4 steps" not in out
  assert "synthetic data already in" in out and "metrics.json" in out and "tracked.gif" in out
  last = out.strip().splitlines()[-1]
  assert last.startswith("[demo] done in ") and f"AUC {100 * entry['auc']:.2f}" in last


def test_more_steps_in_the_same_workdir_report_the_new_model(four_step_demo, tmp_path, capsys):
  from data_pipelines import readers
  from satracker_jax import model_io
  from satracker_jax.evaluation import results_io, runner
  workdir = _copy(four_step_demo, tmp_path)
  capsys.readouterr()
  _demo(workdir, "--steps", "6")
  out = capsys.readouterr().out
  assert "holds a training run of another request" in out
  assert "holds results of another model" in out
  demo = _read_json(os.path.join(workdir, "report", "demo.json"))
  assert demo["variants"]["full"]["final_step"] == 6
  assert _read_json(os.path.join(workdir, "results", "full", "nl_bb", "demo_model.json"))["step"] == 6
  # The reported metrics are those of the model now in runs/full, tracked from scratch.
  config, variables = model_io.load_variables(str(workdir / "runs" / "full"))
  sequences = readers.load_dataset("synthetic", str(workdir / "synthetic"), "test")
  fresh = runner.evaluate(config, variables, sequences, str(tmp_path / "fresh"), progress=False,
                          dataset="synthetic", name="full", write_report=False)["full"]
  reported = _read_json(os.path.join(workdir, "report", "metrics.json"))["full"]
  for key in ("auc", "precision", "norm_precision"):
    assert reported[key] == pytest.approx(fresh[key], abs=1e-9)
  for seq in sequences:
    np.testing.assert_array_equal(
        results_io.read_boxes(results_io.results_path(str(workdir / "results" / "full" / "nl_bb"), seq.name)),
        results_io.read_boxes(results_io.results_path(str(tmp_path / "fresh"), seq.name)))


def test_another_seed_regenerates_the_data_and_changes_the_run_identity(four_step_demo, tmp_path, capsys):
  # The parts of `satracker demo --seed 1` that differ from the --steps case above (which runs the
  # retrain/re-track path end to end): the data step and the identity the run folders are kept by.
  from satracker_jax import config_utils, demo
  workdir = _copy(four_step_demo, tmp_path)
  first_frame = os.path.join(workdir, "synthetic", "test", "synth_00008", "imgs", "00001.jpg")
  with open(first_frame, "rb") as f:
    seed0_bytes = f.read()
  config = config_utils.load_config("configs/synthetic.py:runlocal")
  seed0 = demo.run_identity(config, demo._prepare_data(config, str(workdir), False)[1])
  assert _read_json(os.path.join(workdir, "runs", "full", "demo_run.json"))["data"] == seed0["data"]
  capsys.readouterr()

  config.seed = config.data.synthetic.seed = 1  # what --seed 1 sets
  root, fingerprint = demo._prepare_data(config, str(workdir), False)
  assert "replacing the data there: seed changed" in capsys.readouterr().out
  assert _read_json(os.path.join(root, "meta.json"))["seed"] == 1 and fingerprint["seed"] == 1
  with open(first_frame, "rb") as f:
    assert f.read() != seed0_bytes  # new videos, not the seed-0 ones
  seed1 = demo.run_identity(config, fingerprint)
  assert seed1["config_sha256"] != seed0["config_sha256"] and seed1["data"] != seed0["data"]

  # A folder stamped with another identity is deleted before it is used; a matching one is kept.
  run_dir = os.path.join(workdir, "runs", "full")
  demo._keep_only_if(run_dir, "demo_run.json", seed1, "a training run", "full")
  assert "holds a training run of another request" in capsys.readouterr().out
  assert os.listdir(run_dir) == ["demo_run.json"] and _read_json(os.path.join(run_dir, "demo_run.json")) == seed1
  demo._keep_only_if(run_dir, "demo_run.json", seed1, "a training run", "full")
  assert "another request" not in capsys.readouterr().out


def test_changing_only_the_steps_changes_the_run_identity():
  from satracker_jax import config_utils, demo
  config = config_utils.load_config("configs/synthetic.py:runlocal")
  a = demo.run_identity(config, {"seed": 0})
  config.train.total_steps += 1
  assert demo.run_identity(config, {"seed": 0}) != a


def test_seeds_and_protocols_add_runs_and_resume(four_step_demo, tmp_path, capsys):
  """`--seeds 2 --protocols nl_bb,nl`: the 4-step seed-0 run is reused, one more training seed
  is trained on the same data, each model is evaluated under both protocols, and the report gives
  mean ± std; an interrupted second run (its folder lost) is redone alone on the next call."""
  workdir = _copy(four_step_demo, tmp_path)
  data_before = _mtimes(os.path.join(workdir, "synthetic"))
  capsys.readouterr()
  _demo(workdir, "--steps", "4", "--seeds", "2", "--protocols", "nl_bb,nl")
  out = capsys.readouterr().out
  assert "[full] already trained (4 steps)" in out and "[full_seed1] training 4 steps" in out
  assert _mtimes(os.path.join(workdir, "synthetic")) == data_before  # same data for every seed
  run1 = _read_json(os.path.join(workdir, "runs", "full_seed1", "demo_run.json"))
  run0 = _read_json(os.path.join(workdir, "runs", "full", "demo_run.json"))
  assert run1["data"] == run0["data"] and run1["config_sha256"] != run0["config_sha256"]
  for name in ("full", "full_seed1"):
    for protocol in ("nl_bb", "nl"):
      provenance = os.path.join(workdir, "results", name, protocol, "provenance.json")
      assert os.path.isfile(provenance)
  ablations = _read_json(os.path.join(workdir, "report", "ablations.json"))
  assert ablations["protocols"] == ["nl_bb", "nl"] and ablations["seeds"] == 2
  full = ablations["variants"]["full"]
  assert full["runs"] == ["full", "full_seed1"]
  demo_json = _read_json(os.path.join(workdir, "report", "demo.json"))
  for protocol in ("nl_bb", "nl"):
    aucs = [100 * demo_json["variants"][n][protocol]["auc"] for n in full["runs"]]
    assert full[protocol]["auc"] == pytest.approx(aucs)
  grounding = full["nl"]["grounding_single_frame"]
  assert len(grounding) == 2 and all(0.0 <= g <= 100.0 for g in grounding)
  table = (workdir / "report" / "ablations.md").read_text()
  assert "| full " in table and "2/2" in table and "nl grounding" in table
  assert os.path.getsize(os.path.join(workdir, "report", "ablations.png")) > 0
  last = out.strip().splitlines()[-1]
  assert "sentence only (nl): AUC" in last and "frame-0 grounding" in last

  shutil.rmtree(os.path.join(workdir, "runs", "full_seed1"))  # as if killed before its first save
  capsys.readouterr()
  _demo(workdir, "--steps", "4", "--seeds", "2", "--protocols", "nl_bb,nl")
  out = capsys.readouterr().out
  assert "[full] already trained" in out and "[full_seed1] training 4 steps" in out
  # Same seed, same data: the retrained run is the same model, so the same scores.
  again = _read_json(os.path.join(workdir, "report", "ablations.json"))["variants"]["full"]
  assert again["nl_bb"]["auc"] == pytest.approx(full["nl_bb"]["auc"], abs=1e-9)


def test_ablation_table_mean_and_spread():
  from satracker_jax import demo
  row = lambda auc, g: {"nl_bb": {"auc": auc, "precision": auc, "norm_precision": auc},
                        "nl": {"auc": auc / 2, "precision": auc, "norm_precision": auc,
                               "grounding_single_frame": g}}
  rows = {"full": row(0.60, 0.5), "no_text": row(0.50, 0.1), "full_seed1": row(0.64, 0.7)}
  variants = {"full": "full", "no_text": "no_text", "full_seed1": "full"}
  summary = demo.ablation_summary(rows, variants, ("nl_bb", "nl"))
  assert summary["full"]["nl_bb"]["auc"] == pytest.approx([60.0, 64.0])
  table = demo._ablation_table(summary, ("nl_bb", "nl"), seeds=2)
  # mean 62.00, sample std of (60, 64) = 2.83; one seed: the value alone; grounding 60 ± 14.14.
  assert "62.00 ± 2.83" in table and "| 50.00 " in table and "60.00 ± 14.14" in table
  assert "2/2" in table and "1/2" in table


def test_bad_protocols_are_one_line_errors(tmp_path, capsys):
  assert cli.main(["demo", "--workdir", str(tmp_path / "w"), *RUNLOCAL, "--protocols", "nl"]) == 2
  assert cli.main(["demo", "--workdir", str(tmp_path / "w"), *RUNLOCAL, "--protocols", "nl_bb,x"]) == 2
  assert cli.main(["demo", "--workdir", str(tmp_path / "w"), *RUNLOCAL, "--seeds", "0"]) == 2
  err = capsys.readouterr().err
  assert "need nl_bb" in err and "--seeds 0" in err
  assert not os.path.exists(tmp_path / "w" / "synthetic")


def test_the_run_identity_carries_the_training_code_version(tmp_path, monkeypatch):
  # After an update of the model, losses, train loop or input pipeline, an old model must not be
  # reused: the identity the run folders are kept by changes with the code.
  from satracker_jax import config_utils, demo
  config = config_utils.load_config("configs/synthetic.py:runlocal")
  names = [name for name, _ in demo._training_code_files()]
  for must in ("satracker_jax/models/satracker.py", "satracker_jax/train/loop.py",
               "satracker_jax/losses.py", "data_pipelines/processing.py"):
    assert must.replace("/", os.sep) in names
  assert not any(n.startswith(os.path.join("satracker_jax", "cli")) for n in names)
  before = demo.run_identity(config, {"seed": 0})
  assert before["code"] == demo.training_code_version()
  # The same sources with one line changed in the loss (a copy: the repository stays untouched).
  files = demo._training_code_files()
  edited = []
  for name, path in files:
    if name.endswith("losses.py"):
      copy = tmp_path / "losses.py"
      copy.write_bytes(open(path, "rb").read() + b"\n# a fix\n")
      path = str(copy)
    edited.append((name, path))
  monkeypatch.setattr(demo, "_training_code_files", lambda: edited)
  after = demo.run_identity(config, {"seed": 0})
  assert after["code"] != before["code"] and after["config_sha256"] == before["config_sha256"]


def test_a_folder_the_demo_did_not_stamp_is_never_deleted(tmp_path, capsys):
  from satracker_jax import config_utils, demo
  run_dir = tmp_path / "runs" / "full"
  run_dir.mkdir(parents=True)
  (run_dir / "my_model.npz").write_bytes(b"weights of my own")
  with pytest.raises(config_utils.ConfigError, match=r"full: not made by the demo \(no demo_run\.json\)"):
    demo._keep_only_if(str(run_dir), "demo_run.json", {"x": 1}, "a training run", "full")
  assert (run_dir / "my_model.npz").read_bytes() == b"weights of my own"
  # An empty folder is simply taken; a stamped one of another request is replaced, saying so.
  empty = tmp_path / "runs" / "no_tem"
  empty.mkdir()
  demo._keep_only_if(str(empty), "demo_run.json", {"x": 1}, "a training run", "no_tem")
  assert os.listdir(empty) == ["demo_run.json"] and "deleting" not in capsys.readouterr().out
  demo._keep_only_if(str(empty), "demo_run.json", {"x": 2}, "a training run", "no_tem")
  assert "holds a training run of another request; deleting it" in capsys.readouterr().out
