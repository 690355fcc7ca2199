"""`satracker bench accel --config C --out DIR`: the accelerator report in one command.

Each part runs as its own `satracker bench ...` process (a cold process is what a user starts) and
is written to DIR/accel.json and DIR/accel.md as soon as it finishes, so a run stopped by a time
limit keeps what it measured. Parts, in order:
  environment     platform, device, JAX, XLA_FLAGS in force, compute dtype, compilation cache
  compile         the train step and the tracker step compiled in a fresh cache (cold), then the
                  same in a second process (cached)
  train           step time, samples/s and MFU at each --train-batches size
  kernels         kernels per train step and the ten most expensive, from one profiler trace
  track           tracker frames/s at batch 1 and at --track-slots (device step and whole loop)
  eval            `bench eval` end to end
  data            `bench data` at 1280x720 on every core, beside the train step's samples/s
  language        the tiny language recipe's training samples/s from its synthetic JPEGs
                  (numpy input) at each --language-batches size
`--small` shrinks every part (tiny shapes, few steps) so the tests can run the whole command on CPU.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from typing import Callable

from satracker_jax import utils

PARTS = ("environment", "compile", "train", "kernels", "track", "eval", "data", "language")


def _satracker(args: list[str], timeout: float) -> None:
  cmd = [sys.executable, "-c", "import sys; from satracker_jax.cli import main; sys.exit(main())", *args]
  proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
  if proc.returncode:
    tail = (proc.stdout + proc.stderr).strip().splitlines()[-5:]
    raise RuntimeError(f"satracker {' '.join(args[:2])} exited {proc.returncode}: " + " | ".join(tail))


def _bench(name: str, config: str, overrides: list[str], options: list[str], work: str,
           timeout: float, cache: str | None = None) -> dict:
  out = os.path.join(work, f"{name}_{abs(hash((config, tuple(options), cache))) % 10**8}.json")
  cache_args = ["--compile-cache", cache] if cache else []
  _satracker(["bench", name, "--config", config, "--json", out, *cache_args, *options, *overrides],
             timeout)
  with open(out) as f:
    return json.load(f)


def _environment(config_spec: str, overrides) -> dict:
  import jax  # noqa: PLC0415
  from satracker_jax import compile_cache, config_utils  # noqa: PLC0415
  from satracker_jax.models import model_config_from_dict  # noqa: PLC0415
  config = config_utils.load_config(config_spec, overrides)
  return {**utils.machine_info(), "xla_flags": os.environ.get("XLA_FLAGS", ""),
          "dtype": config.model.dtype,
          "compute_dtype": model_config_from_dict(config.model).resolved_dtype,
          "compile_cache": compile_cache.active_directory(), "jax_backend": jax.default_backend()}


def _kernels(config_spec: str, overrides, batch: int, steps: int = 3) -> dict:
  """Kernels per train step and the ten most expensive, from a jax.profiler trace of `steps` steps.

  Device planes (GPU / TPU) list kernels; on CPU the XLA ops of the host executor are counted.
  """
  import jax  # noqa: PLC0415
  from satracker_jax import config_utils, model_io  # noqa: PLC0415
  from satracker_jax.bench.train import random_batch  # noqa: PLC0415
  from satracker_jax.train import loop, optimizer as optim_lib, sharding as sharding_lib  # noqa: PLC0415
  from satracker_jax.train import state as state_lib  # noqa: PLC0415
  config = config_utils.load_config(config_spec, overrides)
  config.train.batch_size = batch
  config = loop.prepare_config(config)
  mesh = sharding_lib.make_mesh(config.train.mesh)
  model, loss_fn = loop.default_model(config), loop.default_loss_fn(config)
  abstract_vars = model_io.abstract_variables(config)
  tx, schedule = optim_lib.build_optimizer(config, abstract_vars["params"], fsdp=mesh.shape["fsdp"])
  state_sh = sharding_lib.state_shardings(state_lib.abstract_state(model, config, tx), mesh)
  state = state_lib.create_sharded_state(model, config, tx, state_sh)
  batch_arrays = state_lib.device_batch(random_batch(config.model, batch), mesh)
  step = state_lib.jit_train_step(state_lib.make_train_step(model, tx, schedule, loss_fn, config),
                                  state_sh, mesh, tuple(batch_arrays))
  state, m = step(state, batch_arrays)
  jax.block_until_ready(m)
  trace_dir = tempfile.mkdtemp(prefix="satracker-trace-")
  try:
    with jax.profiler.trace(trace_dir):
      for _ in range(steps):
        state, m = step(state, batch_arrays)
      jax.block_until_ready(m)
    files = [os.path.join(r, f) for r, _, fs in os.walk(trace_dir) for f in fs if f.endswith(".xplane.pb")]
    data = jax.profiler.ProfileData.from_file(files[0])
    device = [p for p in data.planes if p.name.startswith("/device:")]
    planes = device or [p for p in data.planes if p.name.startswith("/host:")]
    totals: dict[str, list] = {}
    skip = ("ThreadpoolListener", "end: ", "ThunkExecutor")  # CPU executor bookkeeping, not ops
    for plane in planes:
      for line in plane.lines:
        if device and "stream" not in line.name.lower():
          continue  # GPU: kernels are on the stream lines
        if not device and not line.name.startswith("tf_XLA"):
          continue  # CPU: XLA's thunks run on its executor threads
        for event in line.events:
          if event.name.startswith(skip):
            continue
          t = totals.setdefault(event.name, [0, 0.0])
          t[0] += 1
          t[1] += event.duration_ns / 1e3
    count = sum(n for n, _ in totals.values())
    top = sorted(totals.items(), key=lambda kv: -kv[1][1])[:10]
    return {"source": "device kernels" if device else "host XLA ops (CPU: no device plane)",
            "batch": batch, "kernels_per_step": count / steps,
            "top10": [{"name": k[:120], "calls_per_step": n / steps, "us_per_step": us / steps}
                      for k, (n, us) in top]}
  finally:
    shutil.rmtree(trace_dir, ignore_errors=True)


def _language(train_batches, steps: int, small: bool, work: str, timeout: float) -> dict:
  rows = []
  for b in train_batches:
    workdir = os.path.join(work, f"language_{b}")
    args = ["train", "--config", "configs/synthetic.py:language", "--workdir", workdir,
            f"--config.train.batch_size={b}", f"--config.train.total_steps={steps}",
            f"--config.train.log_every={max(1, steps // 2)}", f"--config.train.checkpoint_every={10**9}",
            "--config.data.backend=numpy", "--config.data.workers=processes"]
    if small:
      args += ["--config.data.synthetic.sequences=8", "--config.data.synthetic.test_sequences=2"]
    _satracker(args, timeout)
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
      last = [json.loads(line) for line in f if line.strip()][-1]
    rows.append({"batch": b, "samples_per_s": last.get("samples_per_s"), "steps": steps})
  return {"config": "configs/synthetic.py:language", "rows": rows}


def _num(value, digits: int = 0) -> str:
  """A figure for the tables: rounded, or n/a where the part did not measure it."""
  return "n/a" if value is None else f"{value:,.{digits}f}"


def _markdown(report: dict) -> str:
  lines = [f"# Accelerator report: {report['config']}", ""]
  env = report.get("environment", {})
  if env:
    lines += [f"{env.get('device_kind')} x{env.get('num_devices')} ({env.get('platform')}), JAX {env.get('jax')}, "
              f"compute {env.get('compute_dtype')}, XLA_FLAGS `{env.get('xla_flags') or '(none)'}`", ""]
  if "compile" in report:
    c = report["compile"]
    lines += ["| compile | cold (s) | cached (s) |", "|---|---|---|"]
    for what in ("train", "track"):
      if what in c:
        lines.append(f"| {what} step | {c[what]['cold_s']:.1f} | {c[what]['cached_s']:.1f} |")
    lines.append("")
  if "train" in report:
    lines += ["| batch | step (ms) | samples/s | MFU | fusions |", "|---|---|---|---|---|"]
    for r in report["train"]:
      mfu = f"{r['mfu']:.1%}" if r.get("mfu") is not None else "n/a"
      lines.append(f"| {r['batch']} | {r['step_s'] * 1e3:.1f} | {r['samples_per_s']:.0f} | {mfu} | {r['fusions']} |")
    lines.append("")
  if "kernels" in report:
    k = report["kernels"]
    lines += [f"Kernels per train step (batch {k['batch']}, {k['source']}): {k['kernels_per_step']:.0f}", "",
              "| kernel | calls/step | us/step |", "|---|---|---|"]
    lines += [f"| `{t['name'][:60]}` | {t['calls_per_step']:.0f} | {t['us_per_step']:.0f} |" for t in k["top10"]]
    lines.append("")
  if "track" in report:
    for r in (report["track"]["single"], report["track"].get("batched")):
      if r:
        lines.append(f"- tracker, {r['slots']} stream(s): device step {r['step_fps']:.0f} frames/s, "
                     f"whole loop {r['loop_fps']:.0f} frames/s")
    lines.append("")
  if "eval" in report:
    e = report["eval"]
    lines += [f"`bench eval` ({e.get('sequences')} sequences of {e.get('frames')} frames, "
              f"{'x'.join(map(str, e.get('frame_size') or ()))} {e.get('data')}):", "",
              "| run | frames/s | CPU ms/frame |", "|---|---|---|"]
    lines += [f"| {name} | {_num(r.get('frames_per_s'))} | {_num(r.get('cpu_ms_per_frame'), 1)} |"
              for name, r in (e.get("runs") or {}).items()]
    lines.append("")
  if "data" in report:
    d = report["data"]
    lines += [f"- input pipeline: {_num(d.get('samples_per_s'))} samples/s on {d.get('cpus')} cores vs the "
              f"train step's {_num(d.get('train_samples_per_s'))} samples/s", ""]
  if "language" in report:
    lines += ["| language recipe batch | samples/s |", "|---|---|"]
    lines += [f"| {r['batch']} | {_num(r['samples_per_s'])} |" for r in report["language"]["rows"]]
    lines.append("")
  for part, err in report.get("errors", {}).items():
    lines.append(f"- {part}: FAILED: {err}")
  return "\n".join(lines) + "\n"


def run(config_spec: str = "configs/base.py", overrides=(), *, out: str = "accel_report",
        small: bool = False, parts: tuple = PARTS, train_batches=(32, 64, 128), track_slots: int = 64,
        language_batches=(64, 256, 1024), timeout: float = 600.0) -> dict:
  """Runs the parts in order; returns the report dict (also DIR/accel.json and DIR/accel.md)."""
  overrides = list(overrides)
  if small:
    config_spec = "configs/tiny.py"
    train_batches, track_slots, language_batches = (2,), 2, (4,)
  os.makedirs(out, exist_ok=True)
  work = tempfile.mkdtemp(prefix="satracker-accel-")
  report: dict = {"bench": "accel", "config": config_spec, "overrides": overrides, "small": small,
                  "errors": {}, "seconds": {}}
  steps = "2" if small else "10"

  def save():
    utils.write_json(os.path.join(out, "accel.json"), report)
    with open(os.path.join(out, "accel.md"), "w") as f:
      f.write(_markdown(report))

  def compile_part():
    result = {}
    cache = os.path.join(work, "fresh_cache")
    train_opts = ["--batch", str(train_batches[0]), "--steps", "1", "--warmup", "0"]
    track_opts = ["--frames", "2", "--frame-size", "160x120"]
    for what, name, opts in (("train", "train", train_opts), ("track", "track", track_opts)):
      # The same command twice in one fresh cache: the first process compiles, the second loads.
      cold = _bench(name, config_spec, overrides, opts, work, timeout, cache=cache)
      cached = _bench(name, config_spec, overrides, opts, work, timeout, cache=cache)
      result[what] = {"cold_s": cold["compile_s"], "cached_s": cached["compile_s"],
                      "second_from_cache": cached["compile"]["cached"]}
    return result

  steps_list: dict[str, Callable[[], object]] = {
      "environment": lambda: _environment(config_spec, overrides),
      "compile": compile_part,
      "train": lambda: [_bench("train", config_spec, overrides, ["--batch", str(b), "--steps", steps],
                               work, timeout) for b in train_batches],
      "kernels": lambda: _kernels(config_spec, overrides, train_batches[0], steps=2 if small else 3),
      "track": lambda: _bench("track", config_spec, overrides,
                              ["--frames", "4" if small else "200", "--parallel", str(track_slots),
                               "--frame-size", "160x120" if small else "1280x720"], work, timeout),
      "eval": lambda: _bench("eval", config_spec, overrides,
                             ["--sequences", "2", "--frames", "4", "--frame-size", "160x120", "--parallel", "2"]
                             if small else [], work, timeout),
      "data": lambda: dict(_bench("data", config_spec, overrides,
                                  ["--batches", "2", "--sequences", "2", "--frame-size", "160x120", "--workers", "1"]
                                  if small else ["--frame-size", "1280x720"], work, timeout),
                           cpus=utils.usable_cpu_count(),
                           train_samples_per_s=(report.get("train") or [{}])[0].get("samples_per_s")),
      "language": lambda: _language(language_batches, 4 if small else 60, small, work, timeout),
  }
  try:
    for part in parts:
      t0 = time.perf_counter()
      try:
        report[part] = steps_list[part]()
      except Exception as e:  # noqa: BLE001  (a failed part is reported; the others still run)
        report["errors"][part] = f"{type(e).__name__}: {str(e)[:300]}"
      report["seconds"][part] = time.perf_counter() - t0
      save()
      print(f"[accel] {part}: {'FAILED' if part in report['errors'] else 'done'} in "
            f"{report['seconds'][part]:.0f} s", flush=True)
  finally:
    shutil.rmtree(work, ignore_errors=True)
  print(_markdown(report))
  return report
