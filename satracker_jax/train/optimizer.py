"""AdamW with warmup + cosine/step decay, global-norm clipping and per-parameter lr multipliers.

Multipliers come from regex rules on the '/'-joined parameter path (first match wins):
  1. `config.optim.lr_rules`: ((regex, mult), ...) given by the user; mult 0 freezes the parameter;
  2. the pretrained backbone (ViT / BERT parameters): `backbone_lr_mult`, times
     `layer_decay ** (depth + 1 - layer_id)` per branch (embeddings are layer 0, block/layer i is
     i+1, the final norm depth+1), so the deepest block gets the least decay;
  3. everything else (fusion modules, head, DM projections): 1.0.
The multiplier scales the whole AdamW update (weight decay included), like timm's `lr_scale`.
Rules are matched on per-block names (models/layout.py): a row of the stored `vit_blocks` stack is
`vit_block_{i}/...`, of `bert_layers` `bert_layer_{j}/...` (the fused projection is
`vit_block_{i}/attn/qkv/...`), so a stacked leaf gets one multiplier per row.

The update is one fused AdamW (`fused_adamw`): the same arithmetic as the optax chain
  masked(set_to_zero, frozen) -> clip_by_global_norm -> scale_by_adam -> add_decayed_weights
  -> per-parameter multipliers -> scale_by_learning_rate
written as one element-wise expression per tensor, so XLA makes one kernel of each tensor's
moments and update instead of several (the chain cost ~6 kernels per tensor).
"""
from __future__ import annotations

import re
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import traverse_util

from satracker_jax.models import layout

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


def row_multipliers(params: Any, optim) -> dict[str, float]:
  """{per-block name: multiplier} for every row of every parameter (see the module docstring)."""
  rules = [(re.compile(r), float(m)) for r, m in (optim.get("lr_rules", ()) or ())]
  backbone, embedding, block = (re.compile(r) for r in (BACKBONE_REGEX, EMBEDDING_REGEX, BLOCK_REGEX))
  decay = float(optim.get("layer_decay", 1.0))
  base = float(optim.backbone_lr_mult)
  names = []
  for name, leaf in traverse_util.flatten_dict(params, sep="/").items():
    names += layout.row_names(name, leaf.shape[0] if layout.is_stacked(name) else 1)
  # Layer ids per branch (ViT and BERT depths differ): embeddings 0, block i -> i + 1, anything
  # after the last block (the final LayerNorm) -> depth + 1, i.e. no decay.
  branch = lambda name: "bert" if name.startswith("bert") else "vit"
  depth: dict[str, int] = {}
  for name in names:
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

  return {name: mult(name) for name in names}


def lr_multipliers(params: Any, optim) -> Any:
  """A tree like `params`: a Python float per leaf, or for a stacked leaf whose rows differ a
  numpy array [rows, 1, ...] (static either way: baked into the compiled step)."""
  per_row = row_multipliers(params, optim)

  def leaf_mult(name, leaf):
    if not layout.is_stacked(name):
      return per_row[name]
    values = [per_row[n] for n in layout.row_names(name, leaf.shape[0])]
    if len(set(values)) == 1:
      return values[0]
    return np.asarray(values, np.float32).reshape((-1,) + (1,) * (len(leaf.shape) - 1))

  flat = traverse_util.flatten_dict(params, sep="/")
  return traverse_util.unflatten_dict({tuple(k.split("/")): leaf_mult(k, v) for k, v in flat.items()})


class FusedAdamWState(NamedTuple):
  count: jax.Array  # updates applied (int32)
  mu: Any  # first moments: a tree like the parameters, or one flat vector (`flat`)
  nu: Any  # second moments, likewise


