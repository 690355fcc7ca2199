"""Metrics against hand-derived values (pytracking / OSTrack `extract_results` semantics)."""
import os
import types

import numpy as np
import pytest

from satracker_jax.evaluation import metrics, results_io, toolkits


def repeat(box, n):
  return np.tile(np.asarray(box, np.float64), (n, 1))


def test_thresholds_are_built_like_pytracking():
  assert metrics.OVERLAP_THRESHOLDS.shape == (21,)
  assert metrics.CENTER_THRESHOLDS.shape == (51,)
  assert metrics.NORM_CENTER_THRESHOLDS.shape == (51,)
  # arange(0, 1.05, 0.05) carries arange's rounding (0.15000000000000002), i/100 does not.
  assert metrics.OVERLAP_THRESHOLDS[3] == 3 * 0.05 != 0.15
  assert metrics.OVERLAP_THRESHOLDS[-1] == 1.0
  assert metrics.CENTER_THRESHOLDS[metrics.PRECISION_INDEX] == 20.0
  assert metrics.NORM_CENTER_THRESHOLDS[metrics.NORM_PRECISION_INDEX] == 0.2


def test_inclusive_pixel_iou_and_centre():
  a = np.array([[0.0, 0.0, 10.0, 10.0]])
  b = np.array([[5.0, 0.0, 10.0, 10.0]])
  # br = x + w - 1: a spans columns 0..9, b 5..14 -> 5 shared columns, 10 rows: 50 / (200 - 50).
  assert metrics.iou_overlap(a, b)[0] == 50.0 / 150.0
  # Touching boxes (a ends at column 9, c starts at 10) do not overlap; side clamps at 0.
  c = np.array([[10.0, 0.0, 10.0, 10.0]])
  assert metrics.iou_overlap(a, c)[0] == 0.0
  # centre = x + (w - 1) / 2 = 4.5 and 9.5.
  assert metrics.center_error(a, b)[0] == 5.0
  # normalised: both centres divided by the GT size (10): 0.95 - 0.45.
  assert metrics.center_error(a, b, normalized=True)[0] == pytest.approx(0.5, abs=1e-15)


def test_perfect_tracker():
  gt = repeat([20, 30, 40, 50], 7)
  c = metrics.sequence_curves(gt.copy(), gt)
  # IoU = 1 is a success at every threshold but the last one: IoU > 1.0 (strict) never holds.
  # So even a perfect tracker has AUC = 20/21, exactly as in pytracking.
  np.testing.assert_array_equal(c.success, [1.0] * 20 + [0.0])
  assert c.auc == pytest.approx(20 / 21, abs=1e-15)
  np.testing.assert_array_equal(c.precision, np.ones(51))
  np.testing.assert_array_equal(c.norm_precision, np.ones(51))
  assert c.precision_20 == 1.0 and c.norm_precision_20 == 1.0
  assert c.mean_iou == 1.0 and c.num_frames == 7 and c.num_valid == 7


def test_constant_ten_pixel_shift():
  # GT 100x100 at (50, 50) in 10 frames, prediction shifted 10 px right. Frame 0 is reset to GT.
  n = 10
  gt = repeat([50, 50, 100, 100], n)
  pred = repeat([60, 50, 100, 100], n)
  c = metrics.sequence_curves(pred, gt)
  # Frames 1..9: shared columns 60..149 (br = x + w - 1) = 90, shared rows 100:
  # IoU = 9000 / (10000 + 10000 - 9000) = 9/11 = 0.8181...
  # IoU > t for t = 0, 0.05, ..., 0.80 (17 thresholds); not for 0.85, 0.90, 0.95, 1.0.
  # Frame 0 (IoU 1) succeeds at the first 20 thresholds.
  expected_success = np.array([1.0] * 17 + [0.1] * 3 + [0.0])
  np.testing.assert_allclose(c.success, expected_success, rtol=0, atol=1e-15)
  # AUC = (17 + 3 * 0.1) / 21 = 17.3 / 21.
  assert c.auc == pytest.approx(17.3 / 21, abs=1e-15)
  # Centre error: centres 60 + 49.5 vs 50 + 49.5 -> exactly 10 px (frame 0: 0 px).
  # error <= t: only frame 0 for t = 0..9, every frame for t >= 10.
  expected_precision = np.array([0.1] * 10 + [1.0] * 41)
  np.testing.assert_allclose(c.precision, expected_precision, rtol=0, atol=1e-15)
  assert c.precision_20 == 1.0
  # Normalised: 109.5/100 - 99.5/100 = 0.1 in exact arithmetic; in float64 1.095 - 0.995 is
  # 0.09999999999999998 <= 0.10 (= 10/100), so the threshold 0.10 is already a hit.
  expected_norm = np.array([0.1] * 10 + [1.0] * 41)
  np.testing.assert_allclose(c.norm_precision, expected_norm, rtol=0, atol=1e-15)
  assert c.norm_precision_20 == 1.0
  # pytracking's average overlap over valid frames: (1 + 9 * 9/11) / 10.
  assert c.mean_iou == pytest.approx((1 + 9 * 9 / 11) / 10, abs=1e-15)


