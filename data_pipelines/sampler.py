"""tf.data input pipeline: host-local training batches (docs/INTERFACES.md "Batches").

    it = make_dataset(config, start_index=step * global_batch, process_index=p, process_count=P)
    batch = next(it)          # dict of numpy arrays, batch_size = train.batch_size // P rows
    it.stats()                # {"samples", "replaced", "replaced_by_reason", "next_index", ...}

Contract. Sample k is a pure function of (config.seed, k). Global batch n holds samples
[start + n*G, start + (n+1)*G) with G = batch_size * process_count; process p takes the p-th
contiguous block of batch_size of them. Processes are therefore disjoint, the global batch does
not depend on the process count, and `start_index` (saved with each checkpoint) resumes exactly.

Design (why it is fast): the pixel work runs as TensorFlow ops, outside the GIL, on tf.data's
threads; Python only plans. Per sample k:
  attempts  = range(MAX_ATTEMPTS)
                .map(plan)        # tf.numpy_function: processing.SampleMaker.plan(k, a): draws,
                                  # frame headers, crop windows; ok=0 when Python sees bad data
                .filter(ok)
                .map(render)      # ingraph.py: read_file, decode only the crop's window (JPEG:
                                  # decode_and_crop_jpeg, DCT-scaled when the crop shrinks >= 2x;
                                  # PNG & co: decode_image), resize, pad, augment
                .ignore_errors()  # a frame that fails to decode drops that attempt only
  sample k  = (attempts ++ [exhausted marker]).take(1)
and the samples are produced by a parallel `interleave` with `deterministic=True`, which keeps
the order of k whatever the thread count and timing. Lazy `take(1)` means attempt a + 1 is planned
only when attempt a failed, so a replacement costs nothing on good data; the exhausted marker (64
bad draws in a row) makes the iterator raise instead of silently shifting the stream. Why not
check frames in Python and keep a flat `map`: only a full decode proves a JPEG decodable, and that
is the work we moved out of Python; an error inside one map element would fail the whole batch.
The graph ops are deterministic (integer mean, fixed-tap resampling), so the bytes do not depend
on the number of threads either.

Bad data is replaced, never fatal (see processing.py); `stats()` counts replaced samples by
reason over the batches handed out so far.
"""
from __future__ import annotations

import atexit
import functools
import logging
import weakref
from typing import Optional

import numpy as np
import tensorflow as tf

from data_pipelines import ingraph, processing, readers, synthetic
from satracker_jax.tokenizer import build_tokenizer

log = logging.getLogger(__name__)

BATCH_KEYS = ("template", "template_box", "search", "search_box", "text_ids", "text_mask",
              "sample_index", "replaced")
# Plan fields that reach the batch unchanged (with debug=True the debug_* ones too).
_PASSED = ("template_box", "search_box", "text_ids", "text_mask", "sample_index",
           "replace_reason", "debug_sequence", "debug_frames", "debug_template_crop",
           "debug_search_crop", "debug_flip", "debug_dct_ratio")
_EXHAUSTED = -1  # replace_reason of the marker that ends a sample with no good attempt


def load_datasets(config) -> list[tuple[str, float, list]]:
  """[(name, weight, sequences)] of every data set in config.data.datasets with weight > 0."""
  out = []
  for name, spec in sorted(config.data.datasets.items()):
    weight = float(spec.get("weight", 1.0))
    if weight <= 0:
      continue
    root = spec.get("root", "")
    if not root:
      raise ValueError(f"config.data.datasets.{name}.root is empty (set it, or weight=0 to skip it)")
    seqs = readers.load_dataset(name, root, spec.get("split", "train"),
                                cache_dir=config.data.get("cache_dir", ""))
    summary = readers.sequence_summary(seqs)
    log.info("data set %s (%s): %s", name, root, summary)
    out.append((name, weight, seqs))
  if not out:
    raise ValueError("config.data.datasets has no data set with weight > 0")
  return out


