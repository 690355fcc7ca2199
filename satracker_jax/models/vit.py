"""ViT-B/16 pieces in the MAE/OSTrack (timm) layout, plus the attention used by every branch.

Self-attention projects queries, keys and values with one fused `qkv` Dense layer (kernel
[C, 3C], outputs ordered (q|k|v, head, head_dim): timm's `attn.qkv` transposed, BERT's three
weights concatenated), so each block runs one matmul instead of three. Cross-attention (the fusion
modules, where queries and keys/values come from different tokens) projects the queries with
`query` and the keys and values with one `kv` Dense (kernel [Cc, 2C], outputs ordered (k|v, head,
head_dim)); earlier versions stored `key` and `value` apart (models/layout.py maps them).
"""
from __future__ import annotations

from typing import Any, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from satracker_jax.models import initializers

Dtype = Any



def gelu(x):
  # Exact erf GELU, as in timm ViT and BERT; the tanh approximation drifts from converted weights.
  return nn.gelu(x, approximate=False)


def dot_product_attention(query, key, value, key_mask=None, implementation: str = "xla"):
  """softmax(q k^T / sqrt(H)) v over [B, T, N, H] / [B, S, N, H] (XLA: `_attend`; cuDNN: through
  `jax.nn.dot_product_attention`).

  key_mask [B, S] (nonzero = attend). A query whose keys are all masked gets a zero output, not the
  uniform average over padding that a masked softmax gives, so masked-out content can never leak
  into the result (and the row's gradient is zero). Logits and softmax run in float32 under
  bfloat16 compute.

  implementation "cudnn" uses cuDNN's fused (flash) kernel where it applies, i.e. on a GPU with
  bfloat16/float16 inputs (cuDNN has no float32 kernel); everywhere else it runs the XLA path, so
  one config serves the GPU trainer and the CPU tracker alike.
  """
  impl = implementation
  if impl == "cudnn" and (jax.default_backend() != "gpu" or query.dtype not in (jnp.bfloat16, jnp.float16)):
    impl = "xla"
  if impl != "cudnn":
    return _attend(query, key, value, None if key_mask is None else key_mask.astype(bool))
  y = _cudnn_attention(query, key, value, None if key_mask is None else key_mask.astype(bool)[:, None, None, :])
  if key_mask is not None:
    any_key = jnp.any(key_mask.astype(bool), axis=-1)[:, None, None, None]
    y = jnp.where(any_key, y, jnp.zeros((), y.dtype))
  return y


def _probabilities(query, key, key_mask):
  """softmax(q k^T / sqrt(H)) in float32, [B, N, T, S]; all zero for a query with no key."""
  logits = jnp.einsum("btnh,bsnh->bnts", query, key, preferred_element_type=jnp.float32)
  logits = logits * (query.shape[-1] ** -0.5)
  if key_mask is not None:
    logits = jnp.where(key_mask[:, None, None, :], logits, jnp.finfo(jnp.float32).min)
  exp = jnp.exp(logits - jnp.max(logits, axis=-1, keepdims=True))
  probs = exp / jnp.sum(exp, axis=-1, keepdims=True)
  if key_mask is not None:
    probs = probs * jnp.any(key_mask, axis=-1)[:, None, None, None]
  return probs


@jax.custom_vjp
def _attend(query, key, value, key_mask):
  """The XLA attention: the same values as `jax.nn.dot_product_attention(implementation="xla")`
  (float32 logits and softmax, probabilities cast to the value dtype), with a hand-written backward
  pass that keeps only q, k, v and the probabilities. Autodiff of the softmax kept its
  intermediates as arrays of their own, each a kernel on XLA:CPU (3 of a self-attention's 19
  forward-and-backward kernels)."""
  return _attend_fwd(query, key, value, key_mask)[0]


def _attend_fwd(query, key, value, key_mask):
  probs = _probabilities(query, key, key_mask)
  y = jnp.einsum("bnts,bsnh->btnh", probs.astype(value.dtype), value)
  return y, (query, key, value, key_mask, probs)


def _attend_bwd(residuals, dy):
  query, key, value, key_mask, probs = residuals
  dprobs = jnp.einsum("btnh,bsnh->bnts", dy, value, preferred_element_type=jnp.float32)
  dvalue = jnp.einsum("bnts,btnh->bsnh", probs.astype(dy.dtype), dy)
  dlogits = probs * (dprobs - jnp.sum(dprobs * probs, axis=-1, keepdims=True))
  dlogits = (dlogits * (query.shape[-1] ** -0.5)).astype(query.dtype)
  dquery = jnp.einsum("bnts,bsnh->btnh", dlogits, key)
  dkey = jnp.einsum("bnts,btnh->bsnh", dlogits, query)
  return dquery, dkey, dvalue, None


