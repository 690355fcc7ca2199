"""The real training runs (subprocesses, fake CPU devices) that tests/test_train_runs*.py share.

One 1-device run is the reference for the loss, the resume and the 1-vs-8-device comparison; one
8-device (data 4 x fsdp 2) run writes the fsdp-sharded checkpoint that 1 and 2 devices restore. Both
save every 3 steps, so their parameters can be compared after the same optimizer steps.

Each run is made once per test session (`th.once_per_session`): test_train_runs_one_device.py
starts the 1-device run and test_train_runs.py the 8-device one, so pytest-xdist runs them on two
workers at once instead of one file holding both (and everything built on them) on one worker.
A test needing the other file's run waits for it or makes it itself, whichever comes first.
"""
import os
import pathlib
import shutil

import train_helpers as th

# The tiny config shrunk further: same code paths (TEM, SAM, DM, head BN), a fraction of the FLOPs.
SMALL = ["model.vit.depth=2", "model.vit.dim=64", "model.vit.heads=2", "model.bert.dim=64",
         "model.bert.heads=2", "model.bert.intermediate=128", "model.text_layer_map=(0,1)",
         "model.tem_layers=(0,)", "model.sam_layers=(1,)", "model.dm_layers=(1,)",
         "model.fusion_heads=2", "model.head_channels=16", "model.search_size=64",
         "model.template_size=32", "model.max_text_len=16", "model.dm_dim=32",
         "train.batch_size=8", "optim.warmup_steps=5", "optim.lr=1e-3", "train.log_every=1",
         "train.keep_checkpoints=2",
         # The numpy input: these runs test sharding, checkpoints and resumes, not the input (the
         # demo's runs and test_sampler.py cover tf.data), and it spares each worker process the
         # TensorFlow import and tf.data start-up (~10 s of CPU per run on the 2-core machine).
         "data.backend=numpy"]
EXTRA = {"mode": "real_data", "config": "configs/synthetic.py:runlocal",
         "train_fields": {"tensorboard": False}}
# The session's persistent compilation cache (tests/conftest.py, inherited through the environment)
# keeps every program however quick its compile: a continuation of a run loads the run's step.
CACHE_ENV = {"JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
             "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "0"}


def extra(**train_fields):
  return {**EXTRA, "train_fields": {**EXTRA["train_fields"], **train_fields}}


def small(tmp_path_factory) -> list:
  """SMALL reading the session's synthetic data: generated once for all runs (each run would
  otherwise generate into its own workdir), at one path, since a resume checks the data root."""
  def generate(folder):
    from satracker_jax import config_utils
    from data_pipelines import synthetic
    synthetic.generate_from_config(config_utils.load_config(EXTRA["config"]), str(folder), progress=False)
    return {"root": str(folder)}
  root = th.once_per_session(tmp_path_factory, "synthetic", generate)["root"]
  return SMALL + [f"data.datasets.synthetic.root={root}"]


def _run(tmp_path_factory, name, devices, overrides, run_extra):
  def make(workdir):
    p = th.run_worker(workdir, devices=devices, overrides=small(tmp_path_factory) + overrides,
                      extra=run_extra, env=CACHE_ENV, check=False, timeout=600)
    assert p.returncode == 0, f"{devices}-device worker failed (rc {p.returncode}):\n{p.stdout[-6000:]}"
    return {"workdir": str(workdir), "result": th.result_of(p.stdout)}
  run = th.once_per_session(tmp_path_factory, name, make)
  return pathlib.Path(run["workdir"]), run["result"]


def one_device_run(tmp_path_factory):
  """(workdir, RESULT): 1 device, a checkpoint every 3 steps, all kept. total_steps 60 (the lr
  schedule of the 8-device run), stopped by a SIGTERM after step 33: the last step a test reads
  (the SIGKILL resume ends there); the 27 steps after it were never looked at."""
  return _run(tmp_path_factory, "run_1dev", 1, ["train.total_steps=60", "train.checkpoint_every=3",
                                                "train.keep_checkpoints=25"], extra(debug_signal=["TERM", 33]))


def eight_device_run(tmp_path_factory):
  """(workdir, RESULT): 8 devices as data 4 x fsdp 2. total_steps 60 like the 1-device run (the
  same lr schedule, step for step); a SIGTERM after step 30 ends it the way a preemption would:
  save, exit 0."""
  return _run(tmp_path_factory, "run_8dev", 8, [
      "train.total_steps=60", "train.checkpoint_every=3", "train.keep_checkpoints=25",
      "train.mesh.data=4", "train.mesh.fsdp=2"], extra(debug_signal=["TERM", 30]))


def copy_checkpoint(src_workdir, dst_workdir, step):
  """DST/checkpoints with only checkpoint `step` of SRC (plus the manager's own files)."""
  src = src_workdir / "checkpoints"
  steps = [n for n in os.listdir(src) if n.isdigit() and int(n) != step]
  shutil.copytree(src, dst_workdir / "checkpoints", ignore=lambda d, names: steps if d == str(src) else [])


def losses(workdir):
  return [m["loss"] for m in th.metrics(workdir)]
