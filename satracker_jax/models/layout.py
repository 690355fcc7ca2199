"""Stored layout of the repeated blocks, and the per-block names used at the edges.

Stored (what the model, the optimizer and checkpoints hold): the ViT blocks as one tree
`vit_blocks/...` and the BERT layers as `bert_layers/...`, every leaf with a leading layer axis
(big_vision's / MaxText's `nn.scan` layout), and the self-attention projections fused:
`vit_blocks/attn/qkv/{kernel [L, C, 3C], bias [L, 3C]}` (outputs ordered q | k | v).

Per-block (what people and other code bases name): `vit_block_{i}/attn/{query,key,value}/...`,
`bert_layer_{j}/attention/{query,key,value}/...`, one tree per block. `satracker convert` writes
these names (the PyTorch checkpoints are per block), lr rules and layer decay are read on them,
and checkpoints or params files of the per-block layout (satracker-jax before the stacked layout)
load through `to_stacked`, once, in memory.

The fusion modules' cross-attentions (`tem_i/search_attn`, `sam_i/vision_attn`, ...) project keys
and values with one `kv` Dense (kernel [Cc, 2C], outputs ordered k | v); satracker-jax before that
stored `key` and `value` apart. The head's 3x3 convs have no bias (BatchNorm follows them);
satracker-jax before that stored one, which folds into the BatchNorm's running mean
(`fold_head_conv_bias`: the same function, in training and inference). `is_earlier` recognises
each earlier layout (per-block blocks, separate cross-attention key / value, head conv biases) and
`upgrade_variables` maps one to the stored layout (`upgrade`: the parameters' part).

Row i of `vit_blocks` is ViT block i; row j of `bert_layers` is BERT layer j (models/config.py
requires the stages to use layers 0..n-1). The functions work on flat `{"a/b/c": array}` dicts of
numpy or jax arrays (or zero-stride numpy stand-ins of a shape), nothing else.
"""
from __future__ import annotations

import re
from typing import Any, Mapping

import numpy as np

# Stored stack name -> per-block name prefix (with the row index).
STACKS = {"vit_blocks": "vit_block_{}", "bert_layers": "bert_layer_{}"}
# The fused self-attention of each stack: stored `<attn>/qkv/<leaf>` <-> per-block q, k, v.
FUSED_ATTENTION = {"vit_blocks": "attn", "bert_layers": "attention"}
QKV = ("query", "key", "value")
_PER_BLOCK = re.compile(r"^(vit_block|bert_layer)_(\d+)/(.+)$")
_BLOCK_PREFIX = re.compile(r"^(vit_block|bert_layer)_\d+(/|$)")
_STACK_OF = {"vit_block": "vit_blocks", "bert_layer": "bert_layers"}


# A cross-attention projection of the layout before the fused `kv`: (module/attention, key|value, leaf).
_CROSS_KV = re.compile(r"^((?:tem|sam)_\d+/\w+_attn)/(key|value)/(kernel|bias)$")
KV = ("key", "value")
# A head conv's bias before its BatchNorm (the layout before bias-free convs): (tower, layer).
_HEAD_CONV_BIAS = re.compile(r"^(box_head/\w+_tower)/conv_(\d+)/bias$")


class LayoutError(ValueError):
  """A per-block tree that does not stack (a block or one of q/k/v missing, shapes that differ)."""


def is_per_block(names) -> bool:
  """Whether flat names (or a tree's top-level keys) are in the per-block layout."""
  return any(_BLOCK_PREFIX.match(n) for n in names)


def row_names(name: str, rows: int) -> list[str]:
  """The per-block name of each row of a stored stacked leaf ("vit_blocks/attn/qkv/kernel", 12 ->
  ["vit_block_0/attn/qkv/kernel", ...]); a leaf outside the stacks -> [name]. The fused qkv keeps
  its stored name (one leaf per row): this is the name lr rules and layer decay are matched on."""
  top, _, rest = name.partition("/")
  if top not in STACKS:
    return [name]
  return [f"{STACKS[top].format(i)}/{rest}" for i in range(rows)]


def is_stacked(name: str) -> bool:
  return name.partition("/")[0] in STACKS


