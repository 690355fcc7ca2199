"""Evaluation frames: reduced-scale JPEG decoding with exact crop geometry, crops equal to
`boxes.crop_image` at full scale, and unreadable frames named."""
import numpy as np
import pytest
from PIL import Image

from satracker_jax import boxes as box_lib
from satracker_jax.evaluation import decode


def _frame(height, width, box, seed=0):
  """Smooth random background (JPEG-friendly) with a solid red rectangle at `box` (x,y,w,h)."""
  rng = np.random.default_rng(seed)
  coarse = rng.integers(0, 160, (height // 16 + 1, width // 16 + 1, 3), dtype=np.uint8)
  frame = np.asarray(Image.fromarray(coarse).resize((width, height), Image.BILINEAR)).copy()
  x, y, w, h = box
  frame[y:y + h, x:x + w] = (235, 30, 30)
  return frame


def _save(tmp_path, frame, name="f.jpg"):
  path = str(tmp_path / name)
  Image.fromarray(frame).save(path, quality=95)
  return path


def test_decode_scale_is_the_coarsest_that_still_downscales():
  assert decode.decode_scale(127, 128) == 1
  assert decode.decode_scale(255, 128) == 1
  assert decode.decode_scale(256, 128) == 2
  assert decode.decode_scale(600, 128) == 4
  assert decode.decode_scale(5000, 128) == 8


def test_full_scale_crops_equal_crop_image_bit_for_bit(tmp_path):
  frame = _frame(150, 210, (60, 40, 50, 35))
  decoded = decode.decode_frame(_save(tmp_path, frame), scale=1)
  array = decoded.to_array()
  assert decoded.scale == 1 and (decoded.width, decoded.height) == (210, 150)
  rng = np.random.default_rng(1)
  for _ in range(60):  # inside, across the border, far outside, up- and downscaled
    w, h = rng.uniform(3, 260, 2)
    x, y = rng.uniform(-200, 260), rng.uniform(-150, 200)
    params = box_lib.crop_params((x, y, w, h), float(rng.choice([2.0, 4.0])),
                                 int(rng.choice([32, 64, 128])))
    np.testing.assert_array_equal(decoded.crop(params), box_lib.crop_image(array, params))


@pytest.mark.parametrize("scale", [2, 4])
def test_reduced_scale_crops_keep_exact_geometry(tmp_path, scale):
  # 1000x600 is not a multiple of 8 in height/8 terms for every scale: the partial last block.
  box = (410, 250, 150, 120)
  frame = _frame(600, 1000, box, seed=scale)
  path = _save(tmp_path, frame)
  reduced, full = decode.decode_frame(path, scale), decode.decode_frame(path, 1)
  assert reduced.scale == scale and reduced.image.size == (-(-1000 // scale), -(-600 // scale))
  assert (reduced.width, reduced.height) == (1000, 600)  # boxes stay in full-frame pixels
  for factor, out in ((4.0, 128), (2.0, 64), (4.0, 96)):
    params = box_lib.crop_params(box, factor, out)
    assert decode.decode_scale(params.size, out) >= scale  # the runner's rule allows this scale
    crop, reference = reduced.crop(params), full.crop(params)
    # Same geometry: the red target spans the same crop pixels (within one pixel) ...
    cx, cy, cw, ch = box_lib.map_box_to_crop(np.array(box, float), params) * out
    rows, cols = np.nonzero((crop[..., 0] > 180) & (crop[..., 1] < 90))
    assert abs(cols.min() - (cx - cw / 2)) <= 1 and abs(cols.max() + 1 - (cx + cw / 2)) <= 1
    assert abs(rows.min() - (cy - ch / 2)) <= 1 and abs(rows.max() + 1 - (cy + ch / 2)) <= 1
    # ... and the pixels differ from the full decode's crop only by the DCT downscale.
    diff = np.abs(crop.astype(np.float64) - reference)
    assert diff.mean() < 2.0, diff.mean()


def test_png_decodes_at_full_scale_whatever_is_asked(tmp_path):
  frame = _frame(64, 80, (10, 10, 20, 20))
  path = str(tmp_path / "f.png")
  Image.fromarray(frame).save(path)
  decoded = decode.decode_frame(path, 4)
  assert decoded.scale == 1 and decoded.requested_scale == 4
  np.testing.assert_array_equal(decoded.to_array(), frame)


def test_missing_or_corrupt_frames_are_errors_naming_the_file(tmp_path):
  with pytest.raises(decode.FrameError, match="nothing.jpg: frame file missing"):
    decode.decode_frame(str(tmp_path / "nothing.jpg"))
  good = _save(tmp_path, _frame(64, 80, (10, 10, 20, 20)))
  with open(good, "rb") as f:
    data = f.read()
  truncated = tmp_path / "truncated.jpg"
  truncated.write_bytes(data[: len(data) // 2])
  with pytest.raises(decode.FrameError, match="truncated.jpg: cannot decode"):
    decode.decode_frame(str(truncated))
  garbage = tmp_path / "garbage.jpg"
  garbage.write_bytes(b"not an image at all")
  with pytest.raises(decode.FrameError, match="garbage.jpg: cannot decode"):
    decode.decode_frame(str(garbage), 2)
