"""OSTrack centre head and the box decoder shared by the model and the tracker."""
from __future__ import annotations

from typing import Any, Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from satracker_jax.models import initializers

Dtype = Any


class ConvTower(nn.Module):
  """(conv3x3 - BatchNorm - ReLU) per entry of `channels`, then a 1x1 conv to `out_features`.

  The 3x3 convs have no bias: BatchNorm subtracts the mean, so a bias there would only get a
  gradient of rounding noise (which Adam scales up to full-size steps) and its running mean would
  hold it anyway. OSTrack's convs have one; an earlier layout's bias folds into the running mean
  (models/layout.py `fold_head_conv_bias`), which gives the same function."""
  channels: Sequence[int]
  out_features: int
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool):
    for k, c in enumerate(self.channels):
      x = initializers.Conv(c, (3, 3), padding=1, use_bias=False, dtype=self.dtype, name=f"conv_{k}")(x)
      # PyTorch BatchNorm2d defaults (momentum 0.1 = Flax 0.9, eps 1e-5) so converted stats fit.
      # Under jit with a sharded batch the statistics are over the global batch (synchronised BN).
      x = initializers.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5,
                                 dtype=self.dtype, name=f"bn_{k}")(x)
      x = nn.relu(x)
    return initializers.Conv(self.out_features, (1, 1), dtype=self.dtype, name="out")(x)


class CenterHead(nn.Module):
  """Score logits [B,H,W,1], size [B,H,W,2] (w,h) and offset [B,H,W,2] (x,y), both sigmoid, float32.

  Tower widths halve per layer as in OSTrack's CenterPredictor (256, 128, 64, 32 for base).
  """
  channels: int = 256
  layers: int = 4
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, features, train: bool = False):
    widths = tuple(max(self.channels // 2 ** k, 1) for k in range(self.layers))
    tower = lambda out, name: ConvTower(widths, out, dtype=self.dtype, name=name)(features, train).astype(jnp.float32)
    score = tower(1, "score_tower")
    size = jax.nn.sigmoid(tower(2, "size_tower"))
    offset = jax.nn.sigmoid(tower(2, "offset_tower"))
    return score, size, offset


def decode_box(score_map: jax.Array, size_map: jax.Array, offset_map: jax.Array,
               window: Optional[jax.Array] = None):
  """Box at the best cell: ([B, 4] normalised cx,cy,w,h, [B] score).

  score = sigmoid(logit) (times `window` [H, W] or [B, H, W] if given, e.g. a Hann window) at the
  argmax cell; centre = (cell index + offset) / grid, size read at that cell. The argmax is not
  differentiable; gradients flow into size and offset at the chosen cell.
  """
  b, h, w, _ = score_map.shape
  score = jax.nn.sigmoid(score_map[..., 0].astype(jnp.float32))
  if window is not None:
    score = score * window.astype(jnp.float32)
  flat = score.reshape(b, h * w)
  idx = jnp.argmax(flat, axis=-1)
  pick = lambda m: jnp.take_along_axis(m.reshape(b, h * w, -1), idx[:, None, None], axis=1)[:, 0]
  size = pick(size_map).astype(jnp.float32)
  offset = pick(offset_map).astype(jnp.float32)
  cx = ((idx % w).astype(jnp.float32) + offset[:, 0]) / w
  cy = ((idx // w).astype(jnp.float32) + offset[:, 1]) / h
  box = jnp.stack([cx, cy, size[:, 0], size[:, 1]], axis=-1)
  return box, jnp.take_along_axis(flat, idx[:, None], axis=1)[:, 0]