def to_per_block(flat: Mapping[str, Any]) -> dict[str, Any]:
  """Stored flat names -> per-block flat names (rows sliced out, qkv split in three)."""
  out = {}
  for name, value in flat.items():
    top, _, rest = name.partition("/")
    if top not in STACKS:
      out[name] = value
      continue
    fused = f"{FUSED_ATTENTION[top]}/qkv/"
    for i in range(value.shape[0]):
      row = value[i]
      prefix = STACKS[top].format(i)
      if rest.startswith(fused):
        leaf = rest[len(fused):]
        third = row.shape[-1] // 3
        for k, part in enumerate(QKV):
          out[f"{prefix}/{FUSED_ATTENTION[top]}/{part}/{leaf}"] = row[..., k * third:(k + 1) * third]
      else:
        out[f"{prefix}/{rest}"] = row
  return out


def to_stacked(flat: Mapping[str, Any], where: str = "parameters") -> dict[str, np.ndarray]:
  """Per-block flat names -> stored flat names (numpy: q, k, v concatenated, rows stacked).

  Every stack must hold blocks 0..n-1 with the same leaves; a gap or a missing q/k/v is a
  LayoutError naming it. Names already stored, or outside the stacks, pass through.
  """
  out: dict[str, Any] = {}
  rows: dict[str, dict[int, dict[str, Any]]] = {}
  for name, value in flat.items():
    m = _PER_BLOCK.match(name)
    if not m:
      out[name] = value
      continue
    stack = _STACK_OF[m.group(1)]
    rows.setdefault(stack, {}).setdefault(int(m.group(2)), {})[m.group(3)] = value
  for stack, blocks in rows.items():
    n = max(blocks) + 1
    missing = sorted(set(range(n)) - set(blocks))
    if missing:
      raise LayoutError(f"{where}: {STACKS[stack].format(missing[0])} is missing while "
                        f"{STACKS[stack].format(n - 1)} exists (blocks must be 0..{n - 1})")
    fused_rows = [_fuse_qkv(blocks[i], FUSED_ATTENTION[stack], f"{where}: {STACKS[stack].format(i)}")
                  for i in range(n)]
    leaves = sorted(fused_rows[0])
    for i, row in enumerate(fused_rows):
      if sorted(row) != leaves:
        diff = sorted(set(row) ^ set(leaves))[0]
        raise LayoutError(f"{where}: {STACKS[stack].format(i)}/{diff} is not in every block")
    for leaf in leaves:
      values = [np.asarray(row[leaf]) for row in fused_rows]
      shapes = {v.shape for v in values}
      if len(shapes) > 1:
        raise LayoutError(f"{where}: {STACKS[stack].format('*')}/{leaf} has shapes {sorted(shapes)}")
      out[f"{stack}/{leaf}"] = np.stack(values)
  return out


def _fuse_qkv(block: dict[str, Any], attn: str, where: str) -> dict[str, Any]:
  parts = {}
  for name, value in block.items():
    head, _, leaf = name.rpartition("/")
    if head in (f"{attn}/{p}" for p in QKV):
      parts.setdefault(leaf, {})[head.rpartition("/")[2]] = value
    else:
      parts.setdefault(None, {})[name] = value
  fused = dict(parts.pop(None, {}))
  for leaf, qkv in parts.items():
    if set(qkv) != set(QKV):
      raise LayoutError(f"{where}/{attn}: {leaf} of {sorted(set(QKV) - set(qkv))} is missing")
    fused[f"{attn}/qkv/{leaf}"] = np.concatenate([np.asarray(qkv[p]) for p in QKV], axis=-1)
  return fused


def shapes_to_per_block(shapes: Mapping[str, tuple]) -> dict[str, tuple]:
  """{stored name: shape} -> {per-block name: shape}, without touching any data."""
  stand_ins = {k: np.broadcast_to(np.float32(0), tuple(v)) for k, v in shapes.items()}
  return {k: tuple(v.shape) for k, v in to_per_block(stand_ins).items()}


def _flat_names(tree_or_names) -> list[str]:
  """Flat 'a/b/c' names of a nested mapping (its leaves), or the given names as they are."""
  if isinstance(tree_or_names, Mapping):
    names = []
    for key, value in tree_or_names.items():
      if isinstance(value, Mapping) and value:
        names += [f"{key}/{n}" for n in _flat_names(value)]
      else:
        names.append(str(key))
    return names
  return list(tree_or_names)