def test_average_over_sequences():
  gt = repeat([50, 50, 100, 100], 10)
  perfect = metrics.sequence_curves(gt.copy(), gt)
  shifted = metrics.sequence_curves(repeat([60, 50, 100, 100], 10), gt)
  summary = metrics.summarize([perfect, shifted])
  # Each sequence weighs the same: mean of the two AUCs (20/21 and 17.3/21).
  assert summary["auc"] == pytest.approx((20 + 17.3) / 42, abs=1e-15)
  assert summary["precision"] == 1.0 and summary["norm_precision"] == 1.0
  assert summary["num_sequences"] == 2
  mean = metrics.average_curves([perfect, shifted])
  np.testing.assert_allclose(mean["precision"][:10], 0.55, atol=1e-15)  # (1 + 0.1) / 2


@pytest.mark.parametrize("bad_gt", [[10, 10, 0, 20], [10, 10, 20, 0], [np.nan] * 4])
def test_invalid_ground_truth_frames(bad_gt):
  # 4 frames, frame 2 has no valid GT; prediction perfect elsewhere.
  gt = repeat([10, 10, 20, 20], 4)
  gt[2] = bad_gt
  pred = repeat([10, 10, 20, 20], 4)
  errors = metrics.sequence_errors(pred, gt)
  assert errors.iou[2] == -1.0 and errors.center_error[2] == np.inf
  assert errors.norm_center_error[2] == -1.0
  np.testing.assert_array_equal(errors.valid, [True, True, False, True])
  c = metrics.curves_from_errors(errors)
  # IoU -1 is never a success; the curve is divided by all 4 frames: 3/4 up to t = 0.95, then 0.
  np.testing.assert_array_equal(c.success, [0.75] * 20 + [0.0])
  assert c.auc == pytest.approx(15 / 21, abs=1e-15)
  # Centre error inf is never a hit.
  np.testing.assert_array_equal(c.precision, np.full(51, 0.75))
  # pytracking's quirk: normalised error -1 is a hit at every threshold.
  np.testing.assert_array_equal(c.norm_precision, np.ones(51))
  assert c.num_valid == 3 and c.mean_iou == 1.0


def test_lasot_invisible_frames_are_never_normalised_hits():
  # Frame 0 valid; frame 1 zero-width GT but "visible"; frame 2 fully occluded; 3 out of view.
  gt = repeat([10, 10, 20, 20], 4)
  gt[1, 2] = 0.0
  seq = types.SimpleNamespace(boxes=gt, full_occlusion=np.array([0, 0, 1, 0]),
                              out_of_view=np.array([0, 0, 0, 1]))
  visible = metrics.target_visible_of(seq, "lasot")
  np.testing.assert_array_equal(visible, [True, True, False, False])
  assert metrics.target_visible_of(seq, "tnl2k") is None
  pred = repeat([10, 10, 20, 20], 4)
  lasot = metrics.sequence_curves(pred, gt, visible, "lasot")
  # Only frame 0 is valid: success / precision 1/4.
  np.testing.assert_array_equal(lasot.success, [0.25] * 20 + [0.0])
  np.testing.assert_array_equal(lasot.precision, np.full(51, 0.25))
  # NP: frame 0 hit, frame 1 (invalid but visible) -1 -> hit, frames 2, 3 invisible -> inf.
  np.testing.assert_array_equal(lasot.norm_precision, np.full(51, 0.5))
  # The same flags on another dataset only make frames invalid: -1, a hit everywhere.
  other = metrics.sequence_curves(pred, gt, visible, "tnl2k")
  np.testing.assert_array_equal(other.precision, np.full(51, 0.25))
  np.testing.assert_array_equal(other.norm_precision, np.ones(51))


