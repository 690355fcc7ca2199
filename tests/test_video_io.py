"""MP4 output of `satracker track --out clip.mp4` on a fresh install: imageio + the ffmpeg binary that
the imageio-ffmpeg wheel ships (install requirements), no system ffmpeg."""
import warnings

import jax
import numpy as np
import pytest

from satracker_jax import visualize


def _frames(n, h=45, w=61):
  # Odd sizes on purpose: H.264 needs even sides, and nothing may be rescaled.
  frames = []
  for i in range(n):
    f = np.zeros((h, w, 3), np.uint8)
    f[:, :, 0] = 40 * i
    f[10:30, 5 + 4 * i:25 + 4 * i] = (255, 255, 255)
    frames.append(f)
  return frames


def test_mp4_written_without_a_system_ffmpeg(tmp_path, monkeypatch):
  monkeypatch.setattr(visualize, "_ffmpeg", lambda: None)  # as on a fresh machine
  path = str(tmp_path / "clip.mp4")
  visualize.check_writable(path)  # the track verb's check before loading a model
  frames = _frames(7)
  jax.devices()  # a started JAX warns at every fork; ffmpeg's fork + exec must not show it
  with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    assert visualize.write_video(frames, path, fps=10) == path
    back = list(visualize.read_video(path))
  assert not [w for w in caught if "fork" in str(w.message)], [str(w.message) for w in caught]
  # Read back with imageio itself (an independent decoder path) ...
  import imageio.v2 as iio
  with visualize._ffmpeg_starts_quietly():
    reader = iio.get_reader(path, format="FFMPEG")
  try:
    assert reader.count_frames() == 7
    assert reader.get_meta_data()["fps"] == 10.0
  finally:
    reader.close()
  # ... and with our reader (above): every frame, padded by one pixel to even sides, not resized.
  assert len(back) == 7 and back[0].shape == (46, 62, 3)
  for original, decoded in zip(frames, back):
    assert np.abs(decoded[:45, :61].astype(int) - original).mean() < 8  # lossy, but the same picture


def test_gif_stays_pillow_only(tmp_path, monkeypatch):
  monkeypatch.setattr(visualize, "_imageio", lambda: None)
  monkeypatch.setattr(visualize, "_ffmpeg", lambda: None)
  path = visualize.write_video(_frames(3), str(tmp_path / "clip.gif"), fps=5)
  assert len(list(visualize.read_video(path))) == 3
  # Without any encoder an MP4 is refused before work starts, naming what to install.
  with pytest.raises(RuntimeError, match="imageio-ffmpeg"):
    visualize.check_writable(str(tmp_path / "clip.mp4"))