def has_separate_cross_kv(tree_or_names) -> bool:
  """Whether the fusion modules' cross-attentions store `key` and `value` apart (before `kv`)."""
  return any(_CROSS_KV.match(n) for n in _flat_names(tree_or_names))


def has_head_conv_bias(tree_or_names) -> bool:
  """Whether the head's 3x3 convs have a bias before their BatchNorm (before the bias-free convs)."""
  return any(_HEAD_CONV_BIAS.match(n) for n in _flat_names(tree_or_names))


def earlier_layout(tree_or_names) -> str:
  """What makes parameters (a nested tree or flat names) a layout of an earlier version, in words
  for a message ("per-block blocks (...)", "separate cross-attention key / value", "head conv
  biases before BatchNorm", joined by "and"); "" for the stored layout."""
  names = _flat_names(tree_or_names)
  return " and ".join(what for what, old in (
      ("per-block blocks (vit_block_i / bert_layer_j)", is_per_block(names)),
      ("separate cross-attention key / value", has_separate_cross_kv(names)),
      ("head conv biases before BatchNorm", has_head_conv_bias(names))) if old)


def is_earlier(tree_or_names) -> bool:
  """Whether parameters (a nested tree or flat names) are in a layout of an earlier version."""
  return bool(earlier_layout(tree_or_names))


def fuse_cross_kv(flat: Mapping[str, Any], where: str = "parameters") -> dict[str, Any]:
  """Flat names with separate cross-attention `key` / `value` -> one `kv` (numpy, k | v on the
  output axis). A key without its value (or the reverse) is a LayoutError naming it."""
  out, parts = {}, {}
  for name, value in flat.items():
    m = _CROSS_KV.match(name)
    if m:
      parts.setdefault((m.group(1), m.group(3)), {})[m.group(2)] = value
    else:
      out[name] = value
  for (attn, leaf), kv in parts.items():
    if set(kv) != set(KV):
      raise LayoutError(f"{where}: {attn}/{sorted(set(KV) - set(kv))[0]}/{leaf} is missing")
    out[f"{attn}/kv/{leaf}"] = np.concatenate([np.asarray(kv[p]) for p in KV], axis=-1)
  return out


def fold_head_conv_bias(params: Mapping[str, Any], batch_stats: Mapping[str, Any],
                        where: str = "parameters") -> tuple[dict[str, Any], dict[str, Any]]:
  """Flat params and batch_stats with a bias on the head's 3x3 convs -> without it, the bias
  subtracted from the BatchNorm's running mean: BN(conv(x) + b) with mean m is BN(conv(x)) with
  mean m - b, and with batch statistics b cancels. A bias without its running mean is a
  LayoutError naming it."""
  params_out, stats_out = {}, dict(batch_stats)
  for name, value in params.items():
    m = _HEAD_CONV_BIAS.match(name)
    if not m:
      params_out[name] = value
      continue
    mean_name = f"{m.group(1)}/bn_{m.group(2)}/mean"
    if mean_name not in batch_stats:
      raise LayoutError(f"{where}: {name} has no running mean {mean_name} to fold into")
    mean = np.asarray(batch_stats[mean_name])
    stats_out[mean_name] = (mean - np.asarray(value, mean.dtype)).astype(mean.dtype)
  return params_out, stats_out


def upgrade(flat: Mapping[str, Any], where: str = "parameters") -> dict[str, Any]:
  """Flat parameters of an earlier layout -> the stored layout's blocks (stacked, q/k/v and the
  cross-attention k/v fused); parameters already stored pass through. Head conv biases need the
  running means too: `upgrade_variables`."""
  return fuse_cross_kv(to_stacked(flat, where), where)


def upgrade_variables(params: Mapping[str, Any], batch_stats: Mapping[str, Any],
                      where: str = "parameters") -> tuple[dict[str, Any], dict[str, Any]]:
  """Flat params and batch_stats of any earlier layout -> the stored layout (`upgrade`, then
  `fold_head_conv_bias`); variables already stored pass through."""
  return fold_head_conv_bias(upgrade(params, where), batch_stats, where)
