"""`satracker bench train --config C --json FILE [--batch N] [--steps N] [--bf16] [--peak-flops F]`.

Times the real jitted train step (the one `satracker train` runs: same sharding, donation, optimizer)
on in-memory random batches, so neither TensorFlow nor a data set is needed. Reports what makes a
step cheap or dear to build: parameter leaves, fusions in the compiled step (kernels), the host
initialisation time, the compile time and whether it came from the compilation cache.

MFU = matmul FLOPs per step (bench/flops.py: dot_general and convolutions of forward and backward,
counted on the step's jaxpr with loops multiplied out, the same on every platform) / step time /
peak FLOP/s of the device. Per device = global / devices. Peaks are dense bf16; an f32 run is
therefore reported against the bf16 peak too. XLA's own count of the compiled step is kept as
`xla_counted_flops_per_device` where the backend has one (it counts a loop body once; `step_flops`
lowers a loop-free variant for `bench scale`).
"""
from __future__ import annotations

import copy
import re
import time

import numpy as np

# Dense bf16 peak FLOP/s per device, matched against `device_kind` (first match wins).
PEAK_FLOPS = (
    ("H200", 989e12), ("H100", 989e12), ("A100", 312e12),
    ("TPU v5p", 459e12), ("TPU v5 lite", 197e12), ("TPU v5e", 197e12), ("TPU v4", 275e12),
)


def peak_flops_for(device_kind: str) -> float | None:
  for name, peak in PEAK_FLOPS:
    if name.lower() in device_kind.lower():
      return peak
  return None


def random_batch(model_config, batch: int, seed: int = 0) -> dict:
  rng = np.random.default_rng(seed)
  t, s, L = model_config.template_size, model_config.search_size, model_config.max_text_len
  box = np.concatenate([rng.uniform(0.3, 0.7, (batch, 2)), rng.uniform(0.1, 0.4, (batch, 2))], -1)
  mask = (np.arange(L)[None] < rng.integers(4, L, (batch, 1))).astype(np.int32)
  return {
      "template": rng.integers(0, 256, (batch, t, t, 3), dtype=np.uint8),
      "template_box": np.tile(np.array([[0.5, 0.5, 0.5, 0.5]], np.float32), (batch, 1)),
      "search": rng.integers(0, 256, (batch, s, s, 3), dtype=np.uint8),
      "search_box": box.astype(np.float32),
      "text_ids": (rng.integers(1, model_config.bert.vocab_size, (batch, L)) * mask).astype(np.int32),
      "text_mask": mask,
  }


def xla_flops(stage) -> float | None:
  """FLOPs from XLA's cost analysis of a compiled or lowered step (None if the backend has none)."""
  try:
    cost = stage.cost_analysis()
  except Exception:  # pragma: no cover - backend without cost analysis
    return None
  if isinstance(cost, (list, tuple)):  # older JAX: one dict per module
    cost = cost[0] if cost else None
  return float(cost["flops"]) if cost and cost.get("flops") is not None else None


def count_fusions(compiled) -> int:
  """Fusion instructions in a compiled program's HLO (each is one kernel launch on a GPU, before
  XLA's command buffers; on CPU one generated loop nest or library call)."""
  return len(re.findall(r"= [^=]*? fusion\(", compiled.as_text()))


def step_flops(lower_step, config, num_devices: int) -> float | None:
  """FLOPs per device of one train step, loops unrolled (see the module docstring).

  `lower_step(config) -> jax.stages.Lowered` lowers the train step of a config variant.
  """
  flat = copy.deepcopy(config)
  flat.train.grad_accum_steps = 1
  flat.model.scan_layers = False
  flops = xla_flops(lower_step(flat))
  return flops / num_devices if flops is not None else None