def test_zero_size_prediction_replaced_by_previous():
  gt = repeat([0, 0, 10, 10], 5)
  pred = np.array([[0, 0, 10, 10], [1, 0, 10, 10], [5, 5, 0, 3], [7, 7, 4, 0], [2, 0, 10, 10]],
                  np.float64)
  prepared = metrics.prepare_prediction(pred, gt, "tnl2k")
  # Frames 2 and 3 take the previous (already replaced) box: a chain back to frame 1.
  np.testing.assert_array_equal(prepared[2], [1, 0, 10, 10])
  np.testing.assert_array_equal(prepared[3], [1, 0, 10, 10])
  np.testing.assert_array_equal(prepared[4], [2, 0, 10, 10])


def test_zero_size_replacement_happens_before_frame0_reset():
  # pytracking's order: the chain starts from the raw frame 0, which is reset to GT afterwards.
  gt = repeat([0, 0, 10, 10], 3)
  pred = np.array([[3, 3, 0, 0], [4, 4, 0, 5], [0, 0, 10, 10]], np.float64)
  prepared = metrics.prepare_prediction(pred, gt, "tnl2k")
  np.testing.assert_array_equal(prepared[0], gt[0])
  np.testing.assert_array_equal(prepared[1], [3, 3, 0, 0])
  # A zero-size box overlaps nothing: IoU 0 at frame 1.
  assert metrics.sequence_errors(pred, gt).iou[1] == 0.0


def test_short_result_is_padded_with_zero_boxes():
  gt = repeat([10, 10, 20, 20], 4)
  c = metrics.sequence_curves(repeat([10, 10, 20, 20], 2), gt, None, "tnl2k")
  # Frames 2, 3 become (0, 0, 0, 0) (not the previous box): IoU 0, centre (-0.5, -0.5) vs
  # (19.5, 19.5): 20 * sqrt(2) = 28.28 px -> a hit from t = 29 px on.
  np.testing.assert_array_equal(c.success, [0.5] * 20 + [0.0])
  np.testing.assert_array_equal(c.precision, [0.5] * 29 + [1.0] * 22)
  assert c.precision_20 == 0.5 and c.num_frames == 4


def test_long_result_is_truncated():
  gt = repeat([10, 10, 20, 20], 4)
  pred = np.concatenate([repeat([10, 10, 20, 20], 4), repeat([500, 500, 1, 1], 3)])
  for dataset in ("tnl2k", "lasot"):
    c = metrics.sequence_curves(pred, gt, None, dataset)
    assert c.num_frames == 4
    np.testing.assert_array_equal(c.precision, np.ones(51))


def test_short_result_on_lasot_is_an_error():
  gt = repeat([10, 10, 20, 20], 4)
  with pytest.raises(ValueError, match="LaSOT"):
    metrics.sequence_curves(repeat([10, 10, 20, 20], 3), gt, np.ones(4, bool), "lasot",
                            source="airplane-1.txt")


@pytest.mark.parametrize("bad", [[np.nan, 1, 2, 3], [1, 2, -3, 4], [1, 2, 3, -0.5]])
def test_nan_or_negative_prediction_is_an_error(bad):
  gt = repeat([10, 10, 20, 20], 3)
  pred = repeat([10, 10, 20, 20], 3)
  pred[1] = bad
  with pytest.raises(ValueError, match="seq.txt"):
    metrics.sequence_curves(pred, gt, source="seq.txt")


def test_empty_ground_truth_is_an_error():
  with pytest.raises(ValueError, match="no frames"):
    metrics.sequence_curves(np.zeros((0, 4)), np.zeros((0, 4)))


