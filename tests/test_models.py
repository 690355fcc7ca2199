import functools
import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from satracker_jax import losses
from satracker_jax.config_utils import load_config
from satracker_jax.models import build_model, count_params, decode_box, model_config_from_dict, normalize_image
from satracker_jax.models import bert, fusion, slb, vit
from satracker_jax.smoke import model_inputs, random_batch

CONFIGS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs")


def _small(batch, n=2):
  return {k: v[:n] for k, v in batch.items()}


@functools.lru_cache(maxsize=None)
def _jit_apply(model):
  # One compile per model variant; op-by-op execution compiles every primitive separately and is
  # slower on a small CPU.
  return jax.jit(model.apply, static_argnames=("train", "dense_matching"))


def _expected_param_count(m) -> int:
  """SATracker-B parameters from layer formulas (independent of the model's own tree)."""
  c, ct, d = m.vit.dim, m.bert.dim, m.dm_dim
  dense = lambda i, o: i * o + o
  ln = lambda n: 2 * n
  attn = lambda n: 4 * dense(n, n)
  p = m.patch_size
  vit_total = (dense(p * p * 3, c) + (m.template_size // p) ** 2 * c + (m.search_size // p) ** 2 * c
               + m.vit.depth * (2 * ln(c) + attn(c) + dense(c, 4 * c) + dense(4 * c, c)) + ln(c))
  b = m.bert
  bert_total = ((b.vocab_size + b.max_position + b.type_vocab) * ct + ln(ct)
                + b.layers * (attn(ct) + ln(ct) + dense(ct, b.intermediate) + dense(b.intermediate, ct) + ln(ct)))
  # TEM and SAM both hold: per direction a query LN, a context LN, a cross-dim projection, an
  # attention and a gate (TEM's two context LNs: one over [Z; proj T] of width C, one of width Ct).
  fusion_block = (2 * ln(c) + dense(ct, c) + attn(c) + 1) + (2 * ln(ct) + dense(c, ct) + attn(ct) + 1)
  fusion_total = (len(m.tem_layers) + len(m.sam_layers)) * fusion_block
  dm_total = len(m.dm_layers) * (ln(c) + dense(c, d) + dense(ct, d) + 1)
  widths = [m.head_channels // 2 ** k for k in range(m.head_layers)]
  def tower(out):
    total, prev = 0, c
    for w in widths:
      total += 9 * prev * w + 2 * w  # conv3x3 (no bias: BatchNorm follows) + BatchNorm scale/bias
      prev = w
    return total + dense(prev, out)
  head_total = tower(1) + tower(2) + tower(2)
  return vit_total + bert_total + fusion_total + dm_total + head_total


def test_tiny_output_shapes(tiny_model, tiny_apply, tiny_variables, tiny_batch):
  cfg = tiny_model.config
  out = tiny_apply(tiny_variables, *model_inputs(_small(tiny_batch)), dense_matching=True)
  g, n = cfg.search_grid, cfg.num_template + cfg.num_search
  assert out["score_map"].shape == (2, g, g, 1)
  assert out["size_map"].shape == out["offset_map"].shape == (2, g, g, 2)
  assert out["pred_box"].shape == (2, 4)
  assert out["vision_tokens"].shape == (2, n, cfg.vit.dim)
  assert out["text_tokens"].shape == (2, cfg.max_text_len, cfg.bert.dim)
  assert len(out["dm"]) == len(cfg.dm_layers)
  for stage in out["dm"]:
    assert stage["patch_emb"].shape == (2, cfg.num_search, cfg.dm_dim)
    assert stage["text_emb"].shape == (2, cfg.dm_dim)
    np.testing.assert_allclose(jnp.linalg.norm(stage["patch_emb"], axis=-1), 1.0, atol=1e-5)
    assert float(stage["logit_scale"]) == pytest.approx(1 / 0.07, rel=1e-5)
  for k in ("size_map", "offset_map"):
    assert float(out[k].min()) > 0.0 and float(out[k].max()) < 1.0
  assert set(tiny_variables) == {"params", "batch_stats"}
  names = set(tiny_variables["params"])
  assert {"patch_embed", "pos_embed_template", "pos_embed_search", "vit_norm", "bert_embeddings",
          "vit_blocks", "bert_layers", "tem_0", "tem_1", "sam_2", "sam_3", "dm_2", "dm_3", "box_head"} == names
  # Stacked blocks (one leading layer axis), fused self-attention q|k|v.
  assert tiny_variables["params"]["vit_blocks"]["attn"]["qkv"]["kernel"].shape == (4, 192, 3 * 192)
  assert tiny_variables["params"]["bert_layers"]["attention"]["qkv"]["kernel"].shape == (2, 128, 3 * 128)
  assert tiny_variables["params"]["tem_0"]["search_attn"]["query"]["kernel"].shape == (192, 192)
  assert tiny_variables["params"]["patch_embed"]["kernel"].shape == (16, 16, 3, 192)


def test_base_shapes_and_param_count():
  config = load_config(os.path.join(CONFIGS, "base.py"))
  model = build_model(config.model)
  batch = random_batch(model.config, 2)
  variables = jax.eval_shape(model.init, jax.random.key(0), *model_inputs(batch))
  out = jax.eval_shape(model.apply, variables, *model_inputs(batch))
  assert out["score_map"].shape == (2, 16, 16, 1)
  assert out["vision_tokens"].shape == (2, 64 + 256, 768)
  assert out["text_tokens"].shape == (2, 40, 768)
  assert variables["params"]["pos_embed_template"].shape == (1, 64, 768)
  assert variables["params"]["pos_embed_search"].shape == (1, 256, 768)
  # The whole train computation (forward, losses on the 16x16 grid, backward) traces for base.
  def loss_fn(params, batch_stats, batch):
    out, _ = model.apply({"params": params, "batch_stats": batch_stats}, *model_inputs(batch),
                         train=True, mutable=["batch_stats"])
    return losses.compute_losses(out, batch, config.loss, model_config=config.model)[0]
  grads = jax.eval_shape(jax.grad(loss_fn), variables["params"], variables["batch_stats"], batch)
  assert jax.tree.map(lambda g: g.shape, grads) == jax.tree.map(lambda p: p.shape, variables["params"])
  n = count_params(variables["params"])
  expected = _expected_param_count(model.config)
  print(f"SATracker-B parameters: {n:,} (expected from formulas {expected:,})")
  assert abs(n - expected) <= 0.01 * expected


def _plain_vit_and_bert(cfg, params, batch, text_layers=None):
  """ViT blocks on [Z; X] and BERT layers (default: those of the stage map) run on their own, same params."""
  v, t = cfg.vit, cfg.bert
  conv = vit.patch_embed(v.dim, cfg.patch_size)
  embed = lambda img: vit.grid_to_tokens(conv.apply({"params": params["patch_embed"]}, normalize_image(img)))
  tokens = jnp.concatenate([embed(batch["template"]) + params["pos_embed_template"],
                            embed(batch["search"]) + params["pos_embed_search"]], 1)
  row = lambda stack, i: jax.tree.map(lambda a: a[i], stack)
  for i in range(v.depth):
    tokens = vit.ViTBlock(v.dim, v.heads, v.mlp_ratio, v.ln_eps).apply({"params": row(params["vit_blocks"], i)}, tokens)
  tokens = nn.LayerNorm(epsilon=v.ln_eps).apply({"params": params["vit_norm"]}, tokens)
  text = bert.BertEmbeddings(t.vocab_size, t.dim, t.max_position, t.type_vocab, t.ln_eps).apply(
      {"params": params["bert_embeddings"]}, batch["text_ids"])
  for j in (cfg.stage_text_layers if text_layers is None else text_layers):  # tiny: (0, 0, 1, 1)
    text = bert.BertLayer(t.dim, t.heads, t.intermediate, t.ln_eps).apply(
        {"params": row(params["bert_layers"], j)}, text, batch["text_mask"])
  return tokens, text


def test_zero_gates_equal_plain_vit_and_bert(tiny_model, tiny_apply, tiny_variables, tiny_batch):
  batch = _small(tiny_batch)
  params = tiny_variables["params"]
  gates = [x for p, x in jax.tree.flatten_with_path(params)[0] if "gate" in jax.tree_util.keystr(p)]
  assert len(gates) == 8 and all(float(g) == 0.0 for g in gates)
  out = tiny_apply(tiny_variables, *model_inputs(batch))
  vision, text = jax.jit(functools.partial(_plain_vit_and_bert, tiny_model.config))(params, batch)
  assert float(jnp.max(jnp.abs(out["vision_tokens"] - vision))) < 1e-5
  assert float(jnp.max(jnp.abs(out["text_tokens"] - text))) < 1e-5


def _random_variables(model, batch, seed=0):
  """Random weights (0.2 * N(0, 1), gates 0) in the model's tree, without compiling its init."""
  rng = np.random.default_rng(seed)
  return jax.tree_util.tree_map_with_path(
      lambda p, s: np.zeros(s.shape, s.dtype) if "gate" in jax.tree_util.keystr(p)
      else (0.2 * rng.standard_normal(s.shape)).astype(s.dtype),
      jax.eval_shape(model.init, jax.random.key(0), *model_inputs(batch)))


def _set_gates(params, value):
  return jax.tree.map_with_path(
      lambda p, x: jnp.full_like(x, value) if "gate" in jax.tree_util.keystr(p) else x, params)


def test_jitted_train_step_batch8_and_gradients_reach_every_parameter(tiny_config, tiny_model, tiny_variables,
                                                                      tiny_batch):
  def loss_fn(params, batch_stats, batch):
    out, state = tiny_model.apply({"params": params, "batch_stats": batch_stats}, *model_inputs(batch),
                                  train=True, mutable=["batch_stats"])
    total, terms = losses.compute_losses(out, batch, tiny_config.loss, model_config=tiny_config.model)
    return total, (terms, state)

  step = jax.jit(jax.value_and_grad(loss_fn, has_aux=True))
  params = _set_gates(tiny_variables["params"], 0.5)
  (total, (terms, state)), grads = step(params, tiny_variables["batch_stats"], tiny_batch)
  assert tiny_batch["search"].shape[0] == 8
  assert np.isfinite(float(total))
  for name, value in terms.items():
    assert np.isfinite(float(value)) and float(value) >= 0.0, name
  # Checked on the host: an eager jnp op per leaf would compile one small program per leaf shape.
  state, grads = jax.device_get((state, grads))
  changed = jax.tree.map(lambda a, b: bool(np.any(a != b)), state["batch_stats"], tiny_variables["batch_stats"])
  assert all(jax.tree.leaves(changed))  # train=True updates the head's BatchNorm statistics
  dead = [jax.tree_util.keystr(p) for p, g in jax.tree.flatten_with_path(grads)[0]
          if not np.any(g != 0) or not np.all(np.isfinite(g))]
  assert not dead, f"parameters without (finite) gradient: {dead}"


def test_use_text_false_outputs_independent_of_text(tiny_config, tiny_variables, tiny_batch):
  model_config = tiny_config.model.copy_and_resolve_references()
  model_config.use_text = False
  model = build_model(model_config)
  batch = _small(tiny_batch)
  other = dict(batch, text_ids=(batch["text_ids"] * 7 + 3) % model.config.bert.vocab_size,
               text_mask=np.ones_like(batch["text_mask"]))
  out_a = _jit_apply(model)(tiny_variables, *model_inputs(batch), dense_matching=True)
  out_b = _jit_apply(model)(tiny_variables, *model_inputs(other), dense_matching=True)
  for a, b in zip(jax.tree.leaves(out_a), jax.tree.leaves(out_b)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  _, terms = jax.jit(lambda o, b: losses.compute_losses(o, b, tiny_config.loss, model_config=model_config))(
      out_a, batch)
  assert float(terms["dm"]) == 0.0


def test_bfloat16_compute_keeps_float32_outputs(tiny_config, tiny_variables, tiny_batch):
  model_config = tiny_config.model.copy_and_resolve_references()
  model_config.dtype = "bfloat16"
  out = _jit_apply(build_model(model_config))(tiny_variables, *model_inputs(_small(tiny_batch)))
  for k in ("score_map", "size_map", "offset_map", "pred_box", "vision_tokens"):
    assert out[k].dtype == jnp.float32 and bool(jnp.all(jnp.isfinite(out[k]))), k


def test_decode_box_and_window():
  score = jnp.full((1, 4, 4, 1), -5.0).at[0, 1, 2, 0].set(3.0).at[0, 3, 3, 0].set(3.5)
  size = jnp.full((1, 4, 4, 2), 0.25)
  offset = jnp.full((1, 4, 4, 2), 0.5).at[0, 1, 2].set(jnp.array([0.2, 0.6]))
  box, best = decode_box(score, size, offset)
  np.testing.assert_allclose(box[0], [3.5 / 4, 3.5 / 4, 0.25, 0.25], atol=1e-6)
  assert float(best[0]) == pytest.approx(float(jax.nn.sigmoid(3.5)))
  window = jnp.zeros((4, 4)).at[1, 2].set(1.0).at[3, 3].set(0.5)
  box, best = decode_box(score, size, offset, window)
  np.testing.assert_allclose(box[0], [2.2 / 4, 1.6 / 4, 0.25, 0.25], atol=1e-6)
  assert float(best[0]) == pytest.approx(float(jax.nn.sigmoid(3.0)))


def test_template_target_mask_is_patch_coverage():
  m = fusion.template_target_mask(jnp.asarray([[0.125, 0.125, 0.25, 0.25], [0.25, 0.125, 0.25, 0.125]]), 4)
  np.testing.assert_allclose(m[0], np.eye(16)[0], atol=1e-6)  # exactly the top-left cell
  # Box x in [0.125, 0.375], y in [0.0625, 0.1875]: half the width of cells 0 and 1, half the height of row 0.
  expected = np.zeros((4, 4))
  expected[0, 0] = expected[0, 1] = 0.25
  np.testing.assert_allclose(np.asarray(m[1]).reshape(4, 4), expected, atol=1e-6)


def test_config_validation(tiny_config):
  bad = tiny_config.model.to_dict()
  bad["text_layer_map"] = (0, 1)
  with pytest.raises(ValueError, match="text_layer_map"):
    model_config_from_dict(bad)
  typo = dict(tiny_config.model.to_dict(), tem_layer=(1,))
  with pytest.raises(ValueError, match="tem_layer"):
    model_config_from_dict(typo)
  hash(model_config_from_dict(tiny_config.model))  # Linen fields must be hashable


# -- inference skips the DM projections ------------------------------------------------------------
def _eqns(jaxpr):
  """Every equation of a (closed) jaxpr, sub-jaxprs (pjit, remat, custom_vjp) included."""
  jaxpr = getattr(jaxpr, "jaxpr", jaxpr)
  for eqn in jaxpr.eqns:
    yield eqn
    for param in eqn.params.values():
      for sub in (param if isinstance(param, (list, tuple)) else [param]):
        if isinstance(sub, (jax.extend.core.Jaxpr, jax.extend.core.ClosedJaxpr)):
          yield from _eqns(sub)


def _dm_ops_and_dots(fn, *args):
  eqns = list(_eqns(jax.make_jaxpr(fn)(*args)))
  dm = sum("dm_" in str(e.source_info.name_stack) for e in eqns)
  return dm, sum(e.primitive.name == "dot_general" for e in eqns)


def test_inference_skips_dense_matching_but_init_and_training_keep_it(tiny_config, tiny_model, tiny_apply,
                                                                      tiny_variables, tiny_batch):
  from satracker_jax import tracker
  cfg = tiny_model.config
  inputs = model_inputs(_small(tiny_batch))
  assert {f"dm_{i}" for i in cfg.dm_layers} <= set(tiny_variables["params"])  # init (train=False) makes them
  assert tiny_apply(tiny_variables, *inputs)["dm"] == ()
  dm_off, dots_off = _dm_ops_and_dots(lambda v, *a: tiny_model.apply(v, *a), tiny_variables, *inputs)
  dm_on, dots_on = _dm_ops_and_dots(lambda v, *a: tiny_model.apply(v, *a, dense_matching=True), tiny_variables,
                                    *inputs)
  assert dm_off == 0 and dm_on > 0
  assert dots_on - dots_off == 2 * len(cfg.dm_layers)  # vision_proj and text_proj per DM stage
  # The outputs' structure is the claim: traced, not run (an eager forward dispatches op by op).
  train_out, _ = jax.eval_shape(lambda v, *a: tiny_model.apply(v, *a, train=True, mutable=["batch_stats"]),
                                tiny_variables, *inputs)
  assert len(train_out["dm"]) == len(cfg.dm_layers)
  # The tracker's compiled step: no DM operation at all.
  step = tracker.make_step_fn(tracker.model_apply_fn(tiny_config))
  window = jnp.ones((cfg.search_grid, cfg.search_grid), jnp.float32)
  assert _dm_ops_and_dots(step, tiny_variables, *inputs, window)[0] == 0


# -- remat ----------------------------------------------------------------------------------------
def _micro_config(tiny_config, **fields):
  """Tiny at 2 stages: the cheapest model that still has every module kind (for compile time)."""
  m = tiny_config.model.copy_and_resolve_references()
  m.vit.depth = 2
  m.text_layer_map = (0, 1)
  m.tem_layers, m.sam_layers, m.dm_layers = (0,), (1,), (1,)
  m.update(fields)
  return m


def test_remat_policies_wrap_every_block_keep_names_and_gradients(tiny_config, tiny_batch):
  batch = _small(tiny_batch)
  trees = {}
  for remat in ("none", "full", "dots"):
    model = build_model(_micro_config(tiny_config, remat=remat))
    variables = jax.eval_shape(model.init, jax.random.key(0), *model_inputs(batch))
    trees[remat] = jax.tree.map(lambda x: (x.shape, x.dtype), variables)
    apply = lambda v, model=model: model.apply(v, *model_inputs(batch), train=True, mutable=["batch_stats"])
    n_remat = sum(e.primitive.name in ("checkpoint", "remat", "remat2") for e in _eqns(jax.make_jaxpr(apply)(variables)))
    # none: no remat; full/dots: one per ViT block, BERT layer, TEM and SAM (2 + 2 + 1 + 1).
    assert n_remat == (0 if remat == "none" else 6), (remat, n_remat)
  assert trees["full"] == trees["none"] and trees["dots"] == trees["none"]  # checkpoints load unchanged
  # Numerics of one block under each policy (remat only changes what is stored, not the values).
  x = jax.random.normal(jax.random.key(1), (2, 10, 32))
  results = {}
  for remat in ("none", "full", "dots"):
    block = slb._maybe_remat(vit.ViTBlock, remat)(32, 2)
    params = block.init(jax.random.key(0), x)
    loss = lambda p, x: jnp.sum(jnp.sin(block.apply(p, x)))
    results[remat] = jax.jit(jax.value_and_grad(loss, argnums=(0, 1)))(params, x)
  for remat in ("full", "dots"):
    for a, b in zip(jax.tree.leaves(results[remat]), jax.tree.leaves(results["none"])):
      np.testing.assert_allclose(a, b, atol=1e-6, rtol=1e-6)


# -- large: BERT layer j at stage 2j+1, text passes through the other stages -------------------------
def _narrow_large():
  """configs/large.py at small width (same depths, stage map and fusion stages), 32/64 crops."""
  config = load_config(os.path.join(CONFIGS, "large.py"))
  m = config.model
  m.template_size, m.search_size = 32, 64
  m.vit.update(dim=32, heads=2)
  m.bert.update(vocab_size=100, dim=16, heads=2, intermediate=32, max_position=64)
  m.fusion_heads, m.dm_dim, m.head_channels, m.head_layers = 2, 8, 8, 1
  return config


def test_large_zero_gates_equal_plain_24_block_vit_and_plain_12_layer_bert():
  config = _narrow_large()
  model = build_model(config.model)
  cfg = model.config
  assert cfg.stage_text_layers == tuple(i // 2 if i % 2 else -1 for i in range(24))
  batch = random_batch(cfg, 2)
  variables = _random_variables(model, batch)  # gates 0, as a fresh model has them
  params = variables["params"]
  assert params["bert_layers"]["output"]["kernel"].shape[0] == 12
  out = _jit_apply(model)(variables, *model_inputs(batch))  # layer scans: a quick compile
  # The references op by op: 24 + 12 + 24 blocks of one shape reuse each primitive's compile,
  # where one jit of the unrolled references took 27 s of CPU (eager: 3 s).
  # Plain BERT: layers 0..11 once each; the old map ran each twice (a different text branch).
  vision, text = _plain_vit_and_bert(cfg, params, batch, text_layers=range(12))
  _, twice = _plain_vit_and_bert(cfg, params, batch, text_layers=[i // 2 for i in range(24)])
  assert float(jnp.max(jnp.abs(out["vision_tokens"] - vision))) < 1e-5
  assert float(jnp.max(jnp.abs(out["text_tokens"] - text))) < 1e-5
  assert float(jnp.max(jnp.abs(out["text_tokens"] - twice))) > 1e-2  # so the check can tell them apart


def test_large_real_size_text_branch_is_bert_base():
  config = load_config(os.path.join(CONFIGS, "large.py"))
  model = build_model(config.model)
  cfg = model.config
  variables = jax.eval_shape(model.init, jax.random.key(0), *model_inputs(random_batch(cfg, 1)))
  params = variables["params"]
  assert [j for j in cfg.stage_text_layers if j >= 0] == list(range(12))  # each BERT layer once, in order
  assert all(cfg.stage_text_layers[2 * j + 1] == j and cfg.stage_text_layers[2 * j] == -1 for j in range(12))
  assert set(cfg.tem_layers + cfg.sam_layers) <= {2 * j + 1 for j in range(12)}  # fusion right after a text layer
  assert params["bert_layers"]["intermediate"]["kernel"].shape == (12, 768, 3072)
  assert params["vit_blocks"]["attn"]["qkv"]["kernel"].shape == (24, 1024, 3 * 1024)
  assert count_params(params) == _expected_param_count(cfg)


def test_text_layer_map_accepts_no_text_layer_and_rejects_other_negatives(tiny_config):
  m = tiny_config.model.to_dict()
  model_config_from_dict(dict(m, text_layer_map=(-1, 0, -1, 1)))
  with pytest.raises(ValueError, match="text_layer_map"):
    model_config_from_dict(dict(m, text_layer_map=(-2, 0, -1, 1)))
  with pytest.raises(ValueError, match="remat"):
    model_config_from_dict(dict(m, remat="stage"))


def test_scanned_layers_equal_the_unrolled_stage_loop_values_and_gradients(tiny_config, tiny_batch):
  """Between fusion stages the ViT blocks and BERT layers run as lax.scans over rows of the stored
  stacks; values and gradients equal the unrolled loop (here with remat on the scanned side)."""
  batch = _small(tiny_batch)
  fields = dict(tem_layers=(1,), sam_layers=(3,), dm_layers=(3,))  # chains: stages (0, 1) and (2, 3)
  results, variables = {}, None
  for scan, remat in ((False, "none"), (True, "full")):
    m = tiny_config.model.copy_and_resolve_references()
    m.update(dict(fields, scan_layers=scan, remat=remat, head_layers=1))
    model = build_model(m)
    assert slb.segments(model.config) == [(0, 1), (2, 3)]
    variables = variables or _random_variables(model, batch)  # one tree serves both: same names
    params = _set_gates(variables["params"], 0.5)

    def loss_fn(params, model=model, m=m):
      out, _ = model.apply({"params": params, "batch_stats": variables["batch_stats"]}, *model_inputs(batch),
                           train=True, mutable=["batch_stats"])
      return losses.compute_losses(out, batch, tiny_config.loss, model_config=m)[0], out["vision_tokens"]

    n_scans = sum(e.primitive.name == "scan" for e in _eqns(jax.make_jaxpr(loss_fn)(params)))
    assert n_scans == (4 if scan else 0)  # two ViT chains and two BERT chains (layer 0 twice, 1 twice)
    results[scan] = jax.jit(jax.value_and_grad(loss_fn, has_aux=True))(params)
  (loss_u, vision_u), grads_u = results[False]
  (loss_s, vision_s), grads_s = results[True]
  np.testing.assert_allclose(vision_s, vision_u, atol=1e-5, rtol=0)
  assert abs(float(loss_s) - float(loss_u)) <= 1e-5 * abs(float(loss_u))
  assert jax.tree.structure(grads_s) == jax.tree.structure(grads_u)
  for a, b in zip(jax.tree.leaves(grads_s), jax.tree.leaves(grads_u)):
    np.testing.assert_allclose(a, b, atol=1e-5, rtol=1e-4)