def run(config_spec: str = "configs/tiny.py", overrides=(), *, batch: int = 0, steps: int = 10,
        warmup: int = 2, bf16: bool = False, peak_flops: float = 0.0) -> dict:
  """Times the train step of `config_spec` (+ overrides); prints a table, returns the JSON dict.

  `batch` (0: the config's) is the global batch; `peak_flops` per device overrides PEAK_FLOPS.
  """
  import jax  # noqa: PLC0415

  from satracker_jax import compile_cache, config_utils, model_io, utils  # noqa: PLC0415
  from satracker_jax.bench.flops import function_flops  # noqa: PLC0415
  from satracker_jax.train import loop  # noqa: PLC0415
  from satracker_jax.train import optimizer as optim_lib  # noqa: PLC0415
  from satracker_jax.train import sharding as sharding_lib  # noqa: PLC0415
  from satracker_jax.train import state as state_lib  # noqa: PLC0415

  config = config_utils.load_config(config_spec, overrides)
  if batch:
    config.train.batch_size = batch
  if bf16:
    config.train.bf16 = True
  config = loop.prepare_config(config)
  mesh = sharding_lib.make_mesh(config.train.mesh)
  batch_size = int(config.train.batch_size)
  model = loop.default_model(config)
  loss_fn = loop.default_loss_fn(config)
  abstract_vars = model_io.model_shapes(model, config.model)
  tx, schedule = optim_lib.build_optimizer(config, abstract_vars["params"], fsdp=mesh.shape["fsdp"])
  state_sh = sharding_lib.state_shardings(state_lib.abstract_state(model, config, tx), mesh)
  t0 = time.perf_counter()
  state = state_lib.create_sharded_state(model, config, tx, state_sh)
  jax.block_until_ready(state)
  init_s = time.perf_counter() - t0
  device_batch = state_lib.device_batch(random_batch(config.model, batch_size), mesh)
  accum = int(config.train.get("grad_accum_steps", 1) or 1)

  def jit_step(cfg, mdl=model):
    return state_lib.jit_train_step(state_lib.make_train_step(mdl, tx, schedule, loss_fn, cfg),
                                    state_sh, mesh, tuple(device_batch))

  # Tracing + lowering (Python, every process) and XLA's compile (what the persistent cache
  # replaces by a load) are timed apart: their sum is what a user waits for.
  # A second process loads the whole executable (compile_cache.executable): no trace, no lower.
  timings = {}
  with compile_cache.CompileWatch("train step", say=lambda line: print(line, flush=True)) as watch:
    compiled = compile_cache.executable("train step", jit_step(config), (state, device_batch),
                                        loop.step_program_key(config), timings=timings)
  print(watch.line(), flush=True)
  compile_s = watch.seconds
  lower_s = timings.get("trace_lower_s", 0.0)
  xla_compile_s = compile_s - lower_s
  raw_flops = xla_flops(compiled)
  fusions = count_fusions(compiled)
  flat = copy.deepcopy(config)
  flat.train.grad_accum_steps = 1
  flops = function_flops(state_lib.make_train_step(model, tx, schedule, loss_fn, flat), state,
                         device_batch) / mesh.devices.size

  for _ in range(warmup):
    state, metrics = compiled(state, device_batch)
  jax.block_until_ready(state)
  t0 = time.perf_counter()
  for _ in range(steps):
    state, metrics = compiled(state, device_batch)
  jax.block_until_ready((state, metrics))
  step_s = (time.perf_counter() - t0) / max(steps, 1)

  info = utils.machine_info()
  peak = peak_flops or (peak_flops_for(info["device_kind"]) if info["platform"] != "cpu" else None)
  mfu = flops / step_s / peak if (flops and peak) else None
  result = {
      "bench": "train", "config": config_spec, "overrides": list(overrides),
      "batch": batch_size, "steps": steps, "bf16": bool(config.train.bf16), "grad_accum_steps": accum,
      "attention_impl": config.model.attention_impl, "remat": config.model.remat,
      "mesh": {k: int(v) for k, v in mesh.shape.items()},
      "params_m": state_lib.param_count(abstract_vars["params"]) / 1e6,
      "dtype": config.model.dtype, "compute_dtype": loop.default_model(config).config.resolved_dtype,
      "param_leaves": len(jax.tree.leaves(abstract_vars["params"])), "fusions": fusions,
      "init_s": init_s, "compile_s": compile_s, "compile": watch.as_dict(),
      "trace_lower_s": lower_s, "xla_compile_s": xla_compile_s,
      "step_s": step_s, "samples_per_s": batch_size / step_s,
      "flops_per_step_per_device": flops, "xla_counted_flops_per_device": raw_flops,
      "tflops_per_s_per_device": flops / step_s / 1e12 if flops else None,
      "peak_flops_per_device": peak, "mfu": mfu,
      "final_loss": float(metrics["loss"]), "machine": info,
  }
  rows = [
      ("config", config_spec), ("device", f"{info['device_kind']} x{info['num_devices']}"),
      ("mesh", str(result["mesh"])), ("params (M)", round(result["params_m"], 2)),
      ("batch", batch_size), ("compute dtype", result["compute_dtype"]), ("grad accum steps", accum),
      ("parameter leaves", result["param_leaves"]), ("fusions in the compiled step", fusions),
      ("init (s)", round(init_s, 2)),
      ("attention", config.model.attention_impl), ("remat", config.model.remat),
      ("compile (s)", f"{compile_s:.2f} ({'cached' if watch.cached else 'not cached'})"),
      ("  of which trace + lower / XLA (s)", f"{lower_s:.2f} / {xla_compile_s:.2f}"),
      ("step (ms)", round(step_s * 1e3, 2)), ("samples/s", round(result["samples_per_s"], 2)),
      ("matmul GFLOPs/step/device", round(flops / 1e9, 2) if flops else "n/a"),
      ("MFU", f"{mfu:.1%}" if mfu is not None else "n/a (no peak for this device; --peak-flops)"),
  ]
  print(utils.format_table(["train step", "value"], rows))
  return result
