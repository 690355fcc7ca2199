"""What changed between a checkpoint's config and the config resuming it, and whether that may go on.

A resume continues one run, so every change is printed, and the changes that make it another run
are refused unless the caller says so (`satracker train --allow-config-changes`):
- free: how the run is executed or logged (logging and checkpoint cadence, the mesh, input workers,
  compute dtype, remat, attention kernel, data roots that moved, test hooks): printed only;
- `train.total_steps`: allowed, with the lr schedule it implies stated (the schedule is a
  function of total_steps, so growing a cosine run raises the lr at the resume step);
- `train.batch_size`: never (the data position counts samples of that batch);
- anything else (model, loss, optimizer and schedule, data sets, sampling, text, seed): refused.
A field only one of the two configs has (another version of the code) counts as free, except
under `data.datasets` (a data set added or removed).
"""
from __future__ import annotations

import fnmatch
from typing import Any, Callable, Optional

from satracker_jax import config_utils

ALLOW_OPTION = "--allow-config-changes"

# Fields whose change leaves the run the same run (fnmatch patterns on dotted paths).
FREE = ("train.log_every", "train.checkpoint_every", "train.keep_checkpoints", "train.keep_best",
        "train.tensorboard", "train.async_checkpointing", "train.platform", "train.mesh.*",
        "train.max_consecutive_nonfinite", "train.init_from", "train.bf16", "train.debug_*",
        "model.dtype", "model.remat", "model.scan_layers", "model.attention_impl",
        "data.backend", "data.workers", "data.threads", "data.num_parallel_calls", "data.processes",
        "data.prefetch", "data.cache_dir", "data.datasets.*.root", "tracker.*", "eval.*")
NEVER = ("train.batch_size",)
SCHEDULE = "train.total_steps"

_MISSING = "(absent)"


def flat(tree: Any, prefix: str = "") -> dict[str, Any]:
  """{"a.b.c": leaf} of a JSON config dict."""
  out = {}
  for key, value in (tree or {}).items():
    path = f"{prefix}{key}"
    if isinstance(value, dict) and value:
      out.update(flat(value, path + "."))
    else:
      out[path] = value
  return out


def changes(saved: dict, new: dict) -> dict[str, tuple[Any, Any]]:
  """{path: (saved value, new value)} of every leaf that differs (JSON dicts of two configs)."""
  a, b = flat(saved), flat(new)
  return {k: (a.get(k, _MISSING), b.get(k, _MISSING))
          for k in sorted(set(a) | set(b)) if a.get(k, _MISSING) != b.get(k, _MISSING)}


def _kind(path: str, old: Any, new: Any) -> str:
  if any(fnmatch.fnmatchcase(path, p) for p in NEVER):
    return "never"
  if path == SCHEDULE:
    return "schedule"
  if path.startswith("data.datasets.") and _MISSING in (old, new):
    return "meaning"  # a data set added or removed
  if any(fnmatch.fnmatchcase(path, p) for p in FREE):
    return "free"
  if _MISSING in (old, new):
    return "free"  # a field another version of the code added or removed, at its default
  return "meaning"


def describe(changed: dict[str, tuple[Any, Any]]) -> str:
  return "; ".join(f"{k} {old!r} -> {new!r}" for k, (old, new) in changed.items())


def check(saved: dict, config, where: str, step: int, allow: bool = False,
          lr_at: Optional[Callable[[dict, int], float]] = None) -> list[str]:
  """The lines to print about `config` resuming `saved` (a checkpoint's JSON config) at `step`;
  `ConfigError` (one line) for a change that makes it another run. `lr_at(config_json, step)`:
  the schedule's lr, for the line about total_steps."""
  changed = changes(saved, config_utils.config_to_json(config))
  if not changed:
    return []
  kinds = {k: _kind(k, *v) for k, v in changed.items()}
  never = {k: v for k, v in changed.items() if kinds[k] == "never"}
  if never:
    raise config_utils.ConfigError(
        f"{where} was trained with {describe(never)}: a resumed run keeps its global batch (its "
        "data position counts samples); keep it, or start a new --workdir from these weights "
        f"(--config.train.init_from={where.rsplit('/', 1)[0]})")
  meaning = {k: v for k, v in changed.items() if kinds[k] == "meaning"}
  if meaning and not allow:
    raise config_utils.ConfigError(
        f"{where} was trained with another config: {describe(meaning)}. These change what the run "
        f"trains; resume with the saved config, use a new --workdir, or pass {ALLOW_OPTION} to "
        "continue this run with them")
  lines = [f"config changed since {where}: {describe(changed)}"]
  if meaning:
    lines.append(f"continuing with the changes to {', '.join(meaning)} ({ALLOW_OPTION})")
  if SCHEDULE in changed:
    old, new = changed[SCHEDULE]
    line = f"train.total_steps {old} -> {new}: the lr schedule now ends at step {new}"
    if lr_at is not None:
      before, after = lr_at(saved, step), lr_at(config_utils.config_to_json(config), step)
      line += f"; lr at step {step}: {before:.3g} under the saved schedule, {after:.3g} now"
      if after > before * 1.5 + 1e-12:
        line += " (the decay restarts from a higher lr)"
    lines.append(line)
  return lines
