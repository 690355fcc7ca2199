"""Reading a data root that may be a bucket URL. Local paths go through `os` and `open` exactly as
before; a URL (`gs://bucket/LaSOT`, any scheme TensorFlow's file systems know, `ram://` in tests)
goes through `tf.io.gfile`. TensorFlow is imported only when a URL is given: evaluation and the
tracker read local data sets through the readers without it.

    files.isdir(root); files.isfile(path); files.exists(path)
    files.listdir(folder)            # names, sorted; FileNotFoundError for a missing folder
    files.subdirs(folder)            # the names that are folders
    with files.open(path) as f: ...  # binary, read and seek; FileNotFoundError / OSError
    files.read_bytes(path)
    files.states(paths)              # [[size, mtime_ns]] per file, [-1, 0] when missing
    files.listing(folder)            # [(name, mtime_ns)]: what a folder's listing looks like now
    files.absolute(root); files.relative(path, root)   # os.path's, leaving URLs URLs

Why the URL side is shaped this way:
- TensorFlow's errors (`NotFoundError`, `PermissionDeniedError`...) are not `OSError`s; they are
  turned into `FileNotFoundError` / `OSError` here, so callers handle one kind of error.
- A bucket has no folders, only name prefixes: GCS lists a sub-folder as `name/`, which is a
  folder without asking again (the slash is removed from the names returned); a folder has no
  mtime, so `listing` gives 0 for every entry of a URL (the names still tell when sequences are
  added or removed; annotation files are compared by `states`, size and mtime).
- Every call is a round trip (tens of ms on GCS), so the per-file calls that come in bulk
  (`states`, `subdirs`) run on a small thread pool for URLs.
"""
from __future__ import annotations

import builtins
import concurrent.futures
import errno
import os
from typing import Callable, Iterable

from satracker_jax.paths import is_url

__all__ = ["is_url", "isdir", "isfile", "exists", "listdir", "subdirs", "open", "read_bytes",
           "states", "listing", "absolute", "relative"]

# Requests in flight at once for the per-file calls on a URL (`states`, `subdirs`).
URL_THREADS = 32
MISSING = [-1, 0]  # the state of a file that is not there: its appearance changes the data set too


def _gfile():
  import tensorflow as tf  # noqa: PLC0415  (only for URLs: local data needs no TensorFlow)
  return tf.io.gfile


def _translated(path: str, error: Exception) -> OSError:
  """A TensorFlow file system error as the OSError a local call would have raised."""
  import tensorflow as tf  # noqa: PLC0415
  text = " ".join(str(getattr(error, "message", "") or error).split())
  if isinstance(error, tf.errors.NotFoundError):
    return FileNotFoundError(errno.ENOENT, f"no such file or folder ({text})", path)
  return OSError(f"{path}: {type(error).__name__}: {text}")


def _url_call(path: str, fn: Callable, *args):
  import tensorflow as tf  # noqa: PLC0415
  try:
    return fn(*args)
  except tf.errors.OpError as e:
    raise _translated(path, e) from None


def _parallel(fn: Callable, items: list) -> list:
  if len(items) <= 1:
    return [fn(item) for item in items]
  with concurrent.futures.ThreadPoolExecutor(min(URL_THREADS, len(items))) as pool:
    return list(pool.map(fn, items))


def absolute(path: str) -> str:
  """A local path made absolute; a URL as it is, less any trailing slash."""
  if not is_url(path):
    return os.path.abspath(path)
  stripped = path.rstrip("/")
  return stripped if is_url(stripped) else path


def relative(path: str, root: str) -> str:
  """`path` relative to the folder `root` (which it lies under)."""
  if not is_url(root):
    return os.path.relpath(path, root)
  return path[len(root):].lstrip("/")


def isdir(path: str) -> bool:
  if not is_url(path):
    return os.path.isdir(path)
  return _url_call(path, _gfile().isdir, path)


def isfile(path: str) -> bool:
  if not is_url(path):
    return os.path.isfile(path)
  try:
    return not _url_call(path, _gfile().stat, path).is_directory
  except FileNotFoundError:
    return False


def exists(path: str) -> bool:
  if not is_url(path):
    return os.path.exists(path)
  return _url_call(path, _gfile().exists, path)


def _list_url(folder: str) -> tuple[list[str], set[str]]:
  """(names, the names listed as `name/`: folders for sure)."""
  raw = _url_call(folder, _gfile().listdir, folder)
  folders = {n.rstrip("/") for n in raw if n.endswith("/")}
  return sorted({n.rstrip("/") for n in raw} - {""}), folders


def listdir(folder: str) -> list[str]:
  """The names in `folder`, sorted; FileNotFoundError when it is missing."""
  if not is_url(folder):
    return sorted(os.listdir(folder))
  return _list_url(folder)[0]


def subdirs(folder: str) -> list[str]:
  """The names in `folder` (sorted) that are folders themselves."""
  if not is_url(folder):
    return [d for d in sorted(os.listdir(folder)) if os.path.isdir(os.path.join(folder, d))]
  names, folders = _list_url(folder)
  unknown = [n for n in names if n not in folders]
  found = dict(zip(unknown, _parallel(lambda n: isdir(os.path.join(folder, n)), unknown)))
  return [n for n in names if n in folders or found[n]]


class _URLFile:
  """A `tf.io.gfile.GFile` opened for reading whose errors are OSErrors."""

  def __init__(self, path: str):
    self._path = path
    self._file = _gfile().GFile(path, "rb")

  def read(self, n: int = -1) -> bytes:
    return _url_call(self._path, self._file.read, n)

  def seek(self, offset: int, whence: int = 0) -> int:
    return _url_call(self._path, self._file.seek, offset, whence)

  def tell(self) -> int:
    return _url_call(self._path, self._file.tell)

  def close(self) -> None:
    self._file.close()

  def __enter__(self):
    return self

  def __exit__(self, *exc) -> None:
    self.close()


def open(path: str):  # noqa: A001 - the builtin's name: the one way the readers open a data file
  """`path` opened for binary reading (a local file, or a URL's object)."""
  if not is_url(path):
    return builtins.open(path, "rb")
  return _URLFile(path)


def read_bytes(path: str) -> bytes:
  with open(path) as f:
    return f.read()


def _state(path: str) -> list:
  if not is_url(path):
    try:
      st = os.stat(path)
      return [st.st_size, st.st_mtime_ns]
    except OSError:
      return list(MISSING)
  try:
    st = _url_call(path, _gfile().stat, path)
    return [int(st.length), int(st.mtime_nsec)]
  except OSError:
    return list(MISSING)


def states(paths: Iterable[str]) -> list[list]:
  """[size, mtime_ns] of each file, MISSING for one that is not there (or cannot be read)."""
  paths = list(paths)
  if not any(is_url(p) for p in paths):
    return [_state(p) for p in paths]
  return _parallel(_state, paths)


def listing(folder: str) -> list[tuple[str, int]]:
  """[(name, mtime_ns)] of the entries of `folder`, by name (0 for every entry of a URL)."""
  if not is_url(folder):
    return [(e.name, e.stat().st_mtime_ns) for e in sorted(os.scandir(folder), key=lambda e: e.name)]
  return [(name, 0) for name in listdir(folder)]