def fused_adamw(schedule: Callable, *, b1: float, b2: float, weight_decay: float, decay_mask: Any,
                mults: Any, clip_norm: float = 0.0, eps: float = 1e-8,
                flat: bool = False) -> optax.GradientTransformation:
  """AdamW with global-norm clipping, frozen parameters and per-parameter lr multipliers, as one
  element-wise update per tensor (module docstring). `mults` (lr_multipliers) and `decay_mask`
  (bool per leaf) are static; a multiplier 0 freezes a tensor or a row of a stack: its gradient is
  zeroed before the clipping norm and its update is 0.

  `flat`: the moments are two vectors over every parameter (what multi-tensor Adam kernels do):
  the gradients are concatenated once, the moments updated by one kernel each, and each tensor
  gets one kernel for its update, instead of one per tensor for each moment. Only for parameters
  that are not sharded (a mesh without fsdp), since the concatenation would gather sharded ones.
  """
  is_one = lambda m: not isinstance(m, np.ndarray) and m == 1.0

  def init_fn(params):
    if flat:
      size = sum(int(np.prod(np.shape(p))) for p in jax.tree.leaves(params))
      zeros = jnp.zeros((size,), jnp.float32)
      return FusedAdamWState(jnp.zeros((), jnp.int32), zeros, zeros)
    zeros = lambda p: jnp.zeros_like(p)
    return FusedAdamWState(jnp.zeros((), jnp.int32), jax.tree.map(zeros, params), jax.tree.map(zeros, params))

  def update_fn(grads, state, params=None):
    def mask_frozen(g, m):
      if isinstance(m, np.ndarray):
        return g if (m != 0).all() else g * jnp.asarray(m != 0, g.dtype)
      return g if m != 0.0 else jnp.zeros_like(g)
    grads = jax.tree.map(mask_frozen, grads, mults)
    if flat:
      leaves, treedef = jax.tree.flatten(grads)
      vector = flat_vector(leaves)
    scale = jnp.asarray(1.0, jnp.float32)
    if clip_norm:
      norm = vector_norm(vector) if flat else optax.tree.norm(grads)
      scale = jnp.where(norm < clip_norm, 1.0, clip_norm / norm)  # optax.clip_by_global_norm
    count = optax.safe_increment(state.count)
    bc1 = 1 - jnp.asarray(b1, jnp.float32) ** count
    bc2 = 1 - jnp.asarray(b2, jnp.float32) ** count
    lr = jnp.asarray(schedule(state.count), jnp.float32)

    def moments(g, mu, nu):
      g = g * scale.astype(g.dtype)
      return b1 * mu + (1 - b1) * g, b2 * nu + (1 - b2) * g * g

    def direction(mu, nu):
      return (mu / bc1.astype(mu.dtype)) / (jnp.sqrt(nu / bc2.astype(nu.dtype)) + eps)

    def finish(u, p, m, decay):
      if decay and weight_decay:
        u = u + weight_decay * p
      if not is_one(m):
        u = u * jnp.asarray(m, u.dtype)
      return -lr.astype(u.dtype) * u

    update = lambda mu, nu, p, m, decay: finish(direction(mu, nu), p, m, decay)

    if flat:
      mu, nu = moments(vector, state.mu, state.nu)
      # Adam's direction of every parameter in one expression; each tensor then takes its piece and
      # applies its own terms (decay, multiplier, lr). The same operations in the same order as
      # per tensor, so the same values; about half the traced operations per tensor.
      adam = direction(mu, nu)
      offsets = np.cumsum([0] + [int(np.prod(g.shape)) for g in leaves])
      piece = lambda v, i: v[offsets[i]:offsets[i + 1]].reshape(leaves[i].shape)
      flat_p, flat_m, flat_d = (treedef.flatten_up_to(t) for t in (params, mults, decay_mask))
      updates = [finish(piece(adam, i), flat_p[i], flat_m[i], flat_d[i]).astype(leaves[i].dtype)
                 for i in range(len(leaves))]
      return jax.tree.unflatten(treedef, updates), FusedAdamWState(count, mu, nu)
    new = jax.tree.map(moments, grads, state.mu, state.nu)
    mu = jax.tree.map(lambda _, t: t[0], grads, new)
    nu = jax.tree.map(lambda _, t: t[1], grads, new)
    return jax.tree.map(update, mu, nu, params, mults, decay_mask), FusedAdamWState(count, mu, nu)

  return optax.GradientTransformation(init_fn, update_fn)


