"""SATracker: Synchronous Learning Backbone + OSTrack centre head (see docs/INTERFACES.md "Model").

`build_model(config.model)` turns the ConfigDict into the frozen dataclasses of `models/config.py`
(validated there, so a bad config fails before tracing).
"""
from __future__ import annotations

from typing import Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from satracker_jax.models.config import ModelConfig, model_config_from_dict
from satracker_jax.models.head import CenterHead, decode_box
from satracker_jax.models.slb import SynchronousBackbone

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def normalize_image(images: jax.Array) -> jax.Array:
  """uint8 or float images in [0, 255], NHWC RGB -> ImageNet-normalised float32."""
  x = images.astype(jnp.float32) / 255.0
  return (x - jnp.asarray(IMAGENET_MEAN, jnp.float32)) / jnp.asarray(IMAGENET_STD, jnp.float32)


class SATracker(nn.Module):
  config: ModelConfig

  def setup(self):
    # The backbone shares this module's scope so parameter names stay flat (`vit_block_0`, not
    # `backbone/vit_block_0`): the names documented for weight conversion and lr rules.
    self.backbone = SynchronousBackbone(self.config)
    nn.share_scope(self, self.backbone)
    self.box_head = CenterHead(self.config.head_channels, self.config.head_layers,
                               dtype=self.config.compute_dtype)

  def init(self, *args, **kwargs):
    """Flax's `init` with plain arrays: every parameter is created boxed with its initialiser's rule
    (models/initializers.py), which `model_io.host_variables` reads through `nn.Module.init`."""
    return nn.meta.unbox(super().init(*args, **kwargs))

  def __call__(self, template, template_box, search, text_ids, text_mask, train: bool = False,
               dense_matching: Optional[bool] = None):
    """`train` switches the head's BatchNorm to batch statistics. `dense_matching` (default: =
    `train`) computes the DM embeddings `out["dm"]`; only the DM loss reads them, so inference
    (the tracker's step, export) skips those projections and gets `out["dm"] == ()`."""
    cfg = self.config
    dense_matching = train if dense_matching is None else dense_matching
    feats = self.backbone(normalize_image(template), template_box, normalize_image(search), text_ids, text_mask,
                          dense_matching=dense_matching)
    vision = feats["vision_tokens"]
    grid = cfg.search_grid
    search_map = vision[:, cfg.num_template:].reshape(vision.shape[0], grid, grid, vision.shape[-1])
    score_map, size_map, offset_map = self.box_head(search_map, train=train)
    pred_box, _ = decode_box(score_map, size_map, offset_map)
    return {
        "score_map": score_map,
        "size_map": size_map,
        "offset_map": offset_map,
        "pred_box": pred_box,
        "dm": feats["dm"],
        "vision_tokens": vision.astype(jnp.float32),
        "text_tokens": feats["text_tokens"].astype(jnp.float32),
    }


def build_model(config) -> SATracker:
  """`config.model` (ConfigDict, dict or ModelConfig) -> SATracker module."""
  return SATracker(model_config_from_dict(config))


def count_params(params) -> int:
  return sum(int(x.size) for x in jax.tree.leaves(params))
