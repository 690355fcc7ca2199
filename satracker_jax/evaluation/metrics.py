"""One-pass-evaluation metrics: the curves and scores every benchmark toolkit computes, under the
rules of the toolkit asked for (`toolkits`: `pytracking` by default, `pytracking-2022`,
`tnl2k-matlab`).

The geometry is shared by all of them: inclusive-pixel boxes (centre = x + (w - 1) / 2, IoU
corners br = x + w - 1, side = br - tl + 1); success counts IoU > threshold (strict), so even a
perfect tracker misses the threshold 1.0 and its AUC is 20/21; precision counts error <= threshold.
OP50 / OP75 are the averaged success curve at the thresholds 0.5 and 0.75, as pytracking prints
them beside the AUC; `norm_precision_auc` is the mean of the normalised-precision curve on
0:0.01:0.5 (what the TNL2K paper's figures call "normalized precision").

What differs is in `toolkits`, one method per rule. Under `pytracking` (the forks' quirks kept on
purpose, so numbers compare with published tables): a frame whose ground truth is invalid (w or h
not > 0, NaN, or on LaSOT occluded / out of view) scores IoU -1 and centre error inf (never a
success or a hit) but normalised error -1, a hit at every threshold, except on LaSOT where frames
that are not visible get normalised error inf; every curve is divided by the sequence's full length
(invalid frames included).
Everything is float64; pytracking stores the per-sequence curves as float32, which can move the
7th significant digit, never the 2-decimal percentages of a table.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from satracker_jax.evaluation import toolkits

# Built exactly like pytracking (`arange(0, 1 + gap, gap)`, `arange(0, 51) / 100`), so that
# borderline errors compare against the very same float thresholds.
OVERLAP_THRESHOLDS = np.arange(0.0, 1.0 + 0.05, 0.05, dtype=np.float64)
CENTER_THRESHOLDS = np.arange(0, 51, dtype=np.float64)
NORM_CENTER_THRESHOLDS = np.arange(0, 51, dtype=np.float64) / 100.0
PRECISION_INDEX = 20        # 20 px
NORM_PRECISION_INDEX = 20   # 0.20
OP50_INDEX = 10             # OVERLAP_THRESHOLDS[10] == 0.5 exactly (pytracking selects == 0.50)
OP75_INDEX = 15             # OVERLAP_THRESHOLDS[15] == 0.75 exactly

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


def prepare_prediction(pred, gt: np.ndarray, dataset: str, source: str = "prediction",
                       toolkit=toolkits.PYTRACKING) -> np.ndarray:
  """The prediction as scored under `toolkit` (`toolkits.<Toolkit>.prepare_prediction`)."""
  gt = np.asarray(gt, dtype=np.float64).reshape(-1, 4)
  return toolkits.get(toolkit).prepare_prediction(pred, gt, dataset, source).boxes


@dataclasses.dataclass(frozen=True)
class FrameErrors:
  iou: np.ndarray                 # [N] -1 on invalid frames
  center_error: np.ndarray        # [N] pixels; invalid frames: inf (pytracking), -1 (tnl2k-matlab)
  norm_center_error: np.ndarray   # [N] -1 on invalid frames (inf on unseen frames, see toolkits)
  valid: np.ndarray               # [N] bool
  denominator: float = 0.0        # what each curve is divided by (0: the frame count)
  repaired_rows: int = 0          # result rows replaced by the previous box
  padded_rows: int = 0            # zero rows appended to a short result


def sequence_errors(pred, gt, target_visible=None, dataset: str = "",
                    source: str = "prediction", toolkit=toolkits.PYTRACKING) -> FrameErrors:
  """Per-frame IoU / centre errors (the toolkit's `calc_seq_err_robust`).

  `target_visible` [N] bool: the frames the toolkit sees (`target_visible_of`; None: all). Under
  `pytracking*` that is LaSOT's "not fully occluded and not out of view"; under `tnl2k-matlab`,
  "not absent". `dataset` matters for "lasot" only.
  """
  kit = toolkits.get(toolkit)
  gt = np.asarray(gt, dtype=np.float64).reshape(-1, 4)
  if gt.shape[0] == 0:
    raise ValueError(f"{source}: the ground truth has no frames")
  prepared = kit.prepare_prediction(pred, gt, dataset, source)
  pred = prepared.boxes
  valid = kit.gt_valid(gt)
  with np.errstate(invalid="ignore", divide="ignore"):
    err_center = center_error(pred, gt)
    err_norm = center_error(pred, gt, normalized=True)
    iou = iou_overlap(pred, gt)
  kit.mark_invalid(iou, err_center, err_norm, ~valid)
  if target_visible is not None:
    target_visible = np.asarray(target_visible, dtype=bool).reshape(-1)
    if target_visible.shape[0] != gt.shape[0]:
      raise ValueError(f"{source}: {target_visible.shape[0]} visibility flags for "
                       f"{gt.shape[0]} ground-truth frames")
    kit.mark_unseen(iou, err_center, err_norm, valid, ~target_visible, dataset)
  kit.nan_overlap(iou, source)
  return FrameErrors(iou, err_center, err_norm, valid, kit.denominator(gt.shape[0]),
                     prepared.repaired_rows, prepared.padded_rows)


@dataclasses.dataclass(frozen=True)
class SequenceCurves:
  """Fractions of a sequence's frames (all of them, invalid included) under each threshold."""
  success: np.ndarray         # [21] IoU > OVERLAP_THRESHOLDS
  precision: np.ndarray       # [51] error <= CENTER_THRESHOLDS
  norm_precision: np.ndarray  # [51] normalised error <= NORM_CENTER_THRESHOLDS
  mean_iou: float             # over valid frames (NaN when none), pytracking's avg_overlap
  num_frames: int
  num_valid: int
  repaired_rows: int = 0      # result rows the toolkit replaced by the previous box
  padded_rows: int = 0        # zero rows appended to a short result

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

  @property
  def norm_precision_auc(self) -> float:
    """Mean of the normalised-precision curve over 0:0.01:0.5 (the TNL2K paper's "normalized
    precision")."""
    return float(self.norm_precision.mean())


def curves_from_errors(errors: FrameErrors) -> SequenceCurves:
  n = errors.iou.shape[0]
  d = errors.denominator or n
  success = (errors.iou[:, None] > OVERLAP_THRESHOLDS[None, :]).sum(axis=0) / d
  precision = (errors.center_error[:, None] <= CENTER_THRESHOLDS[None, :]).sum(axis=0) / d
  norm_precision = (errors.norm_center_error[:, None] <= NORM_CENTER_THRESHOLDS[None, :]).sum(axis=0) / d
  num_valid = int(errors.valid.sum())
  mean_iou = float(errors.iou[errors.valid].mean()) if num_valid else float("nan")
  return SequenceCurves(success, precision, norm_precision, mean_iou, n, num_valid,
                        errors.repaired_rows, errors.padded_rows)


def sequence_curves(pred, gt, target_visible=None, dataset: str = "",
                    source: str = "prediction", toolkit=toolkits.PYTRACKING) -> SequenceCurves:
  """Success / precision / normalised-precision curves of one sequence."""
  return curves_from_errors(sequence_errors(pred, gt, target_visible, dataset, source, toolkit))


def target_visible_of(sequence, dataset: str, toolkit=toolkits.PYTRACKING):
  """The frames of a `data_pipelines.readers.Sequence` that `toolkit` sees (None: all of them).

  `pytracking*`: LaSOT's visibility only (the full data set's `full_occlusion` | `out_of_view`, or
  the toolkit pack's `absent`); `tnl2k-matlab`: the absent flags of any data set that has them
  (see `toolkits.<Toolkit>.unseen_frames`).
  """
  unseen = toolkits.get(toolkit).unseen_frames(sequence, dataset)
  return None if unseen is None else ~unseen


CURVES = ("success", "precision", "norm_precision")


def average_curves(curves: list[SequenceCurves], toolkit=toolkits.PYTRACKING) -> dict[str, np.ndarray]:
  """Curves averaged over sequences (each sequence weighs the same; under `tnl2k-matlab` a
  sequence whose whole curve is zero is left out of that curve's mean)."""
  if not curves:
    raise ValueError("no sequences to average")
  kit = toolkits.get(toolkit)
  mean = {}
  for key in CURVES:
    kept = [getattr(c, key) for c in curves if kit.keep_in_mean(getattr(c, key))]
    # Every curve dropped (a tracker that never hits): the mean of nothing is a zero curve.
    mean[key] = np.mean(kept, axis=0) if kept else np.zeros_like(getattr(curves[0], key))
  return mean


def summarize(curves: list[SequenceCurves], toolkit=toolkits.PYTRACKING) -> dict:
  """{"toolkit", "auc", "op50", "op75", "precision", "norm_precision", "norm_precision_auc",
  "num_sequences", "repaired_rows", "padded_rows"}; scores are fractions. Under a toolkit that
  leaves zero curves out of the mean, also "dropped_zero_curves" {curve: sequences left out}."""
  kit = toolkits.get(toolkit)
  mean = average_curves(curves, kit)
  summary = {
      "toolkit": kit.name,
      "auc": float(mean["success"].mean()),
      "op50": float(mean["success"][OP50_INDEX]),
      "op75": float(mean["success"][OP75_INDEX]),
      "precision": float(mean["precision"][PRECISION_INDEX]),
      "norm_precision": float(mean["norm_precision"][NORM_PRECISION_INDEX]),
      "norm_precision_auc": float(mean["norm_precision"].mean()),
      "num_sequences": len(curves),
      "repaired_rows": int(sum(c.repaired_rows for c in curves)),
      "padded_rows": int(sum(c.padded_rows for c in curves)),
  }
  dropped = {key: sum(not kit.keep_in_mean(getattr(c, key)) for c in curves) for key in CURVES}
  if any(dropped.values()):
    summary["dropped_zero_curves"] = dropped
  return summary
