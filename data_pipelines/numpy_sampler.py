"""TensorFlow-free input pipeline (`data.backend="numpy"`): the tf.data sampler's batches, made
with Pillow and numpy on a Python thread pool.

    it = make_dataset(config, start_index=step * global_batch, process_index=p, process_count=P)

Same contract as sampler.py (read its docstring): sample k is a pure function of (config.seed, k),
the same global-index -> (process, row) layout, the same `SampleIterator` (stats, next_index), the
same plans (`processing.SampleMaker.plan(k, a)`, a = 0..MAX_ATTEMPTS: a plan that is not ok or a
frame that does not decode moves on to attempt a + 1; the marker attempt makes the iterator raise).
Only the pixel work differs, done here as in `ingraph.py`, step for step:
  decode   Pillow. JPEG at the plan's DCT scale 1/r through `Image.draft` (libjpeg's scaled islow
           IDCT with fancy upsampling, what TensorFlow's `decode_and_crop_jpeg(ratio=r,
           INTEGER_ACCURATE)` runs), the whole frame, then the plan's window is sliced out: the
           same pixels as the graph's window decode, at the cost of decoding rows outside it.
           Other formats: decoded whole, the size checked against the header. Any failure
           (truncated data included: Pillow refuses a JPEG cut off anywhere, TensorFlow only
           one cut off before the window's last row) fails the attempt.
  resample the triangle filter of `ScaleAndTranslate(antialias=True)` is Pillow's BILINEAR
           resize with a box (same taps, same normalised weights; crop_window.py), run per
           channel on float32 ("F") images so that nothing is rounded between the two passes,
           like the graph. Pillow accumulates in double and resizes horizontally first, so a
           value lands on the other side of a .5 rounding edge now and then: pixels differ from
           the graph's by at most 1 level, rarely (tests/test_numpy_sampler.py measures it).
  finish   pad colour (integer mean of every 4th decoded pixel, rounded half to even), grayscale,
           brightness, round half up, mirror, blank template: ingraph.crop_from_region's float32
           arithmetic.
Samples are made by `data.workers` (configs/base.py): "threads[:N]" (Pillow's decoder and resize
and numpy release the GIL, the planning does not, so threads give about one core's worth of
samples), or "processes[:N]", spawned worker processes, which scale with the cores: what a GPU host
needs. Without N, one per core this process may use (`batches.usable_cpus`: its affinity), not the
node's. `data.prefetch` batches ahead.
Results are taken in index order and each sample depends on its index only, so the bytes do not
depend on the thread or process count or timing.

Worker processes belong to the trainer: SLURM, GCE preemption and Ctrl-C signal the whole process
group, and a worker killed by that SIGTERM would break the pool before the trainer could save. So
workers ignore SIGINT and SIGTERM (they are started with both blocked, then ignore them: no window
at start-up), exit within a second when the trainer dies (even by SIGKILL: they watch their parent
pid), and `close()` (the train loop's `finally`) ends them.
"""
from __future__ import annotations

import collections
import concurrent.futures
import multiprocessing
import os
import signal
import struct
import threading
import time
import zlib
from typing import Optional

import numpy as np
from PIL import Image, JpegImagePlugin

from data_pipelines import batches as batches_lib
from data_pipelines import crop_window, processing
from data_pipelines.batches import SampleIterator, build_sample_maker
from satracker_jax import config_utils, grounding

_GRAY = np.array((0.299, 0.587, 0.114), np.float32)
_CROPS = ("template", "search")


class DecodeError(ValueError):
  """The file decoded, but not to the size its header promised."""


# What Pillow raises for a broken, truncated or hostile file (OSError covers "image file is
# truncated" and UnidentifiedImageError; SyntaxError, struct.error and EOFError come from the
# format plugins' header parsing; ValueError from bad tile geometry, DecodeError included). Anything
# else (TypeError, IndexError, NameError, ...) is a bug in this code and must raise, not be counted
# as a corrupt frame.
BROKEN_FILE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, struct.error, zlib.error,
                      Image.DecompressionBombError)


