"""`satracker bench scale --config C --devices N --mesh data=a,fsdp=b [--batch B] [--remat P]`.

Sizes a pod job before paying for one: compiles (never runs) the real train step (the one
`satracker train` jits: same shardings, donation, optimizer, activation constraints) for N fake
CPU devices and reports, per device, what XLA's compiled program needs:

- memory (`compiled.memory_analysis()`): arguments (the state shard + the batch shard), outputs,
  temporaries (activations kept for the backward pass, gradients, workspace) and the donated
  bytes the outputs reuse; peak = arguments + outputs - aliased + temporaries. Also the exact
  parameter / optimizer-state bytes per device from the shardings (they fall as 1/fsdp);
- FLOPs per device (XLA's cost analysis of the step with its loops unrolled: bench/train.py);
- every collective in the compiled HLO by kind (all-gather, reduce-scatter, all-reduce,
  all-to-all, collective-permute): count and bytes of the full (unsharded) tensors they move;
- the compile time.

These are the CPU compiler's figures: TPU/GPU compilers fuse, schedule and may rematerialise
differently, so treat memory as an estimate of the order that decides "fits or not", not a
byte-exact prediction. Collectives inside loops (layer scans, accumulation) count once per trip.

Fake devices exist only if `--xla_force_host_platform_device_count` is in XLA_FLAGS before JAX
starts, so the compile runs in a subprocess, which also selects XLA:CPU's memory-minimising
scheduler (`CPU_SCHEDULER_FLAG`): with the default one rematerialisation saves nothing on CPU.
"""
from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
import tempfile
import time
from typing import Mapping, Sequence

from satracker_jax import config_utils

GIB = 2 ** 30
COLLECTIVES = ("all-gather", "reduce-scatter", "all-reduce", "all-to-all", "collective-permute")
_DTYPE_BYTES = {"pred": 1, "s8": 1, "u8": 1, "s16": 2, "u16": 2, "f16": 2, "bf16": 2, "s32": 4, "u32": 4,
                "f32": 4, "s64": 8, "u64": 8, "f64": 8, "c64": 8, "c128": 16}
_ARRAY = re.compile(r"\b(" + "|".join(_DTYPE_BYTES) + r")\[([\d,]*)\]")
_OP = re.compile(r"=\s*(?P<result>.*?)\s(?P<kind>" + "|".join(COLLECTIVES) + r")(?P<start>-start)?\((?P<attrs>.*)$")


def parse_mesh(text: str) -> dict:
  """'data=8,fsdp=8' -> {"data": 8, "fsdp": 8}."""
  mesh = {}
  for part in filter(None, (p.strip() for p in text.split(","))):
    name, sep, value = part.partition("=")
    if not sep or name not in ("data", "fsdp") or not value.strip().lstrip("-").isdigit():
      raise config_utils.ConfigError(f"--mesh {text!r}: expected data=A,fsdp=B (integers, one may be -1)")
    mesh[name] = int(value)
  return mesh


def _arrays_bytes(text: str) -> list:
  """Bytes of each array shape written in `text` (e.g. a tuple result), in order."""
  return [_DTYPE_BYTES[dtype] * math.prod(int(d) for d in dims.split(",") if d)
          for dtype, dims in _ARRAY.findall(text)]


def _group_size(attrs: str) -> int:
  """Devices per replica group, from any of HLO's spellings of `replica_groups`."""
  named = re.search(r"replica_groups=mesh\[([^\]]*)\]\s*\{([^}]*)\}", attrs)
  if named:  # mesh['axis_0'=4,'axis_1'=2] {'axis_0'}
    sizes = dict(re.findall(r"'([^']+)'=(\d+)", named.group(1)))
    return math.prod(int(sizes[a]) for a in re.findall(r"'([^']+)'", named.group(2)))
  iota = re.search(r"replica_groups=\[(\d+),(\d+)\]<=", attrs)
  if iota:  # [num_groups, group_size]<=[devices]
    return int(iota.group(2))
  explicit = re.search(r"replica_groups=\{\{([\d,]*)\}", attrs)
  if explicit:  # {{0,1,2,3},{4,5,6,7}}
    return len(explicit.group(1).split(","))
  return 1


