import jax.numpy as jnp
import numpy as np
import pytest

from satracker_jax import boxes


def _random_xywh(rng, n):
  return np.concatenate([rng.uniform(-50, 500, (n, 2)), rng.uniform(1, 200, (n, 2))], -1)


@pytest.mark.parametrize("xp", [np, jnp])
def test_conversions_round_trip(xp):
  rng = np.random.default_rng(0)
  xywh = _random_xywh(rng, 16)
  b = xp.asarray(xywh, dtype=xp.float32 if xp is jnp else np.float64)
  tol = 1e-3 if xp is jnp else 1e-9
  np.testing.assert_allclose(boxes.xyxy_to_xywh(boxes.xywh_to_xyxy(b)), xywh, atol=tol)
  np.testing.assert_allclose(boxes.cxcywh_to_xywh(boxes.xywh_to_cxcywh(b)), xywh, atol=tol)
  c = boxes.xywh_to_cxcywh(b)
  np.testing.assert_allclose(boxes.xyxy_to_cxcywh(boxes.cxcywh_to_xyxy(c)), c, atol=tol)
  assert isinstance(boxes.xywh_to_xyxy(b), type(b))


def test_conversion_values():
  np.testing.assert_allclose(boxes.xywh_to_cxcywh([10, 20, 4, 6]), [12, 23, 4, 6])
  np.testing.assert_allclose(boxes.cxcywh_to_xyxy([0.5, 0.5, 0.2, 0.4]), [0.4, 0.3, 0.6, 0.7])


@pytest.mark.parametrize("xp", [np, jnp])
def test_iou_and_giou_known_values(xp):
  a = xp.asarray([[0.0, 0.0, 2.0, 2.0], [0.0, 0.0, 1.0, 1.0], [0.1, 0.2, 0.5, 0.6]])
  b = xp.asarray([[1.0, 1.0, 3.0, 3.0], [2.0, 0.0, 3.0, 1.0], [0.1, 0.2, 0.5, 0.6]])
  np.testing.assert_allclose(boxes.box_iou(a, b), [1 / 7, 0.0, 1.0], atol=1e-5)
  np.testing.assert_allclose(boxes.generalized_box_iou(a, b), [1 / 7 - 2 / 9, -1 / 3, 1.0], atol=1e-5)


def test_iou_degenerate_boxes_are_finite():
  a = jnp.asarray([[0.5, 0.5, 0.5, 0.5], [0.6, 0.6, 0.4, 0.4]])  # zero-size, inverted
  b = jnp.asarray([[0.5, 0.5, 0.5, 0.5], [0.0, 0.0, 1.0, 1.0]])
  assert np.all(np.isfinite(boxes.generalized_box_iou(a, b)))
  assert np.all(np.isfinite(boxes.box_iou(a, b)))


def test_crop_params_follow_sample_target():
  p = boxes.crop_params([100.0, 50.0, 10.0, 40.0], 4.0, 256)
  assert p.size == 80.0  # ceil(sqrt(400) * 4)
  assert (p.x0, p.y0) == (round(105 - 40), round(70 - 40))
  assert p.resize_factor == pytest.approx(256 / 80)
  assert boxes.crop_params([3.0, 3.0, 0.0, 0.0], 2.0, 128).size == 1.0  # collapsed box: 1 px, no raise


def test_crop_map_round_trip():
  rng = np.random.default_rng(1)
  for box in _random_xywh(rng, 20):
    params = boxes.crop_params(box, rng.uniform(1.5, 5.0), 256)
    other = box + rng.uniform(-5, 5, 4)  # a box that is not the crop's own
    for b in (box, other):
      norm = boxes.map_box_to_crop(b, params)
      np.testing.assert_allclose(boxes.map_box_back(norm, params), b, atol=1e-6)
    cx, cy, w, h = boxes.map_box_to_crop(box, params)
    # The crop is centred on the box up to the rounding of its corner (<= half a source pixel).
    assert abs(cx - 0.5) <= 0.5 / params.size + 1e-9 and abs(cy - 0.5) <= 0.5 / params.size + 1e-9
    assert w * h == pytest.approx(box[2] * box[3] / params.size ** 2)


