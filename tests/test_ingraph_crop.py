"""The in-graph crop (data_pipelines/ingraph.py) against the tracker's crop (boxes.crop_image).

Tolerances, in uint8 pixel levels, on the same frame and CropParams:
  PNG, and JPEG decoded at full scale: |graph - tracker| <= 1 everywhere (Pillow rounds between
  its two resampling passes, the graph does not); padding exact.
  JPEG decoded at DCT scale 1/r (crop shrunk >= r * data.jpeg_dct_oversample), inside the image
  part, on this deliberately hard frame (hard edges plus noise): with the default oversample 1,
  mean <= 2.5, 99th percentile <= 32, max <= 60; with oversample 2, mean <= 1, p99 <= 10,
  max <= 20 (libjpeg's reduced IDCT is not the triangle filter; on smoother 720p frames the
  errors are about a third of these, see crop_window.py).
The tracker pads with the frame's mean colour and the graph with the decoded window's, so the
comparison hands crop_image the window's mean (`_window_pad`).
"""
import os

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from data_pipelines import crop_window, frame_header, ingraph
from satracker_jax import boxes as box_lib


def _frame(width=160, height=120, seed=0):
  # Smooth gradients plus hard-edged rectangles and noise: both easy and worst cases for filters.
  rng = np.random.default_rng(seed)
  yy, xx = np.mgrid[0:height, 0:width]
  img = np.stack([xx * 255 / width, yy * 255 / height, (xx + yy) * 127 / (width + height) + 60], -1)
  for _ in range(6):
    x, y = rng.integers(0, width - 10), rng.integers(0, height - 10)
    img[y:y + rng.integers(4, 30), x:x + rng.integers(4, 30)] = rng.integers(0, 256, 3)
  img += rng.normal(0, 6, img.shape)
  return np.clip(np.round(img), 0, 255).astype(np.uint8)


# (x, y, w, h) boxes and factors: inside, across each border, outside, tiny (upscaled), huge.
CASES = [((60, 40, 20, 16), 2.0, 32), ((70, 50, 12, 10), 4.0, 64), ((-8, 30, 20, 20), 4.0, 64),
         ((140, 100, 30, 25), 2.0, 32), ((50, -12, 16, 16), 4.0, 48), ((10, 110, 14, 14), 4.0, 32),
         ((400, 300, 10, 10), 2.0, 16), ((-60, -60, 10, 10), 2.0, 16), ((80, 60, 3, 2), 2.0, 32),
         ((0, 0, 160, 120), 2.0, 32), ((30, 20, 90, 70), 4.0, 32), ((20, 10, 120, 100), 1.0, 16)]


@pytest.fixture(scope="module")
def frames(tmp_path_factory):
  root = tmp_path_factory.mktemp("frames")
  img = _frame()
  paths = {"png": str(root / "f.png"), "jpg": str(root / "f.jpg")}
  Image.fromarray(img).save(paths["png"])
  Image.fromarray(img).save(paths["jpg"], quality=90)
  return img, paths


def _graph_crop(path, params, dct_oversample=0.0, **photometric):
  header = frame_header.read_header(path)
  plan = crop_window.plan_crop(params, header.width, header.height,
                               jpeg=header.codec == frame_header.JPEG, dct_oversample=dct_oversample)
  crop = ingraph.render_crop(
      tf.constant(path), tf.constant(plan.decoder), tf.constant(plan.window),
      tf.constant(plan.place), tf.constant(plan.affine, tf.float32),
      tf.constant([header.height, header.width]), params.out_size, **photometric)
  return crop.numpy(), plan


def _window_pad(decoded, plan):
  y, x, h, w = plan.window
  return decoded[y:y + h, x:x + w][::4, ::4].reshape(-1, 3).mean(axis=0)


def _inside(plan, out):
  mask = np.zeros((out, out), bool)
  y, x, h, w = plan.place
  mask[y:y + h, x:x + w] = True
  return mask


@pytest.mark.parametrize("fmt", ["png", "jpg"])
def test_graph_crop_equals_tracker_crop_within_one_level(frames, fmt):
  img, paths = frames
  decoded = np.asarray(Image.open(paths[fmt]).convert("RGB"))  # what the tracker would crop
  if fmt == "png":
    np.testing.assert_array_equal(decoded, img)
  for box, factor, out in CASES:
    params = box_lib.crop_params(box, factor, out)
    got, plan = _graph_crop(paths[fmt], params)
    assert plan.ratio == 1
    want = box_lib.crop_image(decoded, params, pad_value=_window_pad(decoded, plan))
    diff = np.abs(got.astype(int) - want.astype(int))
    assert diff.max() <= 1, (box, factor, out)
    outside = ~_inside(plan, out)
    np.testing.assert_array_equal(got[outside], want[outside])  # padding is exact


# (x0, y0, side, out): crops shrunk 2x to 16x, one across the border.
DCT_CASES = [(30, 20, 80, 20), (40, 10, 80, 40), (16, 0, 128, 16), (0, 0, 160, 10),
             (-20, 10, 120, 15), (60, 50, 100, 24), (5, 5, 64, 32)]


