"""Issue-4 acceptance on the 1-device reference run (tests/train_runs.py): a SIGKILLed run resumes
bit for bit, and the run's checkpoints load for inference under their own config only."""
import numpy as np
import pytest

import train_helpers as th
import train_runs as tr


@pytest.fixture(scope="module")
def run_1dev(tmp_path_factory):
  return tr.one_device_run(tmp_path_factory)


def test_sigkill_after_step_30_then_resume_is_bitwise_equal(run_1dev, tmp_path, tmp_path_factory):
  # The uninterrupted run is the reference run: this run starts from its checkpoint 24, is killed
  # right after saving step 30 (that save may not have finished: then 27 is the latest), resumes
  # from what the killed process wrote, and is stopped at 33, where the reference has a checkpoint.
  wd = tmp_path / "killed"
  tr.copy_checkpoint(run_1dev[0], wd, 24)
  overrides = tr.small(tmp_path_factory) + ["train.total_steps=60", "train.checkpoint_every=3"]
  p = th.run_worker(wd, devices=1, overrides=overrides, extra=tr.extra(debug_signal=["KILL", 30]),
                    env=tr.CACHE_ENV, check=False)
  assert p.returncode == -9, p.stdout[-3000:]
  assert "RESULT" not in p.stdout and f"resumed from {wd}/checkpoints/24 " in p.stdout
  # Logging, checkpointing and test-hook fields differ from the reference run's, the program does
  # not: both processes load the reference's step from the compilation cache (whole, when the
  # reference compiled it), so the bitwise comparison below also holds a loaded program to the
  # one the reference run compiled.
  assert "(from the compilation cache)" in p.stdout, p.stdout[-3000:]
  p = th.run_worker(wd, devices=1, overrides=overrides, extra=tr.extra(debug_signal=["TERM", 33]),
                    env=tr.CACHE_ENV)
  assert "(from the compilation cache)" in p.stdout, p.stdout[-3000:]
  assert any(f"resumed from {wd}/checkpoints/{s} " in p.stdout for s in (27, 30)), p.stdout[-3000:]
  assert th.result_of(p.stdout)["step"] == 33
  ref, got = th.checkpoint_state(run_1dev[0], 33, "params"), th.final_params(wd)
  assert ref.keys() == got.keys()
  for k in ref:
    assert np.array_equal(ref[k], got[k]), f"{k} differs after resume"


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
  other = config_utils.load_config(tr.EXTRA["config"], [o for o in tr.SMALL if "vit.dim" not in o])
  with pytest.raises(ValueError, match=r"does not match this config: '.*' has shape"):
    model_io.load_variables(str(wd / "checkpoints"), config=other)
