"""A stand-in for Google Cloud Storage: `gs://BUCKET/...` kept in a local folder ROOT/BUCKET/...

Both ways a bucket is written are redirected, the rest of each library runs as it does on GCS:
- etils.epath (Orbax's directories and JSON items, metrics.jsonl, TensorBoard files, exports): the
  `gs` scheme's backend becomes an os backend that maps `gs://` to ROOT;
- TensorStore (Orbax's arrays): Orbax's kvstore spec for a gs:// path (`get_kvstore_for_gcs`)
  becomes a `file` kvstore under ROOT.
Orbax still sees gs:// paths, so it takes its GCS code paths (commit-file atomicity, no renames).
`denied=True` makes every epath operation on the bucket fail as GCS does without credentials.
"""
from __future__ import annotations

import os

from etils.epath import backend as epath_backend
from etils.epath import gpath

PREFIX = "gs://"


class LocalBucketBackend(epath_backend._OsPathBackend):  # noqa: SLF001 - the os backend, re-rooted
  def __init__(self, root: str, denied: bool = False):
    self.root, self.denied = str(root), denied

  def local(self, path) -> str:
    path = os.fspath(path)
    assert path.startswith(PREFIX), path
    if self.denied:
      raise PermissionError(f"403 POST https://storage.googleapis.com/{path[len(PREFIX):]}: "
                            "Anonymous caller does not have storage.objects.create access")
    return os.path.join(self.root, path[len(PREFIX):])

  def url(self, local: str) -> str:
    return PREFIX + os.path.relpath(local, self.root)

  def open(self, path, mode):
    return super().open(self.local(path), mode)

  def exists(self, path):
    return super().exists(self.local(path))

  def isdir(self, path):
    return super().isdir(self.local(path))

  def listdir(self, path):
    return super().listdir(self.local(path))

  def glob(self, path):
    return [self.url(p) for p in super().glob(self.local(path))]

  def walk(self, top, *, top_down=True, on_error=None):
    for folder, dirs, files in super().walk(self.local(top), top_down=top_down, on_error=on_error):
      yield self.url(os.fspath(folder)), dirs, files

  def makedirs(self, path, *, exist_ok=False, mode=None):
    return super().makedirs(self.local(path), exist_ok=exist_ok, mode=mode)

  def mkdir(self, path, *, exist_ok=False, mode=None):
    return super().mkdir(self.local(path), exist_ok=exist_ok, mode=mode)

  def rmtree(self, path):
    return super().rmtree(self.local(path))

  def remove(self, path):
    return super().remove(self.local(path))

  def rename(self, path, dst):
    return super().rename(self.local(path), self.local(dst))

  def replace(self, path, dst):
    return super().replace(self.local(path), self.local(dst))

  def copy(self, path, dst, overwrite):
    return super().copy(self.local(path), self.local(dst), overwrite)

  def stat(self, path):
    return super().stat(self.local(path))


def install(monkeypatch, root, denied: bool = False) -> LocalBucketBackend:
  """Redirects gs:// to `root` for the rest of the test (undone by `monkeypatch`)."""
  from orbax.checkpoint._src.path import gcs_utils
  fake = LocalBucketBackend(root, denied)
  original = gpath._GPath._backend  # noqa: SLF001

  def backend(self):
    return fake if self._uri_scheme == "gs" else original.fget(self)  # noqa: SLF001

  monkeypatch.setattr(gpath._GPath, "_backend", property(backend))  # noqa: SLF001
  monkeypatch.setattr(gcs_utils, "get_kvstore_for_gcs",
                      lambda path: {"driver": "file", "path": fake.local(path)})
  monkeypatch.setattr(gcs_utils, "is_hierarchical_namespace_enabled", lambda path: False)
  return fake
