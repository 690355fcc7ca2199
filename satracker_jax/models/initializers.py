"""Parameter initialisers that say what they draw, so a model can be initialised on the host.

Every parameter of the model is created through one of these (the layers below pass them to
Flax). Each returns its value boxed with its rule (`Initialised`, a Flax `AxisMetadata`, unboxed
by `self.param` as usual): `("truncated_normal", stddev)` or `("constant", value)`. The rule lets
`model_io.host_variables` draw every parameter with numpy from the abstract shapes alone, instead
of compiling a program with one random-number kernel per tensor (XLA:CPU compiles each for about
0.3 to 0.8 s: base's initialisation took 43 s, as long as its train step's compile).
`model.init` keeps working as before (Flax's own initialisers compute the boxed values).

The normalisation layers live here too (`LayerNorm`, `BatchNorm`: Flax's variables and values,
one `normalize` with a hand-written backward pass), as the layers every module builds from.
"""
from __future__ import annotations

import functools
import math
from typing import Any

import flax.linen as nn
import jax
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


def _statistics(x, axes):
  xf = x.astype(jnp.float32)
  mean = jnp.mean(xf, axis=axes, keepdims=True)
  return mean, jnp.mean(jnp.square(xf - mean), axis=axes, keepdims=True)


def _affine(x, mean, var, scale, bias, epsilon):
  """(x - mean) / sqrt(var + eps) * scale + bias in float32 (scale, bias over the last axis)."""
  f32 = lambda a: a.astype(jnp.float32)
  return (f32(x) - mean) * jax.lax.rsqrt(var + epsilon) * f32(scale) + f32(bias)


@functools.partial(jax.custom_vjp, nondiff_argnums=(3, 4, 5))
def normalize(x, scale, bias, axes: tuple, epsilon: float, dtype):
  """Normalisation with statistics over `axes` and a per-feature affine (features: the last axis):
  LayerNorm with axes (-1,), training BatchNorm with every axis but the last. Returns the output
  in `dtype` and the statistics (mean, biased var; float32, keepdims), which carry no gradient:
  BatchNorm's running averages read them under `stop_gradient`.

  The same values as Flax's LayerNorm / BatchNorm (float32 statistics, two-pass variance), with a
  hand-written backward pass that keeps only x and the two statistics and recomputes the
  normalised x where it is read. Autodiff of the forward saved every intermediate as an array of
  its own, which XLA:CPU (no multi-output fusion) emits as a kernel each: on the tiny train step a
  LayerNorm forward and backward took 15 kernels with Flax's, 11 with this one.
  """
  return _normalize_fwd(x, scale, bias, axes, epsilon, dtype)[0]


def _normalize_fwd(x, scale, bias, axes, epsilon, dtype):
  mean, var = _statistics(x, axes)
  y = _affine(x, mean, var, scale, bias, epsilon).astype(dtype)
  return (y, mean, var), (x, scale, mean, var)


def _normalize_bwd(axes, epsilon, dtype, residuals, cotangents):
  x, scale, mean, var = residuals
  dy = cotangents[0].astype(jnp.float32)  # the statistics' cotangents are zero (see normalize)
  rstd = jax.lax.rsqrt(var + epsilon)
  xhat = (x.astype(jnp.float32) - mean) * rstd
  scale32 = scale.astype(jnp.float32)
  g = dy * scale32
  lead = tuple(range(x.ndim - 1))
  dscale = jnp.sum(dy * xhat, axis=lead)
  dbias = jnp.sum(dy, axis=lead)
  if tuple(sorted(a % x.ndim for a in axes)) == lead:  # BatchNorm: the same sums, scaled
    count = math.prod(x.shape[:-1])
    mean_g, mean_gx = scale32 * dbias / count, scale32 * dscale / count
  else:
    mean_g, mean_gx = jnp.mean(g, axis=axes, keepdims=True), jnp.mean(g * xhat, axis=axes, keepdims=True)
  dx = rstd * (g - mean_g - xhat * mean_gx)
  return dx.astype(x.dtype), dscale.astype(scale.dtype), dbias.astype(scale.dtype)


normalize.defvjp(_normalize_fwd, _normalize_bwd)


class LayerNorm(nn.Module):
  """LayerNorm over the last axis: `flax.linen.LayerNorm`'s parameters (`scale`, `bias`) and values,
  computed by `normalize`. The output has `dtype` (float32 when None)."""
  epsilon: float = 1e-6
  dtype: Any = None

  @nn.compact
  def __call__(self, x):
    scale = self.param("scale", ones, (x.shape[-1],))
    bias = self.param("bias", zeros, (x.shape[-1],))
    return normalize(x, scale, bias, (x.ndim - 1,), float(self.epsilon), jnp.dtype(self.dtype or jnp.float32))[0]


class BatchNorm(nn.Module):
  """BatchNorm over every axis but the last: `flax.linen.BatchNorm`'s variables (params `scale`,
  `bias`; batch_stats `mean`, `var`, the biased variance as Flax keeps it) and values; training
  statistics from `normalize`. Under jit with a sharded batch they are over the global batch."""
  use_running_average: bool = False
  momentum: float = 0.99
  epsilon: float = 1e-5
  dtype: Any = None

  @nn.compact
  def __call__(self, x):
    features = x.shape[-1]
    ra_mean = self.variable("batch_stats", "mean", lambda: jnp.zeros((features,), jnp.float32))
    ra_var = self.variable("batch_stats", "var", lambda: jnp.ones((features,), jnp.float32))
    scale = self.param("scale", ones, (features,))
    bias = self.param("bias", zeros, (features,))
    dtype = jnp.dtype(self.dtype or jnp.float32)
    if self.use_running_average:
      return _affine(x, ra_mean.value, ra_var.value, scale, bias, self.epsilon).astype(dtype)
    y, mean, var = normalize(x, scale, bias, tuple(range(x.ndim - 1)), float(self.epsilon), dtype)
    if not self.is_initializing():
      m = self.momentum
      ra_mean.value = m * ra_mean.value + (1 - m) * jax.lax.stop_gradient(mean.reshape(features))
      ra_var.value = m * ra_var.value + (1 - m) * jax.lax.stop_gradient(var.reshape(features))
    return y


def Conv(features, kernel_size, **kw) -> nn.Conv:  # noqa: N802
  return nn.Conv(features, kernel_size, kernel_init=lecun_normal(), bias_init=zeros, **kw)


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
