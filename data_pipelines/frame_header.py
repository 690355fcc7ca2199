"""Format and size of an image file from its first bytes, without decoding it. No TensorFlow here.

The sampler plans every crop in Python (`crop_window.plan_crop` needs the frame size) before the
graph reads and decodes the frame; reading the header there also finds missing files and broken
headers cheaply, so they are replaced with the right reason. JPEG (SOF marker) and PNG (IHDR) are
parsed here in a few microseconds; any other format goes through Pillow's lazy `Image.open`, which
reads the header only. A frame on a bucket (a URL) is read through `data_pipelines/files.py`.
"""
from __future__ import annotations

import struct
from typing import NamedTuple

from data_pipelines import files

JPEG, OTHER = 0, 1
_HEAD = 1 << 13  # most JPEG headers fit; longer ones (EXIF) are read on as needed
# SOF0..SOF15 carry the frame size; C4 (DHT), C8 (JPG) and CC (DAC) share the range but do not.
_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
_STANDALONE = frozenset(range(0xD0, 0xDA)) | {0x01}


class FrameHeader(NamedTuple):
  codec: int   # JPEG or OTHER (decoded whole by tf.io.decode_image)
  width: int
  height: int


class HeaderError(ValueError):
  """The file exists but its header is not a readable image header."""


def _jpeg_size(f, head: bytes) -> tuple[int, int]:
  buf, base, pos = head, 0, 2  # `buf` holds the file from offset `base`
  while True:
    if pos + 4 > base + len(buf):
      f.seek(pos)
      buf, base = f.read(_HEAD), pos
      if len(buf) < 4:
        raise HeaderError("JPEG ends before its frame header")
    i = pos - base
    if buf[i] != 0xFF:
      raise HeaderError(f"JPEG marker expected at byte {pos}")
    marker = buf[i + 1]
    if marker == 0xFF:  # fill byte
      pos += 1
      continue
    if marker in _STANDALONE:
      pos += 2
      continue
    if marker == 0xDA or marker == 0xD9:
      raise HeaderError("JPEG has no frame header before its scan")
    length = (buf[i + 2] << 8) | buf[i + 3]
    if marker in _SOF:
      if i + 9 > len(buf):
        f.seek(pos)
        buf, base, i = f.read(16), pos, 0
        if len(buf) < 9:
          raise HeaderError("JPEG frame header truncated")
      height, width = struct.unpack(">HH", buf[i + 5:i + 9])
      return width, height
    if length < 2:
      raise HeaderError(f"JPEG segment length {length} at byte {pos}")
    pos += 2 + length


def read_header(path: str) -> FrameHeader:
  """FileNotFoundError for missing files, HeaderError for anything that is not an image."""
  with files.open(path) as f:
    head = f.read(_HEAD)
    if head[:3] == b"\xff\xd8\xff":
      width, height = _jpeg_size(f, head)
      codec = JPEG
    elif head[:8] == b"\x89PNG\r\n\x1a\n" and head[12:16] == b"IHDR" and len(head) >= 24:
      width, height = struct.unpack(">II", head[16:24])
      codec = OTHER
    else:
      f.seek(0)
      width, height = _pillow_size(f)
      codec = OTHER
  if width <= 0 or height <= 0:
    raise HeaderError(f"image size {width}x{height}")
  return FrameHeader(codec, int(width), int(height))


def _pillow_size(f) -> tuple[int, int]:
  from PIL import Image  # noqa: PLC0415  (the slow path: formats other than JPEG and PNG)
  try:
    with Image.open(f) as img:
      return img.size
  except Exception as e:  # Pillow raises UnidentifiedImageError, OSError, SyntaxError...
    raise HeaderError(f"not an image ({e})") from None
