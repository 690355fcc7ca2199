"""Orbax checkpoints under WORKDIR/checkpoints: items `state`, `config` (JSON), `data` (JSON).

Retention: the last `train.keep_checkpoints` steps plus the best one. "Best" has no validation set
behind it (evaluation is a separate, slow tracking run): it is the lowest exponential moving
average of the training loss (`train_loss_ema`, decay 0.98 per step, saved as the checkpoint's
metric), a proxy that at least prefers a converged checkpoint over one taken after a loss spike.

WORKDIR may be a bucket URL (`gs://…`): Orbax writes there directly (`satracker_jax.paths`).

Restores go through an abstract tree that carries the *target* shardings, so a checkpoint written
on 8 devices restores onto 1, 2 or 64. Reading a checkpoint for inference (params and batch_stats
only) is `satracker_jax.model_io.load_variables`: inference never imports this module.
"""
from __future__ import annotations

import logging
from typing import Any, Optional

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
from orbax.checkpoint import checkpoint_managers as ocm

from satracker_jax import config_utils, model_io, paths
from satracker_jax.model_io import CONFIG_ITEM, DATA_ITEM, STATE_ITEM
from satracker_jax.models import layout
from satracker_jax.train import optimizer as optim_lib

BEST_METRIC = "train_loss_ema"


def make_manager(directory: str, keep: int = 3, keep_best: bool = True, async_save: bool = True,
                 read_only: bool = False, state_handler=None) -> ocp.CheckpointManager:
  policies = [ocm.LatestN(n=max(int(keep), 1))]
  if keep_best:
    # reverse=True sorts high-to-low, and BestN keeps the tail: the lowest loss.
    policies.append(ocm.BestN(get_metric_fn=lambda m: m[BEST_METRIC], reverse=True, n=1))
  options = ocp.CheckpointManagerOptions(
      # The loop decides when to save (interval, preemption, end); Orbax must not second-guess it.
      save_interval_steps=0 if read_only else 1,
      preservation_policy=ocm.AnyPreservationPolicy(policies),
      # best_fn is what makes Orbax write the metrics item at all; the policy above does the keeping.
      best_fn=(lambda m: m[BEST_METRIC]) if keep_best else None,
      best_mode="min",
      enable_async_checkpointing=async_save,
      read_only=read_only,
      create=not read_only,
      # A SIGKILL mid-save leaves a checkpoint-sized `<step>.orbax-checkpoint-tmp-*` folder behind;
      # a writer removes them when it starts (a reader must not touch a running save's).
      cleanup_tmp_directories=not read_only,
  )
  if not read_only:
    model_io.use_orbax_array_writer()
  handlers = {
      STATE_ITEM: state_handler or ocp.StandardCheckpointHandler(),
      CONFIG_ITEM: ocp.JsonCheckpointHandler(),
      DATA_ITEM: ocp.JsonCheckpointHandler(),
  }
  return ocp.CheckpointManager(directory, options=options, item_handlers=handlers)


def latest_saved_config(workdir: str) -> Optional[tuple[int, dict]]:
  """(step, config JSON dict) of the latest checkpoint under WORKDIR/checkpoints; None (and
  nothing created) when there is none. What a resume is checked against before anything runs."""
  directory = paths.join(workdir, "checkpoints")
  if not paths.resolve(directory).exists():
    return None
  absl_logger = logging.getLogger("absl")
  absl_logger.addFilter(model_io.drop_read_only_notice)
  try:
    manager = make_manager(directory, read_only=True, async_save=False)
  finally:
    absl_logger.removeFilter(model_io.drop_read_only_notice)
  try:
    step = manager.latest_step()
    if step is None:
      return None
    return step, dict(manager.restore(step, args=ocp.args.Composite(**{
        CONFIG_ITEM: ocp.args.JsonRestore()}))[CONFIG_ITEM])
  finally:
    manager.close()


