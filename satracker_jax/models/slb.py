"""Synchronous Learning Backbone: ViT and BERT advance stage by stage and exchange information.

Stage i: ViT block i on [Z; X], BERT layer `text_layer_map[i]` on T (none when the entry is -1:
the text passes through unchanged), then TEM if i in tem_layers, then SAM if i in sam_layers; the
DM embeddings are taken after stage i for i in dm_layers (when asked for: training needs them,
tracking does not). A BERT layer that serves several stages is one module called several times:
one set of weights.

Parameters (docs/INTERFACES.md "Parameter names"; the SATracker module shares this module's
scope): the ViT blocks are stored as one stacked tree `vit_blocks` and the BERT layers as
`bert_layers` (leading layer axis, fused self-attention qkv: models/layout.py), the fusion and DM
modules per stage (`tem_1`, `sam_7`, `dm_7`, ...). Stacked storage means one optimizer update per
leaf for all blocks (254 tensors in base instead of 650, with the fused cross-attention kv) and
nothing re-stacked per call.

Running the blocks: unrolled by default (`model.scan_layers=False`): each stage takes its row of
the stack (`rows_of`: static slices; the gradient of the stack is the rows' gradients stacked).
Base's stages meet every second block (TEM at 1,3,5, SAM and DM at 7,9,11), so a scan would loop
over two blocks at a time: little compile saved, and on GPUs a
WHILE loop stops fusion across blocks and CUDA-graph capture (measured on the 2-core machine: base
tracker step 689 ms with scans, 295 ms unrolled, before the stacked layout). With
`model.scan_layers=True` the blocks between two meeting stages run as one `lax.scan` over their
rows (a slice of the stack; the whole stack when no stage in between meets the other branch): one
compiled body per chain, and with remat a backward memory that does not depend on how the
compiler schedules the weight gradients (XLA:CPU kept every recomputed block alive until the end:
35 GiB instead of 5 for large, fsdp 8, 32 per device). Both give the same result (tests pin it).

Rematerialisation (`model.remat`): "full" keeps only each block's input for the backward pass and
recomputes the rest; "dots" also keeps the outputs of matmuls without batch dimensions (the Dense
layers) and recomputes the element-wise work, attention included. It wraps each block (scanned or
not) and each TEM / SAM with `jax.checkpoint` / `nn.remat`, neither of which changes a name.
"""
from __future__ import annotations

from typing import Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from satracker_jax.models import bert, fusion, initializers, vit
from satracker_jax.models.config import NO_TEXT_LAYER, ModelConfig
from satracker_jax.models.partitioning import shard_batch

_REMAT_POLICIES = {"full": None, "dots": jax.checkpoint_policies.dots_with_no_batch_dims_saveable}


def _maybe_remat(module_class, remat: str):
  if remat == "none":
    return module_class
  return nn.remat(module_class, policy=_REMAT_POLICIES[remat])


def segments(cfg: ModelConfig) -> list:
  """Inclusive stage ranges (first, last) ending where the branches meet (a TEM, SAM or DM stage)
  or at the last stage: within one, vision and text do not read each other."""
  meet = {i for i in range(cfg.vit.depth)
          if (cfg.use_tem and i in cfg.tem_layers) or (cfg.use_sam and i in cfg.sam_layers)
          or i in cfg.dm_layers}
  ranges, first = [], 0
  for last in sorted(meet | {cfg.vit.depth - 1}):
    ranges.append((first, last))
    first = last + 1
  return ranges


def stacked_init(block: nn.Module, rows: int, *example) -> Callable:
  """Initialiser of `rows` independent copies of `block`'s parameters, stacked on a leading axis.

  `example` are inputs of the right feature sizes (one token suffices): under `lazy_init` (model_io)
  only the parameter initialisers are computed, never the block on them.
  """
  def init(rng):
    return jax.vmap(lambda key: block.init(key, *example)["params"])(jax.random.split(rng, rows))
  return init


def take_row(stacked, r: int):
  """Row r of a stack: a static slice of every leaf, or entry r of a stack given as its rows
  (`unstack_rows`, what inference passes)."""
  if isinstance(stacked, (list, tuple)):
    return stacked[r]
  return jax.tree.map(lambda a: a[r], stacked)