def test_crop_map_vectorised():
  params = boxes.crop_params([10.0, 10.0, 20.0, 20.0], 2.0, 128)
  many = np.array([[0.5, 0.5, 0.5, 0.5], [0.25, 0.75, 0.1, 0.2]])
  back = boxes.map_box_back(many, params)
  assert back.shape == (2, 4)
  np.testing.assert_allclose(back[0], [10, 10, 20, 20], atol=1e-9)
  np.testing.assert_allclose(boxes.map_box_to_crop(back, params), many, atol=1e-9)


def test_clip_box():
  np.testing.assert_allclose(boxes.clip_box_xywh([-5, 10, 20, 100], 100, 50), [0, 10, 15, 40])


def test_crop_span_rounds_the_visible_part_to_output_pixels():
  # Side 40 -> 20 output pixels (2 source pixels each); the crop starts 10 px left of the image.
  span = boxes.crop_span(boxes.CropParams(x0=-10.0, y0=5.0, size=40.0, out_size=20), 100, 30)
  # Columns 5.. show source x >= 0; rows show y in [5, 30): 12.5 output rows, rounded to 12.
  assert (span.x_lo, span.x_hi, span.y_lo, span.y_hi) == (5, 20, 0, 12)
  # The source span follows from the rounded edges, so those pixels map exactly onto it.
  assert (span.sx0, span.sx1, span.sy0, span.sy1) == (0.0, 30.0, 5.0, 29.0)
  # The filter reads the span plus a margin (2 px at a 2x shrink), clipped to the image.
  assert (span.ix0, span.ix1, span.iy0, span.iy1) == (0, 33, 2, 30)
  assert not span.empty and not span.covers(20)
  inside = boxes.crop_span(boxes.CropParams(x0=10.0, y0=0.0, size=20.0, out_size=10), 100, 30)
  assert inside.covers(10) and (inside.sx0, inside.sx1) == (10.0, 30.0)
  missed = boxes.crop_span(boxes.CropParams(x0=200.0, y0=0.0, size=20.0, out_size=10), 100, 30)
  assert missed.empty and not missed.covers(10)
  # A 101-pixel-wide frame decoded at 1/2 scale: its content ends at 50.5 (W/k), the decoded
  # image has 51 pixels. 10.5 visible output columns round (half to even) to 10; the read region
  # (span + 2 px margin = 52) is bounded by the pixels there are, not by the content's extent.
  half = boxes.crop_span(boxes.CropParams(x0=40.0, y0=0.0, size=20.0, out_size=20), 50.5, 15.0,
                         pixel_width=51, pixel_height=15)
  assert (half.x_hi, half.sx1, half.ix1) == (10, 50.0, 51)


def test_crop_image_pads_only_what_lies_outside():
  frame = np.full((30, 100, 3), 200, np.uint8)
  calls = []
  inside = boxes.crop_image(frame, boxes.CropParams(10.0, 0.0, 20.0, 10), pad_value=[9, 9, 9])
  assert (inside == 200).all() and inside.flags.writeable  # the caller owns it
  missed = boxes.crop_image(frame, boxes.CropParams(200.0, 0.0, 20.0, 10), pad_value=[9, 9, 9])
  assert (missed == 9).all()
  # crop_span's example above: columns 5.. and rows ..12 show the image, the rest is padding.
  edge = boxes.crop_image(frame, boxes.CropParams(-10.0, 5.0, 40.0, 20), pad_value=[9, 9, 9])
  assert (edge[:12, 5:] == 200).all()
  assert (edge[:, :5] == 9).all() and (edge[12:] == 9).all()
  # render_crop asks for the padding colour only when the crop leaves the image.
  span = boxes.crop_span(boxes.CropParams(10.0, 0.0, 20.0, 10), 100, 30)
  read = lambda box: boxes.Image.fromarray(np.ascontiguousarray(frame[box[1]:box[3], box[0]:box[2]]))
  boxes.render_crop(span, 10, read, lambda: calls.append(1))
  assert calls == []