class Checkpointer:
  """The train loop's view: save / restore / wait, with the no-NaN rule enforced on save."""

  def __init__(self, workdir: str, config: ml_collections.ConfigDict):
    self.directory = paths.join(workdir, "checkpoints")
    self.config = config
    self.manager = make_manager(
        self.directory, keep=config.train.keep_checkpoints, keep_best=config.train.keep_best,
        async_save=bool(config.train.get("async_checkpointing", True)))

  def latest_step(self) -> Optional[int]:
    return self.manager.latest_step()

  def save(self, step: int, state: Any, data_position: dict, loss_ema: float,
           state_is_finite: bool) -> bool:
    if not state_is_finite:
      # A poisoned checkpoint would be resumed from forever; refuse and let the caller stop.
      raise FloatingPointError(f"step {step}: train state holds NaN/Inf; checkpoint NOT written")
    metrics = {BEST_METRIC: float(loss_ema)} if loss_ema == loss_ema else None  # NaN ema: no rank
    return self.manager.save(
        step,
        args=ocp.args.Composite(**{
            STATE_ITEM: ocp.args.StandardSave(state),
            CONFIG_ITEM: ocp.args.JsonSave(config_utils.config_to_json(self.config)),
            DATA_ITEM: ocp.args.JsonSave(data_position),
        }),
        metrics=metrics, force=True)

  def restore(self, step: int, target_state: Any) -> tuple[Any, dict, dict]:
    """-> (state laid out as `target_state`'s shardings, data position, saved config dict)."""
    saved = self.state_metadata(step)
    earlier = layout.earlier_layout(saved.get("params", {}))
    if earlier:
      raise ValueError(
          f"checkpoint {self.directory}/{step} has {earlier}, the parameter layout of an earlier "
          "satracker-jax, so its optimizer state cannot resume this run; continue it as a warm start "
          f"in a new workdir (--config.train.init_from={self.directory}), which maps the weights")
    where = f"checkpoint {self.directory}/{step}"
    # The parameters first: a model of another shape is named by its parameter, not by the
    # optimizer's copy of it (opt_state/...), which sorts first.
    model_io.check_compatible({"params": target_state["params"]},
                              {"params": saved.get("params", {})}, where)
    read_as, convert = _moments_as_saved(target_state, saved)
    model_io.check_compatible(read_as, saved, where)
    restored = self.manager.restore(step, args=ocp.args.Composite(**{
        STATE_ITEM: ocp.args.StandardRestore(read_as),
        CONFIG_ITEM: ocp.args.JsonRestore(),
        DATA_ITEM: ocp.args.JsonRestore(),
    }))
    return convert(restored[STATE_ITEM]), dict(restored[DATA_ITEM]), dict(restored[CONFIG_ITEM])

  def state_metadata(self, step: int) -> Any:
    return _tree_of_metadata(self.manager.item_metadata(step)[STATE_ITEM])

  def wait(self) -> None:
    self.manager.wait_until_finished()

  def close(self) -> None:
    self.manager.close()


def _moments_as_saved(target_state: Any, saved: Any):
  """-> (the target to read the checkpoint into, a function giving the state in `target_state`'s layout).

  The Adam moments are two flat vectors when the parameters are not sharded (fsdp 1) and a tree
  like the parameters otherwise (train/optimizer.py): a checkpoint of one layout is read in its own
  and converted, so a run on 8 devices with fsdp resumes on 1 and back, bit for bit.
  """
  opt, saved_opt = target_state.get("opt_state"), saved.get("opt_state")
  saved_mu = saved_opt.get("mu") if isinstance(saved_opt, dict) else getattr(saved_opt, "mu", None)
  if not isinstance(opt, optim_lib.FusedAdamWState) or saved_mu is None:
    return target_state, lambda state: state
  target_flat, saved_flat = not isinstance(opt.mu, dict), not isinstance(saved_mu, dict)
  if target_flat == saved_flat:
    return target_state, lambda state: state
  params = target_state["params"]
  if saved_flat:
    size = sum(int(np.prod(p.shape)) for p in jax.tree.leaves(params))
    vector = jax.ShapeDtypeStruct((size,), jnp.float32, sharding=opt.count.sharding)  # replicated
    read_opt = opt._replace(mu=vector, nu=vector)
    to_target = lambda m, like: jax.tree.map(lambda a, t: jax.device_put(a, t.sharding),
                                             optim_lib.moment_tree(m, params), like)
  else:
    tree = jax.tree.map(lambda p: jax.ShapeDtypeStruct(p.shape, jnp.float32, sharding=p.sharding), params)
    read_opt = opt._replace(mu=tree, nu=tree)
    to_target = lambda m, like: jax.device_put(
        jnp.concatenate([a.reshape(-1) for a in jax.tree.leaves(m)]), like.sharding)
  print(f"the checkpoint holds the Adam moments {'as flat vectors' if saved_flat else 'per tensor'}; "
        f"this run keeps them {'as flat vectors' if target_flat else 'per tensor'} (mesh fsdp "
        f"{'1' if target_flat else '> 1'}): converted on restore", flush=True)

  def convert(state):
    o = state["opt_state"]
    return dict(state, opt_state=o._replace(mu=to_target(o.mu, opt.mu), nu=to_target(o.nu, opt.nu)))
  return dict(target_state, opt_state=read_opt), convert


def _tree_of_metadata(meta):
  return meta.tree if hasattr(meta, "tree") else meta
