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


def _standin_setup(config, model=None):
  model = model or th.standin_model()
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


def _one_step(config, accum, batch_norm):
  """Params, gradients and metrics after one optimizer step on a fixed batch of 8."""
  import optax
  config.train.grad_accum_steps = accum
  mesh, state, step = _standin_setup(config, th.standin_model(batch_norm=batch_norm))
  init = jax.device_get(state["params"])
  batch = state_lib.device_batch(next(th.standin_dataset(0)(0, 0, 1, 8)), mesh)
  state, m = step(state, batch)
  # Adam's first moment after one update is (1 - b1) * g: the gradient the step applied.
  grads = jax.tree.map(lambda mu: mu / (1 - config.optim.b1),
                       optim_lib.moment_tree(optax.tree_utils.tree_get(state["opt_state"], "mu"),
                                             state["params"]))
  return init, jax.device_get(state["params"]), jax.device_get(grads), jax.device_get(state["batch_stats"]), m


def _accum_config():
  config = config_utils.load_config("configs/tiny.py")
  config.train.batch_size = 8
  config.optim.update(clip_norm=0.0, warmup_steps=0)  # no clipping; lr > 0 at the first step
  return config


def test_gradient_accumulation_equals_full_batch_when_samples_are_independent():
  # With BatchNorm on running statistics each sample's loss depends on that sample only, so the
  # mean of k equal micro-batch gradients is the full-batch gradient: only summation order differs.
  config = _accum_config()
  init, p1, g1, _, m1 = _one_step(config, 1, "running")
  for k in (2, 4):
    _, pk, gk, _, mk = _one_step(config, k, "running")
    assert float(mk["loss"]) == pytest.approx(float(m1["loss"]), rel=1e-6)
    assert float(mk["grad_norm"]) == pytest.approx(float(m1["grad_norm"]), rel=1e-5)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7), gk, g1)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=0, atol=1e-6), pk, p1)
  moved = max(float(np.abs(a - b).max()) for a, b in zip(jax.tree.leaves(p1), jax.tree.leaves(init)))
  assert moved > 1e-4  # the step did update the parameters being compared


def test_gradient_accumulation_differs_where_samples_share_a_batch():
  # What differs otherwise (docs/TRAINING.md): BatchNorm in training normalises each micro-batch
  # with its own statistics, and its running averages are updated once per micro-batch. (The real
  # model has a second in-batch coupling: the DM loss's patch->text negatives are the other
  # sentences of the micro-batch, not of the global batch.)
  config = _accum_config()
  _, _, g1, bs1, _ = _one_step(config, 1, "batch")
  _, _, g2, bs2, _ = _one_step(config, 2, "batch")
  assert not np.allclose(g1["vit_patch"]["kernel"], g2["vit_patch"]["kernel"], rtol=1e-3)
  assert not np.allclose(bs1["head_bn"]["mean"], bs2["head_bn"]["mean"], rtol=1e-3)


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


def test_a_checkpoint_is_refused_when_batch_stats_are_not_finite(tmp_path):
  # The loss and gradients stay finite, so the step keeps the update; only batch_stats turn +inf
  # (at the third training call). The check before saving must see them.
  from satracker_jax.train import loop
  config = config_utils.load_config("configs/tiny.py")
  config.model.template_size, config.model.search_size, config.model.max_text_len = 16, 32, 8
  config.train.update(batch_size=4, total_steps=6, checkpoint_every=2, log_every=1, tensorboard=False)
  with pytest.raises(FloatingPointError, match="step 4: train state holds NaN/Inf; checkpoint NOT written"):
    loop.train(config, str(tmp_path), model=th.standin_model(poison_batch_stats_at=3),
               loss_fn=th.standin_loss, dataset_fn=th.standin_dataset(0))
  assert sorted(os.listdir(tmp_path / "checkpoints")) == ["2"]


def test_training_refuses_a_vocabulary_larger_than_the_embedding(tmp_path):
  from satracker_jax import tokenizer as tk
  from satracker_jax.train import loop
  vocab = str(tmp_path / "vocab.txt")
  n = tk.write_wordpiece_vocab(["the", "red", "circle"], vocab)
  config = config_utils.load_config("configs/tiny.py")
  config.model.template_size, config.model.search_size, config.model.max_text_len = 16, 32, 8
  config.train.update(batch_size=4, total_steps=2, tensorboard=False)
  config.text.vocab_file = vocab
  config.model.bert.vocab_size = n - 1
  with pytest.raises(ValueError, match=rf"has {n} tokens.*config\.model\.bert\.vocab_size={n - 1}"):
    loop.train(config, str(tmp_path / "run"), model=th.standin_model(), loss_fn=th.standin_loss,
               dataset_fn=th.standin_dataset(0))
  assert not os.path.exists(tmp_path / "run" / "checkpoints")  # refused before anything was written
  config.model.bert.vocab_size = n  # the same vocabulary fits an embedding of its size
  loop.train(config, str(tmp_path / "run"), model=th.standin_model(), loss_fn=th.standin_loss,
             dataset_fn=th.standin_dataset(0))


