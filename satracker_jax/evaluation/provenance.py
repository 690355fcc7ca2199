"""What produced each result in an evaluation folder (`<out>/provenance.json`), so results are
never stale (`runner.track_sequences`).

`provenance.json` records, per sequence, the fingerprints of the model (`fingerprint_variables`,
or `model_fingerprint` given by the caller), of the config parts that change tracking
(`config_fingerprint`) and of the sequence's data (`sequence_fingerprint`). A sequence is skipped
only when its result files are complete (`results_complete`) and all three are identical;
otherwise its old files are deleted and it is tracked again.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import sys
from typing import Optional

import jax
import numpy as np

from satracker_jax import config_utils, tokenizer
from satracker_jax.evaluation import results_io

PROVENANCE_FILE = "provenance.json"
# Part of the config fingerprint: bump when the frame pipeline's pixels change (results re-track).
PIPELINE_VERSION = 1
FINGERPRINT_SAMPLES = 4096  # values hashed per variable leaf (evenly strided)


def _sha(*parts) -> str:
  h = hashlib.sha1()
  for p in parts:
    h.update(p if isinstance(p, bytes) else str(p).encode())
    h.update(b"\0")
  return h.hexdigest()[:16]


def fingerprint_variables(variables) -> str:
  """A cheap identity of a model's weights: every leaf's path, shape and dtype, plus up to
  `FINGERPRINT_SAMPLES` evenly strided values of it (sliced on the device, so a 240 M-parameter
  model is not copied to the host). Training moves every leaf, so two checkpoints differ here."""
  h = hashlib.sha1()
  for path, leaf in sorted(jax.tree_util.tree_flatten_with_path(variables)[0],
                           key=lambda kv: jax.tree_util.keystr(kv[0])):
    size = int(np.prod(np.shape(leaf)))
    stride = max(1, size // FINGERPRINT_SAMPLES)
    flat = leaf.reshape(-1) if hasattr(leaf, "reshape") else np.asarray(leaf).reshape(-1)
    sample = np.asarray(flat[::stride])
    h.update(f"{jax.tree_util.keystr(path)}|{np.shape(leaf)}|{sample.dtype}|".encode())
    h.update(np.ascontiguousarray(sample).tobytes())
  return h.hexdigest()[:16]


def config_fingerprint(config, reduced_decode: bool = True) -> str:
  """The config parts that change what the tracker outputs (model, tracker, text, crop factors)
  and the frame pipeline's version; not data roots, training or logging settings."""
  as_json = config_utils.config_to_json(config)
  text = dict(as_json.get("text", {}))
  vocab = text.get("vocab_file", "")
  with contextlib.suppress(FileNotFoundError):  # the vocabulary's content, wherever it lives
    text["vocab_file"] = hashlib.sha1(tokenizer.read_vocabulary(vocab, "vocabulary")).hexdigest()
  relevant = {
      "model": as_json.get("model"), "tracker": as_json.get("tracker"), "text": text,
      "factors": [float(config.data.template_factor), float(config.data.search_factor)],
      "pipeline": {"version": PIPELINE_VERSION, "reduced_decode": bool(reduced_decode)},
  }
  return _sha(json.dumps(relevant, sort_keys=True, default=str))


def _stat(path: str) -> str:
  from data_pipelines import files  # noqa: PLC0415  (local paths through os; URLs through tf.io.gfile)
  size, mtime = files.states([path])[0]
  return "missing" if size < 0 else f"{size}:{mtime}"


def sequence_fingerprint(sequence, sentence: Optional[str] = None) -> str:
  """The data a sequence's result depends on: its frame count and names, every ground-truth box,
  the sentence tracked with (default `sequence.sentence`), and the size + mtime of its first,
  middle and last frame (cheap on LaSOT's 685 k frames, and a regenerated or replaced video
  changes them)."""
  frames = list(sequence.frames)
  probes = [frames[i] for i in sorted({0, len(frames) // 2, len(frames) - 1})] if frames else []
  return _sha(sequence.dataset, sequence.name, len(frames),
              "|".join(os.path.basename(f) for f in probes),
              np.ascontiguousarray(np.asarray(sequence.boxes, np.float64)).tobytes(),
              sequence.sentence if sentence is None else sentence,
              "|".join(_stat(f) for f in probes))


def read_provenance(out_dir: str) -> dict:
  """`{"sequences": {name: {"model", "config", "data"}}, ...}` of a results folder ({} if none)."""
  path = os.path.join(out_dir, PROVENANCE_FILE)
  try:
    with open(path) as f:
      record = json.load(f)
  except FileNotFoundError:
    return {"sequences": {}}
  except (OSError, ValueError):
    print(f"WARNING: {path} is unreadable; every sequence will be tracked again", file=sys.stderr)
    return {"sequences": {}}
  record.setdefault("sequences", {})
  return record


def write_json(path: str, data: dict) -> None:
  tmp = path + ".tmp"
  with open(tmp, "w") as f:
    json.dump(data, f, indent=1, sort_keys=True)
    f.write("\n")
  os.replace(tmp, path)  # atomic: an interrupted run never leaves half a record


def results_complete(out_dir: str, sequence) -> bool:
  """The time file (written last) exists and the box file has one box per frame."""
  if not os.path.isfile(results_io.times_path(out_dir, sequence.name)):
    return False
  try:
    boxes = results_io.read_boxes(results_io.results_path(out_dir, sequence.name))
  except (OSError, ValueError):
    return False
  return len(boxes) == len(sequence.frames)
