"""Training losses (SPEC.md "Losses"): focal on the score map, GIoU + L1 on the decoded box, DM.

Everything is computed in float32 and stays finite for degenerate boxes (zero size, centre outside
the crop) and for samples without a sentence.
"""
from __future__ import annotations

from typing import Any, Mapping, Optional, Tuple

import jax
import jax.numpy as jnp

from satracker_jax import boxes

_NEG = -1e9  # "minus infinity" that keeps logsumexp and its gradient finite


def _get(cfg, key: str, default):
  if cfg is None:
    return default
  return cfg.get(key, default) if hasattr(cfg, "get") else getattr(cfg, key, default)


def centre_cell(box_cxcywh: jax.Array, grid: int) -> Tuple[jax.Array, jax.Array]:
  """(column, row) int32 of the cell holding the box centre, clipped into the grid.

  floor (not OSTrack's round) so that cell + offset in [0, 1) recovers the centre, matching
  `decode_box`.
  """
  c = jnp.clip(jnp.floor(box_cxcywh[..., :2].astype(jnp.float32) * grid), 0, grid - 1).astype(jnp.int32)
  return c[..., 0], c[..., 1]


def gaussian_radius(width: jax.Array, height: jax.Array, min_overlap: float = 0.7) -> jax.Array:
  """CenterNet's radius (in cells) within which a shifted box keeps IoU >= min_overlap (the form
  OSTrack's heat maps use, quirks included: the smallest root of three quadratics)."""
  hw, s = width * height, width + height
  r1 = (s + jnp.sqrt(s ** 2 - 4 * hw * (1 - min_overlap) / (1 + min_overlap))) / 2
  r2 = (2 * s + jnp.sqrt(4 * s ** 2 - 16 * (1 - min_overlap) * hw)) / 2
  b3 = -2 * min_overlap * s
  r3 = (b3 + jnp.sqrt(b3 ** 2 - 16 * min_overlap * (min_overlap - 1) * hw)) / 2
  return jnp.minimum(jnp.minimum(r1, r2), r3)


def gaussian_heatmap(box_cxcywh: jax.Array, grid: int, sigma_factor: float = 1.0 / 6.0) -> jax.Array:
  """[B, 4] normalised cx,cy,w,h -> [B, grid, grid] heat map, exactly 1 at the centre cell.

  As OSTrack's `generate_heatmap`: radius r = int(gaussian_radius(w, h in cells)),
  sigma = (2r + 1) * sigma_factor, truncated to the (2r+1)^2 window around the peak.
  """
  box = box_cxcywh.astype(jnp.float32)
  size = jnp.clip(box[:, 2:], 0.0, None) * grid
  radius = jnp.floor(jnp.maximum(gaussian_radius(size[:, 0], size[:, 1]), 0.0))
  sigma = (2 * radius + 1) * sigma_factor
  col, row = centre_cell(box, grid)
  cells = jnp.arange(grid, dtype=jnp.float32)
  dx = cells[None, :] - col[:, None].astype(jnp.float32)  # [B, grid]
  dy = cells[None, :] - row[:, None].astype(jnp.float32)
  d2 = dy[:, :, None] ** 2 + dx[:, None, :] ** 2
  heat = jnp.exp(-d2 / (2 * sigma[:, None, None] ** 2))
  r = radius[:, None, None]
  inside = (jnp.abs(dy)[:, :, None] <= r) & (jnp.abs(dx)[:, None, :] <= r)
  return jnp.where(inside, heat, 0.0)


def focal_loss(score_logits: jax.Array, heatmap: jax.Array, alpha: float = 2.0, beta: float = 4.0) -> jax.Array:
  """CornerNet/OSTrack weighted focal loss; positives where the heat map is exactly 1.

  Normalised by the number of positives in the whole batch (as OSTrack's FocalLoss).
  """
  pred = jnp.clip(jax.nn.sigmoid(score_logits.astype(jnp.float32)), 1e-4, 1 - 1e-4)
  pos = (heatmap == 1.0).astype(jnp.float32)
  neg = 1.0 - pos
  pos_loss = jnp.log(pred) * (1 - pred) ** alpha * pos
  neg_loss = jnp.log(1 - pred) * pred ** alpha * (1 - heatmap) ** beta * neg
  return -(pos_loss.sum() + neg_loss.sum()) / jnp.maximum(pos.sum(), 1.0)


def inbox_patch_mask(box_cxcywh: jax.Array, grid: int) -> jax.Array:
  """[B, grid*grid] bool: patches whose centre lies in the box; the centre cell when none does."""
  x0, y0, x1, y1 = jnp.moveaxis(boxes.cxcywh_to_xyxy(box_cxcywh.astype(jnp.float32)), -1, 0)
  centres = (jnp.arange(grid, dtype=jnp.float32) + 0.5) / grid
  in_x = (centres[None] >= x0[:, None]) & (centres[None] <= x1[:, None])
  in_y = (centres[None] >= y0[:, None]) & (centres[None] <= y1[:, None])
  mask = (in_y[:, :, None] & in_x[:, None, :]).reshape(-1, grid * grid)
  col, row = centre_cell(box_cxcywh, grid)
  fallback = jax.nn.one_hot(row * grid + col, grid * grid, dtype=bool)
  return jnp.where(mask.any(-1, keepdims=True), mask, fallback)