def unstack_rows(params: dict) -> dict:
  """`params` with each stored stack (`vit_blocks`, `bert_layers`) given as a tuple of its rows.

  For inference, done once when a model is loaded: the model then reads each block's weights
  from a buffer of their own instead of slicing the stack inside every call. Slicing inside the
  step made XLA:CPU emit the blocks' matmuls without its library kernels (base tracker step,
  batch 1, 2-core machine: 1.15 s sliced, 0.75 s from separate buffers).
  """
  out = dict(params)
  for name in ("vit_blocks", "bert_layers"):
    if name in out and not isinstance(out[name], (list, tuple)):
      rows = jax.tree.leaves(out[name])[0].shape[0]
      out[name] = tuple(jax.tree.map(lambda a, r=r: a[r], out[name]) for r in range(rows))
  return out


@jax.custom_vjp
def _rows(stacked_leaf):
  return tuple(stacked_leaf[r] for r in range(stacked_leaf.shape[0]))


def _rows_fwd(stacked_leaf):
  return _rows(stacked_leaf), None


def _rows_bwd(_, row_cotangents):
  return (jnp.stack(row_cotangents),)


_rows.defvjp(_rows_fwd, _rows_bwd)


def rows_of(stacked) -> tuple:
  """The rows of a stacked tree as a tuple of trees (what `take_row` reads), for the unrolled blocks
  of a differentiated step: the gradient of the stack is the rows' gradients stacked, one array
  per leaf. Autodiff of the row slices padded each row's gradient to the stack's shape and summed
  the pads (XLA:CPU: about two kernels per row and leaf). A stack already given as its rows
  (`unstack_rows`, what inference passes) is returned as it is."""
  if isinstance(stacked, (list, tuple)):
    return tuple(stacked)
  leaves, tree = jax.tree.flatten(stacked)
  per_leaf = [_rows(leaf) for leaf in leaves]
  rows = len(per_leaf[0]) if per_leaf else 0
  return tuple(jax.tree.unflatten(tree, [leaf_rows[r] for leaf_rows in per_leaf]) for r in range(rows))


def run_blocks(block_fn: Callable, stacked, rows: Sequence[int], x, *, scan: bool, remat: str = "none"):
  """x through `block_fn(params of row r, x)` for r in `rows` (rows of the `stacked` tree).

  Unrolled, each row is a static slice of the stacked leaves; with `scan`, one `lax.scan` over the
  rows (the stack itself when they are all of it, a slice when contiguous, a gather otherwise).
  """
  rows = list(rows)
  if not rows:
    return x
  body = lambda carry, p: (block_fn(p, carry), None)
  if remat != "none":
    # prevent_cse=False is the scan-friendly setting: a loop body cannot be CSE'd with the forward.
    body = jax.checkpoint(body, policy=_REMAT_POLICIES[remat], prevent_cse=not scan)
  if not scan or len(rows) == 1:
    for r in rows:
      x = body(x, take_row(stacked, r))[0]
    return x
  if isinstance(stacked, (list, tuple)):  # rows given apart (unstack_rows): scan over their stack
    stacked = jax.tree.map(lambda *leaves: jnp.stack(leaves), *stacked)
  total = jax.tree.leaves(stacked)[0].shape[0]
  if rows == list(range(total)):
    xs = stacked
  elif rows == list(range(rows[0], rows[-1] + 1)):
    xs = jax.tree.map(lambda a: a[rows[0]:rows[-1] + 1], stacked)
  else:
    xs = jax.tree.map(lambda a: a[np.asarray(rows)], stacked)
  return jax.lax.scan(body, x, xs)[0]


