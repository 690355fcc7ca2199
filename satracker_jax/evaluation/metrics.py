"""One-pass-evaluation metrics with pytracking / OSTrack `extract_results` semantics.

Every quirk of the reference toolkit is kept on purpose, so numbers are comparable with published
tables computed from raw result files:
- inclusive-pixel boxes: centre = x + (w - 1) / 2, IoU corners br = x + w - 1, side = br - tl + 1;
- success counts IoU > threshold (strict), so even a perfect tracker misses the threshold 1.0 and
  its AUC is 20/21;
- a frame whose ground truth is invalid (w or h not > 0, NaN, or on LaSOT occluded / out of view)
  scores IoU -1 and centre error inf (never a success or a hit) but normalised error -1, a hit at
  every threshold, except on LaSOT where frames that are not visible get normalised error inf;
- every curve is divided by the sequence's full length (invalid frames included);
- OP50 / OP75 are the averaged success curve at the thresholds 0.5 and 0.75 (IoU > 0.5, > 0.75),
  as pytracking prints them beside the AUC.
Everything is float64; pytracking stores the per-sequence curves as float32, which can move the
7th significant digit, never the 2-decimal percentages of a table.
"""
from __future__ import annotations

import dataclasses

import numpy as np

# Built exactly like pytracking (`arange(0, 1 + gap, gap)`, `arange(0, 51) / 100`), so that
# borderline errors compare against the very same float thresholds.
OVERLAP_THRESHOLDS = np.arange(0.0, 1.0 + 0.05, 0.05, dtype=np.float64)
CENTER_THRESHOLDS = np.arange(0, 51, dtype=np.float64)
NORM_CENTER_THRESHOLDS = np.arange(0, 51, dtype=np.float64) / 100.0
PRECISION_INDEX = 20        # 20 px
NORM_PRECISION_INDEX = 20   # 0.20
OP50_INDEX = 10             # OVERLAP_THRESHOLDS[10] == 0.5 exactly (pytracking selects == 0.50)
OP75_INDEX = 15             # OVERLAP_THRESHOLDS[15] == 0.75 exactly

LASOT = "lasot"


def _is_lasot(dataset: str) -> bool:
  return dataset.lower() == LASOT


def center_error(pred: np.ndarray, gt: np.ndarray, normalized: bool = False) -> np.ndarray:
  """Euclidean distance of the box centres; `normalized` divides both centres by the GT w, h."""
  pred_center = pred[:, :2] + 0.5 * (pred[:, 2:] - 1.0)
  gt_center = gt[:, :2] + 0.5 * (gt[:, 2:] - 1.0)
  if normalized:
    pred_center = pred_center / gt[:, 2:]
    gt_center = gt_center / gt[:, 2:]
  return np.sqrt(((pred_center - gt_center) ** 2).sum(axis=1))


