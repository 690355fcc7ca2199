"""Synchronous Learning Backbone: ViT and BERT advance stage by stage and exchange information.

Stage i: ViT block i on [Z; X], BERT layer `text_layer_map[i]` on T, then TEM if i in tem_layers,
then SAM if i in sam_layers; the DM embeddings are taken after stage i for i in dm_layers.
A BERT layer that serves several stages is one module called several times: one set of weights.

Parameter names are flat (`vit_block_3`, `bert_layer_1`, `tem_1`, `sam_7`, `dm_7`, ...): see
docs/INTERFACES.md "Parameter names"; the SATracker module shares this module's scope.
"""
from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp

from satracker_jax.models import bert, fusion, vit
from satracker_jax.models.config import ModelConfig


class SynchronousBackbone(nn.Module):
  config: ModelConfig

  @nn.compact
  def __call__(self, template, template_box, search, text_ids, text_mask):
    """Images are already normalised (float, NHWC). Returns a dict:
    vision_tokens [B, Nz+Nx, C] (after the final LayerNorm), text_tokens [B, L, Ct],
    dm: tuple of DenseMatchingProjection outputs, one per dm stage."""
    cfg = self.config
    dtype = cfg.compute_dtype
    v_cfg, t_cfg = cfg.vit, cfg.bert
    if not cfg.use_text:
      # Text-free ablation: the text branch still runs (same parameter tree for every variant) but
      # on an all-padding input with an all-zero mask, so no output can depend on the sentence.
      text_ids = jnp.zeros_like(text_ids)
      text_mask = jnp.zeros_like(text_mask)

    embed = vit.patch_embed(v_cfg.dim, cfg.patch_size, dtype=dtype)
    pos_init = nn.initializers.truncated_normal(0.02)
    pos_template = self.param("pos_embed_template", pos_init, (1, cfg.num_template, v_cfg.dim))
    pos_search = self.param("pos_embed_search", pos_init, (1, cfg.num_search, v_cfg.dim))
    z = vit.grid_to_tokens(embed(template.astype(dtype))) + pos_template.astype(dtype)
    x = vit.grid_to_tokens(embed(search.astype(dtype))) + pos_search.astype(dtype)
    vision = jnp.concatenate([z, x], axis=1)

    text = bert.BertEmbeddings(
        t_cfg.vocab_size, t_cfg.dim, t_cfg.max_position, t_cfg.type_vocab, ln_eps=t_cfg.ln_eps,
        dtype=dtype, name="bert_embeddings")(text_ids)
    bert_layers = {}
    target_mask = fusion.template_target_mask(template_box, cfg.template_grid)

    dm = []
    for i, j in enumerate(cfg.stage_text_layers):
      vision = vit.ViTBlock(v_cfg.dim, v_cfg.heads, v_cfg.mlp_ratio, v_cfg.ln_eps, dtype=dtype,
                            name=f"vit_block_{i}")(vision)
      if j not in bert_layers:
        bert_layers[j] = bert.BertLayer(t_cfg.dim, t_cfg.heads, t_cfg.intermediate, t_cfg.ln_eps,
                                        dtype=dtype, name=f"bert_layer_{j}")
      text = bert_layers[j](text, text_mask)
      if cfg.use_tem and i in cfg.tem_layers:
        vision, text = fusion.TargetEnhanceModule(
            cfg.num_template, cfg.fusion_heads, cfg.fusion_mlp, dtype=dtype, name=f"tem_{i}")(
                vision, text, target_mask, text_mask)
      if cfg.use_sam and i in cfg.sam_layers:
        vision, text = fusion.SemanticAwareModule(cfg.fusion_heads, cfg.fusion_mlp, dtype=dtype, name=f"sam_{i}")(
            vision, text, text_mask)
      if i in cfg.dm_layers:
        dm.append(fusion.DenseMatchingProjection(cfg.dm_dim, cfg.dm_tau_init, dtype=dtype, name=f"dm_{i}")(
            vision[:, cfg.num_template:], text, text_mask))

    vision = nn.LayerNorm(epsilon=v_cfg.ln_eps, dtype=dtype, name="vit_norm")(vision)
    return {"vision_tokens": vision, "text_tokens": text, "dm": tuple(dm)}

