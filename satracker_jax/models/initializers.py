"""Parameter initialisers that say what they draw, so a model can be initialised on the host.

Every parameter of the model is created through one of these (the layers below pass them to
Flax). Each returns its value boxed with its rule (`Initialised`, a Flax `AxisMetadata`, unboxed
by `self.param` as usual): `("truncated_normal", stddev)` or `("constant", value)`. The rule lets
`model_io.host_variables` draw every parameter with numpy from the abstract shapes alone, instead
of compiling a program with one random-number kernel per tensor (XLA:CPU compiles each for about
0.3 to 0.8 s: base's initialisation took 43 s, as long as its train step's compile).
`model.init` keeps working as before (Flax's own initialisers compute the boxed values).
"""
from __future__ import annotations

import math
from typing import Any

import flax.linen as nn
import jax.numpy as jnp
import numpy as np
from flax import struct
from flax.core import meta

# Flax's variance-scaling "truncated_normal" divides the stddev by the std of a unit normal
# truncated to [-2, 2], so that the truncated draw has the requested variance.
_TRUNCATED_STD = .87962566103423978


@struct.dataclass
class Initialised(meta.AxisMetadata):
  """A parameter value with the rule that drew it."""
  value: Any
  rule: tuple = struct.field(pytree_node=False)

  def unbox(self):
    return self.value

  def replace_boxed(self, val):
    return self.replace(value=val)

  def add_axis(self, index, params):
    return self

  def remove_axis(self, index, params):
    return self


def truncated_normal(stddev: float):
  """stddev * a unit normal truncated to [-2, 2] (Flax's / timm's trunc_normal(std))."""
  draw = nn.initializers.truncated_normal(stddev)

  def init(key, shape, dtype=jnp.float32):
    return Initialised(draw(key, shape, dtype), ("truncated_normal", float(stddev)))
  return init


def lecun_normal():
  """Flax's default kernel initialiser (variance scaling 1, fan_in, truncated normal)."""
  def init(key, shape, dtype=jnp.float32):
    fan_in = math.prod(shape[:-1])
    return truncated_normal(math.sqrt(1.0 / fan_in) / _TRUNCATED_STD)(key, shape, dtype)
  return init


def constant(value: float):
  def init(key, shape, dtype=jnp.float32):
    del key
    return Initialised(jnp.full(shape, value, dtype), ("constant", float(value)))
  return init


zeros, ones = constant(0.0), constant(1.0)
# Kernels and embeddings are PyTorch-style trunc-normal(0.02), so a from-scratch model starts like
# timm / BERT ones.
dense_init = truncated_normal(0.02)


def Dense(features, **kw) -> nn.Dense:  # noqa: N802  (a layer constructor)
  return nn.Dense(features, kernel_init=kw.pop("kernel_init", dense_init), bias_init=zeros, **kw)


def LayerNorm(**kw) -> nn.LayerNorm:  # noqa: N802
  return nn.LayerNorm(scale_init=ones, bias_init=zeros, **kw)


def Conv(features, kernel_size, **kw) -> nn.Conv:  # noqa: N802
  return nn.Conv(features, kernel_size, kernel_init=lecun_normal(), bias_init=zeros, **kw)


def BatchNorm(**kw) -> nn.BatchNorm:  # noqa: N802
  return nn.BatchNorm(scale_init=ones, bias_init=zeros, **kw)


def Embed(num_embeddings, features, **kw) -> nn.Embed:  # noqa: N802
  return nn.Embed(num_embeddings, features, embedding_init=dense_init, **kw)


def draw(rule: tuple, shape: tuple, rng: np.random.Generator) -> np.ndarray:
  """The rule's value for `shape` with numpy (float32)."""
  kind, arg = rule
  if kind == "constant":
    return np.full(shape, arg, np.float32)
  if kind == "truncated_normal":
    z = rng.standard_normal(shape, dtype=np.float32)
    flat = z.reshape(-1)
    redraw = np.flatnonzero(np.abs(flat) >= 2.0)
    while redraw.size:  # redraw the ~4.6% outside [-2, 2] until none is left
      fresh = rng.standard_normal(redraw.size, dtype=np.float32)
      flat[redraw] = fresh
      redraw = redraw[np.abs(fresh) >= 2.0]
    z *= np.float32(arg)
    return z
  raise ValueError(f"unknown initialiser rule {rule!r}")