def test_results_round_trip(tmp_path):
  boxes = np.array([[10, 20, 30, 40], [10.25, 20.5, 30.125, 40.0625], [0, 0, 1, 1]], np.float64)
  times = np.array([0.5, 0.0125, 0.001])
  path = results_io.write_results(str(tmp_path), "seq", boxes, times)
  assert path == os.path.join(str(tmp_path), "seq.txt")
  lines = open(path).read().splitlines()
  # Tab separated like pytracking; integral boxes read exactly like pytracking's `%d` files.
  assert lines[0] == "10\t20\t30\t40"
  assert lines[1] == "10.25\t20.5\t30.125\t40.0625"
  np.testing.assert_array_equal(results_io.read_boxes(path), boxes)
  np.testing.assert_array_equal(results_io.read_times(results_io.times_path(str(tmp_path), "seq")), times)


def test_read_accepts_tab_comma_and_space(tmp_path):
  path = tmp_path / "mixed.txt"
  path.write_text("1\t2\t3\t4\n5,6,7,8\n9 10 11 12\n13, 14, 15, 16\n\n")
  np.testing.assert_array_equal(results_io.read_boxes(str(path)),
                                np.arange(1, 17, dtype=np.float64).reshape(4, 4))


@pytest.mark.parametrize("line, message", [
    ("nan\tnan\tnan\tnan", "non-finite"),
    ("1\t2\t-3\t4", "negative"),
    ("1\t2\t3", "expected 4 values"),
    ("1\t2\tthree\t4", "not a number"),
    ("", "empty line"),
])
def test_bad_result_line_names_file_and_line(tmp_path, line, message):
  path = tmp_path / "car-3.txt"
  path.write_text(f"1\t2\t3\t4\n5\t6\t7\t8\n{line}\n9\t9\t9\t9\n")
  with pytest.raises(ValueError, match=message) as info:
    results_io.read_boxes(str(path))
  assert f"{path}:3:" in str(info.value)


def test_op50_and_op75_are_strict_success_at_half_and_three_quarters():
  assert metrics.OVERLAP_THRESHOLDS[metrics.OP50_INDEX] == 0.5  # pytracking selects `== 0.50`
  assert metrics.OVERLAP_THRESHOLDS[metrics.OP75_INDEX] == 0.75
  # 12x12 GT; shifts of 4, 1 and 3 px give IoU 96/192 = 0.5 exactly, 132/156 = 0.846, 108/180 = 0.6.
  gt = repeat([0, 0, 12, 12], 4)
  pred = np.array([[0, 0, 12, 12], [4, 0, 12, 12], [1, 0, 12, 12], [3, 0, 12, 12]], np.float64)
  np.testing.assert_allclose(metrics.sequence_errors(pred, gt).iou, [1.0, 0.5, 132 / 156, 0.6])
  c = metrics.sequence_curves(pred, gt)
  assert c.op50 == 0.75   # IoU 0.5 is not > 0.5: frames 0, 2, 3
  assert c.op75 == 0.5    # frames 0, 2
  summary = metrics.summarize([c, metrics.sequence_curves(gt.copy(), gt)])
  assert summary["op50"] == (0.75 + 1.0) / 2 and summary["op75"] == (0.5 + 1.0) / 2


def test_lasot_toolkit_absent_flags_make_frames_invisible():
  # The toolkit's annotation pack has one `absent` flag instead of occlusion / out-of-view.
  gt = repeat([10, 10, 20, 20], 3)
  seq = types.SimpleNamespace(boxes=gt, full_occlusion=None, out_of_view=None,
                              absent=np.array([0, 1, 0]))
  np.testing.assert_array_equal(metrics.target_visible_of(seq, "lasot"), [True, False, True])
  c = metrics.sequence_curves(gt.copy(), gt, metrics.target_visible_of(seq, "lasot"), "lasot")
  np.testing.assert_allclose(c.norm_precision, np.full(51, 2 / 3))  # the absent frame: inf, no hit


# -- toolkits: the same files under each benchmark's rules (SPEC.md "Benchmark toolkits") ---------
MATLAB = "tnl2k-matlab"


def test_toolkit_names_and_defaults():
  assert toolkits.NAMES == ("pytracking", "pytracking-2022", "tnl2k-matlab")
  assert toolkits.default_names("tnl2k") == ("pytracking", "tnl2k-matlab")
  assert toolkits.default_names("lasot") == ("pytracking",)
  assert toolkits.default_names("tnl2k", "pytracking-2022") == ("pytracking-2022",)
  with pytest.raises(ValueError, match="choose from pytracking, pytracking-2022, tnl2k-matlab"):
    toolkits.get("matlab")


