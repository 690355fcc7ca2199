"""Fast in-process checks of the train package's pieces (1 CPU device, stand-in model)."""
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from satracker_jax import config_utils, model_io
from satracker_jax.train import checkpoint as ckpt_lib
from satracker_jax.train import optimizer as optim_lib
from satracker_jax.train import sharding as sharding_lib
from satracker_jax.train import state as state_lib
import train_helpers as th


def test_fsdp_spec_shards_largest_divisible_dim_and_replicates_small():
  P = jax.sharding.PartitionSpec
  assert sharding_lib.fsdp_spec((768, 3072), 2) == P(None, "fsdp")
  assert sharding_lib.fsdp_spec((3072, 768), 4) == P("fsdp", None)
  assert sharding_lib.fsdp_spec((30522, 768), 4) == P(None, "fsdp")  # 30522 % 4 != 0
  assert sharding_lib.fsdp_spec((768,), 2) == P()
  assert sharding_lib.fsdp_spec((8, 8), 2) == P()  # too small to be worth an all-gather
  assert sharding_lib.fsdp_spec((768, 3072), 1) == P()


def test_make_mesh_fills_minus_one_and_rejects_bad_shapes():
  mesh = sharding_lib.make_mesh({"data": -1, "fsdp": 1})
  assert dict(mesh.shape) == {"data": jax.device_count(), "fsdp": 1}
  assert all(t == jax.sharding.AxisType.Auto for t in mesh.axis_types)
  with pytest.raises(ValueError, match="at most one"):
    sharding_lib.make_mesh({"data": -1, "fsdp": -1})
  with pytest.raises(ValueError, match="needs"):
    sharding_lib.make_mesh({"data": 3, "fsdp": 5})


def _optim(**kw):
  c = config_utils.load_config("configs/base.py").optim
  c.update(kw)
  return c


def test_lr_rules_backbone_mult_layer_decay_and_freeze():
  z = lambda: jnp.zeros((4, 4))
  params = {
      "patch_embed": {"kernel": z()}, "pos_embed_search": z(),
      "vit_block_0": {"kernel": z()}, "vit_block_1": {"kernel": z()}, "vit_norm": {"scale": z()},
      "bert_embeddings": {"word_embeddings": {"embedding": z()}}, "bert_layer_0": {"kernel": z()},
      "box_head": {"kernel": z()}, "sam_1": {"text_gate": z()},
  }
  m = optim_lib.lr_multipliers(params, _optim(backbone_lr_mult=0.1))
  assert m["vit_block_1"]["kernel"] == pytest.approx(0.1)
  assert m["bert_layer_0"]["kernel"] == pytest.approx(0.1)
  assert m["pos_embed_search"] == pytest.approx(0.1)
  assert m["box_head"]["kernel"] == 1.0 and m["sam_1"]["text_gate"] == 1.0
  m = optim_lib.lr_multipliers(params, _optim(backbone_lr_mult=1.0, layer_decay=0.5))
  # ViT: embeddings 0, blocks 1..2, final norm 3 -> 0.5 ** (3 - id); BERT depth 1 on its own.
  assert m["patch_embed"]["kernel"] == pytest.approx(0.125)
  assert m["vit_block_0"]["kernel"] == pytest.approx(0.25)
  assert m["vit_block_1"]["kernel"] == pytest.approx(0.5)
  assert m["vit_norm"]["scale"] == pytest.approx(1.0)
  assert m["bert_embeddings"]["word_embeddings"]["embedding"] == pytest.approx(0.25)
  assert m["bert_layer_0"]["kernel"] == pytest.approx(0.5)
  m = optim_lib.lr_multipliers(params, _optim(lr_rules=((r"^patch_embed", 0.0), (r"head", 3.0))))
  assert m["patch_embed"]["kernel"] == 0.0 and m["box_head"]["kernel"] == 3.0


def test_frozen_params_stay_bitwise_and_schedule_warms_up():
  config = config_utils.load_config("configs/tiny.py")
  config.optim.update(lr_rules=((r"^head", 0.0),), warmup_steps=10, lr=1e-2, schedule="step")
  config.train.total_steps = 100
  params = {"head": {"kernel": jnp.ones((3, 3))}, "fusion": {"kernel": jnp.ones((3, 3))}}
  tx, schedule = optim_lib.build_optimizer(config, params)
  assert float(schedule(0)) == 0.0 and float(schedule(10)) == pytest.approx(1e-2)
  assert float(schedule(90)) == pytest.approx(1e-3)  # step decay at 0.8 * total
  opt = tx.init(params)
  grads = jax.tree.map(jnp.ones_like, params)
  p = params
  for _ in range(3):
    u, opt = tx.update(grads, opt, p)
    p = jax.tree.map(lambda a, b: a + b, p, u)
  assert np.array_equal(p["head"]["kernel"], params["head"]["kernel"])
  assert not np.array_equal(p["fusion"]["kernel"], params["fusion"]["kernel"])


