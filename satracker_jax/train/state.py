"""The train state, its sharded creation and the jitted train step.

The state is a plain dict (what Orbax saves, what `jax.tree` walks):
  step             int32  batches consumed (= optimizer updates + skipped non-finite steps)
  params           f32 master weights (fsdp-sharded when the mesh has an fsdp axis)
  batch_stats      head BatchNorm statistics
  opt_state        optax state (Adam moments shard like their parameters)
  nonfinite_run    int32  consecutive skipped steps (the loop stops at max_consecutive_nonfinite)
  nonfinite_total  int32  all skipped steps
"""
from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax

from satracker_jax import model_io
from satracker_jax.train import optimizer
from satracker_jax.train import sharding as sharding_lib

# What a training batch carries into the step (`sample_index` stays on the host: int64).
BATCH_KEYS = ("template", "template_box", "search", "search_box", "text_ids", "text_mask", "replaced")


def create_state(variables: dict, tx: optax.GradientTransformation) -> dict:
  params = variables["params"]
  return {
      "step": jnp.zeros((), jnp.int32),
      "params": params,
      "batch_stats": variables.get("batch_stats", {}),
      "opt_state": tx.init(params),
      "nonfinite_run": jnp.zeros((), jnp.int32),
      "nonfinite_total": jnp.zeros((), jnp.int32),
  }


def init_rng(config):
  return jax.random.PRNGKey(int(config.seed))


def abstract_state(model, config, tx) -> Any:
  # From the model's shapes (traced once per process): only the optimizer's init is traced here.
  return jax.eval_shape(lambda v: create_state(v, tx), model_io.model_shapes(model, config.model))


def with_shardings(abstract_tree, shardings):
  """Shapes + target shardings: what Orbax restores into (any device count)."""
  return jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
                      abstract_tree, shardings)


def create_sharded_state(model, config, tx, shardings, variables=None):
  """Places the state directly in the target layout: each device (each process) receives only
  its shards of the parameters, and the optimizer state is made where it lives.

  The parameters are drawn on the host (`model_io.host_variables`, seed `config.seed`: the same
  numbers in every process, nothing compiled) unless `variables` are given (e.g. `init_from`).
  """
  if variables is None:
    variables = model_io.host_variables(model, config.model, int(config.seed))
  parts = {"params": variables["params"], "batch_stats": variables.get("batch_stats", {})}
  placed = jax.tree.map(
      lambda x, s: jax.make_array_from_callback(np.shape(x), s, lambda index: np.asarray(x[index])),
      jax.device_get(parts), {k: shardings[k] for k in parts})
  return jax.jit(lambda v: create_state(v, tx), out_shardings=shardings, donate_argnums=0)(placed)


def device_batch(local_batch: dict, mesh) -> dict:
  """The keys the step uses, as global arrays (host-only keys such as sample_index stay behind)."""
  return sharding_lib.global_batch({k: local_batch[k] for k in BATCH_KEYS if k in local_batch}, mesh)


def batch_shardings(mesh, keys=BATCH_KEYS) -> dict:
  ndims = {"template": 4, "search": 4, "replaced": 1}
  return {k: sharding_lib.batch_sharding(mesh, ndims.get(k, 2)) for k in keys}


