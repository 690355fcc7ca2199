"""Independent NumPy forward passes over raw PyTorch-named weights (timm/MAE ViT, HF BERT).

Written from the PyTorch modules' definitions, not from our Flax code, so a conversion bug
(missed transpose, q/k/v order, LayerNorm eps, GELU flavour) shows up as a numeric mismatch.
Everything runs in float64. Also random state-dict generators in those layouts for tests.
"""
from __future__ import annotations

import numpy as np
from scipy.special import erf

IMAGENET_MEAN = np.array([0.485, 0.456, 0.406])
IMAGENET_STD = np.array([0.229, 0.224, 0.225])


def _f64(state):
  return {k: np.asarray(v, np.float64) for k, v in state.items()}


def layer_norm(x, w, b, eps):
  mu = x.mean(-1, keepdims=True)
  var = ((x - mu) ** 2).mean(-1, keepdims=True)
  return (x - mu) / np.sqrt(var + eps) * w + b


def gelu(x):
  return 0.5 * x * (1.0 + erf(x / np.sqrt(2.0)))


def linear(x, state, name):
  """torch.nn.Linear: y = x W^T + b with W [out, in]."""
  return x @ state[name + ".weight"].T + state[name + ".bias"]


def attention(q, k, v, heads, key_mask=None):
  b, nq, c = q.shape
  d = c // heads
  split = lambda t: t.reshape(b, t.shape[1], heads, d).transpose(0, 2, 1, 3)
  q, k, v = split(q), split(k), split(v)
  logits = q @ k.transpose(0, 1, 3, 2) / np.sqrt(d)
  if key_mask is not None:
    logits = np.where(key_mask[:, None, None, :] > 0, logits, -1e30)
  logits = logits - logits.max(-1, keepdims=True)
  w = np.exp(logits)
  w = w / w.sum(-1, keepdims=True)
  return (w @ v).transpose(0, 2, 1, 3).reshape(b, nq, c)


def normalize_image(images):
  return (np.asarray(images, np.float64) / 255.0 - IMAGENET_MEAN) / IMAGENET_STD


