"""SATracker: Synchronous Learning Backbone + OSTrack centre head (see docs/INTERFACES.md "Model").

`build_model(config.model)` turns the ConfigDict into frozen dataclasses (Linen module fields must
be hashable; ConfigDicts are not) and validates it, so a bad config fails before tracing.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Mapping, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from satracker_jax.models.head import CenterHead, decode_box
from satracker_jax.models.slb import SynchronousBackbone

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


def normalize_image(images: jax.Array) -> jax.Array:
  """uint8 or float images in [0, 255], NHWC RGB -> ImageNet-normalised float32."""
  x = images.astype(jnp.float32) / 255.0
  return (x - jnp.asarray(IMAGENET_MEAN, jnp.float32)) / jnp.asarray(IMAGENET_STD, jnp.float32)


@dataclasses.dataclass(frozen=True)
class ViTConfig:
  dim: int = 768
  depth: int = 12
  heads: int = 12
  mlp_ratio: float = 4.0
  ln_eps: float = 1e-6
  pretrain_grid: int = 14


@dataclasses.dataclass(frozen=True)
class BertConfig:
  vocab_size: int = 30522
  dim: int = 768
  layers: int = 12
  heads: int = 12
  intermediate: int = 3072
  max_position: int = 512
  type_vocab: int = 2
  ln_eps: float = 1e-12


@dataclasses.dataclass(frozen=True)
class ModelConfig:
  """Hashable mirror of `config.model` (field meanings: configs/base.py)."""
  template_size: int = 128
  search_size: int = 256
  patch_size: int = 16
  max_text_len: int = 40
  vit: ViTConfig = ViTConfig()
  bert: BertConfig = BertConfig()
  text_layer_map: Tuple[int, ...] = ()
  tem_layers: Tuple[int, ...] = (1, 3, 5)
  sam_layers: Tuple[int, ...] = (7, 9, 11)
  dm_layers: Tuple[int, ...] = (7, 9, 11)
  use_tem: bool = True
  use_sam: bool = True
  use_text: bool = True
  fusion_heads: int = 8
  fusion_mlp: bool = False
  dm_dim: int = 256
  dm_tau_init: float = 0.07
  head_channels: int = 256
  head_layers: int = 4
  dtype: str = "float32"

  def __post_init__(self):
    errors = []
    for name in ("template_size", "search_size"):
      if getattr(self, name) % self.patch_size:
        errors.append(f"{name}={getattr(self, name)} is not a multiple of patch_size={self.patch_size}")
    depth = self.vit.depth
    if self.text_layer_map and len(self.text_layer_map) != depth:
      errors.append(f"text_layer_map has {len(self.text_layer_map)} entries, vit.depth is {depth}")
    if not self.text_layer_map and self.bert.layers < depth:
      errors.append(f"identity text_layer_map needs bert.layers >= vit.depth ({self.bert.layers} < {depth}); "
                    "give an explicit text_layer_map")
    if any(not 0 <= j < self.bert.layers for j in self.text_layer_map):
      errors.append(f"text_layer_map {self.text_layer_map} has entries outside 0..{self.bert.layers - 1}")
    for name in ("tem_layers", "sam_layers", "dm_layers"):
      if any(not 0 <= i < depth for i in getattr(self, name)):
        errors.append(f"{name}={getattr(self, name)} has stages outside 0..{depth - 1}")
    if self.dtype not in _DTYPES:
      errors.append(f"dtype={self.dtype!r}; choose from {sorted(_DTYPES)}")
    if self.max_text_len > self.bert.max_position:
      errors.append(f"max_text_len={self.max_text_len} > bert.max_position={self.bert.max_position}")
    for dim, heads, what in ((self.vit.dim, self.vit.heads, "vit"), (self.bert.dim, self.bert.heads, "bert"),
                             (self.vit.dim, self.fusion_heads, "fusion (vision)"),
                             (self.bert.dim, self.fusion_heads, "fusion (text)")):
      if dim % heads:
        errors.append(f"{what}: dim {dim} is not divisible by {heads} heads")
    if errors:
      raise ValueError("invalid model config:\n  " + "\n  ".join(errors))

  @property
  def template_grid(self) -> int:
    return self.template_size // self.patch_size

  @property
  def search_grid(self) -> int:
    return self.search_size // self.patch_size

  @property
  def num_template(self) -> int:
    return self.template_grid ** 2

  @property
  def num_search(self) -> int:
    return self.search_grid ** 2

  @property
  def stage_text_layers(self) -> Tuple[int, ...]:
    """BERT layer index run at each visual stage."""
    return tuple(self.text_layer_map) or tuple(range(self.vit.depth))

  @property
  def compute_dtype(self):
    return _DTYPES[self.dtype]


def _from_mapping(cls, values: Mapping[str, Any], where: str, nested=None):
  known = {f.name for f in dataclasses.fields(cls)}
  unknown = sorted(set(values) - known)
  if unknown:
    raise ValueError(f"{where}: unknown field(s) {unknown}; the model knows {sorted(known)}")
  kwargs = {}
  for key, value in values.items():
    if nested and key in nested:
      value = nested[key](value)
    elif isinstance(value, list):
      value = tuple(value)
    kwargs[key] = value
  return cls(**kwargs)


def model_config_from_dict(config) -> ModelConfig:
  """`config.model` (ConfigDict or dict) -> ModelConfig; a ModelConfig passes through."""
  if isinstance(config, ModelConfig):
    return config
  values = config.to_dict() if hasattr(config, "to_dict") else dict(config)
  sub = lambda cls, name: (lambda v: v if isinstance(v, cls) else _from_mapping(cls, dict(v), f"model.{name}"))
  return _from_mapping(ModelConfig, values, "model",
                       nested={"vit": sub(ViTConfig, "vit"), "bert": sub(BertConfig, "bert")})


class SATracker(nn.Module):
  config: ModelConfig

  def setup(self):
    # The backbone shares this module's scope so parameter names stay flat (`vit_block_0`, not
    # `backbone/vit_block_0`): the names documented for weight conversion and lr rules.
    self.backbone = SynchronousBackbone(self.config)
    nn.share_scope(self, self.backbone)
    self.box_head = CenterHead(self.config.head_channels, self.config.head_layers,
                               dtype=self.config.compute_dtype)

  def __call__(self, template, template_box, search, text_ids, text_mask, train: bool = False):
    cfg = self.config
    feats = self.backbone(normalize_image(template), template_box, normalize_image(search), text_ids, text_mask)
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
