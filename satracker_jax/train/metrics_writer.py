"""Training metrics: WORKDIR/metrics.jsonl, TensorBoard event files, console lines.

Only process 0 writes files; every process may print (multi-host logs then show that all workers
see the same global loss). The event files are written with the `tensorboard` package's protos and
record framing (no TensorFlow: training runs on machines without it, and nothing outside
`data_pipelines/` imports it). A workdir may be a bucket URL: files go through `satracker_jax.paths`
(etils.epath); objects cannot be appended to, so there metrics.jsonl is rewritten whole, at most
every `URL_REWRITE_EVERY_S` seconds and at the end.
"""
from __future__ import annotations

import json
import os
import sys
import time
from typing import Mapping

from satracker_jax import paths

URL_REWRITE_EVERY_S = 30.0


class EventWriter:
  """Scalars into `logdir/events.out.tfevents.*`, the file TensorBoard reads."""

  def __init__(self, logdir: str):
    import socket  # noqa: PLC0415
    from tensorboard.compat.proto import event_pb2, summary_pb2  # noqa: PLC0415
    from tensorboard.summary.writer.record_writer import RecordWriter  # noqa: PLC0415
    self._event_pb2, self._summary_pb2 = event_pb2, summary_pb2
    directory = paths.ensure_dir(logdir, "TensorBoard folder")
    name = f"events.out.tfevents.{int(time.time())}.{socket.gethostname()}.{os.getpid()}"
    self._writer = RecordWriter((directory / name).open("wb"))
    self._write(event_pb2.Event(wall_time=time.time(), file_version="brain.Event:2"))

  def _write(self, event) -> None:
    self._writer.write(event.SerializeToString())

  def scalars(self, step: int, scalars: Mapping[str, float]) -> None:
    values = [self._summary_pb2.Summary.Value(tag=k, simple_value=float(v)) for k, v in scalars.items()]
    self._write(self._event_pb2.Event(wall_time=time.time(), step=int(step),
                                      summary=self._summary_pb2.Summary(value=values)))
    self._writer.flush()

  def close(self) -> None:
    self._writer.close()


class MetricsWriter:
  def __init__(self, workdir: str, *, is_main: bool = True, tensorboard: bool = True):
    self.is_main = is_main
    self._jsonl = None
    self._tb = None
    if is_main:
      directory = paths.ensure_dir(workdir, "workdir")
      jsonl = directory / "metrics.jsonl"
      self._jsonl = _RewrittenObject(jsonl) if paths.is_url(workdir) else open(jsonl, "a", buffering=1)
      if tensorboard:
        self._tb = EventWriter(paths.join(workdir, "tensorboard"))

  def write(self, step: int, scalars: Mapping[str, float]) -> None:
    if not self.is_main:
      return
    record = {"step": int(step), "time": time.time(), **{k: float(v) for k, v in scalars.items()}}
    self._jsonl.write(json.dumps(record) + "\n")
    if self._tb is not None:
      self._tb.scalars(step, scalars)

  def close(self) -> None:
    if self._jsonl is not None:
      self._jsonl.close()
    if self._tb is not None:
      self._tb.close()


class _RewrittenObject:
  """A text object in a bucket that grows like a file opened with "a": the whole text is written
  again at most every URL_REWRITE_EVERY_S seconds (the first write at once) and at close."""

  def __init__(self, path):
    self._path = path
    self._text = path.read_text() if path.exists() else ""
    self._written_at = float("-inf")
    self._dirty = False

  def write(self, text: str) -> None:
    self._text += text
    self._dirty = True
    if time.monotonic() - self._written_at >= URL_REWRITE_EVERY_S:
      self.flush()

  def flush(self) -> None:
    if self._dirty:
      self._path.write_text(self._text)
      self._dirty = False
      self._written_at = time.monotonic()

  def close(self) -> None:
    self.flush()


def format_eta(seconds: float) -> str:
  if seconds != seconds or seconds == float("inf"):
    return "?"
  seconds = int(seconds)
  h, rem = divmod(seconds, 3600)
  m, s = divmod(rem, 60)
  return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s"


def _rate(value: float, digits: int) -> str:
  return "?" if value != value else f"{value:.{digits}f}"  # nan: the compiled step, not timed


def console_line(step: int, total: int, s: Mapping[str, float], prefix: str = "") -> str:
  terms = " ".join(f"{k}={s[k]:.4f}" for k in ("focal", "giou", "l1", "dm", "iou") if k in s)
  return (f"{prefix}step {step}/{total} loss={s['loss']:.4f} {terms} lr={s['lr']:.3g} "
          f"gnorm={s['grad_norm']:.3g} {_rate(s['steps_per_s'], 2)} it/s {_rate(s['samples_per_s'], 1)} samples/s "
          f"eta {format_eta(s['eta_s'])} skipped={int(s['nonfinite_total'])} "
          f"replaced={int(s.get('replaced_total', 0))}")


def print_line(text: str) -> None:
  print(text, flush=True)
  sys.stdout.flush()
