"""Training metrics: WORKDIR/metrics.jsonl, TensorBoard when TensorFlow is importable, console.

Only process 0 writes files; every process may print (multi-host logs then show that all workers
see the same global loss). TensorFlow is optional here: the step itself never needs it.
"""
from __future__ import annotations

import json
import os
import sys
import time
from typing import Mapping


def _try_tf_writer(logdir: str):
  try:
    import tensorflow as tf  # noqa: PLC0415  (optional, heavy: only when asked for)
  except Exception:  # pragma: no cover - depends on the machine
    return None
  return tf.summary.create_file_writer(logdir)


class MetricsWriter:
  def __init__(self, workdir: str, *, is_main: bool = True, tensorboard: bool = True):
    self.is_main = is_main
    self._jsonl = None
    self._tb = None
    if is_main:
      os.makedirs(workdir, exist_ok=True)
      self._jsonl = open(os.path.join(workdir, "metrics.jsonl"), "a", buffering=1)
      if tensorboard:
        self._tb = _try_tf_writer(os.path.join(workdir, "tensorboard"))

  def write(self, step: int, scalars: Mapping[str, float]) -> None:
    if not self.is_main:
      return
    record = {"step": int(step), "time": time.time(), **{k: float(v) for k, v in scalars.items()}}
    self._jsonl.write(json.dumps(record) + "\n")
    if self._tb is not None:
      import tensorflow as tf  # noqa: PLC0415
      with self._tb.as_default(step=int(step)):
        for k, v in scalars.items():
          tf.summary.scalar(k, float(v))
      self._tb.flush()

  def close(self) -> None:
    if self._jsonl is not None:
      self._jsonl.close()
    if self._tb is not None:
      self._tb.close()


def format_eta(seconds: float) -> str:
  if seconds != seconds or seconds == float("inf"):
    return "?"
  seconds = int(seconds)
  h, rem = divmod(seconds, 3600)
  m, s = divmod(rem, 60)
  return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s"


def console_line(step: int, total: int, s: Mapping[str, float], prefix: str = "") -> str:
  terms = " ".join(f"{k}={s[k]:.4f}" for k in ("focal", "giou", "l1", "dm", "iou") if k in s)
  return (f"{prefix}step {step}/{total} loss={s['loss']:.4f} {terms} lr={s['lr']:.3g} "
          f"gnorm={s['grad_norm']:.3g} {s['steps_per_s']:.2f} it/s {s['samples_per_s']:.1f} samples/s "
          f"eta {format_eta(s['eta_s'])} skipped={int(s['nonfinite_total'])} "
          f"replaced={int(s.get('replaced_total', 0))}")


def print_line(text: str) -> None:
  print(text, flush=True)
  sys.stdout.flush()
