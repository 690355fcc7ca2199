"""Cross-modal modules of the Synchronous Learning Backbone (SPEC.md "TEM", "SAM", "DM loss").

Every update is a residual scaled by tanh(gate) with the gate a scalar initialised to 0, so at
initialisation the SLB is exactly the pretrained ViT + BERT (tests pin this). `gate_init`
(`model.fusion_gate_init`) starts the gates elsewhere: for a model trained from scratch there is
no pretrained function to preserve, and closed gates only slow the fusion down (docs/EXPERIMENTS.md "Protocols").
Vision tokens are [Z; X] (template tokens first); the text branch may have another width: the
`vision_to_text` / `text_to_vision` Dense layers project between the two.
"""
from __future__ import annotations

import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from satracker_jax import boxes
from satracker_jax.models import initializers
from satracker_jax.models.vit import Attention, Mlp

Dtype = Any
# Fusion layers are new (never converted), so one eps for all of them.
FUSION_LN_EPS = 1e-6


def template_target_mask(template_box: jax.Array, grid: int) -> jax.Array:
  """Fraction of each template patch covered by the box: [B, 4] normalised cx,cy,w,h -> [B, grid*grid].

  Computed analytically (overlap of the box with each cell, divided by the cell area), row-major
  like the patch tokens; parts of the box outside the crop are ignored.
  """
  x0, y0, x1, y1 = jnp.moveaxis(jnp.clip(boxes.cxcywh_to_xyxy(template_box.astype(jnp.float32)), 0.0, 1.0), -1, 0)
  lo = jnp.arange(grid, dtype=jnp.float32) / grid
  hi = lo + 1.0 / grid
  cover_x = jnp.clip(jnp.minimum(hi, x1[:, None]) - jnp.maximum(lo, x0[:, None]), 0.0, None) * grid
  cover_y = jnp.clip(jnp.minimum(hi, y1[:, None]) - jnp.maximum(lo, y0[:, None]), 0.0, None) * grid
  return (cover_y[:, :, None] * cover_x[:, None, :]).reshape(template_box.shape[0], grid * grid)


def _gate(module: nn.Module, name: str, dtype) -> jax.Array:
  init = float(getattr(module, "gate_init", 0.0))
  return jnp.tanh(module.param(name, initializers.constant(init), ())).astype(dtype)


class GatedMlp(nn.Module):
  """x + tanh(gate) * MLP(LN(x)); only used when `fusion_mlp` is on (off in the paper configs)."""
  mlp_ratio: float = 4.0
  dtype: Dtype = jnp.float32
  gate_init: float = 0.0

  @nn.compact
  def __call__(self, x):
    y = initializers.LayerNorm(epsilon=FUSION_LN_EPS, dtype=self.dtype, name="norm")(x)
    y = Mlp(int(x.shape[-1] * self.mlp_ratio), dtype=self.dtype, name="mlp")(y)
    return x + _gate(self, "gate", self.dtype) * y


class TargetEnhanceModule(nn.Module):
  """TEM: search tokens and text tokens read the template's target region (and the sentence).

  X <- X + tanh(g_x) CrossAttn(LN(X), [m * Z; proj(T)]  (one LN over both), keys: m>0 | text_mask)
  T <- T + tanh(g_t) CrossAttn(LN(T), m * LN(proj(Z)), keys: m>0)
  The weight m is applied after the LayerNorm: LN is scale invariant, so weighting before it would
  leave partially covered patches almost unweighted.
  """
  num_template: int
  heads: int
  mlp: bool = False
  dtype: Dtype = jnp.float32
  attention_impl: str = "xla"
  gate_init: float = 0.0

  @nn.compact
  def __call__(self, vision, text, target_mask, text_mask):
    vision_dim, text_dim = vision.shape[-1], text.shape[-1]
    norm = lambda name: initializers.LayerNorm(epsilon=FUSION_LN_EPS, dtype=self.dtype, name=name)
    dense = lambda n, name: initializers.Dense(n, dtype=self.dtype, name=name)
    z, x = vision[:, :self.num_template], vision[:, self.num_template:]
    m = target_mask.astype(self.dtype)[..., None]
    in_target = target_mask > 0

    context = norm("search_context_norm")(jnp.concatenate([z, dense(vision_dim, "text_to_vision")(text)], 1))
    context = jnp.concatenate([context[:, :self.num_template] * m, context[:, self.num_template:]], 1)
    keys = jnp.concatenate([in_target, text_mask.astype(bool)], 1)
    attention = lambda dim, name: Attention(dim, self.heads, dtype=self.dtype,
                                            implementation=self.attention_impl, name=name)
    dx = attention(vision_dim, "search_attn")(norm("search_norm")(x), context, key_mask=keys)

    target = norm("text_context_norm")(dense(text_dim, "vision_to_text")(z)) * m
    dt = attention(text_dim, "text_attn")(norm("text_norm")(text), target, key_mask=in_target)

    x = x + _gate(self, "search_gate", self.dtype) * dx
    text = text + _gate(self, "text_gate", self.dtype) * dt
    if self.mlp:
      x = GatedMlp(dtype=self.dtype, gate_init=self.gate_init, name="search_mlp")(x)
      text = GatedMlp(dtype=self.dtype, gate_init=self.gate_init, name="text_mlp")(text)
    return jnp.concatenate([z, x], 1), text