def flat_vector(leaves) -> jax.Array:
  """Every leaf, raveled and concatenated in float32: the layout of flat moments."""
  return jnp.concatenate([x.reshape(-1).astype(jnp.float32) for x in leaves])


def vector_norm(vector: jax.Array) -> jax.Array:
  return jnp.sqrt(jnp.sum(vector * vector))


def has_flat_moments(opt_state: Any) -> bool:
  return isinstance(opt_state, FusedAdamWState) and isinstance(opt_state.mu, jax.Array) and opt_state.mu.ndim == 1


def global_norm(grads: Any, opt_state: Any) -> jax.Array:
  """The gradients' global norm, as the optimizer of `opt_state` computes it: with flat moments
  from the one concatenated vector the update reads anyway (one reduction; XLA merges the two
  identical concatenations), else per tensor (`optax.tree.norm`: the tensors may be sharded)."""
  if has_flat_moments(opt_state):
    return vector_norm(flat_vector(jax.tree.leaves(grads)))
  return optax.tree.norm(grads)


def moment_tree(moment: Any, params: Any) -> Any:
  """A moment of FusedAdamWState as a tree like `params` (a flat vector is cut back into it)."""
  if jax.tree.structure(moment) == jax.tree.structure(params):
    return moment
  leaves, treedef = jax.tree.flatten(params)
  offsets = np.cumsum([0] + [int(np.prod(np.shape(p))) for p in leaves])
  return jax.tree.unflatten(treedef, [moment[offsets[i]:offsets[i + 1]].reshape(np.shape(p))
                                      for i, p in enumerate(leaves)])


def build_optimizer(config, params: Any, fsdp: int = 1) -> tuple[optax.GradientTransformation, Callable]:
  """-> (tx, schedule). `params` (shapes suffice) gives the names for the lr rules; `fsdp` (the
  mesh's fsdp size) decides the moments' layout: flat vectors when the parameters are not sharded
  (`optim.flat_moments`: "auto" = fsdp 1, or true / false)."""
  optim = config.optim
  schedule = lr_schedule(optim, int(config.train.total_steps))
  # Weight decay only on matrices/kernels (per row of a stack), never on biases, norms or gates.
  flat = traverse_util.flatten_dict(params, sep="/")
  decay_mask = traverse_util.unflatten_dict({
      tuple(k.split("/")): len(v.shape) - int(layout.is_stacked(k)) >= 2 for k, v in flat.items()})
  flat_moments = str(optim.get("flat_moments", "auto")).lower()
  if flat_moments not in ("auto", "true", "false"):
    raise ValueError(f"optim.flat_moments={optim.flat_moments!r}: expected auto, true or false")
  flat_moments = int(fsdp) == 1 if flat_moments == "auto" else flat_moments == "true"
  if flat_moments and int(fsdp) > 1:
    raise ValueError(f"optim.flat_moments=true needs unsharded parameters; the mesh has fsdp={fsdp}")
  tx = fused_adamw(schedule, b1=float(optim.b1), b2=float(optim.b2),
                   weight_decay=float(optim.weight_decay), decay_mask=decay_mask,
                   mults=lr_multipliers(params, optim), clip_norm=float(optim.clip_norm or 0.0),
                   flat=bool(flat_moments))
  return tx, schedule


def describe_multipliers(params: Any, optim, limit: int = 12) -> str:
  """One line per distinct multiplier (with a few example per-block names) for the start-up log."""
  groups: dict[float, list[str]] = {}
  for name, m in row_multipliers(params, optim).items():
    groups.setdefault(m, []).append(name)
  lines = []
  for m, names in sorted(groups.items(), reverse=True):
    ex = ", ".join(names[:3]) + (", ..." if len(names) > 3 else "")
    lines.append(f"  lr x{m:.4g}: {len(names)} tensors ({ex})")
  return "\n".join(lines[:limit])
