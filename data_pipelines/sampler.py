"""tf.data input pipeline: host-local training batches (docs/INTERFACES.md "Batches").

    it = make_dataset(config, start_index=step * global_batch, process_index=p, process_count=P)
    batch = next(it)          # dict of numpy arrays, batch_size = train.batch_size // P rows
    it.stats()                # {"samples", "replaced", "replaced_by_reason", "next_index", ...}

Sample k is a pure function of (config.seed, k) (`processing.SampleMaker`, numpy Generators seeded
from SeedSequence([seed, k, attempt])), computed in a parallel `map` with `deterministic=True`,
so thread scheduling never changes a batch. Global batch n holds samples
[start + n*G, start + (n+1)*G) with G = batch_size * process_count; process p takes the p-th
contiguous block of batch_size of them. Processes are therefore disjoint, the global batch does not
depend on the process count, and `start_index` (saved with each checkpoint) resumes exactly.

Frames are decoded inside the map (PIL releases the GIL while decoding and resampling). Bad data
is replaced, never fatal (see processing.py); `stats()` counts replaced samples by reason over the
batches handed out so far.
"""
from __future__ import annotations

import atexit
import logging
import weakref
from typing import Optional

import numpy as np
import tensorflow as tf

from data_pipelines import processing, readers, synthetic
from satracker_jax.tokenizer import build_tokenizer

log = logging.getLogger(__name__)

BATCH_KEYS = ("template", "template_box", "search", "search_box", "text_ids", "text_mask",
              "sample_index", "replaced")


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

  def __init__(self, dataset: tf.data.Dataset, start_index: int, global_batch: int, debug: bool):
    self._it = dataset.as_numpy_iterator()
    self._debug = debug
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


def make_dataset(config, start_index: int = 0, process_index: int = 0, process_count: int = 1,
                 batch_size: Optional[int] = None, debug: bool = False, datasets=None,
                 sample_maker: Optional[processing.SampleMaker] = None) -> SampleIterator:
  """Host-local batches of `batch_size` (default train.batch_size // process_count) samples.

  debug=True keeps the `debug_*` fields (sequence id, frame ids, crop x0/y0/size, flip) and
  `replace_reason` out of the contract, for tests and visualisation.
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
  signature = maker.output_signature()
  keys = list(signature)
  global_batch = batch_size * process_count
  first = int(start_index) + process_index * batch_size

  def global_index(j):
    # j counts this process's samples; block j // B of the global stream, row j % B.
    return first + (j // batch_size) * global_batch + j % batch_size

  def make_tuple(k):
    out = maker.make(int(k))
    return tuple(np.asarray(out[key], dtype=signature[key][0]) for key in keys)

  def sample(k):
    values = tf.numpy_function(make_tuple, [k], [tf.as_dtype(signature[key][0]) for key in keys],
                               stateful=False)
    return {key: tf.ensure_shape(v, signature[key][1]) for key, v in zip(keys, values)}

  parallel = int(config.data.get("num_parallel_calls", -1))
  ds = tf.data.Dataset.counter(0, dtype=tf.int64).map(global_index)
  ds = ds.map(sample, num_parallel_calls=tf.data.AUTOTUNE if parallel < 0 else parallel,
              deterministic=True)
  ds = ds.batch(batch_size, drop_remainder=True)
  ds = ds.prefetch(int(config.data.get("prefetch", 2)))
  options = tf.data.Options()
  options.deterministic = True
  ds = ds.with_options(options)
  return SampleIterator(ds, start_index, global_batch, debug)