def decode_window(path, decoder: int, window, frame_hw) -> np.ndarray:
  """uint8 [h, w, 3]: the plan's window of the frame at `path` (raises if it does not decode)."""
  height, width = (int(v) for v in frame_hw)
  decoder = int(decoder)
  with Image.open(os.fsdecode(path)) as img:  # file names need not be UTF-8
    if decoder < crop_window.FULL_DECODE:
      ratio = crop_window.JPEG_RATIOS[decoder]
      if not isinstance(img, JpegImagePlugin.JpegImageFile):  # MPO (camera JPEGs) included
        raise DecodeError(f"{path}: planned as JPEG, reads as {img.format}")
      if ratio > 1:
        # Pillow picks the largest scale s in 8, 4, 2, 1 with s <= size // requested; asking for
        # size // ratio gives exactly `ratio` (size // (size // r) is in [r, 2r)).
        img.draft("RGB", (max(width // ratio, 1), max(height // ratio, 1)))
      expected = (-(-height // ratio), -(-width // ratio))  # libjpeg's scaled size
    else:
      expected = (height, width)
    img.load()
    if img.mode != "RGB":
      img = img.convert("RGB")
    pixels = np.asarray(img)
  if pixels.shape[:2] != expected:
    raise DecodeError(f"{path}: decodes to {pixels.shape[:2]}, expected {expected}")
  y, x, h, w = (int(v) for v in window)
  return pixels[y:y + h, x:x + w]


def pad_colour(region: np.ndarray) -> np.ndarray:
  """float32 [3]: rounded mean of every 4th pixel each way (`ingraph.pad_colour`)."""
  sample = region[::4, ::4].reshape(-1, 3).astype(np.int64)
  return np.round(sample.sum(axis=0) / float(len(sample))).astype(np.float32)


def _finish(pixels: np.ndarray, grayscale: bool, brightness) -> np.ndarray:
  # `ingraph._finish`: optional grayscale, the brightness factor, rounded half up, in float32.
  if grayscale:
    pixels = np.repeat((pixels * _GRAY).sum(axis=-1, keepdims=True, dtype=np.float32), 3, axis=-1)
  scaled = pixels * np.float32(brightness) + np.float32(0.5)
  return np.minimum(scaled, np.float32(255.0)).astype(np.uint8)


def _resample(region: np.ndarray, height: int, width: int, affine) -> np.ndarray:
  """float32 [height, width, 3]: ScaleAndTranslate's triangle filter as Pillow's box resize."""
  scale_y, scale_x, shift_y, shift_x = (float(v) for v in np.asarray(affine, np.float32))
  # ScaleAndTranslate samples (i + 0.5 - t) / s; Pillow's box resize samples
  # box0 + (i + 0.5) * (box1 - box0) / n: box0 = -t / s, box1 = (n - t) / s.
  rows, cols = region.shape[:2]
  box = (min(max(-shift_x / scale_x, 0.0), cols), min(max(-shift_y / scale_y, 0.0), rows),
         min(max((width - shift_x) / scale_x, 0.0), cols),
         min(max((height - shift_y) / scale_y, 0.0), rows))
  out = np.empty((height, width, 3), np.float32)
  for c in range(3):
    band = Image.fromarray(np.ascontiguousarray(region[..., c], dtype=np.float32))
    out[..., c] = np.asarray(band.resize((width, height), Image.BILINEAR, box=box))
  return out


def crop_from_region(region: np.ndarray, place, affine, out_size: int, grayscale=False,
                     flip=False, brightness=1.0) -> np.ndarray:
  """uint8 [out, out, 3]: `ingraph.crop_from_region` in numpy (see the module docstring)."""
  out = int(out_size)
  top, left, height, width = (int(v) for v in place)
  inner = None
  if height > 0 and width > 0:
    inner = _finish(_resample(region, height, width, affine), grayscale, brightness)
  if inner is not None and height == out and width == out:
    crop = inner
  else:
    crop = np.empty((out, out, 3), np.uint8)
    crop[...] = _finish(pad_colour(region), grayscale, brightness)
    if inner is not None:
      crop[top:top + height, left:left + width] = inner
  # The photometric steps are per pixel, so mirroring the finished crop equals the graph's
  # mirror of the resampled part with its padding sides swapped.
  return np.ascontiguousarray(crop[:, ::-1]) if flip else crop


class _SampleFactory:
  """Sample k: its first good attempt's crops and plan fields (a pure function of k)."""

  def __init__(self, maker: processing.SampleMaker):
    self.maker = maker
    self.signature = maker.plan_signature()
    self.keys = list(self.signature)
    self.sizes = {"template": maker.template_size, "search": maker.search_size}

  def __call__(self, k: int) -> dict:
    for attempt in range(processing.MAX_ATTEMPTS + 1):
      # plan_tuple, as the graph calls it: typed arrays, and a planner bug kept in maker.error
      # (the iterator raises it) instead of counted as bad data.
      plan = dict(zip(self.keys, self.maker.plan_tuple(k, attempt)))
      if plan["ok"] == processing.PLAN_EXHAUSTED:
        return self._exhausted(k)
      if plan["ok"] != processing.PLAN_OK:
        continue  # bad draw: the next attempt re-draws (its plan records the reason)
      try:
        regions = {name: self._decode(plan, name) for name in _CROPS}
      except BROKEN_FILE_ERRORS:
        continue  # the next attempt's plan counts this one as a corrupt frame
      return self._finish(plan, regions)
    raise AssertionError("unreachable: attempt MAX_ATTEMPTS is the exhausted marker")

  def _decode(self, plan: dict, name: str) -> Optional[np.ndarray]:
    if name == "template" and plan["template_blank"]:
      return None  # a grounding sample's blank template reads no file
    return decode_window(plan[f"{name}_path"].item(), plan[f"{name}_decoder"],
                         plan[f"{name}_window"], plan[f"{name}_hw"])

  def _finish(self, plan: dict, regions: dict) -> dict:
    row = {key: plan[key] for key in batches_lib.PASSED}
    for i, name in enumerate(_CROPS):
      size = self.sizes[name]
      if regions[name] is None:
        row[name] = grounding.blank_template(size)
      else:
        row[name] = crop_from_region(
            regions[name], plan[f"{name}_place"], plan[f"{name}_affine"], size,
            grayscale=bool(plan["grayscale"]), flip=bool(plan["flip"]),
            brightness=plan["brightness"][i])
    row["replaced"] = np.int32(plan["attempt"] > 0)
    return row

  def _exhausted(self, k: int) -> dict:
    row = {key: np.zeros(self.signature[key][1], self.signature[key][0])
           for key in batches_lib.PASSED}
    row.update(sample_index=np.int64(k), replace_reason=np.int32(batches_lib.EXHAUSTED),
               replaced=np.int32(0))
    for name in _CROPS:
      row[name] = np.zeros((self.sizes[name], self.sizes[name], 3), np.uint8)
    return row


# The sample factory of a worker process (`data.workers=processes`), set once by its initializer.
_WORKER_MAKE = None
_TRAINER_SIGNALS = (signal.SIGINT, signal.SIGTERM)
_PARENT_POLL_S = 0.5


def _exit_when_orphaned(trainer: int) -> None:
  # A SIGKILLed trainer runs no cleanup; its workers are re-parented (to init or a subreaper).
  # The trainer's pid comes from the trainer: a worker still starting up when it died sees
  # another parent from the first check on.
  while os.getppid() == trainer:
    time.sleep(_PARENT_POLL_S)
  os._exit(0)


def _init_worker(make: _SampleFactory, trainer: int) -> None:
  global _WORKER_MAKE
  _WORKER_MAKE = make
  for sig in _TRAINER_SIGNALS:  # the trainer decides: it saves, then closes us
    signal.signal(sig, signal.SIG_IGN)
  # Started with them blocked (`_Batches._fill`): ignored now, so unblocking discards any pending.
  signal.pthread_sigmask(signal.SIG_UNBLOCK, _TRAINER_SIGNALS)
  threading.Thread(target=_exit_when_orphaned, args=(trainer,), daemon=True,
                   name="exit_when_orphaned").start()


def _stack(rows: list) -> dict:
  return {key: np.stack([row[key] for row in rows]) for key in rows[0]}


def _make_in_worker(ks) -> dict:
  # Stacked here, in the worker: the trainer then unpickles a chunk's ~20 arrays instead of ~20
  # per sample, and joins chunks instead of stacking samples (docs/BENCHMARKS.md: 0.8x its CPU).
  rows = [_WORKER_MAKE(k) for k in ks]
  if _WORKER_MAKE.maker.error is not None:  # a planner bug: the parent cannot see this copy's
    raise RuntimeError(f"the sample planner failed:\n{_WORKER_MAKE.maker.error}")
  return _stack(rows)


def _length(chunk: dict) -> int:
  return len(chunk["sample_index"])


class _Batches:
  """This process's batches, in order, from samples made ahead of time by `count` workers of
  `kind` "threads" (a thread pool) or "processes" (a pool of worker processes, spawned: JAX may
  already run threads here, so no fork, that each hold a copy of the sample factory and make
  `chunk` consecutive samples per task: fewer round trips)."""

  def __init__(self, make, first: int, batch_size: int, global_batch: int, kind: str, count: int,
               prefetch: int):
    self._first, self._batch_size, self._global_batch = first, batch_size, global_batch
    self._processes = count if kind == "processes" else 0
    if self._processes:
      self._pool = concurrent.futures.ProcessPoolExecutor(
          count, mp_context=multiprocessing.get_context("spawn"), initializer=_init_worker,
          initargs=(make, os.getpid()))
      self._call = _make_in_worker
      self._chunk = max(1, min(8, batch_size // count))
    else:
      self._pool = concurrent.futures.ThreadPoolExecutor(count, thread_name_prefix="numpy_sampler")
      # One sample per task, made a chunk of one by views (no copy): the batch is its only copy.
      self._call = lambda ks: {key: np.asarray(value)[None] for key, value in make(ks[0]).items()}
      self._chunk = 1
    self._ahead = max(batch_size * (max(prefetch, 0) + 1), count * self._chunk * 2)
    self._pending = collections.deque()  # futures of stacked chunks, in sample order
    self._queued = 0  # samples in self._pending
    self._chunks = collections.deque()  # finished chunks (or their unbatched rest) not yet batched
    self._next = 0  # this process's next sample to submit (j in batches.global_index)

  def _fill(self) -> None:
    # Worker processes are spawned by `submit`; with SIGINT/SIGTERM blocked here they start with
    # both blocked (the mask survives fork and exec) until `_init_worker` ignores them. A signal
    # for this process meanwhile stays pending and is delivered when the mask is restored.
    spawning = self._processes and len(self._pool._processes or ()) < self._processes
    if spawning:
      mask = signal.pthread_sigmask(signal.SIG_BLOCK, _TRAINER_SIGNALS)
    try:
      while self._queued < self._ahead:
        ks = [batches_lib.global_index(self._next + i, self._first, self._batch_size,
                                       self._global_batch) for i in range(self._chunk)]
        self._pending.append(self._pool.submit(self._call, ks))
        self._queued += self._chunk
        self._next += self._chunk
    finally:
      if spawning:
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)

  def __iter__(self):
    return self

  def __next__(self) -> dict:
    if self._pool is None:
      raise StopIteration
    self._fill()
    parts, need = [], self._batch_size
    while need:
      if self._chunks:
        chunk = self._chunks.popleft()
      else:
        chunk = self._pending.popleft().result()
        self._queued -= _length(chunk)
        self._fill()  # the next batches are made while the caller uses this one
      if _length(chunk) > need:  # a chunk across two batches: its rest starts the next one
        self._chunks.appendleft({key: value[need:] for key, value in chunk.items()})
        chunk = {key: value[:need] for key, value in chunk.items()}
      parts.append(chunk)
      need -= _length(chunk)
    if len(parts) == 1:
      return parts[0]
    return {key: np.concatenate([part[key] for part in parts]) for key in parts[0]}

  def close(self) -> None:
    if self._pool is not None:
      pool, self._pool = self._pool, None
      processes = list((getattr(pool, "_processes", None) or {}).values())
      pool.shutdown(wait=False, cancel_futures=True)
      # Workers ignore SIGTERM, and their samples are no longer wanted: SIGKILL, then reap.
      for process in processes:
        process.kill()
      for process in processes:
        process.join(5)
      self._pending.clear()
      self._chunks.clear()


def make_dataset(config, start_index: int = 0, process_index: int = 0, process_count: int = 1,
                 batch_size: Optional[int] = None, debug: bool = False, datasets=None,
                 sample_maker: Optional[processing.SampleMaker] = None) -> SampleIterator:
  """Host-local batches of `batch_size` (default train.batch_size // process_count) samples:
  `sampler.make_dataset`'s arguments and result, without TensorFlow; made by `data.workers`."""
  batch_size = batches_lib.local_batch_size(config, process_index, process_count, batch_size)
  maker_given = sample_maker is not None or datasets is not None
  problem = "" if maker_given else batches_lib.bucket_root_problem(config, "numpy")
  if problem:  # Pillow opens local files only
    raise ValueError(problem)
  maker = sample_maker or build_sample_maker(config, datasets)
  global_batch = batch_size * process_count
  first = int(start_index) + process_index * batch_size
  kind, count = config_utils.parse_workers(config.data.get("workers", "threads"))
  count = batches_lib.usable_cpus() if count < 0 else count
  source = _Batches(_SampleFactory(maker), first, batch_size, global_batch, kind, count,
                    int(config.data.get("prefetch", 2)))
  return SampleIterator(source, start_index, global_batch, debug, maker, on_close=source.close)
