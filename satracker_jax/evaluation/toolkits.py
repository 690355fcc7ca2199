"""The benchmark toolkits' scoring rules (`--toolkit`): the same raw files under each toolkit's own
rules (SPEC.md, "Benchmark toolkits").

A toolkit is a small named object; each rule is one method, with the toolkit line it reproduces
quoted beside it. `metrics.sequence_errors` / `metrics.summarize` run the same pipeline for every
toolkit and ask it at each step:

  read_results -> prepare_prediction -> gt_valid -> mark_invalid -> mark_unseen -> denominator
  -> (per sequence curves) -> keep_in_mean

- `pytracking`: the analysis code of the OSTrack / UVLTrack / JointNLT forks
  (`lib/test/analysis/extract_results.py`, `calc_seq_err_robust`), which most VL papers with code
  report; on TNL2K they pass no absent flags.
- `pytracking-2022`: visionml/pytracking since Aug 2022: as `pytracking`, but a GT box touching the
  top or left border (x <= 0 or y <= 0) is invalid.
- `tnl2k-matlab`: the TNL2K authors' MATLAB toolkit (`utils/calc_seq_err_robust.m`,
  `utils/eval_tracker.m`, `plot_draw_save.m`).

Only numpy here (and `results_io` for reading): `metrics` imports this module, never the reverse.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from satracker_jax.evaluation import results_io

PYTRACKING = "pytracking"
PYTRACKING_2022 = "pytracking-2022"
TNL2K_MATLAB = "tnl2k-matlab"


@dataclasses.dataclass(frozen=True)
class Prepared:
  """A prediction as scored, and what the toolkit did to it."""
  boxes: np.ndarray      # [N_gt, 4]
  repaired_rows: int     # rows of the file replaced by the previous box
  padded_rows: int       # zero rows appended to a result shorter than the GT


class Pytracking:
  """The forks' `calc_seq_err_robust` + `extract_results` (SPEC.md "Metrics")."""
  name = PYTRACKING
  title = "pytracking (OSTrack / UVLTrack / JointNLT analysis)"
  # An invalid prediction row is a refusal naming the file and line, not a repair.
  repairs_invalid_rows = False

  def read_results(self, path: str) -> np.ndarray:
    # `if torch.isnan(pred_bb).any() or (pred_bb[:, 2:] < 0.0).any(): raise Exception('Error:
    # Invalid results')`; ours names the file and line.
    return results_io.read_boxes(path)

  def prepare_prediction(self, pred: np.ndarray, gt: np.ndarray, dataset: str,
                         source: str) -> Prepared:
    """Checked, zero sizes filled, length matched, frame 0 set to GT, in pytracking's order: the
    zero-size rows are replaced (chained, from the raw frame 0) before the length is matched and
    before frame 0 is overwritten, so padded frames stay zero boxes."""
    pred = np.array(pred, dtype=np.float64).reshape(-1, 4)
    if np.isnan(pred).any() or (pred[:, 2:] < 0.0).any():
      raise ValueError(f"{source}: NaN or negative-size box in the tracker results")
    num_rows = pred.shape[0]
    # `if (pred_bb[i, 2:] == 0.0).any() and not torch.isnan(anno_bb[i, :]).any():
    #      pred_bb[i, :] = pred_bb[i-1, :]`
    # Our readers turn absent GT lines (zero/empty in the file, which pytracking would still fill)
    # into NaN, so every frame is filled. In increasing order, so a run of zero-size boxes chains
    # back to the last good one; only the (few) zero-size rows are visited.
    zero = np.flatnonzero((pred[1:, 2:] == 0.0).any(axis=1)) + 1
    for i in zero:
      pred[i] = pred[i - 1]
    num_gt = gt.shape[0]
    padded = 0
    if num_rows > num_gt:
      pred = pred[:num_gt]
    elif num_rows < num_gt:
      # `if dataset == 'lasot': ... raise Exception('Mis-match in tracker prediction and GT lengths')`
      if dataset.lower() == "lasot":
        raise ValueError(f"{source}: {num_rows} result frames but the ground truth has "
                         f"{num_gt} (LaSOT results must cover every frame)")
      # `pad = torch.zeros((anno_bb.shape[0] - pred_bb.shape[0], 4))`
      padded = num_gt - num_rows
      pred = np.concatenate([pred, np.zeros((padded, 4))], axis=0)
    # `pred_bb[0, :] = anno_bb[0, :]`
    pred[0] = gt[0]
    return Prepared(pred, int((zero < min(num_rows, num_gt)).sum()), padded)

  def gt_valid(self, gt: np.ndarray) -> np.ndarray:
    # `valid = ((anno_bb[:, 2:] > 0.0).sum(1) == 2)` (NaN compares False: invalid).
    with np.errstate(invalid="ignore"):
      return (gt[:, 2] > 0.0) & (gt[:, 3] > 0.0)

  def mark_invalid(self, iou, center, norm_center, invalid) -> None:
    # `err_center[~valid] = float("Inf"); err_center_normalized[~valid] = -1.0;
    #  err_overlap[~valid] = -1.0`: never a success, never a P hit, always an NP hit.
    iou[invalid] = -1.0
    center[invalid] = np.inf
    norm_center[invalid] = -1.0

  def unseen_frames(self, sequence, dataset: str):
    """[N] bool of frames this toolkit scores as unseen (`mark_unseen`), or None.

    Only LaSOT's visibility, like pytracking, whose other datasets carry no visibility (the forks
    pass no absent flags for TNL2K). The full data set has `full_occlusion` and `out_of_view`; the
    toolkit's annotation pack has one `absent` flag (the two combined)."""
    if dataset.lower() != "lasot":
      return None
    flags = [getattr(sequence, key, None) for key in ("full_occlusion", "out_of_view", "absent")]
    flags = [np.asarray(f, bool).reshape(-1) for f in flags if f is not None]
    return np.logical_or.reduce(flags) if flags else None

  def mark_unseen(self, iou, center, norm_center, valid, unseen, dataset: str) -> None:
    # `valid = (...) & target_visible`, then on LaSOT only:
    # `err_center_normalized[~target_visible] = float("Inf"); err_center[~target_visible] = Inf`.
    # Elsewhere the flags only make frames invalid (an NP hit, as any invalid frame).
    valid &= ~unseen
    self.mark_invalid(iou, center, norm_center, ~valid)
    if dataset.lower() == "lasot":
      norm_center[unseen] = np.inf
      center[unseen] = np.inf

  def nan_overlap(self, iou, source: str) -> None:
    # `if torch.isnan(err_overlap).any(): raise Exception('Nans in calculated overlap')`
    if np.isnan(iou).any():
      raise ValueError(f"{source}: NaN in the computed overlaps")

  def denominator(self, num_frames: int) -> float:
    # `seq_length = anno_bb.shape[0]` (exclude_invalid_frames=False): every frame counts.
    return float(num_frames)

  def keep_in_mean(self, curve: np.ndarray) -> bool:
    # `ave_success_rate_plot_overlap.mean(0)` over the valid sequences: every scored one.
    return True