class SynchronousBackbone(nn.Module):
  config: ModelConfig

  @nn.compact
  def __call__(self, template, template_box, search, text_ids, text_mask, dense_matching: bool = True):
    """Images are already normalised (float, NHWC). Returns a dict:
    vision_tokens [B, Nz+Nx, C] (after the final LayerNorm), text_tokens [B, L, Ct],
    dm: tuple of DenseMatchingProjection outputs, one per dm stage (empty without dense_matching;
    initialisation always creates their parameters, so the variable tree is the same)."""
    cfg = self.config
    dtype = cfg.compute_dtype
    impl = cfg.attention_impl
    v_cfg, t_cfg = cfg.vit, cfg.bert
    if not cfg.use_text:
      # Text-free ablation: the text branch still runs (same parameter tree for every variant) but
      # on an all-padding input with an all-zero mask, so no output can depend on the sentence.
      text_ids = jnp.zeros_like(text_ids)
      text_mask = jnp.zeros_like(text_mask)
    dense_matching = dense_matching or self.is_initializing()
    tem = _maybe_remat(fusion.TargetEnhanceModule, cfg.remat)
    sam = _maybe_remat(fusion.SemanticAwareModule, cfg.remat)

    embed = vit.patch_embed(v_cfg.dim, cfg.patch_size, dtype=dtype)
    pos_init = initializers.truncated_normal(0.02)
    pos_template = self.param("pos_embed_template", pos_init, (1, cfg.num_template, v_cfg.dim))
    pos_search = self.param("pos_embed_search", pos_init, (1, cfg.num_search, v_cfg.dim))
    # Pinned before the concatenation too: otherwise XLA may run a patch embedding feature-sharded
    # (the kernel's fsdp layout) and pay an all-to-all back to batch sharding.
    z = shard_batch(vit.grid_to_tokens(embed(template.astype(dtype))) + pos_template.astype(dtype))
    x = shard_batch(vit.grid_to_tokens(embed(search.astype(dtype))) + pos_search.astype(dtype))
    vision = shard_batch(jnp.concatenate([z, x], axis=1))

    text = shard_batch(bert.BertEmbeddings(
        t_cfg.vocab_size, t_cfg.dim, t_cfg.max_position, t_cfg.type_vocab, ln_eps=t_cfg.ln_eps,
        dtype=dtype, name="bert_embeddings")(text_ids))
    target_mask = fusion.template_target_mask(template_box, cfg.template_grid)
    # Detached (parent=None) modules: pure functions of the parameter rows handed to them.
    vit_block = vit.ViTBlock(v_cfg.dim, v_cfg.heads, v_cfg.mlp_ratio, v_cfg.ln_eps, dtype=dtype,
                             attention_impl=impl, parent=None)
    bert_layer = bert.BertLayer(t_cfg.dim, t_cfg.heads, t_cfg.intermediate, t_cfg.ln_eps, dtype=dtype,
                                attention_impl=impl, parent=None)
    # `variable("params", ...)` rather than `param`: Flax's `param` re-traces its initialiser at every
    # apply to check shapes, here a whole block's init per stack and call.
    stack = lambda name, init: self.variable("params", name, lambda: init(self.make_rng("params"))).value
    vit_blocks = stack("vit_blocks", stacked_init(vit_block, v_cfg.depth, jnp.zeros((1, 1, v_cfg.dim))))
    bert_layers = stack("bert_layers", stacked_init(
        bert_layer, cfg.num_text_layers, jnp.zeros((1, 1, t_cfg.dim)), jnp.ones((1, 1), jnp.int32)))
    if not cfg.scan_layers:  # each stage reads its own row
      vit_blocks, bert_layers = rows_of(vit_blocks), rows_of(bert_layers)
    vit_fn = lambda p, v: shard_batch(vit_block.apply({"params": p}, v))
    bert_fn = lambda p, t: shard_batch(bert_layer.apply({"params": p}, t, text_mask))

    dm = []
    for first, last in segments(cfg):
      stages = range(first, last + 1)
      text_rows = [cfg.stage_text_layers[i] for i in stages if cfg.stage_text_layers[i] != NO_TEXT_LAYER]
      vision = run_blocks(vit_fn, vit_blocks, stages, vision, scan=cfg.scan_layers, remat=cfg.remat)
      text = run_blocks(bert_fn, bert_layers, text_rows, text, scan=cfg.scan_layers, remat=cfg.remat)
      i = last
      if cfg.use_tem and i in cfg.tem_layers:
        vision, text = tem(cfg.num_template, cfg.fusion_heads, cfg.fusion_mlp, dtype=dtype,
                           attention_impl=impl, gate_init=cfg.fusion_gate_init, name=f"tem_{i}")(vision, text, target_mask, text_mask)
        vision, text = shard_batch(vision), shard_batch(text)
      if cfg.use_sam and i in cfg.sam_layers:
        vision, text = sam(cfg.fusion_heads, cfg.fusion_mlp, dtype=dtype, attention_impl=impl,
                           gate_init=cfg.fusion_gate_init, name=f"sam_{i}")(vision, text, text_mask)
        vision, text = shard_batch(vision), shard_batch(text)
      if dense_matching and i in cfg.dm_layers:
        stage = fusion.DenseMatchingProjection(cfg.dm_dim, cfg.dm_tau_init, dtype=dtype, name=f"dm_{i}")(
            vision[:, cfg.num_template:], text, text_mask)
        dm.append(dict(stage, patch_emb=shard_batch(stage["patch_emb"]), text_emb=shard_batch(stage["text_emb"])))

    vision = initializers.LayerNorm(epsilon=v_cfg.ln_eps, dtype=dtype, name="vit_norm")(vision)
    return {"vision_tokens": vision, "text_tokens": text, "dm": tuple(dm)}
