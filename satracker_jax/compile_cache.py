"""The persistent compilation cache every verb uses, and how long each compile took.

A compiled program (train step, tracker step, initialisation) is stored on disk under a key of its
HLO, the compile options, the JAX / XLA version and the devices, so the next process that builds
the same program loads it instead of compiling: a second `satracker train` / `eval` / `bench` of a
config, a SLURM requeue, the demo's variants. On GPUs XLA's per-fusion autotuning results are
cached beside it (`jax_persistent_cache_enable_xla_caches`), so a cached start does not autotune.

    satracker <verb> ...                       # cache in $SATRACKER_COMPILE_CACHE or ~/.cache/satracker-jax/xla
    satracker <verb> --compile-cache DIR ...   # another folder (a bucket path works too)
    satracker <verb> --no-compile-cache ...    # off

A cache the caller configured already (JAX_COMPILATION_CACHE_DIR, jax.config) is left as it is.
`CompileWatch` measures one compile and says whether it came from the cache.
"""
from __future__ import annotations

import os
import threading
import time
from typing import Callable, Optional

import jax

ENV_VAR = "SATRACKER_COMPILE_CACHE"
OFF = ("off", "none", "0", "false")
_HITS, _MISSES = "/jax/compilation_cache/cache_hits", "/jax/compilation_cache/cache_misses"
_counts = {_HITS: 0, _MISSES: 0}
_lock = threading.Lock()
_listening = False


def default_directory() -> str:
  base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
  return os.path.join(base, "satracker-jax", "xla")


def _on_event(event: str, **kwargs) -> None:
  del kwargs
  if event in _counts:
    with _lock:
      _counts[event] += 1


def enable(directory: Optional[str] = None, disabled: bool = False) -> Optional[str]:
  """Turns the persistent cache on (unless `disabled`); returns the folder in use, or None.

  `directory` None: $SATRACKER_COMPILE_CACHE (a value in OFF disables), else the folder JAX was
  already given, else `default_directory()`. Every program is cached, however quick its compile.
  """
  enable_listener()
  env = os.environ.get(ENV_VAR, "")
  if disabled or (directory is None and env.lower() in OFF and env):
    jax.config.update("jax_enable_compilation_cache", False)
    return None
  directory = directory or env or jax.config.jax_compilation_cache_dir or default_directory()
  if "://" not in directory:
    os.makedirs(directory, exist_ok=True)
  jax.config.update("jax_enable_compilation_cache", True)
  jax.config.update("jax_compilation_cache_dir", directory)
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
  jax.config.update("jax_persistent_cache_min_entry_size_bytes", -1)
  return directory


def active_directory() -> Optional[str]:
  if not jax.config.jax_enable_compilation_cache:
    return None
  return jax.config.jax_compilation_cache_dir or None


class CompileWatch:
  """Times a block that compiles (the first call of a jitted function) and counts cache hits.

      with CompileWatch("train step") as w:
        state, metrics = step(state, batch)
      print(w.line())   # "train step: ready in 41.2 s (not in the compilation cache; saved for next time)"
  """

  def __init__(self, what: str, say: Optional[Callable[[str], None]] = None):
    """`say`: called with "compiling the <what> (compilation cache: DIR) ..." as the block starts."""
    self.what = what
    self._say = say
    self.seconds = 0.0
    self.hits = self.misses = 0

  def __enter__(self):
    if self._say is not None:
      self._say(f"compiling the {self.what} (compilation cache: {active_directory() or 'off'}) ...")
    enable_listener()
    with _lock:
      self._start = dict(_counts)
    self._t0 = time.perf_counter()
    return self

  def __exit__(self, *exc):
    self.seconds = time.perf_counter() - self._t0
    with _lock:
      self.hits = _counts[_HITS] - self._start[_HITS]
      self.misses = _counts[_MISSES] - self._start[_MISSES]
    return False

  @property
  def cached(self) -> Optional[bool]:
    """True: every program came from the cache; False: something was compiled; None: no cache."""
    if active_directory() is None:
      return None
    if self.hits and not self.misses:
      return True
    return False if (self.misses or self.hits) else None

  def line(self) -> str:
    state = {True: "from the compilation cache",
             False: "not in the compilation cache; saved for next time",
             None: "compilation cache off" if active_directory() is None else "nothing new to compile"}
    return f"{self.what}: ready in {self.seconds:.1f} s ({state[self.cached]})"

  def as_dict(self) -> dict:
    return {"seconds": self.seconds, "cache_hits": self.hits, "cache_misses": self.misses,
            "cached": self.cached}


def enable_listener() -> None:
  global _listening
  if not _listening:
    jax.monitoring.register_event_listener(_on_event)
    _listening = True