@pytest.mark.parametrize("oversample,mean,p99,worst", [(2.0, 1.0, 10, 20), (1.0, 2.5, 32, 60)])
def test_dct_scaled_jpeg_crop_within_stated_tolerance(frames, oversample, mean, p99, worst):
  img, paths = frames
  decoded = np.asarray(Image.open(paths["jpg"]).convert("RGB"))
  ratios = set()
  for x0, y0, side, out in DCT_CASES:
    params = box_lib.CropParams(float(x0), float(y0), float(side), out)
    got, plan = _graph_crop(paths["jpg"], params, dct_oversample=oversample)
    ratios.add(plan.ratio)
    assert plan.ratio == crop_window.dct_ratio(params, oversample)
    diff = np.abs(got.astype(int) - box_lib.crop_image(decoded, params).astype(int))
    diff = diff[_inside(plan, out)]
    assert diff.mean() <= mean and np.percentile(diff, 99) <= p99 and diff.max() <= worst, (
        (x0, y0, side, out), diff.mean(), np.percentile(diff, 99), diff.max())
  assert {2, 4, 8} <= ratios


def test_photometric_augmentation(frames):
  img, paths = frames
  for box, factor, out in CASES[:8]:
    params = box_lib.crop_params(box, factor, out)
    plain, _ = _graph_crop(paths["png"], params)
    flipped, _ = _graph_crop(paths["png"], params, flip=True)
    np.testing.assert_array_equal(flipped, plain[:, ::-1])  # padding included
    gray, _ = _graph_crop(paths["png"], params, grayscale=True, brightness=1.3)
    # Grayscale and brightness act on the float crop, rounded once: within 1 level of applying
    # them to the rounded crop.
    want = np.clip(np.round(plain.astype(np.float64) @ [0.299, 0.587, 0.114] * 1.3), 0, 255)
    assert np.abs(gray.astype(int) - want[..., None]).max() <= 1
    assert (gray[..., 0] == gray[..., 1]).all() and (gray[..., 1] == gray[..., 2]).all()


def test_crop_plan_geometry():
  params = box_lib.CropParams(x0=-10.0, y0=5.0, size=40.0, out_size=20)
  plan = crop_window.plan_crop(params, width=100, height=30)
  # Output columns 5.. cover the image (source x >= 0); rows cover y in [5, 30) -> 12.5 -> 12 rows.
  assert plan.place == (0, 5, 12, 15)
  assert plan.decoder == crop_window.FULL_DECODE and plan.ratio == 1
  y, x, h, w = plan.window
  assert x == 0 and y + h == 30 and w <= 100
  # DCT ratio: largest of 1/2/4/8 with ratio * oversample <= the shrink factor; 0 = off.
  ratios = lambda o: [crop_window.dct_ratio(box_lib.CropParams(0, 0, s, 100), o)
                      for s in (50, 199, 200, 450, 3000)]
  assert ratios(1.0) == [1, 1, 2, 4, 8] and ratios(2.0) == [1, 1, 1, 2, 8] and ratios(0.0) == [1] * 5
  jpeg = crop_window.plan_crop(box_lib.CropParams(x0=8.0, y0=8.0, size=64.0, out_size=16), 80, 80,
                               jpeg=True, dct_oversample=1.0)
  assert jpeg.ratio == 4 and jpeg.decoder == crop_window.JPEG_RATIOS.index(4)
  assert jpeg.window[2] <= 20 and jpeg.window[3] <= 20  # decoded pixels, not source pixels


def test_frame_header(tmp_path, frames):
  img, paths = frames
  assert frame_header.read_header(paths["jpg"]) == (frame_header.JPEG, 160, 120)
  assert frame_header.read_header(paths["png"]) == (frame_header.OTHER, 160, 120)
  exif = str(tmp_path / "exif.jpg")  # APP1 segment before the frame header
  pil = Image.fromarray(img)
  exif_data = pil.getexif()
  exif_data[0x010E] = "x" * 20000  # longer than the first read
  pil.save(exif, exif=exif_data, progressive=True)
  assert frame_header.read_header(exif) == (frame_header.JPEG, 160, 120)
  bmp = str(tmp_path / "f.bmp")
  pil.save(bmp)
  assert frame_header.read_header(bmp) == (frame_header.OTHER, 160, 120)
  with pytest.raises(FileNotFoundError):
    frame_header.read_header(str(tmp_path / "missing.jpg"))
  for name, data in (("empty.jpg", b""), ("garbage.jpg", b"\xff\xd8\xff\xe0 not a jpeg"),
                     ("text.png", b"hello")):
    with open(tmp_path / name, "wb") as f:
      f.write(data)
    with pytest.raises(frame_header.HeaderError):
      frame_header.read_header(str(tmp_path / name))
  assert os.path.getsize(exif) > 20000
