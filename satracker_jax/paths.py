"""Every output path through one library: `etils.epath`, the one Orbax uses.

A workdir, an eval or analyze `--out`, an export may be a local folder or a URL (`gs://bucket/run`,
any scheme epath knows). Local paths are made absolute; a URL is never passed to `os.path.abspath`
or `os.makedirs` (which would turn `gs://b/run` into a local folder `./gs:/b/run`).

    is_url("gs://b/run")            # True
    resolve(path)                   # epath.Path: absolute local path, or the URL as it is
    join(base, "checkpoints")       # str, for either kind
    ensure_dir(path, "workdir")     # creates it; for a URL also writes and deletes a probe object,
                                    # so a bucket that cannot be reached or written fails *now*,
                                    # as one OutputPathError line naming the bucket and the reason
    with staged_output(out) as local: ...   # for code that writes plain files (evaluation,
                                    # reports): a local folder, mirrored to the URL at the end

How epath reaches a bucket: through TensorFlow's `tf.io.gfile` when TensorFlow is installed (the
default install), otherwise through fsspec (`gcsfs` for gs://: `pip install 'satracker-jax[gcs]'`).
Orbax writes the checkpoint arrays with TensorStore's own GCS driver either way.
"""
from __future__ import annotations

import contextlib
import os
import re
import shutil
import socket
import tempfile
from typing import Iterator
from urllib import parse

from etils import epath

_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]+://")


class OutputPathError(OSError):
  """An output path that cannot be created or written; the message is one line."""


def is_url(path) -> bool:
  return bool(_URL.match(os.fspath(path)))


def bucket_of(url) -> str:
  """'gs://bucket/a/b' -> 'gs://bucket'."""
  parsed = parse.urlparse(os.fspath(url))
  return f"{parsed.scheme}://{parsed.netloc}"


def resolve(path) -> epath.Path:
  """An absolute local path (`~` expanded) or the URL unchanged."""
  path = os.fspath(path)
  return epath.Path(path if is_url(path) else os.path.abspath(os.path.expanduser(path)))


def join(base, *parts: str) -> str:
  return os.fspath(resolve(base).joinpath(*parts))


def one_line(error: BaseException) -> str:
  """`Type: message` on one line (cloud clients put the request on the next lines)."""
  text = " ".join(str(error).split())
  return f"{type(error).__name__}: {text[:400]}" if text else type(error).__name__


def ensure_dir(path, what: str = "output folder") -> epath.Path:
  """Creates `path` (parents too) and returns it resolved; OutputPathError if that fails.

  For a URL an empty probe object is written and deleted as well: creating a "folder" in a bucket
  may succeed without any right to write into it, and a training run should not find that out at
  its first checkpoint."""
  resolved = resolve(path)
  try:
    resolved.mkdir(parents=True, exist_ok=True)
    if is_url(path):
      probe = resolved / f".satracker_write_probe.{socket.gethostname()}.{os.getpid()}"
      probe.write_bytes(b"")
      probe.unlink(missing_ok=True)
  except Exception as e:  # noqa: BLE001 - every backend has its own errors; all mean "cannot write"
    if is_url(path):
      raise OutputPathError(f"{what} {path}: cannot write to bucket {bucket_of(path)} "
                            f"({one_line(e)})") from e
    raise OutputPathError(f"{what} {path}: cannot create it ({one_line(e)})") from e
  return resolved


def copy_tree(src, dst) -> int:
  """Copies every file under `src` to the same place under `dst` (either may be a URL); returns
  the number of files copied."""
  src, dst = resolve(src), resolve(dst)
  if not src.exists():
    return 0
  count = 0
  for folder, _, files in src.walk():
    target = dst / folder.relative_to(src)
    target.mkdir(parents=True, exist_ok=True)
    for name in files:
      (target / name).write_bytes((folder / name).read_bytes())
      count += 1
  return count


@contextlib.contextmanager
def staged_output(out, what: str = "--out") -> Iterator[str]:
  """A local folder standing in for `out`. A local `out` is created and used as it is. For a URL
  the bucket is checked first (`ensure_dir`), what `out` already holds is copied down (evaluation
  keeps results made by the same model), and everything is copied back up at the end, also when
  the body raised (results finished before a failure are kept)."""
  if not is_url(out):
    ensure_dir(out, what)
    yield os.path.abspath(os.path.expanduser(os.fspath(out)))
    return
  ensure_dir(out, what)
  local = tempfile.mkdtemp(prefix="satracker-staged-")
  try:
    copy_tree(out, local)
    try:
      yield local
    finally:
      copy_tree(local, out)
  finally:
    shutil.rmtree(local, ignore_errors=True)