def dense_matching_loss(dm_stage: Mapping[str, jax.Array], inbox: jax.Array, has_text: jax.Array,
                        same_sentence: Optional[jax.Array] = None) -> Tuple[jax.Array, jax.Array]:
  """(text->patches, patch->text) DM loss of one stage, averaged over samples with a sentence.

  text->patches: -log(sum_{p in box} softmax_p(s_p)), s_p = scale * cos(patch_p, sentence).
  patch->text: for in-box patches, cross-entropy of the own sentence against the other sentences of
  the (global) batch; other samples carrying the identical sentence are not counted as negatives.
  """
  patch = dm_stage["patch_emb"].astype(jnp.float32)
  text = dm_stage["text_emb"].astype(jnp.float32)
  scale = dm_stage["logit_scale"].astype(jnp.float32)
  weight = has_text.astype(jnp.float32)
  denom = jnp.maximum(weight.sum(), 1.0)

  own = scale * jnp.einsum("bpd,bd->bp", patch, text)
  t2p = jax.nn.logsumexp(own, -1) - jax.nn.logsumexp(jnp.where(inbox, own, _NEG), -1)

  cross = scale * jnp.einsum("bpd,jd->bpj", patch, text)
  b = text.shape[0]
  if same_sentence is not None:
    cross = jnp.where((same_sentence & ~jnp.eye(b, dtype=bool))[:, None, :], _NEG, cross)
  ce = jax.nn.logsumexp(cross, -1) - own  # own == cross[b, p, b]
  inbox_f = inbox.astype(jnp.float32)
  p2t = (ce * inbox_f).sum(-1) / jnp.maximum(inbox_f.sum(-1), 1.0)
  return (t2p * weight).sum() / denom, (p2t * weight).sum() / denom


def compute_losses(out: Mapping[str, Any], batch: Mapping[str, Any], loss_cfg=None,
                   model_config=None) -> Tuple[jax.Array, dict]:
  """Weighted total and a dict of scalar terms (see docs/INTERFACES.md "Losses").

  model_config: `config.model` (ConfigDict / ModelConfig); only `use_text` is read (the grid comes
  from the score map). With use_text=False the DM terms are 0.
  """
  gt = jnp.asarray(batch["search_box"], jnp.float32)
  score = out["score_map"][..., 0].astype(jnp.float32)
  grid = score.shape[1]

  heat = gaussian_heatmap(gt, grid, _get(loss_cfg, "heatmap_sigma_factor", 1.0 / 6.0))
  focal = focal_loss(score, heat, _get(loss_cfg, "focal_alpha", 2.0), _get(loss_cfg, "focal_beta", 4.0))

  pred_xyxy = boxes.cxcywh_to_xyxy(out["pred_box"].astype(jnp.float32))
  gt_xyxy = boxes.cxcywh_to_xyxy(gt)
  giou = jnp.mean(1.0 - boxes.generalized_box_iou(pred_xyxy, gt_xyxy))
  l1 = jnp.mean(jnp.abs(pred_xyxy - gt_xyxy))
  iou = jax.lax.stop_gradient(jnp.mean(boxes.box_iou(pred_xyxy, gt_xyxy)))

  dm_t2p = dm_p2t = jnp.zeros((), jnp.float32)
  stages = tuple(out.get("dm", ()))
  if _get(model_config, "use_text", True) and stages:
    text_mask = jnp.asarray(batch["text_mask"])
    # An empty sentence encodes as [CLS][SEP] (2 tokens): a `bb` sample (sentence dropped) or an
    # all-padding row has nothing to match patches against, so it gets no DM loss.
    has_text = text_mask.sum(-1) > 2
    same = None
    if "text_ids" in batch:
      ids = jnp.where(text_mask > 0, jnp.asarray(batch["text_ids"]), 0)
      same = jnp.all(ids[:, None, :] == ids[None, :, :], axis=-1)
    if stages[0]["patch_emb"].shape[1] != grid * grid:
      raise ValueError(f"DM patches {stages[0]['patch_emb'].shape[1]} do not match the {grid}x{grid} score map")
    inbox = inbox_patch_mask(gt, grid)
    for stage in stages:
      t2p, p2t = dense_matching_loss(stage, inbox, has_text, same)
      dm_t2p, dm_p2t = dm_t2p + t2p / len(stages), dm_p2t + p2t / len(stages)
  dm = dm_t2p + dm_p2t

  total = (_get(loss_cfg, "focal_weight", 1.0) * focal + _get(loss_cfg, "giou_weight", 2.0) * giou
           + _get(loss_cfg, "l1_weight", 5.0) * l1 + _get(loss_cfg, "dm_weight", 1.0) * dm)
  terms = {"focal": focal, "giou": giou, "l1": l1, "dm": dm, "dm_t2p": dm_t2p, "dm_p2t": dm_p2t, "iou": iou}
  return total, terms