class SemanticAwareModule(nn.Module):
  """SAM: each modality reads the other's context.

  T <- T + tanh(a) CrossAttn(LN(T), LN(proj([Z; X])))
  [Z; X] <- [Z; X] + tanh(b) CrossAttn(LN([Z; X]), LN(proj(T)), keys: text_mask)
  Both read the other branch as it was before this module (a symmetric, order-free update).
  """
  heads: int
  mlp: bool = False
  dtype: Dtype = jnp.float32
  attention_impl: str = "xla"
  gate_init: float = 0.0

  @nn.compact
  def __call__(self, vision, text, text_mask):
    vision_dim, text_dim = vision.shape[-1], text.shape[-1]
    norm = lambda name: initializers.LayerNorm(epsilon=FUSION_LN_EPS, dtype=self.dtype, name=name)
    dense = lambda n, name: initializers.Dense(n, dtype=self.dtype, name=name)

    visual_context = norm("text_context_norm")(dense(text_dim, "vision_to_text")(vision))
    attention = lambda dim, name: Attention(dim, self.heads, dtype=self.dtype,
                                            implementation=self.attention_impl, name=name)
    dt = attention(text_dim, "text_attn")(norm("text_norm")(text), visual_context)

    text_context = norm("vision_context_norm")(dense(vision_dim, "text_to_vision")(text))
    dv = attention(vision_dim, "vision_attn")(norm("vision_norm")(vision), text_context, key_mask=text_mask)

    text = text + _gate(self, "text_gate", self.dtype) * dt
    vision = vision + _gate(self, "vision_gate", self.dtype) * dv
    if self.mlp:
      text = GatedMlp(dtype=self.dtype, gate_init=self.gate_init, name="text_mlp")(text)
      vision = GatedMlp(dtype=self.dtype, gate_init=self.gate_init, name="vision_mlp")(vision)
    return vision, text


def l2_normalize(x: jax.Array, eps: float = 1e-12) -> jax.Array:
  """x / |x| in float32; a zero vector stays zero (no NaN)."""
  x = x.astype(jnp.float32)
  return x * jax.lax.rsqrt(jnp.maximum(jnp.sum(x * x, axis=-1, keepdims=True), eps))


class DenseMatchingProjection(nn.Module):
  """Embeddings for the DM loss: per search patch W_v LN(x_p), and W_t of the masked mean text token.

  Returns L2-normalised float32 embeddings and logit_scale = 1/tau (learned in log space,
  capped at 100 as in CLIP so the softmax cannot collapse).
  """
  dim: int
  tau_init: float = 0.07
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, search_tokens, text_tokens, text_mask):
    patch = initializers.LayerNorm(epsilon=FUSION_LN_EPS, dtype=self.dtype, name="vision_norm")(search_tokens)
    patch = initializers.Dense(self.dim, dtype=self.dtype, name="vision_proj")(patch)
    mask = text_mask.astype(jnp.float32)[..., None]
    sentence = jnp.sum(text_tokens.astype(jnp.float32) * mask, 1) / jnp.maximum(jnp.sum(mask, 1), 1.0)
    sentence = initializers.Dense(self.dim, dtype=self.dtype, name="text_proj")(
        sentence.astype(self.dtype))
    log_scale = self.param("logit_scale", initializers.constant(math.log(1.0 / self.tau_init)), ())
    return {
        "patch_emb": l2_normalize(patch),
        "text_emb": l2_normalize(sentence),
        "logit_scale": jnp.exp(jnp.minimum(log_scale, math.log(100.0))),
    }
