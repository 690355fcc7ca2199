"""`satracker_jax.model_io`: one home for a model as data (build, check, load from every source).

The Orbax-checkpoint source is exercised on a real training run in test_train_runs.py
(`test_load_variables_and_refusing_another_config`).
"""
import jax
import numpy as np
import pytest

from satracker_jax import config_utils, convert, model_io

SMALL = ["model.vit.depth=2", "model.vit.dim=32", "model.vit.heads=2", "model.bert.dim=32",
         "model.bert.heads=2", "model.bert.intermediate=64", "model.bert.layers=2",
         "model.text_layer_map=(0,1)", "model.tem_layers=(0,)", "model.sam_layers=(1,)",
         "model.dm_layers=(1,)", "model.fusion_heads=2", "model.head_channels=16",
         "model.search_size=32", "model.template_size=16", "model.max_text_len=8", "model.dm_dim=16"]


@pytest.fixture(scope="module")
def small():
  config = config_utils.load_config("configs/tiny.py", SMALL)
  return config, model_io.random_variables(config, seed=3)


def test_abstract_variables_match_an_initialisation(small):
  config, variables = small
  abstract = model_io.abstract_variables(config)
  assert model_io.flat_shapes(abstract) == model_io.flat_shapes(variables)
  assert set(abstract) == {"params", "batch_stats"} and abstract["batch_stats"]


def test_the_shapes_of_a_model_are_traced_once_and_handed_out_as_copies(small, monkeypatch):
  config, _ = small
  first = model_io.abstract_variables(config_utils.load_config("configs/tiny.py", SMALL))
  traced = []
  real = jax.eval_shape
  monkeypatch.setattr(jax, "eval_shape", lambda *a, **k: traced.append(1) or real(*a, **k))
  again = model_io.abstract_variables(config_utils.load_config("configs/tiny.py", SMALL))  # an equal config
  assert traced == [] and model_io.flat_shapes(again) == model_io.flat_shapes(first)
  again["params"]["patch_embed"]["kernel"] = None  # a caller's edit stays its own
  assert model_io.abstract_variables(config)["params"]["patch_embed"]["kernel"] is not None
  wider = config_utils.load_config("configs/tiny.py", SMALL + ["model.head_channels=32"])
  model_io.abstract_variables(wider)  # another model is traced
  assert traced


def test_check_variables_names_the_first_mismatch(small):
  config, variables = small
  model_io.check_variables(config, variables, "same")
  wider = config_utils.load_config("configs/tiny.py", SMALL + ["model.head_channels=32"])
  with pytest.raises(ValueError, match=r"'params/box_head/.*' has shape \(16,\) there but \(32,\)"):
    model_io.check_variables(wider, variables, "small")
  no_sam = config_utils.load_config("configs/tiny.py", SMALL + ["model.use_sam=False"])
  with pytest.raises(ValueError, match=r"has 'params/sam_1/.*' .* which this config's model lacks"):
    model_io.check_variables(no_sam, variables, "small")
  missing = {"params": {k: v for k, v in variables["params"].items() if k != "vit_norm"},
             "batch_stats": variables["batch_stats"]}
  with pytest.raises(ValueError, match=r"'params/vit_norm/bias' .* is missing"):
    model_io.check_variables(config, missing, "pruned")


