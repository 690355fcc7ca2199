"""Activation sharding: the batch dimension over `data x fsdp`, declared by the model itself.

Parameters and optimizer state are sharded over `fsdp` (train/sharding.py). Left to itself, XLA's
sharding propagation may answer a sharded weight by splitting the activations along features
(tensor parallelism) instead of gathering the weight. Pinning every stage's activations to the
batch axes leaves one consistent choice: gather each weight for its layer, reduce-scatter its
gradient, i.e. ZeRO-3 by construction.

The constraint applies only while a mesh with both axes is in context (the train step enters
`jax.sharding.use_abstract_mesh(mesh.abstract_mesh)`); the tracker and plain `model.apply` run
without one, and then nothing changes.
"""
from __future__ import annotations

import math

import jax
from jax.sharding import PartitionSpec as P

# The mesh axes the batch dimension is split over (train/sharding.py builds the mesh).
BATCH_AXES = ("data", "fsdp")


def shard_batch(x: jax.Array) -> jax.Array:
  """x with its leading (batch) dim sharded over data x fsdp and every other dim replicated.

  A batch that does not divide by the number of devices (e.g. a small gradient-accumulation
  micro-batch) is left to XLA rather than padded.
  """
  mesh = jax.sharding.get_abstract_mesh()
  if mesh.empty or not set(BATCH_AXES) <= set(mesh.axis_names):
    return x
  devices = math.prod(mesh.shape[a] for a in BATCH_AXES)
  if devices == 1 or x.shape[0] % devices:
    return x
  return jax.lax.with_sharding_constraint(x, P(BATCH_AXES))
