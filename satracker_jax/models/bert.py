"""BERT-base pieces (HuggingFace `BertModel` layout, no pooler): embeddings and post-LN layers."""
from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from satracker_jax.models import initializers
from satracker_jax.models.vit import Attention, gelu

Dtype = Any


class BertEmbeddings(nn.Module):
  """word + position + token-type embeddings, then LayerNorm (eps 1e-12 in BERT)."""
  vocab_size: int
  dim: int
  max_position: int
  type_vocab: int
  ln_eps: float = 1e-12
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, text_ids, token_type_ids=None):
    length = text_ids.shape[-1]
    if length > self.max_position:
      raise ValueError(f"text length {length} exceeds BERT max_position {self.max_position}")
    embed = lambda n, name: initializers.Embed(n, self.dim, dtype=self.dtype, name=name)
    if token_type_ids is None:
      token_type_ids = jnp.zeros_like(text_ids)
    x = embed(self.vocab_size, "word_embeddings")(text_ids)
    x = x + embed(self.max_position, "position_embeddings")(jnp.arange(length))[None]
    x = x + embed(self.type_vocab, "token_type_embeddings")(token_type_ids)
    return initializers.LayerNorm(epsilon=self.ln_eps, dtype=self.dtype, name="layer_norm")(x)


class BertLayer(nn.Module):
  """Post-LN: x = LN(x + attn(x)); x = LN(x + output(gelu(intermediate(x))))."""
  dim: int
  heads: int
  intermediate: int
  ln_eps: float = 1e-12
  dtype: Dtype = jnp.float32
  attention_impl: str = "xla"

  @nn.compact
  def __call__(self, x, text_mask):
    norm = lambda name: initializers.LayerNorm(epsilon=self.ln_eps, dtype=self.dtype, name=name)
    dense = lambda n, name: initializers.Dense(n, dtype=self.dtype, name=name)
    attn = Attention(self.dim, self.heads, dtype=self.dtype, implementation=self.attention_impl, name="attention")
    x = norm("attention_norm")(x + attn(x, key_mask=text_mask))
    y = dense(self.dim, "output")(gelu(dense(self.intermediate, "intermediate")(x)))
    return norm("output_norm")(x + y)