def test_params_file_round_trip_is_bitwise(small, tmp_path):
  config, variables = small
  path = model_io.save_variables(str(tmp_path / "model"), config, variables)
  assert path.endswith(".npz") and model_io.describe_source(path) == "params_file"
  loaded_config, loaded = model_io.load_variables(path)
  assert loaded_config.model.vit.dim == 32 and loaded_config.model.tem_layers == (0,)
  for a, b in zip(jax.tree.leaves(variables), jax.tree.leaves(loaded)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  other = config_utils.load_config("configs/tiny.py", SMALL + ["model.dm_dim=8"])
  with pytest.raises(ValueError, match=r"model.npz .*checked against the given config.*dm_1"):
    model_io.load_variables(path, config=other)


def test_converted_weights_need_a_config_and_fill_the_backbone(small, tmp_path):
  config, variables = small
  flat = convert.flatten_params(jax.device_get(variables["params"]))
  backbone = {k: np.asarray(v) + 1.0 for k, v in flat.items() if k.startswith("vit_block_0/")}
  out = tmp_path / "converted"
  out.mkdir()
  np.savez(out / convert.PARAMS_FILE, **backbone)
  assert model_io.describe_source(str(out)) == "converted"
  with pytest.raises(ValueError, match="carry no config"):
    model_io.load_variables(str(out))
  _, loaded = model_io.load_variables(str(out), config=config)
  got = convert.flatten_params(jax.device_get(loaded["params"]))
  for k, v in backbone.items():
    np.testing.assert_array_equal(got[k], v)
  assert set(got) == set(flat)


def test_bad_sources_are_named(tmp_path):
  with pytest.raises(FileNotFoundError, match="nowhere: no such file or folder"):
    model_io.load_variables(str(tmp_path / "nowhere"))
  (tmp_path / "notes.txt").write_text("x")
  with pytest.raises(ValueError, match="notes.txt: not a model file"):
    model_io.load_variables(str(tmp_path / "notes.txt"))
  (tmp_path / "empty").mkdir()
  with pytest.raises(FileNotFoundError, match="no checkpoint under .*empty"):
    model_io.load_variables(str(tmp_path / "empty"))


def test_load_model_as_the_verbs_do(small, tmp_path):
  config, variables = small
  path = model_io.save_variables(str(tmp_path / "m.npz"), config, variables)
  loaded_config, _, random = model_io.load_model(path, None, ["tracker.hann_window=False"])
  assert not random and loaded_config.tracker.hann_window is False
  with pytest.raises(ValueError, match="overrides"):
    model_io.load_model(path, None, ["model.dm_dim=8"])
  with pytest.raises(ValueError, match="vs config configs/tiny.py"):
    model_io.load_model(path, "configs/tiny.py", [])
  _, _, random = model_io.load_model("", "configs/tiny.py", SMALL)
  assert random


def test_loading_a_checkpoint_prints_no_read_only_warning(tmp_path, caplog):
  # Orbax warns "Given directory is read only" for every read-only manager; eval / track / export
  # printed it at every load.
  import logging
  from satracker_jax import config_utils
  from satracker_jax.train import checkpoint as ckpt_lib
  config = config_utils.load_config("configs/tiny.py")
  rng = np.random.default_rng(0)
  variables = jax.tree.map(lambda a: rng.standard_normal(a.shape).astype(a.dtype),
                           model_io.abstract_variables(config))
  ckpt = ckpt_lib.Checkpointer(str(tmp_path), config)
  ckpt.save(1, {**variables, "step": np.int32(1)}, {"next_sample_index": 8}, 1.0, True)
  ckpt.wait()
  ckpt.close()
  caplog.clear()
  with caplog.at_level(logging.INFO):
    _, loaded = model_io.load_variables(str(tmp_path))
  assert not [r for r in caplog.records if "read only" in r.getMessage()], caplog.text
  np.testing.assert_array_equal(np.asarray(loaded["params"]["patch_embed"]["kernel"]),
                                variables["params"]["patch_embed"]["kernel"])


_REPLICATED_SAVE = r"""
import json, sys
import jax, jax.numpy as jnp, numpy as np
import orbax.checkpoint as ocp
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
from satracker_jax.train import checkpoint as ckpt_lib

compiles = []
jax.monitoring.register_event_duration_secs_listener(
    lambda name, secs, **kw: compiles.append(name) if name == "/jax/core/compile/backend_compile_duration" else None)
mesh = Mesh(np.array(jax.devices()), ("data",))
# Held whole by each of the 4 devices, as every parameter is under data parallelism; 12 shapes.
state = {f"w{i}": jax.device_put(jnp.arange(8 * (i + 1), dtype=jnp.float32).reshape(8, i + 1),
                                 NamedSharding(mesh, P())) for i in range(12)}
jax.block_until_ready(state)
manager = ckpt_lib.make_manager(sys.argv[1], keep_best=False, async_save=False)
compiles.clear()
manager.save(1, args=ocp.args.Composite(**{ckpt_lib.STATE_ITEM: ocp.args.StandardSave(state)}))
manager.wait_until_finished()
saved = len(compiles)
restored = manager.restore(1, args=ocp.args.Composite(**{ckpt_lib.STATE_ITEM: ocp.args.StandardRestore(
    jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=a.sharding), state))}))
equal = all(np.array_equal(np.asarray(restored[ckpt_lib.STATE_ITEM][k]), np.asarray(v)) for k, v in state.items())
print("RESULT", json.dumps({"compiles_during_save": saved, "equal": equal}))
"""


def test_a_data_parallel_checkpoint_saves_without_compiling_a_slice_per_array(tmp_path):
  # Orbax's default on CPU/TPU cuts each replicated array into one slice per replica, one jitted
  # slice per shape (the first save of a tiny 8-device run compiled 180 programs); within one
  # process replica 0 now writes each array whole (model_io.use_orbax_array_writer).
  import json
  import os
  import re
  import subprocess
  import sys
  flags = re.sub(r"--xla_force_host_platform_device_count=\d+", "", os.environ.get("XLA_FLAGS", ""))
  env = dict(os.environ, XLA_FLAGS=f"{flags} --xla_force_host_platform_device_count=4".strip(),
             JAX_PLATFORMS="cpu", PYTHONPATH=os.getcwd())
  p = subprocess.run([sys.executable, "-c", _REPLICATED_SAVE, str(tmp_path / "checkpoints")], env=env,
                     capture_output=True, text=True, timeout=300)
  assert p.returncode == 0, p.stderr[-3000:]
  result = json.loads(p.stdout.split("RESULT", 1)[1])
  assert result == {"compiles_during_save": 0, "equal": True}
  assert "Type handler registry" not in p.stderr  # no Orbax notice about the replaced handler
