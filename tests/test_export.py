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


SHARDED_SAVE = r"""
import sys
import jax, numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
from satracker_jax import config_utils, export, model_io
config = config_utils.load_config(sys.argv[1], sys.argv[3:])
rng = np.random.default_rng(0)
mesh = Mesh(np.array(jax.devices()), ("fsdp",))
def put(a):  # split the first axis over both devices where it divides, as fsdp would
  x = rng.standard_normal(a.shape).astype(a.dtype)
  spec = P("fsdp") if a.ndim and a.shape[0] % 2 == 0 else P()
  return jax.device_put(x, NamedSharding(mesh, spec))
variables = jax.tree.map(put, model_io.abstract_variables(config))
assert len(variables["params"]["vit_norm"]["scale"].sharding.device_set) == 2
export.save_model_folder(sys.argv[2], config, variables)
np.savez(sys.argv[2] + ".expected.npz", scale=np.asarray(variables["params"]["vit_norm"]["scale"]))
"""


def test_orbax_export_written_sharded_on_two_devices_loads_on_one_for_every_verb(tmp_path, monkeypatch):
  # `satracker export --format orbax`: the model alone, written from arrays split over 2 devices,
  # read back on this process's one device by load_model (eval, track, export) and init_from.
  import os
  import subprocess
  import sys
  from satracker_jax import model_io
  from satracker_jax.cli import main as cli_main
  from satracker_jax.train import loop
  import test_bucket_paths as tb
  repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  tiny = os.path.join(repo, "configs", "tiny.py")
  folder = str(tmp_path / "model")
  env = {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": repo,
         "XLA_FLAGS": os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=2"}
  subprocess.run([sys.executable, "-c", SHARDED_SAVE, tiny, folder, *tb.SMALL_MODEL], env=env,
                 check=True, timeout=300)
  assert sorted(os.listdir(folder)) == [model_io.MODEL_FILE, model_io.VARIABLES_DIR]
  config, variables, random = model_io.load_model(folder, tiny, tb.SMALL_MODEL)  # as the verbs do
  assert not random and set(variables) == {"params", "batch_stats"}
  scale = variables["params"]["vit_norm"]["scale"]
  assert len(scale.sharding.device_set) == 1
  with np.load(folder + ".expected.npz") as expected:
    np.testing.assert_array_equal(np.asarray(scale), expected["scale"])
  config.train.init_from = folder  # a warm start from the export
  warm = loop._init_from_pretrained(loop.default_model(config), config)
  np.testing.assert_array_equal(np.asarray(warm["params"]["vit_norm"]["scale"]), np.asarray(scale))
  # export reads its own output: the folder exported again is the same model
  again = str(tmp_path / "again")
  assert cli_main(["export", "--checkpoint", folder, "--format", "orbax", "--out", again]) == 0
  _, reread = model_io.load_variables(again)
  np.testing.assert_array_equal(np.asarray(reread["params"]["vit_norm"]["scale"]), np.asarray(scale))
  with pytest.raises(ValueError, match=r"model\.head_channels|does not match"):
    model_io.load_model(folder, tiny)  # the full tiny config is another model: refused