_COMPUTATION = re.compile(r"^(?:ENTRY )?%(\S+) \(.*\{\s*$")
_CALLEE = re.compile(r"\b(calls|to_apply|body|condition)=%([\w.\-]+)")
_TRIP_COUNT = re.compile(r'"known_trip_count":\{"n":"(\d+)"\}')


def collectives_in_hlo(hlo_text: str) -> dict:
  """{kind: {"count", "bytes"}} of the collectives a compiled HLO module executes per step.

  bytes = the full tensor each op works on, per device: an all-gather's result, a
  reduce-scatter's operand (result x group size), the result of the others (what an all-reduce
  reduces, what an all-to-all or a permute sends). Compiled HLO prints operands without shapes,
  hence the result. An async `-start` op returns (operands, results): the second half of its tuple
  is counted. An op inside a loop body counts once per trip (`known_trip_count`; the scans over
  layers and micro-batches have one), so the totals are per step.
  """
  ops, callees, entry, current = {}, {}, None, None
  for line in hlo_text.splitlines():
    header = _COMPUTATION.match(line)
    if header:
      current = header.group(1)
      entry = current if line.startswith("ENTRY") else entry
      ops.setdefault(current, [])
      callees.setdefault(current, [])
      continue
    if current is None:
      continue
    for role, callee in _CALLEE.findall(line):
      trips = _TRIP_COUNT.search(line) if role == "body" else None
      callees[current].append((callee, int(trips.group(1)) if trips else 1))
    m = _OP.search(line)
    if not m:
      continue
    arrays = _arrays_bytes(m.group("result"))
    size = sum(arrays[len(arrays) // 2:] if m.group("start") else arrays)
    if m.group("kind") == "reduce-scatter":
      size *= _group_size(m.group("attrs"))
    ops[current].append((m.group("kind"), size))

  times = {}

  def visit(computation, factor):
    times[computation] = times.get(computation, 0) + factor
    for callee, trips in callees.get(computation, ()):
      visit(callee, factor * trips)

  if entry is not None:
    visit(entry, 1)
  found = {k: {"count": 0, "bytes": 0} for k in COLLECTIVES}
  for computation, listed in ops.items():
    for kind, size in listed:
      n = times.get(computation, 1)
      found[kind]["count"] += n
      found[kind]["bytes"] += n * size
  return found


def _sharded_bytes(abstract_tree, shardings) -> int:
  import jax  # noqa: PLC0415
  total = 0
  for leaf, sharding in zip(jax.tree.leaves(abstract_tree), jax.tree.leaves(shardings)):
    total += math.prod(sharding.shard_shape(leaf.shape)) * leaf.dtype.itemsize
  return total


def _batch_specs(model_config, batch: int, mesh) -> dict:
  import jax  # noqa: PLC0415
  import jax.numpy as jnp  # noqa: PLC0415

  from satracker_jax.train import state as state_lib  # noqa: PLC0415
  m = model_config
  t, s, L = m.template_size, m.search_size, m.max_text_len
  shapes = {
      "template": ((batch, t, t, 3), jnp.uint8), "template_box": ((batch, 4), jnp.float32),
      "search": ((batch, s, s, 3), jnp.uint8), "search_box": ((batch, 4), jnp.float32),
      "text_ids": ((batch, L), jnp.int32), "text_mask": ((batch, L), jnp.int32),
      "replaced": ((batch,), jnp.int32),
  }
  shardings = state_lib.batch_shardings(mesh, tuple(shapes))
  return {k: jax.ShapeDtypeStruct(shape, dtype, sharding=shardings[k]) for k, (shape, dtype) in shapes.items()}


def _compile_here(config_spec: str, overrides: Sequence[str], devices: int, mesh: Mapping[str, int],
                  batch: int, remat: str, memory_gib: float) -> dict:
  import jax  # noqa: PLC0415

  from satracker_jax import config_utils, model_io  # noqa: PLC0415
  from satracker_jax.bench import train as bench_train  # noqa: PLC0415
  from satracker_jax.train import loop  # noqa: PLC0415
  from satracker_jax.train import optimizer as optim_lib  # noqa: PLC0415
  from satracker_jax.train import sharding as sharding_lib  # noqa: PLC0415
  from satracker_jax.train import state as state_lib  # noqa: PLC0415

  overrides = list(overrides) + ([f"model.remat={remat}"] if remat else [])
  config = config_utils.load_config(config_spec, overrides)
  config.train.mesh.update(dict(mesh))
  batch = int(batch or config.train.batch_size)
  if batch % devices:
    raise ValueError(f"global batch {batch} does not divide by {devices} devices; give --batch "
                     f"(e.g. {32 * devices} for 32 per device)")
  config.train.batch_size = batch
  config = loop.prepare_config(config)
  cpu = jax.devices("cpu")
  mesh_obj = sharding_lib.make_mesh(config.train.mesh, devices=cpu[:devices])
  model = loop.default_model(config)
  abstract_vars = model_io.model_shapes(model, config.model)
  tx, schedule = optim_lib.build_optimizer(config, abstract_vars["params"], fsdp=mesh_obj.shape["fsdp"])
  abstract = state_lib.abstract_state(model, config, tx)
  state_sh = sharding_lib.state_shardings(abstract, mesh_obj)
  state_in = state_lib.with_shardings(abstract, state_sh)
  batch_in = _batch_specs(config.model, batch, mesh_obj)
  jit_step = lambda cfg, mdl: state_lib.jit_train_step(
      state_lib.make_train_step(mdl, tx, schedule, loop.default_loss_fn(cfg), cfg), state_sh, mesh_obj,
      tuple(batch_in))
  step = jit_step(config, model)

  t0 = time.perf_counter()
  lowered = step.lower(state_in, batch_in)
  lower_s = time.perf_counter() - t0
  t0 = time.perf_counter()
  compiled = lowered.compile()
  compile_s = time.perf_counter() - t0

  mem = compiled.memory_analysis()
  argument, output = int(mem.argument_size_in_bytes), int(mem.output_size_in_bytes)
  alias, temp = int(mem.alias_size_in_bytes), int(mem.temp_size_in_bytes)
  peak = argument + output - alias + temp
  # Loops (layer scans, accumulation) count once in XLA's cost analysis: count them unrolled.
  flops = bench_train.step_flops(lambda cfg: jit_step(cfg, loop.default_model(cfg)).lower(state_in, batch_in),
                                 config, devices)
  param_bytes = _sharded_bytes(abstract["params"], state_sh["params"])
  opt_bytes = _sharded_bytes(abstract["opt_state"], state_sh["opt_state"])
  return {
      "bench": "scale", "config": config_spec, "overrides": overrides,
      "devices": devices, "mesh": {k: int(v) for k, v in mesh_obj.shape.items()},
      "global_batch": batch, "per_device_batch": batch // devices,
      "remat": config.model.remat, "bf16": bool(config.train.bf16),
      "grad_accum_steps": int(config.train.get("grad_accum_steps", 1) or 1),
      "params_m": state_lib.param_count(abstract["params"]) / 1e6,
      "lower_s": lower_s, "compile_s": compile_s,
      "memory_per_device": {
          "params_bytes": param_bytes, "opt_state_bytes": opt_bytes,
          "argument_bytes": argument, "output_bytes": output, "alias_bytes": alias,
          "temp_bytes": temp, "peak_bytes": peak,
      },
      "memory_limit_gib": memory_gib, "fits": peak <= memory_gib * GIB,
      "flops_per_device": flops, "xla_counted_flops_per_device": bench_train.xla_flops(compiled),
      "collectives": collectives_in_hlo(compiled.as_text()),
      "platform_compiled_for": "cpu", "xla_flags": os.environ.get("XLA_FLAGS", ""),
      "jax_version": jax.__version__,
  }


# XLA:CPU's default scheduler orders for concurrency and keeps every rematerialised activation
# alive (remat then saves nothing); the memory-minimising one is closer to the memory-aware
# scheduling of the accelerator compilers, so its figures are the ones that say whether a job fits.
CPU_SCHEDULER_FLAG = "--xla_cpu_enable_concurrency_optimized_scheduler=false"


def _in_subprocess(config_spec, overrides, devices, mesh, batch, remat, memory_gib) -> dict:
  """Runs `_compile_here` in a fresh interpreter with `devices` fake CPU devices (the device count
  and XLA's flags are fixed when JAX starts, so this process's own JAX cannot be reused)."""
  env = dict(os.environ)
  flags = re.sub(r"--xla_force_host_platform_device_count=\d+", "", env.get("XLA_FLAGS", ""))
  env["XLA_FLAGS"] = f"{flags} --xla_force_host_platform_device_count={devices} {CPU_SCHEDULER_FLAG}".strip()
  env["JAX_PLATFORMS"] = "cpu"
  with tempfile.TemporaryDirectory() as tmp:
    out = os.path.join(tmp, "result.json")
    args = json.dumps(dict(config_spec=config_spec, overrides=list(overrides), devices=devices,
                           mesh=dict(mesh), batch=batch, remat=remat, memory_gib=memory_gib, out=out))
    proc = subprocess.run([sys.executable, "-m", "satracker_jax.bench.scale", args], env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if proc.returncode or not os.path.exists(out):
      raise RuntimeError(f"bench scale: the {devices}-device compile failed (exit {proc.returncode}):\n"
                         + proc.stdout[-4000:])
    with open(out) as f:
      return json.load(f)


def run(config_spec: str = "configs/tiny.py", overrides=(), *, devices: int = 8, mesh="data=-1,fsdp=1",
        batch: int = 0, remat: str = "", memory_gib: float = 16.0) -> dict:
  """Compiles the train step of `config_spec` (+ overrides) for `devices` fake CPU devices.

  mesh: {"data": a, "fsdp": b} or "data=a,fsdp=b"; batch: global batch (0: the config's);
  remat: "" (the config's) or none|full|dots; memory_gib: per-device memory the job must fit.
  The compile runs in a subprocess. Prints a table; returns the JSON dict (sizes per device).
  """
  from satracker_jax import utils  # noqa: PLC0415

  mesh = parse_mesh(mesh) if isinstance(mesh, str) else dict(mesh)
  # Cheap checks here, before a subprocess spends a minute starting up.
  known = math.prod(v for v in mesh.values() if v != -1)
  if devices % known or (-1 not in mesh.values() and known != devices):
    raise config_utils.ConfigError(f"--mesh {mesh} does not fit {devices} devices")
  if batch and batch % devices:
    raise config_utils.ConfigError(f"--batch {batch} does not divide by {devices} devices (e.g. {32 * devices} for 32 per device)")
  result = _in_subprocess(config_spec, tuple(overrides), devices, mesh, batch, remat, memory_gib)
  print(utils.format_table(["bench scale", "value"], table_rows(result)))
  return result


def table_rows(r: dict) -> list:
  gib = lambda b: f"{b / GIB:.3f}"
  m = r["memory_per_device"]
  rows = [
      ("config", r["config"]), ("devices", r["devices"]), ("mesh", str(r["mesh"])),
      ("global batch (per device)", f"{r['global_batch']} ({r['per_device_batch']})"),
      ("remat", r["remat"]), ("bf16", r["bf16"]), ("params (M)", round(r["params_m"], 2)),
      ("compile (s)", round(r["compile_s"], 1)),
      ("params GiB/device", gib(m["params_bytes"])), ("optimizer GiB/device", gib(m["opt_state_bytes"])),
      ("arguments GiB/device", gib(m["argument_bytes"])), ("outputs GiB/device", gib(m["output_bytes"])),
      ("donated (aliased) GiB/device", gib(m["alias_bytes"])), ("temporaries GiB/device", gib(m["temp_bytes"])),
      ("peak GiB/device", gib(m["peak_bytes"])),
      (f"fits {r['memory_limit_gib']:g} GiB", r["fits"]),
      ("TFLOPs/step/device", round(r["flops_per_device"] / 1e12, 3) if r["flops_per_device"] else "n/a"),
  ]
  for kind, c in r["collectives"].items():
    rows.append((f"{kind} (count, GiB)", f"{c['count']}, {c['bytes'] / GIB:.3f}"))
  return rows


def _main(argv: Sequence[str]) -> int:
  args = json.loads(argv[0])
  out = args.pop("out")
  from satracker_jax import utils  # noqa: PLC0415
  result = _compile_here(args["config_spec"], args["overrides"], args["devices"], args["mesh"],
                         args["batch"], args["remat"], args["memory_gib"])
  utils.write_json(out, result)
  return 0


if __name__ == "__main__":
  sys.exit(_main(sys.argv[1:]))
