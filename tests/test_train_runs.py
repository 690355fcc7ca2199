"""Issue-4 acceptance: real training runs in subprocesses (1, 2 and 8 fake CPU devices, 2 processes).

Runs are shared between tests to stay within a few minutes on 2 cores: one 60-step 1-device run is
the reference for the loss, the resume and the 1-vs-8-device comparison; one 8-device (data 4 x
fsdp 2) run writes the fsdp-sharded checkpoint that 1 and 2 devices restore. Both save every 3
steps, so their parameters can be compared after the same optimizer steps. A persistent
compilation cache shared by the subprocesses keeps recompiles of the same step program cheap.
"""
import os
import shutil
import socket

import numpy as np
import pytest

import train_helpers as th

# The tiny config shrunk further: same code paths (TEM, SAM, DM, head BN), a fraction of the FLOPs.
SMALL = ["model.vit.depth=2", "model.vit.dim=64", "model.vit.heads=2", "model.bert.dim=64",
         "model.bert.heads=2", "model.bert.intermediate=128", "model.text_layer_map=(0,1)",
         "model.tem_layers=(0,)", "model.sam_layers=(1,)", "model.dm_layers=(1,)",
         "model.fusion_heads=2", "model.head_channels=16", "model.search_size=64",
         "model.template_size=32", "model.max_text_len=16", "model.dm_dim=32",
         "train.batch_size=8", "optim.warmup_steps=5", "optim.lr=1e-3", "train.log_every=1",
         "train.keep_checkpoints=2"]
EXTRA = {"mode": "real_data", "config": "configs/synthetic.py:runlocal",
         "train_fields": {"tensorboard": False}}


def _extra(**train_fields):
  return {**EXTRA, "train_fields": {**EXTRA["train_fields"], **train_fields}}