def test_init_from_a_model_of_ours_takes_all_its_weights_and_checks_the_config(tmp_path):
  # A warm start (`train.init_from` = a params .npz, a workdir or its checkpoints): every variable
  # comes back as saved; a model of another shape is refused, naming the parameter.
  from satracker_jax.train import loop
  config = config_utils.load_config("configs/tiny.py")
  config.model.template_size, config.model.search_size, config.model.max_text_len = 16, 32, 8
  rng = np.random.default_rng(0)  # arrays of the model's shapes, no init compiled (~7 s saved)
  saved = jax.tree.map(lambda a: rng.standard_normal(a.shape).astype(a.dtype),
                       model_io.abstract_variables(config))
  config.train.init_from = model_io.save_variables(str(tmp_path / "warm.npz"), config, saved)
  got = loop._init_from_pretrained(loop.default_model(config), config)
  leaves_got, leaves_saved = jax.tree.leaves(got), jax.tree.leaves(saved)
  assert jax.tree.structure(got) == jax.tree.structure(saved) and len(leaves_got) > 100
  for a, b in zip(leaves_got, leaves_saved):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  config.model.head_channels = 32
  with pytest.raises(ValueError, match=r"train\.init_from=.*warm\.npz"):
    loop._init_from_pretrained(loop.default_model(config), config)


def test_metrics_are_fetched_once_per_log_window_not_every_step(tmp_path, monkeypatch):
  # A device_get per step makes the host wait for every step before it dispatches the next but
  # one. Fetching the window of train.log_every steps at once changes none of the logged numbers.
  from satracker_jax.train import loop
  config = config_utils.load_config("configs/tiny.py")
  config.model.template_size, config.model.search_size, config.model.max_text_len = 16, 32, 8
  config.train.update(batch_size=4, total_steps=12, checkpoint_every=12, tensorboard=False)
  real_get, fetches = jax.device_get, []

  def counting_get(tree):
    leaves = tree if isinstance(tree, list) else [tree]
    if leaves and all(isinstance(x, dict) and "loss" in x for x in leaves):
      fetches.append(len(leaves))
    return real_get(tree)

  monkeypatch.setattr(jax, "device_get", counting_get)
  runs = {}
  for log_every in (4, 1):
    fetches.clear()
    config.train.log_every = log_every
    workdir = tmp_path / f"log{log_every}"
    runs[log_every] = loop.train(config, str(workdir), model=th.standin_model(),
                                 loss_fn=th.standin_loss, dataset_fn=th.standin_dataset(0))
    runs[log_every]["fetches"] = list(fetches)
    runs[log_every]["logged"] = {m["step"]: m for m in th.metrics(workdir)}
  assert runs[4]["fetches"] == [4, 4, 4]  # steps 1-4 at step 5, 5-8 at step 9, 9-12 before the save
  assert len(runs[1]["fetches"]) == 12
  assert sorted(runs[4]["logged"]) == [4, 8, 12]
  for step in (4, 8, 12):
    for key in ("loss", "train_loss_ema", "replaced_total"):
      assert runs[4]["logged"][step][key] == runs[1]["logged"][step][key], (step, key)
  assert runs[4]["loss_ema"] == runs[1]["loss_ema"]


def test_a_save_cut_short_leaves_no_tmp_folder_after_the_next_start(tmp_path):
  # What a SIGKILL during an (async) save leaves: Orbax's temporary step folder, as large as a
  # checkpoint. The next start of training removes it (before its first save); finished
  # checkpoints stay.
  from satracker_jax.train import loop
  config = config_utils.load_config("configs/tiny.py")
  config.model.template_size, config.model.search_size, config.model.max_text_len = 16, 32, 8
  config.train.update(batch_size=4, total_steps=2, checkpoint_every=2, tensorboard=False)
  run = lambda: loop.train(config, str(tmp_path), model=th.standin_model(), loss_fn=th.standin_loss,
                           dataset_fn=th.standin_dataset(0))
  run()
  root = tmp_path / "checkpoints"
  cut = root / "3.orbax-checkpoint-tmp-1754000000000000" / "state"
  cut.mkdir(parents=True)
  (cut / "ocdbt.process_0").write_bytes(b"\0" * (1 << 20))
  config.train.total_steps = 4
  run()
  assert sorted(os.listdir(root)) == ["2", "4"]