def patch_embed(images, state, prefix="patch_embed.proj"):
  """Conv2d(kernel=stride=p) on NHWC images with a torch OIHW weight -> [B, N, C] (row-major)."""
  w, bias = state[prefix + ".weight"], state[prefix + ".bias"]
  p = w.shape[-1]
  b, h, wd, c = images.shape
  patches = images.reshape(b, h // p, p, wd // p, p, c)  # b, gh, kh, gw, kw, c
  y = np.einsum("bikjlc,ockl->bijo", patches, w) + bias
  return y.reshape(b, -1, w.shape[0])


def vit_block(x, state, prefix, heads, eps=1e-6):
  """timm `Block`: x + attn(norm1(x)); x + mlp(norm2(x)); attn with a fused qkv Linear."""
  y = layer_norm(x, state[f"{prefix}.norm1.weight"], state[f"{prefix}.norm1.bias"], eps)
  qkv = linear(y, state, f"{prefix}.attn.qkv")
  q, k, v = np.split(qkv, 3, axis=-1)
  x = x + linear(attention(q, k, v, heads), state, f"{prefix}.attn.proj")
  y = layer_norm(x, state[f"{prefix}.norm2.weight"], state[f"{prefix}.norm2.bias"], eps)
  return x + linear(gelu(linear(y, state, f"{prefix}.mlp.fc1")), state, f"{prefix}.mlp.fc2")


def vit_track_features(state, template, search, pos_z, pos_x, heads, eps=1e-6):
  """OSTrack one-stream features: [embed(Z)+pos_z; embed(X)+pos_x] -> blocks -> norm.

  Images: uint8-range NHWC; normalised here with ImageNet statistics like the model does.
  """
  state = _f64(state)
  z = patch_embed(normalize_image(template), state) + np.asarray(pos_z, np.float64).reshape(1, -1, pos_z.shape[-1])
  x = patch_embed(normalize_image(search), state) + np.asarray(pos_x, np.float64).reshape(1, -1, pos_x.shape[-1])
  tokens = np.concatenate([z, x], axis=1)
  depth = 1 + max(int(k.split(".")[1]) for k in state if k.startswith("blocks."))
  for i in range(depth):
    tokens = vit_block(tokens, state, f"blocks.{i}", heads, eps)
  return layer_norm(tokens, state["norm.weight"], state["norm.bias"], eps)


def bert_forward(state, ids, mask, heads, eps=1e-12):
  """HF `BertModel` last_hidden_state (token_type_ids = 0), post-LN layers."""
  state = _f64(state)
  ids = np.asarray(ids)
  n = ids.shape[1]
  e = "embeddings"
  x = (state[f"{e}.word_embeddings.weight"][ids] + state[f"{e}.position_embeddings.weight"][:n][None]
       + state[f"{e}.token_type_embeddings.weight"][0])
  x = layer_norm(x, state[f"{e}.LayerNorm.weight"], state[f"{e}.LayerNorm.bias"], eps)
  layers = 1 + max(int(k.split(".")[2]) for k in state if k.startswith("encoder.layer."))
  for i in range(layers):
    p = f"encoder.layer.{i}"
    a = attention(linear(x, state, f"{p}.attention.self.query"), linear(x, state, f"{p}.attention.self.key"),
                  linear(x, state, f"{p}.attention.self.value"), heads, key_mask=np.asarray(mask))
    x = layer_norm(x + linear(a, state, f"{p}.attention.output.dense"),
                   state[f"{p}.attention.output.LayerNorm.weight"], state[f"{p}.attention.output.LayerNorm.bias"], eps)
    y = linear(gelu(linear(x, state, f"{p}.intermediate.dense")), state, f"{p}.output.dense")
    x = layer_norm(x + y, state[f"{p}.output.LayerNorm.weight"], state[f"{p}.output.LayerNorm.bias"], eps)
  return x


# ---------------------------------------------------------------------------------------------
# Random weights in the PyTorch layouts. `make` builds each array: a random generator by default,
# or e.g. a zero-stride `np.broadcast_to` for shape-only checks of full-size models.


def _maker(rng, make):
  if make is not None:
    return make
  def random(shape, kind):
    if kind == "scale":
      return (1.0 + 0.1 * rng.standard_normal(shape)).astype(np.float32)
    return (0.2 * rng.standard_normal(shape)).astype(np.float32)
  return random


def vit_state_dict(dim, depth, mlp_hidden, patch=16, grid=14, rng=None, make=None, ostrack_grids=None):
  """timm/MAE `VisionTransformer` names; `ostrack_grids=(gz, gx)` adds OSTrack's pos_embed_z/x."""
  mk = _maker(rng, make)
  s = {"cls_token": mk((1, 1, dim), "w"), "pos_embed": mk((1, 1 + grid * grid, dim), "w"),
       "patch_embed.proj.weight": mk((dim, 3, patch, patch), "w"), "patch_embed.proj.bias": mk((dim,), "w")}
  for i in range(depth):
    p = f"blocks.{i}"
    for n in ("norm1", "norm2"):
      s[f"{p}.{n}.weight"], s[f"{p}.{n}.bias"] = mk((dim,), "scale"), mk((dim,), "w")
    s[f"{p}.attn.qkv.weight"], s[f"{p}.attn.qkv.bias"] = mk((3 * dim, dim), "w"), mk((3 * dim,), "w")
    s[f"{p}.attn.proj.weight"], s[f"{p}.attn.proj.bias"] = mk((dim, dim), "w"), mk((dim,), "w")
    s[f"{p}.mlp.fc1.weight"], s[f"{p}.mlp.fc1.bias"] = mk((mlp_hidden, dim), "w"), mk((mlp_hidden,), "w")
    s[f"{p}.mlp.fc2.weight"], s[f"{p}.mlp.fc2.bias"] = mk((dim, mlp_hidden), "w"), mk((dim,), "w")
  s["norm.weight"], s["norm.bias"] = mk((dim,), "scale"), mk((dim,), "w")
  if ostrack_grids:
    gz, gx = ostrack_grids
    s["pos_embed_z"], s["pos_embed_x"] = mk((1, gz * gz, dim), "w"), mk((1, gx * gx, dim), "w")
  return s


def bert_state_dict(vocab, dim, layers, intermediate, max_position=512, type_vocab=2, rng=None, make=None):
  """HF `BertModel` names, pooler included (the converter must report it unused)."""
  mk = _maker(rng, make)
  e = "embeddings"
  s = {f"{e}.word_embeddings.weight": mk((vocab, dim), "w"),
       f"{e}.position_embeddings.weight": mk((max_position, dim), "w"),
       f"{e}.token_type_embeddings.weight": mk((type_vocab, dim), "w"),
       f"{e}.LayerNorm.weight": mk((dim,), "scale"), f"{e}.LayerNorm.bias": mk((dim,), "w")}
  for i in range(layers):
    p = f"encoder.layer.{i}"
    for n in ("query", "key", "value"):
      s[f"{p}.attention.self.{n}.weight"], s[f"{p}.attention.self.{n}.bias"] = mk((dim, dim), "w"), mk((dim,), "w")
    s[f"{p}.attention.output.dense.weight"] = mk((dim, dim), "w")
    s[f"{p}.attention.output.dense.bias"] = mk((dim,), "w")
    s[f"{p}.attention.output.LayerNorm.weight"] = mk((dim,), "scale")
    s[f"{p}.attention.output.LayerNorm.bias"] = mk((dim,), "w")
    s[f"{p}.intermediate.dense.weight"] = mk((intermediate, dim), "w")
    s[f"{p}.intermediate.dense.bias"] = mk((intermediate,), "w")
    s[f"{p}.output.dense.weight"] = mk((dim, intermediate), "w")
    s[f"{p}.output.dense.bias"] = mk((dim,), "w")
    s[f"{p}.output.LayerNorm.weight"] = mk((dim,), "scale")
    s[f"{p}.output.LayerNorm.bias"] = mk((dim,), "w")
  s["pooler.dense.weight"], s["pooler.dense.bias"] = mk((dim, dim), "w"), mk((dim,), "w")
  return s


def zero_stride(shape, kind):
  """Shape-only stand-in: a read-only view of one zero, no memory per element."""
  del kind
  return np.broadcast_to(np.zeros((), np.float32), shape)