def iou_overlap(pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
  """IoU of x,y,w,h boxes under the inclusive-pixel convention."""
  tl = np.maximum(pred[:, :2], gt[:, :2])
  br = np.minimum(pred[:, :2] + pred[:, 2:] - 1.0, gt[:, :2] + gt[:, 2:] - 1.0)
  side = np.clip(br - tl + 1.0, 0.0, None)
  intersection = side.prod(axis=1)
  union = pred[:, 2:].prod(axis=1) + gt[:, 2:].prod(axis=1) - intersection
  return intersection / union


def prepare_prediction(pred, gt: np.ndarray, dataset: str, source: str = "prediction") -> np.ndarray:
  """The prediction as scored: checked, zero sizes filled, length matched, frame 0 set to GT.

  Same order as pytracking: zero-size boxes are replaced (chained, from the raw frame 0) before
  the length is matched and before frame 0 is overwritten, so padded frames stay zero boxes.
  pytracking skips the replacement where the GT row is NaN; our readers turn absent GT lines
  (zero/empty in the file, which pytracking would still fill) into NaN, so we fill every frame.
  """
  pred = np.array(pred, dtype=np.float64).reshape(-1, 4)
  if np.isnan(pred).any() or (pred[:, 2:] < 0.0).any():
    raise ValueError(f"{source}: NaN or negative-size box in the tracker results")
  # In increasing order, so a run of zero-size boxes chains back to the last good one; only the
  # (few) zero-size rows are visited, not every frame of a long LaSOT sequence.
  for i in np.flatnonzero((pred[1:, 2:] == 0.0).any(axis=1)) + 1:
    pred[i] = pred[i - 1]
  num_gt = gt.shape[0]
  if pred.shape[0] > num_gt:
    pred = pred[:num_gt]
  elif pred.shape[0] < num_gt:
    if _is_lasot(dataset):
      raise ValueError(f"{source}: {pred.shape[0]} result frames but the ground truth has "
                       f"{num_gt} (LaSOT results must cover every frame)")
    pred = np.concatenate([pred, np.zeros((num_gt - pred.shape[0], 4))], axis=0)
  pred[0] = gt[0]
  return pred


@dataclasses.dataclass(frozen=True)
class FrameErrors:
  iou: np.ndarray                 # [N] -1 on invalid frames
  center_error: np.ndarray        # [N] pixels, inf on invalid frames
  norm_center_error: np.ndarray   # [N] -1 on invalid frames (inf on LaSOT invisible frames)
  valid: np.ndarray               # [N] bool


def sequence_errors(pred, gt, target_visible=None, dataset: str = "",
                    source: str = "prediction") -> FrameErrors:
  """Per-frame IoU / centre errors (pytracking's `calc_seq_err_robust`).

  `target_visible` [N] bool is LaSOT's "not fully occluded and not out of view" (None: all
  visible); `dataset` only matters when it is "lasot".
  """
  gt = np.asarray(gt, dtype=np.float64).reshape(-1, 4)
  if gt.shape[0] == 0:
    raise ValueError(f"{source}: the ground truth has no frames")
  pred = prepare_prediction(pred, gt, dataset, source)
  with np.errstate(invalid="ignore", divide="ignore"):
    valid = (gt[:, 2] > 0.0) & (gt[:, 3] > 0.0)
    if target_visible is not None:
      target_visible = np.asarray(target_visible, dtype=bool).reshape(-1)
      if target_visible.shape[0] != gt.shape[0]:
        raise ValueError(f"{source}: {target_visible.shape[0]} visibility flags for "
                         f"{gt.shape[0]} ground-truth frames")
      valid &= target_visible
    err_center = center_error(pred, gt)
    err_norm = center_error(pred, gt, normalized=True)
    iou = iou_overlap(pred, gt)
  err_center[~valid] = np.inf
  err_norm[~valid] = -1.0
  iou[~valid] = -1.0
  if _is_lasot(dataset) and target_visible is not None:
    err_norm[~target_visible] = np.inf
    err_center[~target_visible] = np.inf
  if np.isnan(iou).any():
    raise ValueError(f"{source}: NaN in the computed overlaps")
  return FrameErrors(iou, err_center, err_norm, valid)


@dataclasses.dataclass(frozen=True)
class SequenceCurves:
  """Fractions of a sequence's frames (all of them, invalid included) under each threshold."""
  success: np.ndarray         # [21] IoU > OVERLAP_THRESHOLDS
  precision: np.ndarray       # [51] error <= CENTER_THRESHOLDS
  norm_precision: np.ndarray  # [51] normalised error <= NORM_CENTER_THRESHOLDS
  mean_iou: float             # over valid frames (NaN when none), pytracking's avg_overlap
  num_frames: int
  num_valid: int

  @property
  def auc(self) -> float:
    return float(self.success.mean())

  @property
  def op50(self) -> float:
    return float(self.success[OP50_INDEX])

  @property
  def op75(self) -> float:
    return float(self.success[OP75_INDEX])

  @property
  def precision_20(self) -> float:
    return float(self.precision[PRECISION_INDEX])

  @property
  def norm_precision_20(self) -> float:
    return float(self.norm_precision[NORM_PRECISION_INDEX])


def curves_from_errors(errors: FrameErrors) -> SequenceCurves:
  n = errors.iou.shape[0]
  success = (errors.iou[:, None] > OVERLAP_THRESHOLDS[None, :]).sum(axis=0) / n
  precision = (errors.center_error[:, None] <= CENTER_THRESHOLDS[None, :]).sum(axis=0) / n
  norm_precision = (errors.norm_center_error[:, None] <= NORM_CENTER_THRESHOLDS[None, :]).sum(axis=0) / n
  num_valid = int(errors.valid.sum())
  mean_iou = float(errors.iou[errors.valid].mean()) if num_valid else float("nan")
  return SequenceCurves(success, precision, norm_precision, mean_iou, n, num_valid)


def sequence_curves(pred, gt, target_visible=None, dataset: str = "",
                    source: str = "prediction") -> SequenceCurves:
  """Success / precision / normalised-precision curves of one sequence."""
  return curves_from_errors(sequence_errors(pred, gt, target_visible, dataset, source))


def target_visible_of(sequence, dataset: str):
  """LaSOT's visibility flags of a `data_pipelines.readers.Sequence` (None elsewhere).

  Only LaSOT uses them, like pytracking, whose other datasets carry no visibility. The full data
  set has `full_occlusion` and `out_of_view`; the toolkit's annotation pack has one `absent` flag
  (the two combined).
  """
  if not _is_lasot(dataset):
    return None
  flags = [getattr(sequence, key, None) for key in ("full_occlusion", "out_of_view", "absent")]
  flags = [np.asarray(f, bool).reshape(-1) for f in flags if f is not None]
  if not flags:
    return None
  return ~np.logical_or.reduce(flags)


def average_curves(curves: list[SequenceCurves]) -> dict[str, np.ndarray]:
  """Curves averaged over sequences (each sequence weighs the same)."""
  if not curves:
    raise ValueError("no sequences to average")
  return {
      "success": np.mean([c.success for c in curves], axis=0),
      "precision": np.mean([c.precision for c in curves], axis=0),
      "norm_precision": np.mean([c.norm_precision for c in curves], axis=0),
  }


def summarize(curves: list[SequenceCurves]) -> dict:
  """{"auc", "op50", "op75", "precision", "norm_precision", "num_sequences"}; scores are fractions."""
  mean = average_curves(curves)
  return {
      "auc": float(mean["success"].mean()),
      "op50": float(mean["success"][OP50_INDEX]),
      "op75": float(mean["success"][OP75_INDEX]),
      "precision": float(mean["precision"][PRECISION_INDEX]),
      "norm_precision": float(mean["norm_precision"][NORM_PRECISION_INDEX]),
      "num_sequences": len(curves),
  }
