"""Pixel work of a training sample as TensorFlow ops: decode a window, crop, augment. No Python.

The graph twin of `satracker_jax.boxes.crop_image` for one frame, given the plan
`crop_window.plan_crop` made in Python, in two halves (sampler.py runs them in different stages):
  `decode_window` (can fail on bad data)
  1. `tf.io.read_file`, then JPEG: `tf.io.decode_and_crop_jpeg` of the window only, at DCT scale
     1/ratio (`dct_method="INTEGER_ACCURATE"`: libjpeg's islow IDCT, the one Pillow uses, so
     ratio-1 pixels equal Pillow's full decode); other formats (PNG, GIF, BMP, WebP): the slower
     fallback `tf.io.decode_image` of the whole frame, then the window is sliced out.
  `crop_from_region` (cannot fail)
  2. the triangle-filter resampling of the window onto the visible rectangle (two one-axis
     `ScaleAndTranslate` passes);
  3. the sample's grayscale, horizontal flip and brightness factor on the float values, rounded
     once (with factor 1 and no grayscale the result is round(crop), the tracker's crop up to
     `crop_window`'s stated differences);
  4. padding to out_size, only for crops that reach past the frame, with the mean of every 4th
     decoded pixel each way (integer sums: exact, the same bytes on any thread count).
`render_crop` chains both (tests, tools).

Decoders raise on corrupt data; the sampler catches that per attempt (`Dataset.ignore_errors`) and
moves to the next attempt, see sampler.py.
"""
from __future__ import annotations

import tensorflow as tf

from data_pipelines import crop_window

_GRAY = (0.299, 0.587, 0.114)


def decode_window(path, decoder, window, frame_hw):
  """uint8 [h, w, 3]: the decoded window of the frame at `path` (raises if it does not decode)."""
  return _decode_window(tf.io.read_file(path), decoder, window, frame_hw)


def _decode_window(data, decoder, window, frame_hw):
  def jpeg(r):
    return lambda: tf.io.decode_and_crop_jpeg(data, window, channels=3, ratio=r,
                                              dct_method="INTEGER_ACCURATE")

  def other():
    image = tf.io.decode_image(data, channels=3, expand_animations=False)
    # The header said frame_hw; a file that decodes to another size is corrupt (an error here
    # sends the sampler to its next attempt rather than cropping the wrong pixels).
    check = tf.debugging.assert_equal(tf.shape(image)[:2], frame_hw, message="frame size")
    with tf.control_dependencies([check]):
      return tf.identity(image[window[0]:window[0] + window[2], window[1]:window[1] + window[3]])

  branches = [jpeg(r) for r in crop_window.JPEG_RATIOS] + [other]
  region = tf.switch_case(decoder, branches)
  return tf.ensure_shape(region, [None, None, 3])


def pad_colour(region):
  """Rounded mean of every 4th pixel each way; int32 sums keep it exact and order-free."""
  sample = tf.cast(region[::4, ::4], tf.int32)
  total = tf.cast(tf.reduce_sum(sample, axis=[0, 1]), tf.float64)
  count = tf.cast(tf.shape(sample)[0] * tf.shape(sample)[1], tf.float64)
  return tf.cast(tf.round(total / count), tf.float32)


def _resample_rows(image, out_rows, scale, translation):
  # [rows, cols, 3] -> [out_rows, cols, 3]: one ScaleAndTranslate pass with the columns and
  # channels merged into its channel axis, so its inner loop runs over cols * 3 contiguous floats
  # (the op's per-pixel loop over 3 channels is ~3x slower for the same taps and weights).
  rows, cols, _ = tf.unstack(tf.shape(image))
  out = tf.raw_ops.ScaleAndTranslate(
      images=tf.reshape(image, [1, rows, 1, cols * 3]), size=tf.stack([out_rows, 1]),
      scale=tf.stack([scale, 1.0]), translation=tf.stack([translation, 0.0]),
      kernel_type="triangle", antialias=True)
  return tf.reshape(out, [out_rows, cols, 3])


def _finish(pixels, grayscale, brightness):
  # float [..., 3] -> uint8: optional grayscale, then the brightness factor, rounded half up (as
  # Pillow rounds). No lower clip: resampled values are >= 0 (non-negative normalised weights).
  pixels = tf.cond(grayscale, lambda: tf.repeat(tf.reduce_sum(
      pixels * tf.constant(_GRAY, tf.float32), axis=-1, keepdims=True), 3, axis=-1), lambda: pixels)
  return tf.cast(tf.minimum(pixels * tf.cast(brightness, tf.float32) + 0.5, 255.0), tf.uint8)


def _pad(image, colour, top, bottom, left, right):
  # Concatenating tiles of `colour` copies each pixel once; tf.pad(x - c) + c with broadcasting
  # costs ~4x more.
  height = tf.shape(image)[0]
  middle = tf.concat([tf.tile(colour, [height, left, 1]), image, tf.tile(colour, [height, right, 1])], 1)
  width = tf.shape(middle)[1]
  return tf.concat([tf.tile(colour, [top, width, 1]), middle, tf.tile(colour, [bottom, width, 1])], 0)


def crop_from_region(region, place, affine, out_size: int, grayscale=False, flip=False,
                     brightness=1.0):
  """uint8 [out, out, 3]: the `place` rectangle resampled from `region`, the rest padded, then
  grayscale (bool), mirror (bool) and brightness (factor) applied, rounded once.

  Cheap by construction: the triangle filter runs as two one-axis ScaleAndTranslate passes (see
  `_resample_rows`), the second one on the transposed image (where the mirror is a reversal of
  whole rows); padding, and its colour, happens only for crops that reach past the frame, in
  uint8. The photometric factors are per pixel, so applying them to the inner part and to the
  padding colour separately equals applying them to the padded crop.
  """
  out = int(out_size)
  grayscale, flip = tf.convert_to_tensor(grayscale), tf.convert_to_tensor(flip)
  top, left, height, width = tf.unstack(place)  # one op each instead of one per use
  scale_y, scale_x, shift_y, shift_x = tf.unstack(affine)

  def inner():
    rows = _resample_rows(region, height, scale_y, shift_y)
    cols = _resample_rows(tf.transpose(rows, [1, 0, 2]), width, scale_x, shift_x)
    cols = tf.cond(flip, lambda: tf.reverse(cols, axis=[0]), lambda: cols)
    return _finish(tf.transpose(cols, [1, 0, 2]), grayscale, brightness)

  def padded():
    colour = _finish(pad_colour(region)[None, None], grayscale, brightness)
    before, after = left, out - left - width
    before, after = tf.where(flip, after, before), tf.where(flip, before, after)
    return tf.cond(tf.logical_and(height > 0, width > 0),
                   lambda: _pad(inner(), colour, top, out - top - height, before, after),
                   lambda: tf.tile(colour, [out, out, 1]))

  full = tf.logical_and(tf.equal(height, out), tf.equal(width, out))
  return tf.ensure_shape(tf.cond(full, inner, padded), [out, out, 3])


def render_crop(path, decoder, window, place, affine, frame_hw, out_size: int, grayscale=False,
                flip=False, brightness=1.0):
  """uint8 crop of the frame at `path` (see the module docstring)."""
  region = decode_window(path, decoder, window, frame_hw)
  return crop_from_region(region, place, affine, out_size, grayscale, flip, brightness)