class Pytracking2022(Pytracking):
  """visionml/pytracking since Aug 2022: a GT box touching the top or left border is invalid."""
  name = PYTRACKING_2022
  title = "pytracking-2022 (visionml/pytracking since Aug 2022)"

  def gt_valid(self, gt: np.ndarray) -> np.ndarray:
    # The 2022 validity test asks x, y, w and h to be > 0 (SPEC.md "Benchmark toolkits"), where
    # the forks ask only `(anno_bb[:, 2:] > 0.0)`: 14,555 TNL2K test frames touch the border.
    with np.errstate(invalid="ignore"):
      return (gt > 0.0).all(axis=1)


class TNL2KMatlab:
  """The TNL2K authors' MATLAB toolkit (wangxiao5791509/TNL2K_evaluation_toolkit)."""
  name = TNL2K_MATLAB
  title = "tnl2k-matlab (the TNL2K authors' MATLAB toolkit)"
  # NaN / non-positive sizes are carried over, not refused.
  repairs_invalid_rows = True

  def read_results(self, path: str) -> np.ndarray:
    # `res = dlmread([rp_all t.name '/' s '.txt'])`: NaN and negative sizes are read as they are
    # (the next rule repairs them); a malformed line is still an error naming the file and line.
    return results_io.read_boxes(path, allow_invalid=True)

  def prepare_prediction(self, pred: np.ndarray, gt: np.ndarray, dataset: str,
                         source: str) -> Prepared:
    """calc_seq_err_robust.m, in its order: length, repair, frame 0."""
    pred = np.array(pred, dtype=np.float64).reshape(-1, 4)
    num_rows, num_gt = pred.shape[0], gt.shape[0]
    padded = 0
    # `if size(results, 1) ~= size(rect_anno, 1); results = results(1:size(rect_anno, 1), :);`
    # A shorter file stops MATLAB there (index out of bounds); we pad it with zero rows (which the
    # next rule then carries over) and the caller warns with the file's name.
    if num_rows > num_gt:
      pred = pred[:num_gt]
    elif num_rows < num_gt:
      padded = num_gt - num_rows
      pred = np.concatenate([pred, np.zeros((padded, 4))], axis=0)
    # `for i = 2:seq_length ... if (sum(isnan(r)) | ~isreal(r) | r(3)<=0 | r(4)<=0) &
    #  (~isnan(r_anno)); results(i,:) = results(i-1,:);` -- the `if` on a 1x4 vector holds when
    # no GT value is NaN; rows chain back to the last kept row (or the raw row 1).
    with np.errstate(invalid="ignore"):
      bad = np.isnan(pred).any(axis=1) | (pred[:, 2] <= 0.0) | (pred[:, 3] <= 0.0)
    replace = bad & ~np.isnan(gt).any(axis=1)
    replace[0] = False
    source_row = np.maximum.accumulate(np.where(replace, 0, np.arange(num_gt)))
    pred = pred[source_row]
    # `rect_mat(1,:) = rect_anno(1,:);  % ignore the result in the first frame`
    pred[0] = gt[0]
    return Prepared(pred, int(replace[:num_rows].sum()), padded)

  def gt_valid(self, gt: np.ndarray) -> np.ndarray:
    # `index = rect_anno > 0; idx = (sum(index, 2)==4);`
    with np.errstate(invalid="ignore"):
      return (gt > 0.0).all(axis=1)

  def mark_invalid(self, iou, center, norm_center, invalid) -> None:
    # `errCoverage = -ones(length(idx),1); errCoverage(idx) = tmp; err_center(~idx) = -1;`
    # The same function computes the pixel and the normalised error (`norm_dst`): -1 in both,
    # a hit at every threshold.
    iou[invalid] = -1.0
    center[invalid] = -1.0
    norm_center[invalid] = -1.0

  def unseen_frames(self, sequence, dataset: str):
    """The absent flags (`annos/absent/`, LaSOT's pack, GOT-10k), or LaSOT's occlusion |
    out-of-view; None when the data set has none (then every frame counts as present)."""
    absent = getattr(sequence, "absent", None)
    if absent is not None:
      return np.asarray(absent, bool).reshape(-1)
    flags = [getattr(sequence, key, None) for key in ("full_occlusion", "out_of_view")]
    flags = [np.asarray(f, bool).reshape(-1) for f in flags if f is not None]
    return np.logical_or.reduce(flags) if flags else None

  def mark_unseen(self, iou, center, norm_center, valid, unseen, dataset: str) -> None:
    # `absent_idx = absent_anno == 1; rect_mat(absent_idx, :) = []; rect_anno(absent_idx, :) = [];`
    # with `len_all = size(anno, 1)` kept as the denominator: a removed frame fails every metric.
    valid &= ~unseen
    iou[unseen] = -1.0
    center[unseen] = np.inf
    norm_center[unseen] = np.inf

  def nan_overlap(self, iou, source: str) -> None:
    # A NaN left in a row whose GT had a NaN chains into the next rows; MATLAB compares NaN
    # (`err_coverage > t`, `err_center <= t`) as false: a miss, not an error.
    iou[np.isnan(iou)] = -1.0

  def denominator(self, num_frames: int) -> float:
    # `success_num_overlap/(len_all + eps)`, eps = 2^-52 (MATLAB's `eps`).
    return num_frames + np.finfo(np.float64).eps

  def keep_in_mean(self, curve: np.ndarray) -> bool:
    # plot_draw_save.m: `aa = aa(sum(aa,2)>eps,:); bb = mean(aa);` -- per metric, a sequence
    # whose whole curve is zero is left out of the mean.
    return bool(curve.sum() > np.finfo(np.float64).eps)


