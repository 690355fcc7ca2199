"""Private helpers of the tests/test_train_*.py files: a stand-in model/data and a subprocess runner.

The stand-in (a tiny conv + Dense + BatchNorm Linen model, and batches that are a pure function of
(seed, sample index)) keeps the train-loop tests independent of the real model's speed; the
`real` mode runs the actual SATracker on synthetic data through the same worker.
"""
from __future__ import annotations

import fcntl
import json
import os
import re
import shutil
import subprocess
import sys

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
  sys.path.insert(0, REPO)  # `configs` is imported by config files as a top-level package
WORKER = os.path.join(REPO, "tests", "train_worker.py")


def standin_model(batch_norm: str = "batch", poison_batch_stats_at: int = 0):
  """`batch_norm`: "batch" normalises with the batch's statistics in training (as the real head
  does), "running" always with the running averages (then every sample's output and gradient is
  independent of the other samples of its batch). `poison_batch_stats_at` > 0: a batch_stats
  counter that turns to +inf on that training call, while the loss stays finite (test hook)."""
  import flax.linen as nn
  import jax.numpy as jnp
  # The model's own layer constructors: every variable says how it is drawn, so the trainer can
  # initialise it on the host (model_io.host_variables).
  from satracker_jax.models import initializers as init

  class StandIn(nn.Module):
    """Predicts the search box from pooled patches + text; has BatchNorm like the real head."""

    @nn.compact
    def __call__(self, template, template_box, search, text_ids, text_mask, train=False):
      x = init.Conv(16, (8, 8), strides=(8, 8), name="vit_patch")(search.astype(jnp.float32) / 255.0)
      running = batch_norm == "running" or not train
      x = init.BatchNorm(use_running_average=running, name="head_bn")(x)
      if poison_batch_stats_at:
        calls = self.variable("batch_stats", "train_calls", init.zeros, None, ())
        if train and not self.is_initializing():
          n = calls.value + 1
          calls.value = jnp.where(n >= poison_batch_stats_at, jnp.inf, n)
      x = nn.relu(x).mean(axis=(1, 2))
      t = init.Embed(64, 16, name="bert_embed")(text_ids % 64) * text_mask[..., None]
      h = jnp.concatenate([x, t.mean(1), template_box], -1)
      h = nn.relu(init.Dense(128, name="fusion")(h))
      h = nn.relu(init.Dense(128, name="fusion_mlp")(h))  # 16k weights: large enough to fsdp-shard
      return {"pred_box": nn.sigmoid(init.Dense(4, name="head_box")(h))}

  return StandIn()


def standin_loss(out, batch):
  import jax.numpy as jnp
  l1 = jnp.abs(out["pred_box"] - batch["search_box"]).mean()
  return l1, {"l1": l1}


def standin_sample(seed: int, k: int, size: int = 32, text_len: int = 8, tsize: int = 16) -> dict:
  rng = np.random.default_rng([seed, k])
  box = rng.uniform(0.3, 0.7, 4).astype(np.float32)
  search = np.zeros((size, size, 3), np.uint8)
  cx, cy = int(box[0] * size), int(box[1] * size)
  search[max(cy - 4, 0):cy + 4, max(cx - 4, 0):cx + 4] = 255
  return {
      "template": rng.integers(0, 255, (tsize, tsize, 3), dtype=np.uint8),
      "template_box": np.array([0.5, 0.5, 0.5, 0.5], np.float32),
      "search": search,
      "search_box": box,
      "text_ids": rng.integers(1, 64, text_len).astype(np.int32),
      "text_mask": np.ones(text_len, np.int32),
      "sample_index": np.int64(k),
      "replaced": np.int32(k % 7 == 3),
  }


def standin_dataset(seed: int, model_config=None):
  """A dataset_fn for loop.train: process p takes rows p*B..(p+1)*B-1 of every global batch."""
  sizes = {}
  if model_config is not None:
    sizes = dict(size=model_config.search_size, tsize=model_config.template_size,
                 text_len=model_config.max_text_len)

  def dataset_fn(start_index, process_index, process_count, batch_size):
    k = start_index
    while True:
      first = k + process_index * batch_size
      rows = [standin_sample(seed, first + i, **sizes) for i in range(batch_size)]
      yield {key: np.stack([r[key] for r in rows]) for key in rows[0]}
      k += batch_size * process_count
  return dataset_fn


