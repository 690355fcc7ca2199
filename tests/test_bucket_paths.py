"""Output paths may be bucket URLs (satracker_jax/paths.py): a run, its checkpoints, metrics and
resume land under gs:// and nothing is created in the working directory. gs:// is a local stand-in
here (tests/fake_bucket.py): Orbax, TensorStore and epath run their GCS code paths on it."""
import json
import os

import numpy as np
import pytest

from satracker_jax import config_utils, paths
from satracker_jax.cli import main as cli_main
import fake_bucket
import train_helpers as th

REPO = th.REPO
# The tiny model made smaller still: fewer arrays for Orbax to write and read.
SMALL_MODEL = ["model.vit.depth=2", "model.vit.dim=64", "model.vit.heads=2", "model.bert.dim=64",
               "model.bert.heads=2", "model.bert.intermediate=128", "model.text_layer_map=(0,1)",
               "model.tem_layers=(0,)", "model.sam_layers=(1,)", "model.dm_layers=(1,)",
               "model.fusion_heads=2", "model.head_channels=16", "model.dm_dim=32"]


@pytest.fixture
def bucket(tmp_path, monkeypatch):
  """gs://... kept under tmp/bucket; the test runs in an empty tmp/cwd folder."""
  root = tmp_path / "bucket"
  root.mkdir()
  cwd = tmp_path / "cwd"
  cwd.mkdir()
  monkeypatch.chdir(cwd)
  fake_bucket.install(monkeypatch, root)
  return root, cwd


def _tiny_standin_config():
  config = config_utils.load_config(os.path.join(REPO, "configs", "tiny.py"))
  config.model.template_size, config.model.search_size, config.model.max_text_len = 16, 32, 8
  config.train.update(batch_size=4, total_steps=4, checkpoint_every=2, log_every=1, tensorboard=True)
  return config