_attend.defvjp(_attend_fwd, _attend_bwd)


def _cudnn_attention(query, key, value, mask):
  """cuDNN's fused attention; the key mask given as a [B, 1, T, S] bias, the only mask shape its
  kernel takes (a [B, 1, 1, S] mask fails its shape check: every masked attention fell back).
  A shape cuDNN has no kernel for (head dim not a multiple of 8, odd sequence lengths with a mask
  in training) raises while tracing: that attention then runs on XLA, said once per shape."""
  if mask is not None:
    mask = jnp.broadcast_to(mask, (query.shape[0], 1, query.shape[1], key.shape[1]))
  try:
    return jax.nn.dot_product_attention(query, key, value, mask=mask, implementation="cudnn")
  except (NotImplementedError, ValueError) as e:
    shapes = (query.shape, key.shape, None if mask is None else mask.shape)
    if shapes not in _CUDNN_FALLBACKS:
      _CUDNN_FALLBACKS.add(shapes)
      print(f"attention_impl=cudnn: no cuDNN kernel for q {query.shape}, k {key.shape} "
            f"({type(e).__name__}: {str(e)[:120]}); this attention runs on XLA")
    return jax.nn.dot_product_attention(query, key, value, mask=mask, implementation="xla")


_CUDNN_FALLBACKS: set = set()


class Attention(nn.Module):
  """Multi-head attention with an optional key mask (see dot_product_attention).

  Without `context` it is self-attention through one fused `qkv` Dense; with `context`,
  cross-attention through `query` (on x) and one fused `kv` Dense (on the context).
  """
  dim: int
  heads: int
  out_dim: Optional[int] = None
  dtype: Dtype = jnp.float32
  implementation: str = "xla"

  @nn.compact
  def __call__(self, x, context=None, key_mask=None):
    if self.dim % self.heads:
      raise ValueError(f"attention dim {self.dim} is not divisible by {self.heads} heads")
    head_dim = self.dim // self.heads
    dense = lambda features, name: initializers.Dense(
        features, dtype=self.dtype, name=name)
    split = lambda t: t.reshape(*t.shape[:-1], self.heads, head_dim)  # [B, T, N, H]
    # jnp.split, not indexing: the gradient of a split is one concatenation, of indexing one
    # padded array per part, summed.
    parts = lambda t, n: [p.squeeze(-3) for p in jnp.split(t.reshape(*t.shape[:-1], n, self.heads, head_dim), n, -3)]
    if context is None:
      q, k, v = parts(dense(3 * self.dim, "qkv")(x), 3)
    else:
      q = split(dense(self.dim, "query")(x))
      k, v = parts(dense(2 * self.dim, "kv")(context), 2)
    y = dot_product_attention(q, k, v, key_mask, self.implementation)
    y = y.reshape(*y.shape[:-2], self.dim)
    return dense(self.out_dim or x.shape[-1], "out")(y)


class Mlp(nn.Module):
  hidden: int
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    y = initializers.Dense(self.hidden, dtype=self.dtype, name="fc1")(x)
    y = gelu(y)
    return initializers.Dense(x.shape[-1], dtype=self.dtype, name="fc2")(y)


class ViTBlock(nn.Module):
  """Pre-LN transformer block: x + attn(norm1(x)); x + mlp(norm2(x))."""
  dim: int
  heads: int
  mlp_ratio: float = 4.0
  ln_eps: float = 1e-6
  dtype: Dtype = jnp.float32
  attention_impl: str = "xla"

  @nn.compact
  def __call__(self, x, key_mask=None):
    norm = lambda name: initializers.LayerNorm(epsilon=self.ln_eps, dtype=self.dtype, name=name)
    attn = Attention(self.dim, self.heads, dtype=self.dtype, implementation=self.attention_impl, name="attn")
    x = x + attn(norm("norm1")(x), key_mask=key_mask)
    x = x + Mlp(int(self.dim * self.mlp_ratio), dtype=self.dtype, name="mlp")(norm("norm2")(x))
    return x


def patch_embed(dim: int, patch_size: int, dtype: Dtype = jnp.float32, name: str = "patch_embed") -> nn.Conv:
  """The ViT patch embedding: a patch_size x patch_size stride-patch_size conv (HWIO kernel).

  A plain nn.Conv (not a wrapper module) so its parameters are `patch_embed/{kernel,bias}`.
  """
  p = patch_size
  return initializers.Conv(dim, (p, p), strides=(p, p), padding="VALID", dtype=dtype, name=name)


def grid_to_tokens(y: jax.Array) -> jax.Array:
  """[B, H, W, C] -> [B, H*W, C], row-major over the grid (the timm token order)."""
  return y.reshape(y.shape[0], -1, y.shape[-1])
