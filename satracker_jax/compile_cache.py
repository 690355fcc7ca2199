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

JAX's cache still traces and lowers the function in every process (its key is the lowered HLO):
for base's train step that is 6-9 s of Python on the 2-core machine, more than loading the
compiled program. A program built by this package from a config alone (`executable(...)`, with a
`key` naming that config) is therefore also kept whole, as a serialized executable under
`DIR/executables/`, keyed on the config, the package's source code, the argument shapes, dtypes
and shardings, the JAX / jaxlib / Flax / optax versions, the devices (and the host CPU's model and
flags), XLA_FLAGS and JAX's options; a second process loads it without tracing. Programs with
user-supplied parts (a model or loss passed in by a test or a script), multi-process runs and
bucket caches use JAX's cache alone.
"""
from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import pickle
import platform
import sys
import threading
import time
from importlib import metadata
from typing import Any, Callable, Optional

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


def _count(event: str) -> None:
  with _lock:
    _counts[event] += 1


@functools.lru_cache(maxsize=1)
def source_fingerprint() -> str:
  """sha256 of every Python file of the package (name and content): a code change is a new key."""
  root = os.path.dirname(os.path.abspath(__file__))
  h = hashlib.sha256()
  for folder, dirs, names in sorted(os.walk(root)):
    dirs.sort()
    for name in sorted(n for n in names if n.endswith(".py")):
      path = os.path.join(folder, name)
      h.update(os.path.relpath(path, root).encode() + b"\0")
      with open(path, "rb") as f:
        h.update(f.read())
  return h.hexdigest()


def _version(dist: str) -> str:
  try:
    return metadata.version(dist)
  except metadata.PackageNotFoundError:
    return ""


@functools.lru_cache(maxsize=1)
def host_cpu() -> str:
  """The host CPU's model and instruction-set flags (Linux), else its architecture: XLA:CPU code
  is compiled for the host's features, so a cache folder shared by unlike machines keeps them apart."""
  try:
    with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
      lines = [line for line in f if line.startswith(("model name", "flags"))]
    fields = sorted(set(lines))
  except OSError:
    fields = []
  return hashlib.sha256("".join(fields).encode()).hexdigest()[:16] if fields else platform.machine()


def _args_spec(args) -> list:
  leaves, treedef = jax.tree_util.tree_flatten(args)
  spec = [str(treedef)]
  for x in leaves:
    sharding = getattr(x, "sharding", None)
    spec.append([tuple(getattr(x, "shape", ())), str(getattr(x, "dtype", type(x).__name__)),
                 repr(sharding) if sharding is not None else ""])
  return spec


def executable_key(what: str, key: Any, args) -> str:
  """The file name of `what` built from `key` (JSON-able: the config) on `args`: everything the
  compiled program depends on besides them is in it too (see the module docstring)."""
  devices = jax.devices()
  options = {k: repr(v) for k, v in jax.config.values.items() if "cache" not in k}
  parts = {
      "what": what, "key": key, "args": _args_spec(args), "source": source_fingerprint(),
      "versions": {d: _version(d) for d in ("jax", "jaxlib", "flax", "optax", "numpy")},
      "python": platform.python_version(), "host_cpu": host_cpu(),
      "devices": [jax.default_backend(), len(devices), devices[0].device_kind, jax.process_count()],
      "env": {k: os.environ.get(k, "") for k in ("XLA_FLAGS", "LIBTPU_INIT_ARGS")},
      "options": options,
  }
  return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


def _lower_and_compile(jitted, args: tuple, timings: Optional[dict]):
  t0 = time.perf_counter()
  lowered = jitted.lower(*args)
  if timings is not None:
    timings["trace_lower_s"] = time.perf_counter() - t0
  return lowered.compile()  # JAX's cache reports its own hit or miss


def executable(what: str, jitted, args: tuple, key: Any = None, timings: Optional[dict] = None):
  """`jitted` compiled for `args`: from `DIR/executables/` when the same program was saved there
  (no tracing, no lowering, no XLA), else lowered, compiled and saved. `key` None (a program with
  parts not named by a config), no local cache folder or several processes: `jitted` itself,
  which JAX's cache serves on its first call (compiled now if `timings` is given). Call it inside
  a `CompileWatch`: a load counts as a cache hit. `timings` (a dict) gets "trace_lower_s" when
  this call traced and lowered."""
  directory = active_directory()
  if key is None or directory is None or "://" in directory or jax.process_count() > 1:
    return jitted if timings is None else _lower_and_compile(jitted, args, timings)
  from jax.experimental import serialize_executable  # noqa: PLC0415
  path = os.path.join(directory, "executables", executable_key(what, key, args) + ".pkl")
  if os.path.exists(path):
    try:
      with open(path, "rb") as f:
        payload, in_tree, out_tree = pickle.load(f)
      compiled = serialize_executable.deserialize_and_load(payload, in_tree, out_tree)
    except Exception as e:  # noqa: BLE001 - a torn or foreign file: removed, compiled again below
      print(f"compilation cache: {path} unreadable ({type(e).__name__}); removed, compiling the "
            f"{what} again", file=sys.stderr, flush=True)
      with contextlib.suppress(OSError):
        os.remove(path)
    else:
      _count(_HITS)
      return compiled
  enable_listener()
  with _lock:
    hits_before = _counts[_HITS]
  compiled = _lower_and_compile(jitted, args, timings)
  with _lock:
    loaded = _counts[_HITS] > hits_before
  if loaded:
    # XLA's part came from JAX's cache: XLA:CPU re-serialises a loaded executable without some
    # of its kernels ("Function wrapped_iota not found" when the copy runs), so only a program
    # compiled here is stored whole.
    return compiled
  try:
    blob = pickle.dumps(serialize_executable.serialize(compiled))
  except (ValueError, NotImplementedError, TypeError, pickle.PicklingError):
    return compiled  # this backend cannot serialize it: JAX's cache keeps the XLA part
  tmp = f"{path}.tmp-{os.getpid()}-{threading.get_ident()}"
  try:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(tmp, "wb") as f:
      f.write(blob)
    os.replace(tmp, path)  # whole or not at all, whoever else writes the same key
  except OSError as e:  # a full or read-only cache folder costs the next start, not this run
    print(f"compilation cache: could not store the {what} in {path} ({e.strerror or e})",
          file=sys.stderr, flush=True)
    with contextlib.suppress(OSError):
      os.remove(tmp)
  return compiled


def enable_listener() -> None:
  global _listening
  if not _listening:
    jax.monitoring.register_event_listener(_on_event)
    _listening = True
