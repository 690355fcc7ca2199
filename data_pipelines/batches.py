"""The batch contract both input backends share, and the choice between them. No TensorFlow here.

`data.backend` picks who makes the pixels of the samples `processing.SampleMaker` plans:
  "tf"     sampler.py: a tf.data graph (the default; needs TensorFlow);
  "numpy"  numpy_sampler.py: Pillow and numpy on a thread pool, or in worker processes with
           `data.workers=processes` (machines without TensorFlow, e.g. GPU hosts where its wheels
           cannot be installed).
Both hand out the same `SampleIterator`: numpy batch dicts with BATCH_KEYS (plus the debug fields),
the same global-index layout, replacement statistics and resume index (docs/INTERFACES.md).
"""
from __future__ import annotations

import atexit
import importlib
import logging
import os
import weakref
from typing import Callable, Iterator, Optional

import numpy as np

from data_pipelines import files, processing, readers, synthetic
from satracker_jax import utils
from satracker_jax.tokenizer import build_tokenizer

log = logging.getLogger(__name__)

BACKENDS = {"tf": "data_pipelines.sampler", "numpy": "data_pipelines.numpy_sampler"}
BATCH_KEYS = ("template", "template_box", "search", "search_box", "text_ids", "text_mask",
              "sample_index", "replaced")
# Plan fields that reach the batch unchanged (with debug=True the debug_* ones too).
PASSED = ("template_box", "search_box", "text_ids", "text_mask", "sample_index",
          "replace_reason", "debug_sequence", "debug_frames", "debug_template_crop",
          "debug_search_crop", "debug_flip", "debug_dct_ratio", "debug_protocol")
EXHAUSTED = -1  # replace_reason of the marker that ends a sample with no good attempt


def backend_module(config):
  """The module (`make_dataset`, ...) of `config.data.backend`, imported only now: with "numpy"
  nothing imports TensorFlow."""
  name = str(config.data.get("backend", "tf"))
  if name not in BACKENDS:
    raise ValueError(f"data.backend={name!r}: expected one of {sorted(BACKENDS)}")
  return importlib.import_module(BACKENDS[name])


_CPUS_LOGGED = False


def usable_cpus() -> int:
  """The CPUs this process may run on (its affinity mask: what SLURM, taskset or a cgroup cpuset
  give it), which "-1 = one per core" means. Not os.cpu_count(): that counts every CPU of the node,
  so 8 SLURM tasks per node would each start one worker per node CPU. Logged once per process."""
  global _CPUS_LOGGED
  node = os.cpu_count() or 1
  usable = utils.usable_cpu_count()
  source = "os.sched_getaffinity" if hasattr(os, "sched_getaffinity") else "os.cpu_count"
  if not _CPUS_LOGGED:
    _CPUS_LOGGED = True
    log.info("input workers: %d CPUs usable by this process (%s; the node has %d)", usable,
             source, node)
  return usable


def bucket_root_problem(config, backend: str) -> str:
  """One line when a data set to train on has a bucket root and `backend` ("tf" or "numpy") cannot
  read it (numpy: Pillow opens local files only), else "". The tf backend reads buckets directly."""
  if backend != "numpy":
    return ""
  for name, spec in sorted(config.data.get("datasets", {}).items()):
    root = str(spec.get("root", ""))
    if files.is_url(root) and float(spec.get("weight", 1.0)) > 0:
      return (f"data.datasets.{name}.root={root}: data.backend=numpy reads a local or mounted "
              "folder only; data.backend=tf reads a bucket directly (or mount the bucket, e.g. "
              "with gcsfuse)")
  return ""


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
    try:
      seqs = readers.load_dataset(name, root, spec.get("split", "train"),
                                  cache_dir=config.data.get("cache_dir", ""))
    except readers.DatasetError as e:  # the config field, for the train verb's one-line error
      raise readers.DatasetError(f"data.datasets.{name}: {e}") from None
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


def local_batch_size(config, process_index: int, process_count: int,
                     batch_size: Optional[int]) -> int:
  """`batch_size`, by default train.batch_size // process_count (checked)."""
  if not 0 <= process_index < process_count:
    raise ValueError(f"process_index={process_index} outside [0, {process_count})")
  if batch_size is None:
    if config.train.batch_size % process_count:
      raise ValueError(f"train.batch_size={config.train.batch_size} does not divide by "
                       f"{process_count} processes")
    batch_size = config.train.batch_size // process_count
  return int(batch_size)


def global_index(j: int, first: int, batch_size: int, global_batch: int) -> int:
  """Global sample index of this process's j-th sample: block j // B of the global stream, row
  j % B, starting from `first` = start_index + process_index * B."""
  return first + (j // batch_size) * global_batch + j % batch_size


_LIVE_ITERATORS: "weakref.WeakSet[SampleIterator]" = weakref.WeakSet()


@atexit.register
def _close_all() -> None:
  # tf.data threads blocked in numpy_function (waiting for the GIL) hang interpreter shutdown
  # unless their iterator is destroyed first; the numpy backend's pool stops taking work.
  for it in list(_LIVE_ITERATORS):
    it.close()


class SampleIterator:
  """Iterator of numpy batch dicts with replacement statistics and the resume index.

  `batches` yields dicts with BATCH_KEYS plus `replace_reason` (and the debug fields); `on_close`
  stops whatever makes them.
  """

  def __init__(self, batches: Iterator[dict], start_index: int, global_batch: int, debug: bool,
               maker: Optional[processing.SampleMaker] = None,
               on_close: Optional[Callable[[], None]] = None):
    self._it = batches
    self._on_close = on_close
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
    """Stops whatever makes the batches: tf.data's threads, the numpy backend's threads or worker
    processes (also done at exit)."""
    self._it = None
    if self._on_close is not None:
      on_close, self._on_close = self._on_close, None
      on_close()

  def __iter__(self):
    return self

  def __next__(self) -> dict:
    if self._it is None:
      raise StopIteration
    batch = next(self._it)
    reasons = batch.pop("replace_reason")
    if self._maker is not None and self._maker.error is not None:
      raise RuntimeError(f"the sample planner failed:\n{self._maker.error}")
    if (reasons == EXHAUSTED).any():
      k = int(batch["sample_index"][np.argmax(reasons == EXHAUSTED)])
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
