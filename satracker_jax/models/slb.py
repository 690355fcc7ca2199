"""Synchronous Learning Backbone: ViT and BERT advance stage by stage and exchange information.

Stage i: ViT block i on [Z; X], BERT layer `text_layer_map[i]` on T (none when the entry is -1:
the text passes through unchanged), then TEM if i in tem_layers, then SAM if i in sam_layers; the
DM embeddings are taken after stage i for i in dm_layers (when asked for: training needs them,
tracking does not). A BERT layer that serves several stages is one module called several times:
one set of weights.

Parameter names are flat (`vit_block_3`, `bert_layer_1`, `tem_1`, `sam_7`, `dm_7`, ...): see
docs/INTERFACES.md "Parameter names"; the SATracker module shares this module's scope.

Scanning (`model.scan_layers`, on by default). The two branches meet only at fusion and DM
stages, so between two such stages the ViT blocks form one chain and the BERT layers another.
Each chain runs as one `lax.scan` over its blocks' parameters, stacked on the fly from the
unchanged flat names (so converted weights and checkpoints load as before; initialisation runs the
unrolled loop, which creates them). The result equals the unrolled stage loop (same operations in
the same order within each branch; tests pin it). Why: XLA compiles one scan body instead of
every block (large: 1.1x the compile time of base, from 1.5x unrolled), and the backward pass of a
scan recomputes and differentiates one block per iteration, so the memory that rematerialisation
saves does not depend on how a compiler schedules the weight gradients (XLA:CPU kept every
recomputed block alive until the end: 35 GiB instead of 5 for large, fsdp 8, 32 per device).

Rematerialisation (`model.remat`): "full" keeps only each block's input for the backward pass and
recomputes the rest; "dots" also keeps the outputs of matmuls without batch dimensions (the Dense
layers) and recomputes the element-wise work, attention included. It wraps each scan body (or,
unrolled, each ViT block / BERT layer) and each TEM / SAM with `jax.checkpoint` / `nn.remat`,
neither of which changes a parameter name.
"""
from __future__ import annotations

from typing import Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from satracker_jax.models import bert, fusion, vit
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


def run_chain(block_fn: Callable, params: Sequence, x, *, remat: str = "none"):
  """x through `block_fn(p, x)` for each p in `params` (trees of one structure), as one scan.

  The parameters are stacked on the fly; their gradients flow back to each original tree.
  """
  if not params:
    return x
  body = lambda carry, p: (block_fn(p, carry), None)
  if remat != "none":
    # prevent_cse=False is the scan-friendly setting: a loop body cannot be CSE'd with the forward.
    body = jax.checkpoint(body, policy=_REMAT_POLICIES[remat], prevent_cse=False)
  if len(params) == 1:
    return body(x, params[0])[0]
  stacked = jax.tree.map(lambda *leaves: jnp.stack(leaves), *params)
  return jax.lax.scan(body, x, stacked)[0]


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
    pos_init = nn.initializers.truncated_normal(0.02)
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
    # Detached (parent=None) modules: pure functions of the parameters a scan step hands them.
    vit_block = vit.ViTBlock(v_cfg.dim, v_cfg.heads, v_cfg.mlp_ratio, v_cfg.ln_eps, dtype=dtype,
                             attention_impl=impl, parent=None)
    bert_layer = bert.BertLayer(t_cfg.dim, t_cfg.heads, t_cfg.intermediate, t_cfg.ln_eps, dtype=dtype,
                                attention_impl=impl, parent=None)
    vit_fn = lambda p, v: shard_batch(vit_block.apply({"params": p}, v))
    bert_fn = lambda p, t: shard_batch(bert_layer.apply({"params": p}, t, text_mask))
    scan = cfg.scan_layers and not self.is_initializing()
    all_params = self.variables.get("params", {}) if scan else {}
    unrolled_vit = _maybe_remat(vit.ViTBlock, cfg.remat)
    unrolled_bert = _maybe_remat(bert.BertLayer, cfg.remat)
    bert_modules = {}

    dm = []
    for first, last in segments(cfg):
      stages = range(first, last + 1)
      text_layers = [cfg.stage_text_layers[i] for i in stages if cfg.stage_text_layers[i] != NO_TEXT_LAYER]
      if scan:
        vision = run_chain(vit_fn, [all_params[f"vit_block_{i}"] for i in stages], vision, remat=cfg.remat)
        text = run_chain(bert_fn, [all_params[f"bert_layer_{j}"] for j in text_layers], text, remat=cfg.remat)
      else:  # initialisation (creates the parameters) and model.scan_layers=False
        for i in stages:
          vision = shard_batch(unrolled_vit(v_cfg.dim, v_cfg.heads, v_cfg.mlp_ratio, v_cfg.ln_eps, dtype=dtype,
                                            attention_impl=impl, name=f"vit_block_{i}")(vision))
        for j in text_layers:
          if j not in bert_modules:
            bert_modules[j] = unrolled_bert(t_cfg.dim, t_cfg.heads, t_cfg.intermediate, t_cfg.ln_eps,
                                            dtype=dtype, attention_impl=impl, name=f"bert_layer_{j}")
          text = shard_batch(bert_modules[j](text, text_mask))
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

    vision = nn.LayerNorm(epsilon=v_cfg.ln_eps, dtype=dtype, name="vit_norm")(vision)
    return {"vision_tokens": vision, "text_tokens": text, "dm": tuple(dm)}