def build_sample_maker(config, datasets=None) -> processing.SampleMaker:
  """The per-sample function of `config`; `datasets` ([(name, weight, sequences)]) skips reading."""
  if "synthetic" in config.data.datasets:
    synthetic.resolve_vocab_file(config)  # `{synthetic_root}/vocab.txt` -> the real path, in place
  datasets = load_datasets(config) if datasets is None else datasets
  tokenizer = build_tokenizer(config.text, max_len=config.model.max_text_len)
  return processing.SampleMaker(
      datasets, config.data, template_size=config.model.template_size,
      search_size=config.model.search_size, tokenizer=tokenizer, seed=int(config.seed),
      max_text_len=int(config.model.max_text_len))


_LIVE_ITERATORS: "weakref.WeakSet[SampleIterator]" = weakref.WeakSet()


@atexit.register
def _close_all() -> None:
  # tf.data threads blocked in numpy_function (waiting for the GIL) hang interpreter shutdown
  # unless their iterator is destroyed first.
  for it in list(_LIVE_ITERATORS):
    it.close()


class SampleIterator:
  """Iterator of numpy batch dicts with replacement statistics and the resume index."""

  def __init__(self, dataset: tf.data.Dataset, start_index: int, global_batch: int, debug: bool,
               maker: Optional[processing.SampleMaker] = None):
    self._it = dataset.as_numpy_iterator()
    self._debug = debug
    self._maker = maker
    self.start_index = int(start_index)
    self.global_batch = int(global_batch)
    self.batches = 0
    self._samples = 0
    self._replaced = 0
    self._by_reason = {name: 0 for name in processing.REASON_NAMES.values()}
    _LIVE_ITERATORS.add(self)

  def close(self) -> None:
    """Stops the background threads (also done at exit)."""
    self._it = None

  def __iter__(self):
    return self

  def __next__(self) -> dict:
    if self._it is None:
      raise StopIteration
    batch = next(self._it)
    reasons = batch.pop("replace_reason")
    if self._maker is not None and self._maker.error is not None:
      raise RuntimeError(f"the sample planner failed:\n{self._maker.error}")
    if (reasons == _EXHAUSTED).any():
      k = int(batch["sample_index"][np.argmax(reasons == _EXHAUSTED)])
      raise RuntimeError(f"sample {k}: {processing.MAX_ATTEMPTS} draws in a row hit bad data; the "
                         "data sets are mostly unusable (see the warnings above)")
    self.batches += 1
    self._samples += len(reasons)
    self._replaced += int(batch["replaced"].sum())
    for bit, name in processing.REASON_NAMES.items():
      self._by_reason[name] += int(((reasons & bit) != 0).sum())
    if not self._debug:
      batch = {k: batch[k] for k in BATCH_KEYS}
    return batch

  @property
  def next_index(self) -> int:
    """Global index of the first sample of the next global batch (what a checkpoint stores)."""
    return self.start_index + self.batches * self.global_batch

  def stats(self) -> dict:
    return {"samples": self._samples, "replaced": self._replaced,
            "replaced_by_reason": dict(self._by_reason), "batches": self.batches,
            "next_index": self.next_index}


def _render(plan: dict, template_size: int, search_size: int) -> dict:
  """The graph half of a sample: both crops from their plans, then the photometric draws."""
  out = {key: plan[key] for key in _PASSED}
  for name, size, i in (("template", template_size, 0), ("search", search_size, 1)):
    out[name] = ingraph.render_crop(
        plan[f"{name}_path"], plan[f"{name}_decoder"], plan[f"{name}_window"], plan[f"{name}_place"],
        plan[f"{name}_affine"], plan[f"{name}_hw"], size, grayscale=plan["grayscale"] > 0,
        flip=plan["flip"] > 0, brightness=plan["brightness"][i])
  out["replaced"] = tf.cast(plan["attempt"] > 0, tf.int32)
  return out


@functools.lru_cache(maxsize=None)
def _render_function(template_size: int, search_size: int, spec: tuple):
  """`_render` as a tf.function traced once per process and shape: every later pipeline (resume,
  tests, benchmarks) reuses the trace instead of rebuilding ~20 branch functions."""
  signature = {key: tf.TensorSpec(shape, dtype) for key, dtype, shape in spec}
  return tf.function(lambda plan: _render(plan, template_size, search_size),
                     input_signature=[signature], autograph=False)


