"""Device mesh, parameter/batch shardings and multi-host start-up.

The mesh has two axes: `data` (pure data parallelism) and `fsdp` (data parallelism whose replicas
also split every large parameter and its optimizer moments, ZeRO-3 style). The batch dimension is
sharded over both axes, so the global batch must divide by data*fsdp; inside the model the
activations are pinned to the same axes (models/partitioning.py), so fsdp is ZeRO-3 by
construction: each weight is gathered for its layer and its gradient reduce-scattered.
"""
from __future__ import annotations

import os
from typing import Any, Mapping

import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec as P

from satracker_jax.models.partitioning import BATCH_AXES

MESH_AXES = ("data", "fsdp")
# Leaves smaller than this stay replicated: sharding a LayerNorm scale saves nothing and costs an
# all-gather per use.
MIN_FSDP_SIZE = 2 ** 12


def maybe_initialize_distributed(coordinator: str = "", num_processes: int = 0,
                                 process_id: int = -1, local_device_ids: str = "") -> bool:
  """Starts JAX's multi-controller runtime when flags or the environment ask for it.

  Explicit flags win; otherwise `SATRACKER_DISTRIBUTED=1` (set by every launch/ script: the job
  spans several processes, whatever the platform), `JAX_COORDINATOR_ADDRESS`, a SLURM job step with
  several tasks, or a multi-worker TPU VM let `jax.distributed.initialize()` detect the cluster
  itself (JAX's own detection: Cloud TPU metadata server, SLURM, Open MPI, GKE). Must run before
  anything touches a device. Returns True when initialised.

  `local_device_ids` ("0,1,2,3"): the accelerators this process drives. Under SLURM, JAX otherwise
  assumes one process per GPU and takes GPU SLURM_LOCALID only.
  """
  ids = [int(i) for i in local_device_ids.split(",")] if local_device_ids else None
  if coordinator:
    jax.distributed.initialize(coordinator_address=coordinator, num_processes=num_processes or None,
                               process_id=None if process_id < 0 else process_id,
                               local_device_ids=ids)
    return True
  env = os.environ
  auto = (
      env.get("SATRACKER_DISTRIBUTED", "") == "1"
      or "JAX_COORDINATOR_ADDRESS" in env
      or int(env.get("SLURM_NTASKS", env.get("SLURM_STEP_NUM_TASKS", "1")) or 1) > 1
      or "," in env.get("TPU_WORKER_HOSTNAMES", "")  # set on every worker of a multi-host TPU slice
  )
  if auto:
    jax.distributed.initialize(local_device_ids=ids)
    return True
  return False


def make_mesh(mesh_config: Mapping[str, int], devices=None) -> Mesh:
  """`{"data": d, "fsdp": f}` with at most one -1 (= all remaining devices) -> a 2-D Mesh."""
  devices = list(jax.devices() if devices is None else devices)
  n = len(devices)
  sizes = [int(mesh_config.get(a, 1)) for a in MESH_AXES]
  if sizes.count(-1) > 1:
    raise ValueError(f"train.mesh: at most one axis may be -1, got {dict(zip(MESH_AXES, sizes))}")
  known = int(np.prod([s for s in sizes if s != -1]))
  if -1 in sizes:
    if n % known:
      raise ValueError(f"train.mesh {dict(zip(MESH_AXES, sizes))}: {n} devices do not divide by {known}")
    sizes[sizes.index(-1)] = n // known
  if int(np.prod(sizes)) != n:
    raise ValueError(f"train.mesh {dict(zip(MESH_AXES, sizes))} needs {int(np.prod(sizes))} devices, "
                     f"have {n}")
  # Auto axes: the model code is written for GSPMD propagation, not sharding-in-types: we pin the
  # state and batch shardings, the model pins its activations to the batch axes, and XLA
  # propagates the rest.
  return jax.make_mesh(tuple(sizes), MESH_AXES, axis_types=(AxisType.Auto,) * len(MESH_AXES),
                       devices=devices)


def fsdp_spec(shape, fsdp_size: int) -> P:
  """Shard the largest dim divisible by the fsdp size; replicate scalars, vectors and small leaves."""
  if fsdp_size == 1 or len(shape) < 2 or int(np.prod(shape)) < MIN_FSDP_SIZE:
    return P()
  # Largest first; ties go to the last dim (the output features of a Dense kernel).
  order = sorted(range(len(shape)), key=lambda i: (shape[i], i), reverse=True)
  for i in order:
    if shape[i] % fsdp_size == 0:
      spec = [None] * len(shape)
      spec[i] = "fsdp"
      return P(*spec)
  return P()


def state_shardings(abstract_tree: Any, mesh: Mesh) -> Any:
  """NamedShardings for every leaf of a (params / optimizer state / ...) tree of shapes.

  The rule is shape-based, so Adam's moments land exactly where their parameters are.
  """
  fsdp = mesh.shape["fsdp"]
  return jax.tree.map(lambda x: NamedSharding(mesh, fsdp_spec(x.shape, fsdp)), abstract_tree)


def batch_sharding(mesh: Mesh, ndim: int) -> NamedSharding:
  return NamedSharding(mesh, P(BATCH_AXES, *([None] * (ndim - 1))))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def global_batch(local_batch: Mapping[str, np.ndarray], mesh: Mesh) -> dict:
  """Host-local numpy rows -> global jax.Arrays sharded over (data, fsdp) on the batch dim.

  Each process passes only its own rows; JAX stitches them into one array whose global batch is
  process_count times the local one.
  """
  out = {}
  for k, v in local_batch.items():
    v = np.asarray(v)
    global_shape = (v.shape[0] * jax.process_count(),) + v.shape[1:]
    out[k] = jax.make_array_from_process_local_data(batch_sharding(mesh, v.ndim), v, global_shape)
  return out