@pytest.fixture(scope="module")
def cache_env(tmp_path_factory):
  d = tmp_path_factory.mktemp("jax_cache")
  return {"JAX_COMPILATION_CACHE_DIR": str(d), "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
          "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "0"}


@pytest.fixture(scope="module", autouse=True)
def synthetic_root(tmp_path_factory):
  """Generated once for all runs (each run would otherwise generate into its own workdir)."""
  from satracker_jax import config_utils
  from data_pipelines import synthetic
  root = tmp_path_factory.mktemp("synthetic")
  synthetic.generate_from_config(config_utils.load_config(EXTRA["config"]), str(root), progress=False)
  SMALL.append(f"data.datasets.synthetic.root={root}")
  yield root
  SMALL.remove(f"data.datasets.synthetic.root={root}")


@pytest.fixture(scope="module")
def reference_runs(tmp_path_factory, cache_env):
  """The 1- and 8-device runs, started together: two programs, each compile one core's work."""
  wd1, wd8 = tmp_path_factory.mktemp("run_1dev"), tmp_path_factory.mktemp("run_8dev")
  one = th.run_worker(wd1, devices=1, overrides=SMALL + ["train.total_steps=60", "train.checkpoint_every=3",
                                                         "train.keep_checkpoints=25"],
                      extra=EXTRA, env=cache_env, wait=False)
  # total_steps 60 like the 1-device run (the schedule is part of the compiled step, so the
  # 1-device continuation below hits the compilation cache); a SIGTERM after step 30 ends it the
  # way a preemption would: save, exit 0.
  eight = th.run_worker(wd8, devices=8, overrides=SMALL + [
      "train.total_steps=60", "train.checkpoint_every=3", "train.keep_checkpoints=25",
      "train.mesh.data=4", "train.mesh.fsdp=2"],
      extra=_extra(debug_signal=["TERM", 30]), env=cache_env, wait=False)
  runs = {}
  for devices, wd, p in ((1, wd1, one), (8, wd8, eight)):
    out, _ = p.communicate(timeout=600)
    assert p.returncode == 0, f"{devices}-device worker failed (rc {p.returncode}):\n{out[-6000:]}"
    runs[devices] = (wd, th.result_of(out))
  return runs


@pytest.fixture(scope="module")
def run_1dev(reference_runs):
  return reference_runs[1]


@pytest.fixture(scope="module")
def run_8dev(reference_runs):
  return reference_runs[8]


def _copy_checkpoint(src_workdir, dst_workdir, step):
  """DST/checkpoints with only checkpoint `step` of SRC (plus the manager's own files)."""
  src = src_workdir / "checkpoints"
  steps = [n for n in os.listdir(src) if n.isdigit() and int(n) != step]
  shutil.copytree(src, dst_workdir / "checkpoints", ignore=lambda d, names: steps if d == str(src) else [])


@pytest.fixture(scope="module")
def run_two_processes(tmp_path_factory, run_8dev, cache_env):
  """2 processes x 1 CPU device (gloo), fsdp=2: resume the 8-device checkpoint, poison steps 32-33."""
  wd = tmp_path_factory.mktemp("two_proc")
  _copy_checkpoint(run_8dev[0], wd, 30)
  port = _free_port()
  overrides = SMALL + ["train.total_steps=35", "train.checkpoint_every=100", "train.mesh.data=1",
                       "train.mesh.fsdp=2"]
  procs = [th.run_worker(wd, devices=1, overrides=overrides, wait=False, env=cache_env,
                         extra={**_extra(debug_nan_steps=[32, 33]), "coordinator": f"127.0.0.1:{port}",
                                "num_processes": 2, "process_id": i}) for i in range(2)]
  outs = []
  for p in procs:
    out, _ = p.communicate(timeout=400)
    assert p.returncode == 0, out[-4000:]
    outs.append((out, th.result_of(out)))
  return wd, outs


def _free_port():
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _losses(wd):
  return [m["loss"] for m in th.metrics(wd)]


def test_loss_decreases_on_1_and_8_devices_and_first_step_agrees(run_1dev, run_8dev):
  for wd, res in (run_1dev, run_8dev):
    losses = _losses(wd)
    assert res["nonfinite_total"] == 0
    assert np.mean(losses[-5:]) < 0.9 * np.mean(losses[:5]), losses
  assert run_8dev[1]["device_count"] == 8
  # Same global batch, same init: only the reduction order differs between the layouts.
  assert abs(_losses(run_1dev[0])[0] - _losses(run_8dev[0])[0]) < 1e-5


def test_1_and_8_devices_reach_the_same_parameters_after_three_steps(run_1dev, run_8dev):
  # Three optimizer updates (lr 0, 2e-4, 4e-4 in the warmup) on the same global batches. Adam
  # moves a parameter by about the lr per step, so a layout that dropped or double-counted a
  # shard's gradient would differ by ~1e-4; summation order alone stays below 1e-5. (Later the two
  # drift apart: the head's conv biases before BatchNorm have a gradient that is zero up to
  # rounding, which Adam normalises into full-size noisy steps, and that noise spreads.)
  one, eight = th.checkpoint_state(run_1dev[0], 3, "params"), th.checkpoint_state(run_8dev[0], 3, "params")
  assert one.keys() == eight.keys()
  worst = max(one, key=lambda k: float(np.abs(one[k] - eight[k]).max()))
  assert float(np.abs(one[worst] - eight[worst]).max()) < 1e-5, worst
  later = th.checkpoint_state(run_1dev[0], 6, "params")
  assert max(float(np.abs(later[k] - one[k]).max()) for k in one) > 1e-4  # the steps do move them


def test_sigterm_saves_and_exits_cleanly(run_8dev):
  wd, res = run_8dev
  assert res["stopped_by"] == "preempted" and res["step"] == 30
  assert res["checkpoints"] == list(range(3, 31, 3))


def test_sigkill_after_step_30_then_resume_is_bitwise_equal(run_1dev, tmp_path, cache_env):
  # The uninterrupted run is the reference run: this run starts from its checkpoint 24, is killed
  # right after saving step 30 (that save may not have finished: then 27 is the latest), resumes
  # from what the killed process wrote, and is stopped at 33, where the reference has a checkpoint.
  wd = tmp_path / "killed"
  _copy_checkpoint(run_1dev[0], wd, 24)
  overrides = SMALL + ["train.total_steps=60", "train.checkpoint_every=3"]
  p = th.run_worker(wd, devices=1, overrides=overrides, extra=_extra(debug_signal=["KILL", 30]),
                    env=cache_env, check=False)
  assert p.returncode == -9, p.stdout[-3000:]
  assert "RESULT" not in p.stdout and f"resumed from {wd}/checkpoints/24 " in p.stdout
  p = th.run_worker(wd, devices=1, overrides=overrides, extra=_extra(debug_signal=["TERM", 33]),
                    env=cache_env)
  assert any(f"resumed from {wd}/checkpoints/{s} " in p.stdout for s in (27, 30)), p.stdout[-3000:]
  assert th.result_of(p.stdout)["step"] == 33
  ref, got = th.checkpoint_state(run_1dev[0], 33, "params"), th.final_params(wd)
  assert ref.keys() == got.keys()
  for k in ref:
    assert np.array_equal(ref[k], got[k]), f"{k} differs after resume"


@pytest.mark.parametrize("devices,mesh", [(1, []), (2, ["train.mesh.data=1", "train.mesh.fsdp=2"])])
def test_fsdp_checkpoint_from_8_devices_restores_bitwise(run_8dev, tmp_path, cache_env, devices, mesh):
  # total_steps = the checkpoint's step: the loop restores onto this topology and trains nothing, so
  # its final state is the restored one, gathered to the host.
  wd = tmp_path / "restored"
  _copy_checkpoint(run_8dev[0], wd, 30)
  p = th.run_worker(wd, devices=devices, overrides=SMALL + mesh + ["train.total_steps=30"],
                    extra=EXTRA, env=cache_env)
  res = th.result_of(p.stdout)
  assert "resumed from" in p.stdout and res["step"] == 30 and res["device_count"] == devices
  # On 1 device (fsdp 1) the Adam moments are flat vectors, on 8 per tensor: compared per tensor.
  saved, restored = (_moments_per_tensor(th.final_state(w)) for w in (run_8dev[0], wd))
  if devices == 1:
    assert th.final_state(wd)["opt_state/mu"].ndim == 1  # converted on restore, not read as saved
  assert saved.keys() == restored.keys()
  assert any(k.startswith("opt_state/") for k in saved) and any(k.startswith("batch_stats/") for k in saved)
  for k in saved:
    assert saved[k].dtype == restored[k].dtype and np.array_equal(saved[k], restored[k]), k


def _moments_per_tensor(flat: dict) -> dict:
  """A final state whose Adam moments are flat vectors (`opt_state/mu`) cut back per parameter,
  in the parameters' tree order (sorted paths)."""
  if "opt_state/mu" not in flat:
    return flat
  out = {k: v for k, v in flat.items() if k not in ("opt_state/mu", "opt_state/nu")}
  names = sorted(k[len("params/"):] for k in flat if k.startswith("params/"))
  for moment in ("mu", "nu"):
    vector, at = flat[f"opt_state/{moment}"], 0
    for name in names:
      shape = flat["params/" + name].shape
      out[f"opt_state/{moment}/{name}"] = vector[at:at + int(np.prod(shape))].reshape(shape)
      at += int(np.prod(shape))
    assert at == vector.size
  return out


def test_two_processes_gloo_restore_fsdp_checkpoint_train_and_save(run_two_processes):
  wd, outs = run_two_processes
  (out0, r0), (out1, r1) = outs
  assert [r0["process_index"], r1["process_index"]] == [0, 1]
  assert r0["device_count"] == 2 and "resumed from" in out0 and "resumed from" in out1
  assert "preemption sync: active (2 processes" in out0
  assert r0["step"] == r1["step"] == 35
  assert r0["loss"] == r1["loss"]  # one global loss, seen by both
  assert r0["checkpoints"] == [30, 35]
  assert len(th.metrics(wd)) == 5  # process 0 only writes metrics


def test_nonfinite_steps_are_skipped_counted_and_never_checkpointed(run_two_processes):
  wd, outs = run_two_processes
  res = outs[0][1]
  losses = _losses(wd)  # steps 31..35
  assert np.isnan(losses[1]) and np.isnan(losses[2])
  assert np.isfinite(losses[0]) and np.isfinite(losses[3]) and np.isfinite(losses[4])
  assert res["nonfinite_total"] == 2
  _assert_checkpoints_finite(wd)


def _assert_checkpoints_finite(wd):
  for step in sorted(os.listdir(wd / "checkpoints")):
    if not step.isdigit():
      continue
    for key, a in th.checkpoint_state(wd, int(step)).items():
      if a.dtype.kind == "f":
        assert np.all(np.isfinite(a)), f"checkpoint {step} holds non-finite values in {key}"


def test_load_variables_and_refusing_another_config(run_1dev):
  import jax
  from satracker_jax import config_utils, model_io
  wd, _ = run_1dev
  config, variables = model_io.load_variables(str(wd))
  assert set(variables) == {"params", "batch_stats"}
  assert config.model.vit.dim == 64 and config.train.total_steps == 60
  leaf = jax.tree.leaves(variables["params"])[0]
  assert leaf.sharding.device_set == {jax.devices()[0]}
  ref = th.final_params(wd)
  assert np.array_equal(np.asarray(variables["params"]["patch_embed"]["kernel"]),
                        ref["patch_embed/kernel"])
  other = config_utils.load_config(EXTRA["config"], [o for o in SMALL if "vit.dim" not in o])
  with pytest.raises(ValueError, match=r"does not match this config: '.*' has shape"):
    model_io.load_variables(str(wd / "checkpoints"), config=other)