def test_paths_keep_urls_and_make_local_paths_absolute(tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  assert paths.is_url("gs://b/run") and not paths.is_url("runs/gs:") and not paths.is_url("/a/b")
  assert paths.join("gs://b/run", "checkpoints") == "gs://b/run/checkpoints"
  assert paths.join("runs/x", "checkpoints") == str(tmp_path / "runs" / "x" / "checkpoints")
  assert paths.bucket_of("gs://my-bucket/a/b") == "gs://my-bucket"
  (tmp_path / "file").write_text("")
  with pytest.raises(paths.OutputPathError, match=r"^out .*file/sub: cannot create it \("):
    paths.ensure_dir(tmp_path / "file" / "sub", "out")


def test_a_run_its_checkpoints_metrics_and_resume_land_in_the_bucket(bucket):
  from satracker_jax.train import loop
  root, cwd = bucket
  config = _tiny_standin_config()
  run = lambda: loop.train(config, "gs://fake-bucket/run", model=th.standin_model(),
                           loss_fn=th.standin_loss, dataset_fn=th.standin_dataset(0))
  assert run()["step"] == 4
  config.train.total_steps = 6
  summary = run()  # resumes from gs://fake-bucket/run/checkpoints/4
  assert summary["step"] == 6
  workdir = root / "fake-bucket" / "run"
  assert sorted(os.listdir(workdir / "checkpoints")) == ["2", "4", "6"]
  # Orbax took its GCS path (a commit file instead of an atomic rename).
  assert (workdir / "checkpoints" / "6" / "commit_success.txt").exists()
  steps = [json.loads(line)["step"] for line in (workdir / "metrics.jsonl").read_text().splitlines()]
  assert steps == [1, 2, 3, 4, 5, 6]  # the resumed run appended to the same object
  assert any(n.startswith("events.out.tfevents.") for n in os.listdir(workdir / "tensorboard"))
  assert os.listdir(cwd) == []  # no ./gs:/fake-bucket/run


def test_a_trained_model_loads_from_a_bucket_workdir_and_exports_back(bucket):
  # eval / track / export read a bucket workdir; the export to a bucket loads like a workdir.
  from satracker_jax import export, model_io
  from satracker_jax.train import checkpoint as ckpt_lib
  root, cwd = bucket
  config = config_utils.load_config(os.path.join(REPO, "configs", "tiny.py"), SMALL_MODEL)
  rng = np.random.default_rng(0)
  variables = {part: __import__("jax").tree.map(
      lambda a: rng.standard_normal(a.shape).astype(a.dtype), tree)
      for part, tree in model_io.abstract_variables(config).items()}
  state = {**variables, "opt_state": {"mu": np.zeros(3, np.float32)}, "step": np.int32(2)}
  ckpt = ckpt_lib.Checkpointer("gs://fake-bucket/run", config)
  ckpt.save(2, state, {"next_sample_index": 8}, 0.5, True)
  ckpt.wait()
  ckpt.close()
  assert model_io.describe_source("gs://fake-bucket/run") == "checkpoint"
  assert model_io.checkpoint_dir("gs://fake-bucket/run") == "gs://fake-bucket/run/checkpoints"
  _, got = model_io.load_variables("gs://fake-bucket/run")
  np.testing.assert_array_equal(np.asarray(got["params"]["vit_norm"]["scale"]),
                                variables["params"]["vit_norm"]["scale"])
  export.save_model_folder("gs://fake-bucket/model", config, got)
  assert model_io.describe_source("gs://fake-bucket/model") == "model_folder"
  loaded_config, again = model_io.load_variables("gs://fake-bucket/model")
  assert loaded_config.model.to_dict() == config.model.to_dict()
  np.testing.assert_array_equal(np.asarray(again["params"]["vit_norm"]["scale"]),
                                variables["params"]["vit_norm"]["scale"])
  assert not (root / "fake-bucket" / "model" / "opt_state").exists()
  assert os.listdir(cwd) == []


@pytest.mark.parametrize("verb", ["train", "eval", "export"])
def test_a_bucket_that_cannot_be_written_stops_the_verb_in_one_line(tmp_path, monkeypatch, capsys, verb):
  cwd = tmp_path / "cwd"
  cwd.mkdir()
  monkeypatch.chdir(cwd)
  fake_bucket.install(monkeypatch, tmp_path, denied=True)
  config = os.path.join(REPO, "configs", "synthetic.py")
  argv = {"train": ["train", "--config", config, "--workdir", "gs://some-bucket/run"],
          "eval": ["eval", "--config", config, "--dataset", "synthetic", "--root", str(tmp_path),
                   "--out", "gs://some-bucket/eval"],
          "export": ["export", "--config", config, "--format", "orbax", "--out", "gs://some-bucket/m"]}[verb]
  assert cli_main(argv) == 2
  err = capsys.readouterr().err.strip()
  assert len(err.splitlines()) == 1, err
  assert "gs://some-bucket" in err and "cannot write to bucket" in err and "403" in err, err
  assert os.listdir(cwd) == []  # no ./gs: folder, no synthetic data generated


def test_train_stops_in_one_line_when_jax_cannot_see_the_requested_platform(tmp_path, capsys):
  import jax
  other = "tpu" if jax.default_backend() != "tpu" else "gpu"
  workdir = tmp_path / "run"
  argv = ["train", "--config", os.path.join(REPO, "configs", "tiny.py"), "--workdir", str(workdir),
          f"--config.train.platform={other}"]
  assert cli_main(argv) == 2
  err = capsys.readouterr().err.strip()
  assert len(err.splitlines()) == 1, err
  assert f"train.platform={other} but the installed JAX" in err and "make env ACCEL=" in err, err
  assert not workdir.exists()
  assert __import__("satracker_jax.cli.train", fromlist=["x"]).platform_problem(
      jax.default_backend()) == ""


def test_the_numpy_input_backend_refuses_a_bucket_data_root_in_one_line():
  from data_pipelines import numpy_sampler
  config = config_utils.load_config(os.path.join(REPO, "configs", "synthetic.py"),
                                    ["data.backend=numpy", "data.datasets.synthetic.root=gs://b/syn"])
  with pytest.raises(ValueError, match=r"^data\.datasets\.synthetic\.root=gs://b/syn: "
                                       r"data\.backend=numpy reads a local or mounted folder only"):
    numpy_sampler.make_dataset(config)
