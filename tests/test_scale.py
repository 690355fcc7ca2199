"""`satracker bench scale`: the compile-only report of the train step on N fake devices."""
import math

import jax
import pytest

from satracker_jax import cli, config_utils, model_io
from satracker_jax.bench import scale
from satracker_jax.train import sharding as sharding_lib

# configs/tiny.py at 2 stages: every module kind, the quickest real model to compile.
MICRO = ("model.vit.depth=2", "model.text_layer_map=(0,1)", "model.tem_layers=(0,)", "model.sam_layers=(1,)",
         "model.dm_layers=(1,)")


def test_parse_mesh():
  assert scale.parse_mesh("data=8,fsdp=8") == {"data": 8, "fsdp": 8}
  assert scale.parse_mesh("fsdp=-1") == {"fsdp": -1}
  for bad in ("data=8,model=2", "data:8", "data=x"):
    with pytest.raises(config_utils.ConfigError, match="--mesh"):
      scale.parse_mesh(bad)


def test_run_refuses_a_mesh_or_batch_that_does_not_fit_the_devices_before_compiling():
  with pytest.raises(config_utils.ConfigError, match="does not fit 8 devices"):
    scale.run("configs/tiny.py", devices=8, mesh="data=4,fsdp=4")
  with pytest.raises(config_utils.ConfigError, match="--batch 12"):
    scale.run("configs/tiny.py", devices=8, mesh="data=-1,fsdp=2", batch=12)
  # As a user types it: one line naming the option, exit 2, no traceback.
  assert cli.main(["bench", "scale", "--mesh", "data=3", "--devices", "8"]) == 2


def test_collectives_in_hlo_reads_every_replica_group_spelling_and_counts_loop_trips():
  hlo = "\n".join([
      "%body.1 (param: (s32[], f32[4])) -> (s32[], f32[4]) {",
      "  %all-gather.1 = f32[192,128]{1,0} all-gather(%param.79), channel_id=34, "
      "replica_groups=mesh['axis_0'=4,'axis_1'=1] {'axis_0'}, dimensions={0}, use_global_device_ids=true",
      "}",
      "%cond.1 (param: (s32[], f32[4])) -> pred[] {",
      "}",
      "ENTRY %main.5_spmd (param.4: f32[2,16]) -> f32[16] {",
      "  %while.26 = (s32[], f32[4]{0}) while(%tuple.27), condition=%cond.1, body=%body.1, "
      'backend_config={"known_init_step":{"init":"0","step":"1"},"known_trip_count":{"n":"3"}}',
      "  %all-reduce.1 = (f32[8,40]{1,0}, bf16[4]{0}) all-reduce(%a, %b), channel_id=15, "
      "replica_groups=[2,4]<=[8], to_apply=%add",
      "  %reduce-scatter.2 = f32[16,8]{1,0} reduce-scatter(%g), channel_id=3, replica_groups={{0,1},{2,3}}, "
      "dimensions={0}",
      "  %all-gather-start.3 = (f32[4]{0}, f32[16]{0}) all-gather-start(%p), replica_groups=[1,4]<=[4]",
      "  %all-gather-done.3 = f32[16]{0} all-gather-done(%all-gather-start.3)",
      "  %fusion.4 = f32[2,40]{1,0} fusion(%param.28, %all-gather.9, %all-reduce.1), kind=kLoop",
      "}",
  ])
  found = scale.collectives_in_hlo(hlo)
  # The loop body's all-gather runs 3 times; the async start counts its result half.
  assert found["all-gather"] == {"count": 3 + 1, "bytes": 3 * 192 * 128 * 4 + 16 * 4}
  assert found["all-reduce"] == {"count": 1, "bytes": 8 * 40 * 4 + 4 * 2}
  assert found["reduce-scatter"] == {"count": 1, "bytes": 16 * 8 * 4 * 2}  # result x group of 2
  assert found["all-to-all"]["count"] == found["collective-permute"]["count"] == 0


def test_scale_report_on_4_fake_devices_shards_state_and_gathers_parameters():
  """One real compile in a subprocess (this process has 1 CPU device): data 2 x fsdp 2."""
  result = scale.run("configs/tiny.py", MICRO, devices=4, mesh="data=2,fsdp=2", batch=8, remat="full")
  assert result["devices"] == 4 and result["mesh"] == {"data": 2, "fsdp": 2}
  assert result["per_device_batch"] == 2 and result["remat"] == "full"
  config = config_utils.load_config("configs/tiny.py", MICRO)
  abstract = model_io.abstract_variables(config)["params"]
  leaves = jax.tree.leaves(abstract)
  full_bytes = sum(math.prod(x.shape) * x.dtype.itemsize for x in leaves)
  sharded = [x for x in leaves if sharding_lib.fsdp_spec(x.shape, 2) != jax.sharding.PartitionSpec()]
  sharded_bytes = sum(math.prod(x.shape) * x.dtype.itemsize for x in sharded)
  mem = result["memory_per_device"]
  # Parameters and Adam's two moments: the fsdp-sharded leaves count half, the small ones whole.
  assert mem["params_bytes"] == full_bytes - sharded_bytes // 2
  assert mem["opt_state_bytes"] >= 2 * mem["params_bytes"]
  assert mem["peak_bytes"] == mem["argument_bytes"] + mem["output_bytes"] - mem["alias_bytes"] + mem["temp_bytes"]
  assert mem["temp_bytes"] > 0 and mem["alias_bytes"] > 0  # the state is donated
  assert result["fits"] and result["flops_per_device"] > 0 and result["compile_s"] > 0
  coll = result["collectives"]
  # ZeRO-3: every fsdp-sharded parameter is gathered for its layer (at least once, whole)...
  assert coll["all-gather"]["bytes"] >= sharded_bytes
  # ...and gradients are reduced over the devices (the CPU compiler spells a reduce-scatter as an
  # all-reduce and a slice): at least every parameter's gradient once.
  assert coll["all-reduce"]["bytes"] + coll["reduce-scatter"]["bytes"] >= full_bytes