def _exhausted(k, template_size: int, search_size: int, signature: dict) -> dict:
  """Same structure as `_render`'s output; replace_reason = _EXHAUSTED makes the iterator raise."""
  out = {key: tf.zeros(signature[key][1], tf.as_dtype(signature[key][0])) for key in _PASSED}
  out.update(template=tf.zeros([template_size, template_size, 3], tf.uint8),
             search=tf.zeros([search_size, search_size, 3], tf.uint8),
             replaced=tf.constant(1, tf.int32), sample_index=k,
             replace_reason=tf.constant(_EXHAUSTED, tf.int32))
  return out


def make_dataset(config, start_index: int = 0, process_index: int = 0, process_count: int = 1,
                 batch_size: Optional[int] = None, debug: bool = False, datasets=None,
                 sample_maker: Optional[processing.SampleMaker] = None) -> SampleIterator:
  """Host-local batches of `batch_size` (default train.batch_size // process_count) samples.

  debug=True keeps the `debug_*` fields (sequence id, frame ids, crop x0/y0/size, flip, JPEG DCT
  ratio) and `replace_reason` out of the contract, for tests and visualisation.
  `data.num_parallel_calls` (-1: one per core) is how many samples are made at once;
  `data.threads` (optional, 0: TensorFlow's shared pool) gives tf.data a private pool that size.
  """
  if not 0 <= process_index < process_count:
    raise ValueError(f"process_index={process_index} outside [0, {process_count})")
  if batch_size is None:
    if config.train.batch_size % process_count:
      raise ValueError(f"train.batch_size={config.train.batch_size} does not divide by "
                       f"{process_count} processes")
    batch_size = config.train.batch_size // process_count
  batch_size = int(batch_size)
  maker = sample_maker or build_sample_maker(config, datasets)
  signature = maker.plan_signature()
  keys = list(signature)
  dtypes = [tf.string if dtype is object else tf.as_dtype(dtype) for dtype, _ in signature.values()]
  ht, hs = maker.template_size, maker.search_size
  global_batch = batch_size * process_count
  first = int(start_index) + process_index * batch_size

  # Plain graph code, no Python control flow to convert: skipping autograph keeps building fast.
  @tf.autograph.experimental.do_not_convert
  def global_index(j):
    # j counts this process's samples; block j // B of the global stream, row j % B.
    return first + (j // batch_size) * global_batch + j % batch_size

  @tf.autograph.experimental.do_not_convert
  def plan(k, attempt):
    values = tf.numpy_function(maker.plan_tuple, [k, attempt], dtypes, stateful=False)
    return {key: tf.ensure_shape(v, signature[key][1]) for key, v in zip(keys, values)}

  render = _render_function(ht, hs, tuple((key, dtype, shape) for key, dtype, shape in zip(
      keys, dtypes, (shape for _, shape in signature.values()))))

  @tf.autograph.experimental.do_not_convert
  def ok(p):
    return p["ok"] > 0

  @tf.autograph.experimental.do_not_convert
  def sample(k):
    attempts = tf.data.Dataset.range(processing.MAX_ATTEMPTS).map(lambda a: plan(k, a))
    attempts = attempts.filter(ok).map(render)
    attempts = attempts.ignore_errors()
    marker = tf.data.Dataset.from_tensors(_exhausted(k, ht, hs, signature))
    return attempts.concatenate(marker).take(1)

  parallel = int(config.data.get("num_parallel_calls", -1))
  parallel = tf.data.AUTOTUNE if parallel < 0 else parallel
  ds = tf.data.Dataset.counter(0, dtype=tf.int64).map(global_index)
  ds = ds.interleave(sample, cycle_length=parallel, block_length=1, num_parallel_calls=parallel,
                     deterministic=True)
  ds = ds.batch(batch_size, drop_remainder=True)
  ds = ds.prefetch(int(config.data.get("prefetch", 2)))
  options = tf.data.Options()
  options.deterministic = True
  threads = int(config.data.get("threads", 0))
  if threads > 0:  # a private pool of that many threads (bench data's scaling rows)
    options.threading.private_threadpool_size = threads
    options.threading.max_intra_op_parallelism = 1
  ds = ds.with_options(options)
  return SampleIterator(ds, start_index, global_batch, debug, maker)
