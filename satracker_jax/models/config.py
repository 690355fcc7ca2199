"""The model's configuration as frozen dataclasses: `config.model` (a ConfigDict) made hashable.

Linen module fields must be hashable and ConfigDicts are not, so `model_config_from_dict` mirrors
`config.model` into these dataclasses and validates it: a bad config fails here, before tracing,
with every problem listed. Field meanings: configs/base.py. Every module under `models/` reads
its sizes from here, so this file imports nothing of the model (no import circle).
"""
from __future__ import annotations

import dataclasses
from typing import Any, Mapping, Tuple

import jax
import jax.numpy as jnp

_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}
# "auto": bfloat16 compute on GPUs and TPUs (f32 parameters, optimizer state, losses, softmax and
# LayerNorm statistics), float32 on CPUs, which have no fast bf16 matrix unit.
AUTO_DTYPE = "auto"
BF16_PLATFORMS = ("gpu", "tpu")
ATTENTION_IMPLS = ("xla", "cudnn")
REMAT_POLICIES = ("none", "full", "dots")
NO_TEXT_LAYER = -1  # a `text_layer_map` entry: this stage runs no BERT layer (text passes through)


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
  fusion_gate_init: float = 0.0
  dm_dim: int = 256
  dm_tau_init: float = 0.07
  head_channels: int = 256
  head_layers: int = 4
  dtype: str = AUTO_DTYPE
  attention_impl: str = "xla"
  remat: str = "none"
  scan_layers: bool = False

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
    if any(not (0 <= j < self.bert.layers or j == NO_TEXT_LAYER) for j in self.text_layer_map):
      errors.append(f"text_layer_map {self.text_layer_map} has entries outside 0..{self.bert.layers - 1} "
                    f"(or {NO_TEXT_LAYER}: no text layer at that stage)")
    for name in ("tem_layers", "sam_layers", "dm_layers"):
      if any(not 0 <= i < depth for i in getattr(self, name)):
        errors.append(f"{name}={getattr(self, name)} has stages outside 0..{depth - 1}")
    used = sorted({j for j in self.stage_text_layers if j != NO_TEXT_LAYER})
    if used and used != list(range(len(used))):
      errors.append(f"text_layer_map {self.text_layer_map} uses BERT layers {used}; the stored stack "
                    f"bert_layers needs layers 0..{len(used) - 1} without gaps")
    if self.dtype not in _DTYPES and self.dtype != AUTO_DTYPE:
      errors.append(f"dtype={self.dtype!r}; choose from {sorted(_DTYPES) + [AUTO_DTYPE]}")
    if self.attention_impl not in ATTENTION_IMPLS:
      errors.append(f"attention_impl={self.attention_impl!r}; choose from {list(ATTENTION_IMPLS)}")
    if self.remat not in REMAT_POLICIES:
      errors.append(f"remat={self.remat!r}; choose from {list(REMAT_POLICIES)}")
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
    """BERT layer index run at each visual stage (NO_TEXT_LAYER: the text passes through)."""
    return tuple(self.text_layer_map) or tuple(range(self.vit.depth))

  @property
  def num_text_layers(self) -> int:
    """Rows of the stored `bert_layers` stack: the BERT layers some stage runs (0..n-1)."""
    return len({j for j in self.stage_text_layers if j != NO_TEXT_LAYER})

  @property
  def resolved_dtype(self) -> str:
    """"float32" or "bfloat16": `dtype`, with "auto" decided by the platform JAX runs on."""
    return resolve_dtype(self.dtype)

  @property
  def compute_dtype(self):
    return _DTYPES[self.resolved_dtype]


def resolve_dtype(dtype: str, platform: str | None = None) -> str:
  """"auto" -> "bfloat16" on GPU / TPU, "float32" on CPU (`platform`: JAX's default backend)."""
  if dtype != AUTO_DTYPE:
    return dtype
  if platform is None:
    platform = jax.default_backend()
  return "bfloat16" if platform in BF16_PLATFORMS else "float32"


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
