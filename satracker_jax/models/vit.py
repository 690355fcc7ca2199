"""ViT-B/16 pieces in the MAE/OSTrack (timm) layout, plus the attention used by every branch.

Attention keeps separate `query`/`key`/`value`/`out` Dense layers (kernels [in, out]) so a
PyTorch fused qkv weight converts by splitting into three and transposing.
"""
from __future__ import annotations

from typing import Any, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

Dtype = Any

# Kernels are PyTorch-style trunc-normal(0.02) so a from-scratch model starts like timm/BERT ones.
dense_init = nn.initializers.truncated_normal(0.02)


def gelu(x):
  # Exact erf GELU, as in timm ViT and BERT; the tanh approximation drifts from converted weights.
  return nn.gelu(x, approximate=False)


class Attention(nn.Module):
  """Multi-head (self or cross) attention with an optional key mask.

  A query whose keys are all masked gets a zero attention output (not a uniform average over
  padding), so masked-out content can never leak into the result.
  """
  dim: int
  heads: int
  out_dim: Optional[int] = None
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x, context=None, key_mask=None):
    context = x if context is None else context
    if self.dim % self.heads:
      raise ValueError(f"attention dim {self.dim} is not divisible by {self.heads} heads")
    head_dim = self.dim // self.heads
    dense = lambda features, name: nn.Dense(
        features, dtype=self.dtype, kernel_init=dense_init, name=name)
    split = lambda t: t.reshape(*t.shape[:-1], self.heads, head_dim)
    q = split(dense(self.dim, "query")(x))
    k = split(dense(self.dim, "key")(context))
    v = split(dense(self.dim, "value")(context))
    # Logits and softmax in float32 even under bfloat16 compute.
    logits = jnp.einsum("bqhd,bkhd->bhqk", q, k, preferred_element_type=jnp.float32)
    logits = logits / jnp.sqrt(jnp.float32(head_dim))
    if key_mask is not None:
      valid = key_mask.astype(bool)[:, None, None, :]
      logits = jnp.where(valid, logits, -1e9)
      weights = jax.nn.softmax(logits, axis=-1) * valid
    else:
      weights = jax.nn.softmax(logits, axis=-1)
    y = jnp.einsum("bhqk,bkhd->bqhd", weights.astype(v.dtype), v)
    y = y.reshape(*y.shape[:-2], self.dim)
    return dense(self.out_dim or x.shape[-1], "out")(y)


class Mlp(nn.Module):
  hidden: int
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    y = nn.Dense(self.hidden, dtype=self.dtype, kernel_init=dense_init, name="fc1")(x)
    y = gelu(y)
    return nn.Dense(x.shape[-1], dtype=self.dtype, kernel_init=dense_init, name="fc2")(y)


class ViTBlock(nn.Module):
  """Pre-LN transformer block: x + attn(norm1(x)); x + mlp(norm2(x))."""
  dim: int
  heads: int
  mlp_ratio: float = 4.0
  ln_eps: float = 1e-6
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x, key_mask=None):
    norm = lambda name: nn.LayerNorm(epsilon=self.ln_eps, dtype=self.dtype, name=name)
    x = x + Attention(self.dim, self.heads, dtype=self.dtype, name="attn")(norm("norm1")(x), key_mask=key_mask)
    x = x + Mlp(int(self.dim * self.mlp_ratio), dtype=self.dtype, name="mlp")(norm("norm2")(x))
    return x


def patch_embed(dim: int, patch_size: int, dtype: Dtype = jnp.float32, name: str = "patch_embed") -> nn.Conv:
  """The ViT patch embedding: a patch_size x patch_size stride-patch_size conv (HWIO kernel).

  A plain nn.Conv (not a wrapper module) so its parameters are `patch_embed/{kernel,bias}`.
  """
  p = patch_size
  return nn.Conv(dim, (p, p), strides=(p, p), padding="VALID", dtype=dtype, name=name)


def grid_to_tokens(y: jax.Array) -> jax.Array:
  """[B, H, W, C] -> [B, H*W, C], row-major over the grid (the timm token order)."""
  return y.reshape(y.shape[0], -1, y.shape[-1])
