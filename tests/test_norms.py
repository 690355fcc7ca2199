"""LayerNorm and BatchNorm (models/initializers.py: one `normalize` with a hand-written backward
pass) give Flax's values, gradients and running statistics, in float32 and bfloat16."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from satracker_jax.models import initializers


def _perturbed(variables, seed=5):
  """Flax-initialised variables moved off their constants (scale 1, bias 0, mean 0, var 1)."""
  leaves, tree = jax.tree.flatten(nn.meta.unbox(variables))
  keys = jax.random.split(jax.random.PRNGKey(seed), len(leaves))
  return jax.tree.unflatten(tree, [a + 0.3 * jax.random.normal(k, a.shape) ** 2 for a, k in zip(leaves, keys)])


def _loss_and_grads(module, variables, x, weights):
  """sin-weighted sum of the output: value, gradients (params, x) and updated batch_stats."""
  def loss(params, x):
    y, updates = module.apply({**variables, "params": params}, x, mutable=["batch_stats"])
    return jnp.sum(jnp.sin(y.astype(jnp.float32)) * weights), updates
  (value, updates), grads = jax.value_and_grad(loss, argnums=(0, 1), has_aux=True)(variables["params"], x)
  return value, grads, updates


def _close(ours, flax_, atol):
  for a, b in zip(jax.tree.leaves(ours), jax.tree.leaves(flax_)):
    np.testing.assert_allclose(np.asarray(a, np.float32), np.asarray(b, np.float32), atol=atol, rtol=1e-3)


@pytest.mark.parametrize("kind", ["layer", "batch_train", "batch_eval"])
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_normalisation_matches_flax_values_gradients_and_running_statistics(kind, dtype):
  dtype = jnp.dtype(dtype)
  x = (jax.random.normal(jax.random.PRNGKey(0), (4, 5, 6, 16)) * 3 + 1).astype(dtype)
  weights = jax.random.normal(jax.random.PRNGKey(3), x.shape)
  if kind == "layer":
    ours, ref = initializers.LayerNorm(epsilon=1e-6, dtype=dtype), nn.LayerNorm(epsilon=1e-6, dtype=dtype)
  else:
    kw = dict(use_running_average=kind == "batch_eval", momentum=0.9, epsilon=1e-5, dtype=dtype)
    ours, ref = initializers.BatchNorm(**kw), nn.BatchNorm(**kw)
  variables = _perturbed(ours.init(jax.random.PRNGKey(1), x))
  assert jax.tree.map(jnp.shape, variables) == jax.tree.map(jnp.shape, ref.init(jax.random.PRNGKey(1), x))
  y = ours.apply(variables, x, mutable=["batch_stats"])[0]
  assert y.dtype == dtype
  atol = 1e-5 if dtype == jnp.float32 else 0.05  # bf16: one rounding of outputs / input gradients
  _close(y, ref.apply(variables, x, mutable=["batch_stats"])[0], atol)
  value, grads, updates = _loss_and_grads(ours, variables, x, weights)
  value_ref, grads_ref, updates_ref = _loss_and_grads(ref, variables, x, weights)
  assert grads[1].dtype == dtype and all(g.dtype == jnp.float32 for g in jax.tree.leaves(grads[0]))
  np.testing.assert_allclose(value, value_ref, rtol=1e-4 if dtype == jnp.float32 else 2e-2)
  _close(grads, grads_ref, 1e-4 if dtype == jnp.float32 else 0.25)
  _close(updates, updates_ref, 1e-5)
  if kind == "batch_train":  # the running statistics moved, and by the batch's statistics
    assert not np.allclose(updates["batch_stats"]["mean"], variables["batch_stats"]["mean"])


def test_normalisation_gradients_are_those_of_its_forward_pass():
  """The hand-written backward against autodiff of the same forward (numerically, float64-free):
  LayerNorm over the last axis and BatchNorm over the others, through jit, vmap and remat."""
  x = jax.random.normal(jax.random.PRNGKey(0), (3, 4, 8)) * 2 - 1
  scale = 1 + jax.random.normal(jax.random.PRNGKey(1), (8,))
  bias = jax.random.normal(jax.random.PRNGKey(2), (8,))
  weights = jax.random.normal(jax.random.PRNGKey(3), x.shape)

  def plain(x, scale, bias, axes):
    mean = jnp.mean(x, axis=axes, keepdims=True)
    var = jnp.mean(jnp.square(x - mean), axis=axes, keepdims=True)
    return (x - mean) / jnp.sqrt(var + 1e-5) * scale + bias

  for axes in ((2,), (0, 1)):
    ours = lambda x, s, b: jnp.sum(jnp.tanh(initializers.normalize(x, s, b, axes, 1e-5, jnp.float32)[0]) * weights)
    ref = lambda x, s, b: jnp.sum(jnp.tanh(plain(x, s, b, axes)) * weights)
    got = jax.jit(jax.grad(jax.checkpoint(ours), argnums=(0, 1, 2)))(x, scale, bias)
    _close(got, jax.grad(ref, argnums=(0, 1, 2))(x, scale, bias), 1e-5)
  batched = jax.vmap(jax.grad(lambda x: jnp.sum(initializers.normalize(x, scale, bias, (1,), 1e-5, jnp.float32)[0] ** 2)))
  _close(batched(x), jax.vmap(jax.grad(lambda x: jnp.sum(plain(x, scale, bias, (1,)) ** 2)))(x), 1e-4)