def test_matlab_carries_invalid_rows_over_unless_the_gt_row_has_nan():
  gt = repeat([10, 10, 20, 20], 7)
  gt[5] = np.nan
  pred = np.array([[np.nan, 0, 1, 1],          # frame 0: never repaired, replaced by GT
                   [11, 10, 20, 20],
                   [np.nan, np.nan, np.nan, np.nan],   # -> frame 1
                   [5, 5, -1, 4],              # negative width -> frame 1 (chained)
                   [12, 10, 20, 0],            # zero height -> frame 1
                   [np.nan, 1, 2, 3],          # GT row NaN: kept as it is
                   [13, 10, 20, 20]], np.float64)
  prepared = toolkits.get(MATLAB).prepare_prediction(pred, gt, "tnl2k", "seq.txt")
  np.testing.assert_array_equal(prepared.boxes[0], gt[0])
  for i in (2, 3, 4):
    np.testing.assert_array_equal(prepared.boxes[i], [11, 10, 20, 20])
  assert np.isnan(prepared.boxes[5, 0])
  assert prepared.repaired_rows == 3 and prepared.padded_rows == 0
  # Under pytracking the same rows are an error naming the file.
  with pytest.raises(ValueError, match="seq.txt: NaN or negative-size"):
    metrics.sequence_curves(pred, gt, source="seq.txt")
  # Scored: the NaN frame 5 (GT NaN: invalid) is -1; nothing raises.
  errors = metrics.sequence_errors(pred, gt, toolkit=MATLAB)
  assert errors.iou[5] == -1.0 and errors.repaired_rows == 3


def test_matlab_nan_chained_into_a_valid_frame_is_a_miss_not_an_error():
  # Row 1's GT is NaN, so its NaN prediction stays and row 2 copies it: MATLAB compares NaN as
  # false (no success, no hit).
  gt = repeat([10, 10, 20, 20], 3)
  gt[1] = np.nan
  pred = np.array([[10, 10, 20, 20], [np.nan] * 4, [np.nan] * 4], np.float64)
  errors = metrics.sequence_errors(pred, gt, toolkit=MATLAB)
  assert errors.iou[2] == -1.0
  c = metrics.curves_from_errors(errors)
  assert c.precision[50] == pytest.approx(2 / 3)  # frame 0 and the invalid frame 1 (-1: a hit)


def test_short_result_padding_per_toolkit():
  gt = repeat([10, 10, 20, 20], 4)
  short = repeat([10, 10, 20, 20], 2)
  # pytracking: zero boxes (IoU 0); tnl2k-matlab: zero rows, then carried over (IoU 1).
  py = metrics.sequence_curves(short, gt, None, "tnl2k")
  ml = metrics.sequence_curves(short, gt, None, "tnl2k", toolkit=MATLAB)
  assert py.success[0] == 0.5 and py.padded_rows == 2
  assert ml.success[0] == pytest.approx(1.0) and ml.padded_rows == 2 and ml.repaired_rows == 0
  # On LaSOT pytracking refuses a short file; the MATLAB rules pad it.
  with pytest.raises(ValueError, match="LaSOT"):
    metrics.sequence_curves(short, gt, None, "lasot")
  assert metrics.sequence_curves(short, gt, None, "lasot", toolkit=MATLAB).padded_rows == 2


def test_matlab_absent_frames_fail_every_metric_and_stay_in_the_denominator():
  gt = repeat([10, 10, 20, 20], 4)
  gt[2] = 0.0  # the pack writes absent frames as 0,0,0,0
  seq = types.SimpleNamespace(boxes=gt, absent=np.array([0, 0, 1, 0]))
  pred = gt.copy()
  pred[2] = [10, 10, 20, 20]
  visible = metrics.target_visible_of(seq, "tnl2k", MATLAB)
  np.testing.assert_array_equal(visible, [True, True, False, True])
  ml = metrics.sequence_curves(pred, gt, visible, "tnl2k", toolkit=MATLAB)
  n = 4 + np.finfo(np.float64).eps  # `len_all + eps`
  np.testing.assert_array_equal(ml.success, [3 / n] * 20 + [0.0])
  np.testing.assert_array_equal(ml.precision, np.full(51, 3 / n))
  np.testing.assert_array_equal(ml.norm_precision, np.full(51, 3 / n))
  # pytracking (no absent flags for TNL2K): the 0,0,0,0 row is invalid, an NP hit.
  assert metrics.target_visible_of(seq, "tnl2k") is None
  py = metrics.sequence_curves(pred, gt, None, "tnl2k")
  np.testing.assert_array_equal(py.norm_precision, np.ones(51))
  np.testing.assert_array_equal(py.precision, np.full(51, 0.75))