@pytest.mark.parametrize("fsdp", [1, 2], ids=["flat_moments", "moments_per_tensor"])
def test_fused_adamw_equals_the_optax_chain_it_replaces(fsdp):
  """The fused update is the chain masked(set_to_zero) -> clip -> adam -> decay -> multipliers ->
  lr, element for element, over steps, with a frozen tensor, a frozen row of a stack and per-row
  multipliers."""
  import optax
  config = config_utils.load_config("configs/tiny.py")
  config.optim.update(lr_rules=((r"^box_head", 0.0), (r"^vit_block_1/", 0.0)), layer_decay=0.5,
                      warmup_steps=2, clip_norm=0.5)
  config.train.total_steps = 10
  rng = np.random.default_rng(0)
  params = {"vit_blocks": {"attn": {"qkv": {"kernel": rng.standard_normal((3, 4, 12)).astype(np.float32)}},
                           "norm1": {"scale": rng.standard_normal((3, 4)).astype(np.float32)}},
            "box_head": {"kernel": rng.standard_normal((4, 4)).astype(np.float32)},
            "tem_0": {"gate": np.float32(0.3), "w": rng.standard_normal((5, 6)).astype(np.float32)}}
  params = jax.tree.map(jnp.asarray, params)
  tx, schedule = optim_lib.build_optimizer(config, params, fsdp=fsdp)
  assert isinstance(tx.init(params).mu, dict) == (fsdp > 1)  # per tensor, or one flat vector
  mults = optim_lib.lr_multipliers(params, config.optim)
  # Rows: layer decay 0.5 ** (depth + 1 - (i + 1)) for blocks 0 and 2 of 3, block 1 frozen by its rule.
  assert mults["vit_blocks"]["attn"]["qkv"]["kernel"].reshape(-1).tolist() == [0.125, 0.0, 0.5]
  frozen = jax.tree.map(lambda m: m == 0.0 if not isinstance(m, np.ndarray) else False, mults)
  decay = {"vit_blocks": {"attn": {"qkv": {"kernel": True}}, "norm1": {"scale": False}},
           "box_head": {"kernel": True}, "tem_0": {"gate": False, "w": True}}
  row_keep = jax.tree.map(lambda m: jnp.asarray(m != 0, jnp.float32) if isinstance(m, np.ndarray) else 1.0, mults)
  chain = optax.chain(
      optax.masked(optax.set_to_zero(), frozen),
      optax.GradientTransformation(lambda p: optax.EmptyState(),
                                   lambda u, s, p=None: (jax.tree.map(lambda g, k: g * k, u, row_keep), s)),
      optax.clip_by_global_norm(0.5),
      optax.scale_by_adam(b1=float(config.optim.b1), b2=float(config.optim.b2)),
      optax.add_decayed_weights(float(config.optim.weight_decay), mask=decay),
      optax.GradientTransformation(lambda p: optax.EmptyState(),
                                   lambda u, s, p=None: (jax.tree.map(lambda g, m: g * jnp.asarray(m, g.dtype), u, mults), s)),
      optax.scale_by_learning_rate(schedule))
  fused_state, chain_state, p_fused, p_chain = tx.init(params), chain.init(params), params, params
  for step in range(4):
    grads = jax.tree.map(lambda p: jnp.asarray(rng.standard_normal(np.shape(p)), jnp.float32), params)
    u_f, fused_state = jax.jit(tx.update)(grads, fused_state, p_fused)
    u_c, chain_state = jax.jit(chain.update)(grads, chain_state, p_chain)
    p_fused, p_chain = optax.apply_updates(p_fused, u_f), optax.apply_updates(p_chain, u_c)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=2e-6, atol=1e-9), p_fused, p_chain)
  np.testing.assert_array_equal(p_fused["box_head"]["kernel"], params["box_head"]["kernel"])
  np.testing.assert_array_equal(p_fused["vit_blocks"]["attn"]["qkv"]["kernel"][1],
                                params["vit_blocks"]["attn"]["qkv"]["kernel"][1])
  assert not np.array_equal(p_fused["vit_blocks"]["attn"]["qkv"]["kernel"][0],
                            params["vit_blocks"]["attn"]["qkv"]["kernel"][0])


def test_the_steps_gradient_norm_reads_the_flat_vector_only_with_flat_moments():
  """With flat moments the train step takes the norm of the one concatenated gradient vector (one
  reduction instead of one per tensor); per-tensor moments (sharded parameters) keep optax's norm.
  Both are the same norm up to summation order."""
  import optax
  config = config_utils.load_config("configs/tiny.py")
  rng = np.random.default_rng(1)
  params = {"vit_blocks": {"w": jnp.asarray(rng.standard_normal((3, 4, 12)), jnp.float32)},
            "box_head": {"kernel": jnp.asarray(rng.standard_normal((4, 4)), jnp.float32),
                         "bias": jnp.asarray(rng.standard_normal(4), jnp.float32)}}
  grads = jax.tree.map(lambda p: p * 3.0, params)
  want = float(optax.tree.norm(grads))
  for fsdp, flat in ((1, True), (2, False)):
    tx, _ = optim_lib.build_optimizer(config, params, fsdp=fsdp)
    opt_state = tx.init(params)
    assert optim_lib.has_flat_moments(opt_state) == flat
    assert float(optim_lib.global_norm(grads, opt_state)) == pytest.approx(want, rel=1e-6)
  assert not optim_lib.has_flat_moments(optax.sgd(0.1).init(params))
