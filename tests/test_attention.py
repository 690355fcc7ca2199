"""The attention (`vit.dot_product_attention`: XLA path with a hand-written backward, cuDNN through
`jax.nn.dot_product_attention`) matches the einsum attention of the first version."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from satracker_jax.models import build_model, vit
from satracker_jax.smoke import model_inputs


def einsum_attention(q, k, v, key_mask=None):
  """The model's first attention, autodiffed (kept here as the reference).

  [B, T, N, H] x [B, S, N, H]; logits and softmax in float32; a query whose keys are all masked
  gets a zero output.
  """
  logits = jnp.einsum("bqhd,bkhd->bhqk", q, k, preferred_element_type=jnp.float32)
  logits = logits / jnp.sqrt(jnp.float32(q.shape[-1]))
  if key_mask is not None:
    valid = key_mask.astype(bool)[:, None, None, :]
    logits = jnp.where(valid, logits, -1e9)
    weights = jax.nn.softmax(logits, axis=-1) * valid
  else:
    weights = jax.nn.softmax(logits, axis=-1)
  return jnp.einsum("bhqk,bkhd->bqhd", weights.astype(v.dtype), v)


def _qkv(seed=0, b=3, t=5, s=7, n=2, h=8):
  rng = np.random.default_rng(seed)
  q, k, v = (jnp.asarray(rng.standard_normal(shape), jnp.float32) for shape in
             ((b, t, n, h), (b, s, n, h), (b, s, n, h)))
  # Row 0: some keys masked; row 1: every key masked (output must be 0); row 2: none masked.
  mask = jnp.asarray([[1, 0, 1, 1, 0, 0, 1], [0] * s, [1] * s], jnp.int32)
  return q, k, v, mask


@pytest.mark.parametrize("implementation", ["xla", "cudnn"])
def test_dot_product_attention_matches_einsum_reference_values_and_gradients(implementation):
  # "cudnn" on this CPU (and in float32 anywhere) must fall back to the XLA path, same numbers.
  q, k, v, mask = _qkv()
  new = functools.partial(vit.dot_product_attention, implementation=implementation)
  for key_mask in (mask, None):
    np.testing.assert_allclose(new(q, k, v, key_mask), einsum_attention(q, k, v, key_mask), atol=1e-5, rtol=0)
    loss = lambda fn: (lambda q, k, v: jnp.sum(jnp.sin(fn(q, k, v, key_mask))))
    for g_new, g_ref in zip(jax.grad(loss(new), (0, 1, 2))(q, k, v),
                            jax.grad(loss(einsum_attention), (0, 1, 2))(q, k, v)):
      np.testing.assert_allclose(g_new, g_ref, atol=1e-5, rtol=0)
  out = new(q, k, v, mask)
  assert float(jnp.max(jnp.abs(out[1]))) == 0.0  # all keys masked: exactly zero, no NaN
  assert float(jnp.max(jnp.abs(jax.grad(lambda q: jnp.sum(new(q, k, v, mask)[1]))(q)))) == 0.0


def test_every_attention_of_the_model_uses_dot_product_attention_and_matches_einsum(
    tiny_model, tiny_apply, tiny_variables, tiny_batch, monkeypatch):
  """The whole tiny model (ViT, BERT, TEM, SAM attentions) with the einsum reference swapped in
  gives the same outputs within 1e-5 (f32); every attention call goes through the new function."""
  inputs = [x[:2] for x in model_inputs(tiny_batch)]
  params = jax.tree.map_with_path(  # non-zero gates, so the fusion attentions reach the outputs
      lambda p, x: jnp.full_like(x, 0.5) if "gate" in jax.tree_util.keystr(p) else x, tiny_variables["params"])
  variables = {**tiny_variables, "params": params}
  out_new = tiny_apply(variables, *inputs, dense_matching=True)  # the session's compile
  calls = []
  real = vit.dot_product_attention

  def counting(*args, **kwargs):
    calls.append(1)
    return real(*args, **kwargs)

  monkeypatch.setattr(vit, "dot_product_attention", counting)
  jax.eval_shape(lambda v, *a: tiny_model.apply(v, *a, dense_matching=True), variables, *inputs)  # counted at trace
  cfg = tiny_model.config
  # ViT: one per stage; BERT: one per stage (tiny runs a text layer at every stage); TEM: 2; SAM: 2.
  assert len(calls) == cfg.vit.depth + len(cfg.stage_text_layers) + 2 * len(cfg.tem_layers) + 2 * len(cfg.sam_layers)
  monkeypatch.setattr(vit, "dot_product_attention", lambda q, k, v, key_mask=None, implementation="xla":
                      einsum_attention(q, k, v, key_mask))
  out_ref = jax.jit(lambda v, *a: tiny_model.apply(v, *a, dense_matching=True))(variables, *inputs)
  for key in ("score_map", "size_map", "offset_map", "vision_tokens", "text_tokens"):
    np.testing.assert_allclose(out_new[key], out_ref[key], atol=1e-5, rtol=0, err_msg=key)
  for a, b in zip(out_new["dm"], out_ref["dm"]):
    np.testing.assert_allclose(a["patch_emb"], b["patch_emb"], atol=1e-5, rtol=0)


def test_attention_impl_is_a_validated_config_field(tiny_config):
  m = tiny_config.model.copy_and_resolve_references()
  m.attention_impl = "cudnn"
  assert build_model(m).config.attention_impl == "cudnn"
  m.attention_impl = "flash"
  with pytest.raises(ValueError, match="attention_impl"):
    build_model(m)


@pytest.mark.skipif(jax.default_backend() != "gpu",
                    reason="cuDNN attention needs an NVIDIA GPU (this run has none); on CPU the XLA path "
                           "is what runs and the test above covers it")
def test_cudnn_attention_with_padding_masks_in_bf16_runs_cudnn_and_matches_the_reference():
  """Every masked attention of the model (BERT, TEM, SAM) in bf16 runs cuDNN's fused kernel (its
  custom call is in the compiled step, nothing fell back to XLA) and matches the f32 reference."""
  q, k, v, mask = _qkv_gpu()
  bf = lambda x: x.astype(jnp.bfloat16)
  vit._CUDNN_FALLBACKS.clear()
  fn = jax.jit(lambda q, k, v, m: vit.dot_product_attention(q, k, v, m, implementation="cudnn"))
  hlo = fn.lower(bf(q), bf(k), bf(v), mask).compile().as_text()
  assert "cudnn" in hlo.lower() and not vit._CUDNN_FALLBACKS, vit._CUDNN_FALLBACKS
  out = fn(bf(q), bf(k), bf(v), mask).astype(jnp.float32)
  ref = einsum_attention(q, k, v, mask)
  assert float(jnp.linalg.norm(out - ref) / jnp.linalg.norm(ref)) < 2e-2
  assert float(jnp.max(jnp.abs(out[1]))) == 0.0  # every key masked: zero
  loss = lambda q: jnp.sum(jnp.sin(vit.dot_product_attention(q, bf(k), bf(v), mask, "cudnn").astype(jnp.float32)))
  g = jax.grad(loss)(bf(q)).astype(jnp.float32)
  g_ref = jax.grad(lambda q: jnp.sum(jnp.sin(einsum_attention(q, k, v, mask))))(q)
  assert float(jnp.linalg.norm(g - g_ref) / jnp.linalg.norm(g_ref)) < 5e-2


def _qkv_gpu():
  """The TEM search attention's shapes: 40 queries, 64 template + 40 text keys, 8 heads of 64."""
  rng = np.random.default_rng(3)
  b, t, s, n, h = 3, 40, 104, 8, 64
  q, k, v = (jnp.asarray(rng.standard_normal(shape), jnp.float32) for shape in
             ((b, t, n, h), (b, s, n, h), (b, s, n, h)))
  mask = np.ones((b, s), np.int32)
  mask[0, rng.choice(s, 50, replace=False)] = 0
  mask[1] = 0
  return q, k, v, jnp.asarray(mask)