def run_worker(workdir, *, devices=1, overrides=(), extra=None, env=None, timeout=300,
               check=True, wait=True, new_session=False):
  """Runs tests/train_worker.py in a fresh interpreter (the XLA device count is fixed at import).
  `new_session`: in a process group of its own (whose id is its pid), which a test may signal."""
  e = dict(os.environ)
  # The device count replaces any given one; other flags (the suite's optimisation level) stay.
  flags = re.sub(r"--xla_force_host_platform_device_count=\d+", "", e.get("XLA_FLAGS", ""))
  e["XLA_FLAGS"] = f"{flags} --xla_force_host_platform_device_count={devices}".strip()
  e["JAX_PLATFORMS"] = "cpu"
  e["PYTHONPATH"] = REPO + os.pathsep + e.get("PYTHONPATH", "")
  e.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
  e.update(env or {})
  cmd = [sys.executable, WORKER, "--workdir", str(workdir),
         "--overrides", json.dumps(list(overrides)), "--extra", json.dumps(extra or {})]
  if not wait:
    return subprocess.Popen(cmd, env=e, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=new_session)
  p = subprocess.run(cmd, env=e, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                     timeout=timeout)
  if check and p.returncode != 0:
    raise AssertionError(f"worker failed (rc {p.returncode}):\n{p.stdout[-6000:]}")
  return p


def result_of(output: str) -> dict:
  for line in reversed(output.splitlines()):
    if line.startswith("RESULT "):
      return json.loads(line[len("RESULT "):])
  raise AssertionError(f"no RESULT line in worker output:\n{output[-4000:]}")


def metrics(workdir) -> list[dict]:
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return [json.loads(line) for line in f]


def final_state(workdir, part: str = "") -> dict:
  """The worker's final train state, flat by path; `part` ("params", ...) keeps one entry."""
  with np.load(os.path.join(workdir, "final_state.npz")) as z:
    flat = {k: z[k] for k in z.files}
  if part:
    flat = {k[len(part) + 1:]: v for k, v in flat.items() if k.startswith(part + "/")}
  return flat


def final_params(workdir) -> dict:
  return final_state(workdir, "params")


def checkpoint_state(workdir, step: int, part: str = "") -> dict:
  """An Orbax checkpoint's state item read back as numpy on the host, flat like `final_state`."""
  import jax
  import orbax.checkpoint as ocp
  path = os.path.join(str(workdir), "checkpoints", str(step), "state")
  with ocp.PyTreeCheckpointer() as c:
    meta = c.metadata(path).item_metadata
    tree = meta.tree if hasattr(meta, "tree") else meta
    restored = c.restore(path, restore_args=jax.tree.map(
        lambda _: ocp.RestoreArgs(restore_type=np.ndarray), tree))
  flat = {}
  for keys, value in jax.tree_util.tree_flatten_with_path(restored)[0]:
    flat["/".join(str(getattr(k, "key", getattr(k, "idx", k))) for k in keys)] = np.asarray(value)
  if part:
    flat = {k[len(part) + 1:]: v for k, v in flat.items() if k.startswith(part + "/")}
  return flat


def once_per_session(tmp_path_factory, name: str, make) -> dict:
  """`make(folder)` -> a JSON-able dict, run once per test session however many pytest-xdist
  workers ask: the first caller runs it under a file lock in a folder all the session's workers
  share (xdist's documented pattern), later callers (other files, other workers) wait for the lock
  and get the stored dict. So two test files can each start one expensive run on its own worker
  and still read each other's. A failed `make` is stored too: the next caller fails with its message
  instead of running it again."""
  base = tmp_path_factory.getbasetemp()
  if os.environ.get("PYTEST_XDIST_WORKER"):
    base = base.parent  # pytest-N/, the parent of every worker's popen-gwK/ of this session
  folder, done, failed = base / name, base / f"{name}.json", base / f"{name}.failed"
  with open(base / f"{name}.lock", "w") as lock:
    fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
    if failed.exists():
      raise AssertionError(f"{name} failed in another test of this session:\n{failed.read_text()}")
    if not done.exists():
      shutil.rmtree(folder, ignore_errors=True)
      folder.mkdir()
      try:
        result = make(folder)
      except BaseException as e:
        failed.write_text(f"{type(e).__name__}: {e}"[-8000:])
        raise
      done.write_text(json.dumps(result))
    return json.loads(done.read_text())