def _split_micro(batch: dict, k: int) -> dict:
  """[B, ...] -> [k, B/k, ...] with micro-batch j = rows j, j+k, j+2k, ...

  Taking strided rows keeps every micro-batch spread over all devices (each device's contiguous
  shard holds whole groups of k rows), so the split needs no communication.
  """
  def split(x):
    b = x.shape[0]
    if b % k:
      raise ValueError(f"batch {b} does not divide into grad_accum_steps={k} micro-batches")
    return jnp.swapaxes(x.reshape((b // k, k) + x.shape[1:]), 0, 1)
  return jax.tree.map(split, batch)


def make_train_step(model, tx, schedule, loss_fn: Callable, config) -> Callable:
  """step(state, batch) -> (state, metrics); pure, to be jitted with donate_argnums=0.

  `loss_fn(out, batch) -> (total, terms)`. Non-finite loss or gradients leave params, batch_stats
  and opt_state untouched (selected with jnp.where inside the step, so no host round trip) and
  bump the counters.
  """
  accum = int(config.train.get("grad_accum_steps", 1) or 1)
  nan_steps = tuple(int(s) for s in (config.train.get("debug_nan_steps", ()) or ()))
  # Dropout-free model today; the key is threaded anyway so a stochastic variant stays resumable:
  # the step's randomness is a function of (seed, step) only.
  base_key = jax.random.fold_in(init_rng(config), 1)

  def forward_loss(params, batch_stats, batch, rng):
    variables = {"params": params, "batch_stats": batch_stats}
    out, new_vars = model.apply(
        variables, batch["template"], batch["template_box"], batch["search"],
        batch["text_ids"], batch["text_mask"], train=True, mutable=["batch_stats"],
        rngs={"dropout": rng})
    total, terms = loss_fn(out, batch)
    return total, (terms, new_vars.get("batch_stats", batch_stats))

  grad_fn = jax.value_and_grad(forward_loss, has_aux=True)

  def step_fn(state, batch):
    step = state["step"]
    rng = jax.random.fold_in(base_key, step)
    params = state["params"]
    if accum == 1:
      (loss, (terms, batch_stats)), grads = grad_fn(params, state["batch_stats"], batch, rng)
    else:
      micro = _split_micro(batch, accum)

      def body(carry, xs):
        g_sum, bs = carry
        mb, i = xs
        (l, (t, bs)), g = grad_fn(params, bs, mb, jax.random.fold_in(rng, i))
        return (jax.tree.map(jnp.add, g_sum, g), bs), (l, t)

      zeros = jax.tree.map(jnp.zeros_like, params)
      (g_sum, batch_stats), (losses, terms) = jax.lax.scan(
          body, (zeros, state["batch_stats"]), (micro, jnp.arange(accum)))
      grads = jax.tree.map(lambda g: g / accum, g_sum)
      loss = losses.mean()
      terms = jax.tree.map(jnp.mean, terms)
    if nan_steps:
      # Test hook: poison chosen steps (numbered as in the logs: the first step is 1) to exercise
      # the non-finite path end to end.
      poison = jnp.isin(step + 1, jnp.asarray(nan_steps, jnp.int32))
      loss = jnp.where(poison, jnp.nan, loss)
      grads = jax.tree.map(lambda g: jnp.where(poison, jnp.nan, g), grads)

    grad_norm = optimizer.global_norm(grads, state["opt_state"])
    finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
    updates, new_opt_state = tx.update(grads, state["opt_state"], params)
    new_params = optax.apply_updates(params, updates)
    keep = lambda new, old: jax.tree.map(lambda n, o: jnp.where(finite, n, o), new, old)
    new_state = {
        "step": step + 1,
        "params": keep(new_params, params),
        "batch_stats": keep(batch_stats, state["batch_stats"]),
        "opt_state": keep(new_opt_state, state["opt_state"]),
        "nonfinite_run": jnp.where(finite, 0, state["nonfinite_run"] + 1),
        "nonfinite_total": state["nonfinite_total"] + (~finite).astype(jnp.int32),
    }
    metrics = {
        "loss": loss,
        **{k: v for k, v in terms.items()},
        "grad_norm": grad_norm,
        # The lr of the update just applied: optax counts only applied updates.
        "lr": schedule(step - state["nonfinite_total"]),
        "finite": finite,
        "nonfinite_run": new_state["nonfinite_run"],
        "nonfinite_total": new_state["nonfinite_total"],
    }
    if "replaced" in batch:
      metrics["replaced"] = batch["replaced"].sum()
    return new_state, metrics

  return step_fn


def jit_train_step(step_fn, state_sh, mesh, batch_keys=BATCH_KEYS):
  def step_in_mesh(state, batch):
    # The model pins its activations to the mesh's batch axes (models/partitioning.py) when traced
    # under this mesh; `jax.set_mesh` cannot be entered inside jit, its abstract mesh can.
    with jax.sharding.use_abstract_mesh(mesh.abstract_mesh):
      return step_fn(state, batch)
  return jax.jit(step_in_mesh, in_shardings=(state_sh, batch_shardings(mesh, batch_keys)),
                 out_shardings=(state_sh, sharding_lib.replicated(mesh)), donate_argnums=0)


@jax.jit
def all_finite(tree) -> jax.Array:
  leaves = [jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)
            if jnp.issubdtype(x.dtype, jnp.floating)]
  return jnp.all(jnp.stack(leaves)) if leaves else jnp.asarray(True)


def param_count(tree) -> int:
  return int(sum(np.prod(x.shape) for x in jax.tree.leaves(tree)))
