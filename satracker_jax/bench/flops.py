"""Matmul FLOPs of a function, counted on its jaxpr (any platform, loops multiplied out).

MFU is conventionally model FLOPs over time: the matrix products (`dot_general`) and convolutions
of forward and backward, which is what the accelerator's peak rate describes. Counting them on the
jaxpr gives the same number on CPU, GPU and TPU (XLA's cost analysis is missing on some backends
and counts a loop body once): a `scan` body counts `length` times, remat recomputation counts
(it is work the chip does), element-wise work does not.
"""
from __future__ import annotations

import math

import jax
from jax.extend import core as jax_core


def _sub_jaxprs(params):
  for value in params.values():
    for v in (value if isinstance(value, (tuple, list)) else (value,)):
      if isinstance(v, jax_core.ClosedJaxpr):
        yield v.jaxpr
      elif isinstance(v, jax_core.Jaxpr):
        yield v


def jaxpr_flops(jaxpr) -> float:
  """FLOPs of the dot_general / conv_general_dilated equations of `jaxpr` (a Jaxpr or ClosedJaxpr)."""
  jaxpr = getattr(jaxpr, "jaxpr", jaxpr)
  total = 0.0
  for eqn in jaxpr.eqns:
    name = eqn.primitive.name
    if name == "dot_general":
      (lhs_contract, _), _ = eqn.params["dimension_numbers"]
      lhs = eqn.invars[0].aval.shape
      total += 2.0 * math.prod(eqn.outvars[0].aval.shape) * math.prod(lhs[i] for i in lhs_contract)
    elif name == "conv_general_dilated":
      kernel = eqn.invars[1].aval.shape
      out_features = kernel[eqn.params["dimension_numbers"].rhs_spec[0]]
      total += 2.0 * math.prod(eqn.outvars[0].aval.shape) * math.prod(kernel) / out_features
    else:
      inner = sum(jaxpr_flops(j) for j in _sub_jaxprs(eqn.params))
      total += inner * (eqn.params.get("length", 1) if name == "scan" else 1)
  return total


def function_flops(fn, *args) -> float:
  """Matmul FLOPs of one call of `fn(*args)` (args may be ShapeDtypeStructs)."""
  return jaxpr_flops(jax.make_jaxpr(fn)(*args))
