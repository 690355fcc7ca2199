"""Small helpers shared by the CLI verbs: tables, JSON, machine description."""
from __future__ import annotations

import json
import os
import platform
from typing import Any, Sequence


def format_table(headers: Sequence[str], rows: Sequence[Sequence[Any]], floatfmt: str = ".4g") -> str:
  """A Markdown table (readable on a console, pasteable into the README)."""
  def fmt(v):
    return format(v, floatfmt) if isinstance(v, float) else str(v)
  cells = [[fmt(v) for v in row] for row in rows]
  widths = [max(len(str(h)), *(len(r[i]) for r in cells)) if cells else len(str(h))
            for i, h in enumerate(headers)]
  line = lambda vals: "| " + " | ".join(str(v).ljust(w) for v, w in zip(vals, widths)) + " |"
  sep = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
  return "\n".join([line(headers), sep] + [line(r) for r in cells])


def plural(count: int, noun: str, plural_form: str = "") -> str:
  """"1 video", "2 videos" (`plural_form` for irregular nouns)."""
  return f"{count} {noun if count == 1 else plural_form or noun + 's'}"


def write_json(path: str, obj: Any) -> None:
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  tmp = path + ".tmp"
  with open(tmp, "w") as f:
    json.dump(obj, f, indent=2, sort_keys=True, default=float)
    f.write("\n")
  os.replace(tmp, path)


def usable_cpu_count() -> int:
  """The CPUs this process may run on (its affinity mask: a SLURM task's share, not the node's);
  data_pipelines.batches.usable_cpus logs it for the input workers."""
  try:
    return max(1, len(os.sched_getaffinity(0)))
  except (AttributeError, OSError):  # pragma: no cover - platforms without affinity
    return os.cpu_count() or 1


def machine_info() -> dict:
  """What a benchmark ran on, recorded with its numbers."""
  import jax
  devices = jax.devices()
  return {
      "platform": devices[0].platform,
      "device_kind": devices[0].device_kind,
      "num_devices": len(devices),
      "cpu_count": os.cpu_count(),
      "machine": platform.machine(),
      "jax": jax.__version__,
  }