def _standin_setup(config):
  model = th.standin_model()
  config.model.template_size, config.model.search_size, config.model.max_text_len = 16, 32, 8
  abstract_vars = jax.eval_shape(lambda: model_io.init_variables(model, config.model,
                                                                  jax.random.PRNGKey(0)))
  tx, schedule = optim_lib.build_optimizer(config, abstract_vars["params"])
  mesh = sharding_lib.make_mesh({"data": -1, "fsdp": 1})
  abstract = state_lib.abstract_state(model, config, tx)
  state_sh = sharding_lib.state_shardings(abstract, mesh)
  state = state_lib.create_sharded_state(model, config, tx, state_sh)
  step = state_lib.jit_train_step(state_lib.make_train_step(model, tx, schedule, th.standin_loss, config),
                                  state_sh, mesh)
  return mesh, state, step


def test_nonfinite_step_is_skipped_inside_the_jitted_step():
  config = config_utils.load_config("configs/tiny.py")
  config.train.batch_size = 4
  config.train.debug_nan_steps = (2,)  # numbered as in the logs: the second step
  mesh, state, step = _standin_setup(config)
  batches = th.standin_dataset(0)(0, 0, 1, 4)
  b = lambda: state_lib.device_batch(next(batches), mesh)
  state, m0 = step(state, b())
  before = jax.device_get(state)
  state, m1 = step(state, b())
  after = jax.device_get(state)
  assert bool(m0["finite"]) and not bool(m1["finite"])
  assert int(after["step"]) == 2 and int(after["nonfinite_run"]) == 1 and int(after["nonfinite_total"]) == 1
  for part in ("params", "batch_stats", "opt_state"):
    jax.tree.map(lambda x, y: np.testing.assert_array_equal(x, y), before[part], after[part])
  state, m2 = step(state, b())
  assert bool(m2["finite"]) and int(m2["nonfinite_run"]) == 0 and int(m2["nonfinite_total"]) == 1
  assert bool(state_lib.all_finite(state["params"]))


def test_gradient_accumulation_matches_full_batch():
  # Stand-in BatchNorm uses batch statistics, so compare on a model where micro-batching is exact:
  # the gradient of a mean loss equals the mean of micro-batch gradients of equal size.
  config = config_utils.load_config("configs/tiny.py")
  config.train.batch_size = 8
  config.optim.clip_norm = 0.0
  results = []
  for accum in (1, 2):
    config.train.grad_accum_steps = accum
    mesh, state, step = _standin_setup(config)
    batch = state_lib.device_batch(next(th.standin_dataset(0)(0, 0, 1, 8)), mesh)
    _, m = step(state, batch)
    results.append(m)
  assert float(results[0]["loss"]) == pytest.approx(float(results[1]["loss"]), rel=0.05)


def test_config_json_round_trip_restores_tuples():
  config = config_utils.load_config("configs/tiny.py")
  config.optim.lr_rules = ((r"^head", 0.5),)
  back = config_utils.config_from_json(config_utils.config_to_json(config))
  assert back.model.tem_layers == config.model.tem_layers
  assert back.optim.lr_rules == ((r"^head", 0.5),)
  assert back.model.vit.dim == 192


def test_check_compatible_names_first_mismatched_key():
  want = {"params": {"a": jax.ShapeDtypeStruct((2, 3), jnp.float32),
                     "b": jax.ShapeDtypeStruct((4,), jnp.float32)}}
  have = {"params": {"a": np.zeros((2, 5)), "b": np.zeros(4)}}
  with pytest.raises(ValueError, match=r"params/a.*\(2, 5\).*\(2, 3\)"):
    model_io.check_compatible(want, have, "ckpt")
  with pytest.raises(ValueError, match=r"params/c.*lacks"):
    model_io.check_compatible(want, {"params": {**want["params"], "c": np.zeros(1)}}, "ckpt")


def test_training_stops_after_max_consecutive_nonfinite_steps(tmp_path):
  from satracker_jax.train import loop
  config = config_utils.load_config("configs/tiny.py")
  config.model.template_size, config.model.search_size, config.model.max_text_len = 16, 32, 8
  config.train.update(batch_size=4, total_steps=10, checkpoint_every=2, log_every=1,
                      max_consecutive_nonfinite=3)
  config.train.debug_nan_steps = (3, 4, 5, 6)
  config.train.tensorboard = False
  with pytest.raises(loop.TrainingStopped, match="3 consecutive non-finite"):
    loop.train(config, str(tmp_path), model=th.standin_model(), loss_fn=th.standin_loss,
               dataset_fn=th.standin_dataset(0))
  # Steps 2 and 4 were saved (step 4's state is step 2's: the poisoned updates were skipped).
  assert sorted(os.listdir(tmp_path / "checkpoints")) == ["2", "4"]
  assert len(th.metrics(tmp_path)) == 4  # logged up to step 4; step 5 raised before logging
