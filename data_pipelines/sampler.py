"""tf.data input pipeline: host-local training batches (docs/INTERFACES.md "Batches").

    it = make_dataset(config, start_index=step * global_batch, process_index=p, process_count=P)
    batch = next(it)          # dict of numpy arrays, batch_size = train.batch_size // P rows
    it.stats()                # {"samples", "replaced", "replaced_by_reason", "next_index", ...}

Contract. Sample k is a pure function of (config.seed, k). Global batch n holds samples
[start + n*G, start + (n+1)*G) with G = batch_size * process_count; process p takes the p-th
contiguous block of batch_size of them. Processes are therefore disjoint, the global batch does
not depend on the process count, and `start_index` (saved with each checkpoint) resumes exactly.

Design (why it is fast): the pixel work runs as TensorFlow ops, outside the GIL, on tf.data's
threads; Python only plans (~0.2 ms per sample). Per sample k:

  attempts(k) = range(MAX_ATTEMPTS + 1)
                  .map(a -> plan(k, a)    # tf.numpy_function: processing.SampleMaker.plan:
                                          # draws, frame headers, crop windows; a bad draw
                                          # (ok 0) fails an assert
                           then decode)   # ingraph.decode_window: read_file, decode only the
                                          # crop's window (JPEG: decode_and_crop_jpeg, DCT-scaled
                                          # when the crop shrinks enough; PNG & co: decode_image);
                                          # raises when a frame does not decode
                  .ignore_errors()        # drops failed attempts
                  .take(1)
  stream = counter.map(global index k).interleave(attempts, deterministic=True)
                  .map(finish)            # ingraph.crop_from_region: resample, pad, augment
                  .batch(B).prefetch(...)

Why this shape. Only a decoder proves a JPEG decodable, and a failing op fails its whole map
element, so each sample's attempts form a small dataset of their own whose failures
`ignore_errors` drops. Lazy `take(1)` plans attempt a + 1 only after attempt a failed, so good
data pays nothing for replacements. Attempt MAX_ATTEMPTS is a marker (ok = PLAN_EXHAUSTED,
decoded as 1x1 zeros) that makes the iterator raise instead of silently shifting the stream.
tf.data prepares a per-sample dataset's map function anew for each sample, at a cost that grows
with the function, so the attempts stop at the decoded windows; resampling, padding and
augmentation, which cannot fail on a decoded window, run in one flat parallel map after it.
Parallel interleave and map with `deterministic=True` keep the order of k whatever the thread
count and timing, and the graph ops are deterministic (integer mean colour, fixed-tap
resampling), so the bytes do not depend on the number of threads either. Each op runs on one
thread (`max_intra_op_parallelism = 1`): parallelism comes from samples in flight.

Bad data is replaced, never fatal (see processing.py); `stats()` counts replaced samples by
reason over the batches handed out so far. The batch contract and the iterator live in batches.py
(TensorFlow-free), shared with numpy_sampler.py, this pipeline's twin without TensorFlow
(`data.backend="numpy"`).
"""
from __future__ import annotations

from typing import Optional

import tensorflow as tf

from data_pipelines import ingraph, processing
from data_pipelines.batches import SampleIterator, build_sample_maker, local_batch_size
from data_pipelines.batches import EXHAUSTED as _EXHAUSTED
from data_pipelines.batches import PASSED as _PASSED
from satracker_jax import config_utils, grounding

# Plan fields the crops need after decoding.
_FINISH = ("template_place", "template_affine", "search_place", "search_affine", "grayscale",
           "flip", "brightness", "attempt", "template_blank")


_CROPS = (("template", 0), ("search", 1))


def _decode(plan: dict) -> dict:
  """The part of a sample that can fail on bad data: read and decode both windows."""
  out = {key: plan[key] for key in _PASSED + _FINISH}
  for name, _ in _CROPS:
    decode = lambda name=name: ingraph.decode_window(
        plan[f"{name}_path"], plan[f"{name}_decoder"], plan[f"{name}_window"], plan[f"{name}_hw"])
    if name == "template":  # a grounding sample's blank template reads no file
      decode = lambda decode=decode: tf.cond(plan["template_blank"] > 0,
                                             lambda: tf.zeros([1, 1, 3], tf.uint8), decode)
    out[f"{name}_region"] = decode()
  return out


