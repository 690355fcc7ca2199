"""`jax.export` round trip of the tracker step: the reloaded module gives the jitted step's outputs."""
import jax
import numpy as np
import pytest

from satracker_jax import export as export_lib
from satracker_jax import tracker as tracker_lib


def step_inputs(config, seed=1):
  specs = tracker_lib.step_input_specs(config, batch_size=1)
  rng = np.random.default_rng(seed)
  return (
      rng.integers(0, 256, specs["template"].shape, dtype=np.uint8),
      np.float32([[0.5, 0.5, 0.3, 0.4]]),
      rng.integers(0, 256, specs["search"].shape, dtype=np.uint8),
      np.concatenate([[[101, 7, 9, 102]], np.zeros((1, specs["text_ids"].shape[1] - 4), int)], 1).astype(np.int32),
      np.concatenate([np.ones((1, 4), int), np.zeros((1, specs["text_mask"].shape[1] - 4), int)], 1).astype(np.int32),
      tracker_lib.tracking_window(config),
  )


@pytest.fixture(scope="module")
def tiny_setup(tiny_config, tiny_variables):
  config, variables = tiny_config, tiny_variables
  inputs = step_inputs(config)
  step = jax.jit(tracker_lib.make_step_fn(tracker_lib.model_apply_fn(config)))
  expected = jax.tree.map(np.asarray, step(variables, *inputs))
  return config, variables, inputs, expected


@pytest.mark.parametrize("weights", ["baked", "inputs"])
def test_export_round_trip_matches_jitted_step(tiny_setup, tmp_path, weights):
  config, variables, inputs, expected = tiny_setup
  exported, meta, leaves = export_lib.export_step(config, variables, batch_size=1, weights=weights)
  path = str(tmp_path / "step.stablehlo")
  written = export_lib.save_exported(path, exported, meta, leaves)
  assert (export_lib.weights_path(path) in written) == (weights == "inputs")
  loaded = export_lib.load_exported(path)
  assert [i["name"] for i in loaded.meta["inputs"]] == list(export_lib.INPUT_NAMES)
  got = jax.tree.map(np.asarray, loaded(*inputs))
  assert set(got) == {"box", "score", "score_map", "size_map", "offset_map"}
  for key in expected:
    if weights == "inputs":
      # The same computation compiled by the same XLA: bit-identical.
      np.testing.assert_array_equal(got[key], expected[key], err_msg=key)
    else:
      # Baked weights are constants XLA may fold differently; identical on CPU today, but only
      # rounding-level agreement is promised.
      np.testing.assert_allclose(got[key], expected[key], rtol=1e-5, atol=1e-6, err_msg=key)
  with pytest.raises(ValueError, match="search"):
    loaded(inputs[0], inputs[1], inputs[2][:, :-1], *inputs[3:])
