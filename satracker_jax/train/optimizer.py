"""AdamW with warmup + cosine/step decay, global-norm clipping and per-parameter lr multipliers.

Multipliers come from regex rules on the '/'-joined parameter path (first match wins):
  1. `config.optim.lr_rules`: ((regex, mult), ...) given by the user; mult 0 freezes the parameter;
  2. the pretrained backbone (ViT / BERT parameters): `backbone_lr_mult`, times
     `layer_decay ** (depth + 1 - layer_id)` per branch (embeddings are layer 0, block/layer i is
     i+1, the final norm depth+1), so the deepest block gets the least decay;
  3. everything else (fusion modules, head, DM projections): 1.0.
The multiplier scales the whole AdamW update (weight decay included), like timm's `lr_scale`.
"""
from __future__ import annotations

import re
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import optax
from flax import traverse_util

# Top-level module names of the pretrained backbone in models/satracker.py (stable: checkpoints and
# `convert` rely on them too). Fusion modules (tem_*, sam_*), dm_* and box_head are new.
BACKBONE_REGEX = r"^(vit_|bert_|patch_embed|pos_embed)"
EMBEDDING_REGEX = r"^(patch_embed|pos_embed|bert_embeddings)"
BLOCK_REGEX = r"^(?:vit_block|bert_layer)_(\d+)/"


def path_str(path) -> str:
  """A jax key path -> 'a/b/c' (the form lr_rules regexes and error messages use)."""
  parts = []
  for k in path:
    for attr in ("key", "name", "idx"):
      if hasattr(k, attr):
        parts.append(str(getattr(k, attr)))
        break
    else:
      parts.append(str(k))
  return "/".join(parts)


def lr_schedule(optim, total_steps: int) -> Callable:
  warmup = int(optim.warmup_steps)
  peak = float(optim.lr)
  end = peak * float(optim.get("min_lr_ratio", 0.0))
  if optim.schedule == "cosine":
    return optax.warmup_cosine_decay_schedule(
        init_value=0.0, peak_value=peak, warmup_steps=warmup,
        decay_steps=max(total_steps, warmup + 1), end_value=end)
  if optim.schedule == "step":
    warm = optax.linear_schedule(0.0, peak, max(warmup, 1))
    boundary = int(optim.step_decay_at * total_steps)
    decayed = optax.piecewise_constant_schedule(peak, {max(boundary - warmup, 0): optim.step_decay_factor})
    return optax.join_schedules([warm, decayed], [warmup])
  raise ValueError(f"optim.schedule must be 'cosine' or 'step', got {optim.schedule!r}")


def lr_multipliers(params: Any, optim) -> Any:
  """A tree like `params` of Python floats (static: they are baked into the compiled step)."""
  rules = [(re.compile(r), float(m)) for r, m in (optim.get("lr_rules", ()) or ())]
  backbone, embedding, block = (re.compile(r) for r in (BACKBONE_REGEX, EMBEDDING_REGEX, BLOCK_REGEX))
  decay = float(optim.get("layer_decay", 1.0))
  base = float(optim.backbone_lr_mult)
  flat = {"/".join(k): v for k, v in traverse_util.flatten_dict(params).items()}
  # Layer ids per branch (ViT and BERT depths differ): embeddings 0, block i -> i + 1, anything
  # after the last block (the final LayerNorm) -> depth + 1, i.e. no decay.
  branch = lambda name: "bert" if name.startswith("bert") else "vit"
  depth: dict[str, int] = {}
  for name in flat:
    if (m := block.search(name)):
      depth[branch(name)] = max(depth.get(branch(name), 0), int(m.group(1)) + 1)

  def layer_id(name):
    if embedding.search(name):
      return 0
    if (m := block.search(name)):
      return int(m.group(1)) + 1
    return depth.get(branch(name), 0) + 1

  def mult(name):
    for rx, m in rules:
      if rx.search(name):
        return m
    if backbone.search(name):
      return base * decay ** (depth.get(branch(name), 0) + 1 - layer_id(name))
    return 1.0

  mults = {tuple(k.split("/")): mult(k) for k in flat}
  return traverse_util.unflatten_dict(mults)


class _Empty(NamedTuple):
  pass


def scale_by_multipliers(mults: Any) -> optax.GradientTransformation:
  def init_fn(params):
    del params
    return _Empty()

  def update_fn(updates, state, params=None):
    del params
    return jax.tree.map(lambda u, m: u if m == 1.0 else u * jnp.asarray(m, u.dtype), updates, mults), state

  return optax.GradientTransformation(init_fn, update_fn)


def build_optimizer(config, params: Any) -> tuple[optax.GradientTransformation, Callable]:
  """-> (tx, schedule). `params` (shapes suffice) gives the names for the lr rules."""
  optim = config.optim
  schedule = lr_schedule(optim, int(config.train.total_steps))
  mults = lr_multipliers(params, optim)
  frozen = jax.tree.map(lambda m: m == 0.0, mults)
  # Weight decay only on matrices/kernels, never on biases, LayerNorm/BN scales or gates.
  decay_mask = jax.tree.map(lambda p: p.ndim >= 2, params)
  tx = optax.chain(
      # Frozen gradients are zeroed first so they neither count in the clipping norm nor move Adam.
      optax.masked(optax.set_to_zero(), frozen),
      optax.clip_by_global_norm(float(optim.clip_norm)) if optim.clip_norm else optax.identity(),
      optax.scale_by_adam(b1=float(optim.b1), b2=float(optim.b2)),
      optax.add_decayed_weights(float(optim.weight_decay), mask=decay_mask),
      scale_by_multipliers(mults),
      optax.scale_by_learning_rate(schedule),
  )
  return tx, schedule


def describe_multipliers(params: Any, optim, limit: int = 12) -> str:
  """One line per distinct multiplier (with a few example paths) for the start-up log."""
  mults = lr_multipliers(params, optim)
  groups: dict[float, list[str]] = {}
  for path, m in jax.tree_util.tree_flatten_with_path(mults)[0]:
    groups.setdefault(m, []).append(path_str(path))
  lines = []
  for m, names in sorted(groups.items(), reverse=True):
    ex = ", ".join(names[:3]) + (", ..." if len(names) > 3 else "")
    lines.append(f"  lr x{m:.4g}: {len(names)} tensors ({ex})")
  return "\n".join(lines[:limit])