TOOLKITS = {t.name: t for t in (Pytracking(), Pytracking2022(), TNL2KMatlab())}
NAMES = tuple(TOOLKITS)


def get(toolkit) -> "Pytracking | TNL2KMatlab":
  """A toolkit by name (or the object itself); an unknown name is a ValueError listing them."""
  if not isinstance(toolkit, str):
    return toolkit
  try:
    return TOOLKITS[toolkit]
  except KeyError:
    raise ValueError(f"unknown toolkit {toolkit!r}; choose from {', '.join(NAMES)}") from None


def default_names(dataset: str, asked: str | None = None) -> tuple[str, ...]:
  """The toolkits a report shows: the one asked for; else `pytracking`, beside `tnl2k-matlab` on
  TNL2K (its users quote both)."""
  if asked:
    return (get(asked).name,)
  if dataset.lower() == "tnl2k":
    return (PYTRACKING, TNL2K_MATLAB)
  return (PYTRACKING,)


# TNL2K's 17 sequence attributes, in the order of `annos/att/<seq>_attribute.txt`: the toolkit's
# evaluate_TNL2K_dataset.m, `att_name = {'Camera Motion', 'Rotation', ...}` and `att_fig_name =
# {'CM', 'ROT', ...}` (checked on the pack: the 100 `advSamp_*` sequences, and only those, have
# attribute 15, "Adversarial Samples"). A pack with another count is named by index.
TNL2K_ATTRIBUTES = (
    ("CM", "Camera Motion"), ("ROT", "Rotation"), ("DEF", "Deformation"),
    ("FOC", "Full Occlusion"), ("IV", "Illumination Variation"), ("OV", "Out-of-View"),
    ("POC", "Partial Occlusion"), ("VC", "Viewpoint Change"), ("SV", "Scale Variation"),
    ("BC", "Background Clutter"), ("MB", "Motion Blur"), ("ARC", "Aspect Ratio Change"),
    ("LR", "Low Resolution"), ("FM", "Fast Motion"), ("AS", "Adversarial Samples"),
    ("TC", "Thermal Crossover"), ("MS", "Modality Switch"),
)


def attribute_names(count: int, dataset: str) -> list[tuple[str, str]]:
  """(short, long) names of a data set's `count` per-sequence attributes."""
  if dataset.lower() == "tnl2k" and count == len(TNL2K_ATTRIBUTES):
    return list(TNL2K_ATTRIBUTES)
  return [(f"att{i + 1}", f"attribute {i + 1}") for i in range(count)]
