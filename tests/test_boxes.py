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