def _finish(decoded: dict, template_size: int, search_size: int) -> dict:
  """The rest, which cannot fail: resample, pad and augment both crops."""
  out = {key: decoded[key] for key in _PASSED}
  brightness = tf.unstack(decoded["brightness"])
  for (name, i), size in zip(_CROPS, (template_size, search_size)):
    crop = lambda name=name, i=i, size=size: ingraph.crop_from_region(
        decoded[f"{name}_region"], decoded[f"{name}_place"], decoded[f"{name}_affine"], size,
        grayscale=decoded["grayscale"] > 0, flip=decoded["flip"] > 0, brightness=brightness[i])
    if name == "template":  # grounding samples: the blank template the tracker grounds with
      blank = tf.constant(grounding.blank_template(size))
      out[name] = tf.cond(decoded["template_blank"] > 0, lambda blank=blank: blank, crop)
    else:
      out[name] = crop()
  out["replaced"] = tf.cast(decoded["attempt"] > 0, tf.int32)
  return out


def _exhausted(k, signature: dict) -> dict:
  """Same structure as `_decode`'s output; replace_reason = _EXHAUSTED makes the iterator raise."""
  out = {key: tf.zeros(signature[key][1], tf.as_dtype(signature[key][0]))
         for key in _PASSED + _FINISH}
  for name, _ in _CROPS:
    out[f"{name}_region"] = tf.zeros([1, 1, 3], tf.uint8)
  out.update(sample_index=k, replace_reason=tf.constant(_EXHAUSTED, tf.int32))
  return out


def make_dataset(config, start_index: int = 0, process_index: int = 0, process_count: int = 1,
                 batch_size: Optional[int] = None, debug: bool = False, datasets=None,
                 sample_maker: Optional[processing.SampleMaker] = None) -> SampleIterator:
  """Host-local batches of `batch_size` (default train.batch_size // process_count) samples.

  debug=True keeps the `debug_*` fields (sequence id, frame ids, crop x0/y0/size, flip, JPEG DCT
  ratio) and `replace_reason` out of the contract, for tests and visualisation.
  `data.workers`: "threads" (tf.data's autotuner on TensorFlow's shared pool) or "threads:N" (N
  samples made at once on a private pool of N threads); configs/base.py.
  """
  batch_size = local_batch_size(config, process_index, process_count, batch_size)
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

  @tf.autograph.experimental.do_not_convert
  def attempt(k, a):
    p = plan(k, a)
    # A bad draw (ok 0) fails here, a frame that does not decode fails in `_decode`: either way
    # ignore_errors drops this attempt and the next one runs.
    check = tf.debugging.assert_positive(p["ok"], message="bad data")
    with tf.control_dependencies([check]):
      return tf.cond(tf.equal(p["ok"], processing.PLAN_EXHAUSTED),
                     lambda: _exhausted(k, signature), lambda: _decode(p))

  @tf.autograph.experimental.do_not_convert
  def sample(k):
    attempts = tf.data.Dataset.range(processing.MAX_ATTEMPTS + 1).map(lambda a: attempt(k, a))
    return attempts.ignore_errors().take(1)

  @tf.autograph.experimental.do_not_convert
  def finish(decoded):
    return _finish(decoded, ht, hs)

  kind, threads = config_utils.parse_workers(config.data.get("workers", "threads"))
  if kind != "threads":
    raise ValueError(f"data.workers={config.data.workers}: the tf backend makes samples on threads "
                     "(processes need data.backend=numpy)")
  parallel = tf.data.AUTOTUNE if threads < 0 else threads
  ds = tf.data.Dataset.counter(0, dtype=tf.int64).map(global_index)
  ds = ds.interleave(sample, cycle_length=parallel, block_length=1, num_parallel_calls=parallel,
                     deterministic=True)
  ds = ds.map(finish, num_parallel_calls=parallel, deterministic=True)
  ds = ds.batch(batch_size, drop_remainder=True)
  ds = ds.prefetch(int(config.data.get("prefetch", 2)))
  options = tf.data.Options()
  options.deterministic = True
  # Parallelism comes from samples in flight; an op splitting itself over the busy cores only
  # adds hand-offs.
  options.threading.max_intra_op_parallelism = 1
  if threads > 0:  # a private pool of that many threads: N workers means N threads
    options.threading.private_threadpool_size = threads
  ds = ds.with_options(options)
  return SampleIterator(ds.as_numpy_iterator(), start_index, global_batch, debug, maker)