def test_border_boxes_per_toolkit():
  # A GT box touching the left border (x = 0) and a prediction 30 px off.
  gt = np.array([[5, 5, 20, 20], [0, 5, 20, 20]], np.float64)
  pred = np.array([[5, 5, 20, 20], [30, 5, 20, 20]], np.float64)
  py, py22, ml = (metrics.sequence_errors(pred, gt, toolkit=t) for t in toolkits.NAMES)
  assert py.valid.tolist() == [True, True] and py.iou[1] == 0.0 and py.center_error[1] == 30.0
  # pytracking-2022: invalid -> IoU -1, centre inf (a P miss), normalised -1 (an NP hit).
  assert py22.valid.tolist() == [True, False]
  assert (py22.iou[1], py22.center_error[1], py22.norm_center_error[1]) == (-1.0, np.inf, -1.0)
  # tnl2k-matlab: invalid -> IoU -1, -1 in both centre errors (a P and an NP hit).
  assert (ml.iou[1], ml.center_error[1], ml.norm_center_error[1]) == (-1.0, -1.0, -1.0)


def test_matlab_drops_all_zero_curves_from_each_mean():
  gt = repeat([10, 10, 20, 20], 4)
  good = gt.copy()
  lost = repeat([200, 200, 20, 20], 4)
  lost[0] = [200, 200, 20, 20]
  # The lost tracker's frame 0 is the GT (a success at every threshold < 1), so its success curve
  # is not zero; mark frame 0 absent so that every frame fails: an all-zero curve of each metric.
  seq = types.SimpleNamespace(boxes=gt, absent=np.array([1, 0, 0, 0]))
  visible = metrics.target_visible_of(seq, "tnl2k", MATLAB)
  curves = [metrics.sequence_curves(good, gt, None, "tnl2k", toolkit=MATLAB),
            metrics.sequence_curves(lost, gt, visible, "tnl2k", toolkit=MATLAB)]
  assert not curves[1].success.any() and not curves[1].precision.any()
  summary = metrics.summarize(curves, MATLAB)
  assert summary["auc"] == pytest.approx(curves[0].auc)  # the mean of the one kept sequence
  assert summary["dropped_zero_curves"] == {"success": 1, "precision": 1, "norm_precision": 1}
  assert summary["num_sequences"] == 2
  # pytracking averages both.
  assert metrics.summarize(curves)["auc"] == pytest.approx(curves[0].auc / 2)
  assert "dropped_zero_curves" not in metrics.summarize(curves)


def test_norm_precision_auc_is_the_mean_of_the_normalised_curve():
  gt = repeat([50, 50, 100, 100], 10)
  c = metrics.sequence_curves(repeat([60, 50, 100, 100], 10), gt)  # normalised error 0.1
  # Frame 0 hits everywhere, frames 1..9 from t = 0.10: (1 + 9 * 41 / 51) / 10.
  assert c.norm_precision_auc == pytest.approx((1 + 9 * 41 / 51) / 10, abs=1e-15)
  summary = metrics.summarize([c])
  assert summary["norm_precision_auc"] == pytest.approx(c.norm_precision_auc, abs=1e-15)
  assert summary["toolkit"] == "pytracking"


def test_matlab_reads_nan_and_negative_rows_but_not_inf(tmp_path):
  path = tmp_path / "seq.txt"
  path.write_text("1,2,3,4\nNaN,NaN,NaN,NaN\n-1,-1,-1,-1\n")
  rows = toolkits.get(MATLAB).read_results(str(path))
  assert np.isnan(rows[1]).all() and rows[2].tolist() == [-1, -1, -1, -1]
  with pytest.raises(ValueError, match=f"{path}:2: non-finite"):
    toolkits.get("pytracking").read_results(str(path))
  path.write_text("1,2,3,4\n1,2,inf,4\n")
  with pytest.raises(ValueError, match=f"{path}:2: non-finite"):
    toolkits.get(MATLAB).read_results(str(path))
