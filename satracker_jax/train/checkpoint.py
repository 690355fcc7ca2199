"""Orbax checkpoints under WORKDIR/checkpoints: items `state`, `config` (JSON), `data` (JSON).

Retention: the last `train.keep_checkpoints` steps plus the best one. "Best" has no validation set
behind it (evaluation is a separate, slow tracking run): it is the lowest exponential moving
average of the training loss (`train_loss_ema`, decay 0.98 per step, saved as the checkpoint's
metric), a proxy that at least prefers a converged checkpoint over one taken after a loss spike.

Restores go through an abstract tree that carries the *target* shardings, so a checkpoint written
on 8 devices restores onto 1, 2 or 64.
"""
from __future__ import annotations

import json
import os
from typing import Any, Optional

import jax
import ml_collections
import orbax.checkpoint as ocp
from orbax.checkpoint import checkpoint_managers as ocm

BEST_METRIC = "train_loss_ema"


def checkpoint_dir(path: str) -> str:
  """A workdir or a checkpoints dir -> the checkpoints dir."""
  path = os.path.abspath(path)
  sub = os.path.join(path, "checkpoints")
  return sub if os.path.isdir(sub) else path


def config_to_json(config: ml_collections.ConfigDict) -> dict:
  return json.loads(config.to_json_best_effort())


def config_from_json(d: dict) -> ml_collections.ConfigDict:
  # JSON has no tuples; configs use tuples for every sequence field (layer lists, lr_rules).
  def fix(v):
    if isinstance(v, list):
      return tuple(fix(x) for x in v)
    if isinstance(v, dict):
      return {k: fix(x) for k, x in v.items()}
    return v
  return ml_collections.ConfigDict(fix(d))


def make_manager(directory: str, keep: int = 3, keep_best: bool = True, async_save: bool = True,
                 read_only: bool = False, state_handler=None) -> ocp.CheckpointManager:
  policies = [ocm.LatestN(n=max(int(keep), 1))]
  if keep_best:
    # reverse=True sorts high-to-low, and BestN keeps the tail: the lowest loss.
    policies.append(ocm.BestN(get_metric_fn=lambda m: m[BEST_METRIC], reverse=True, n=1))
  options = ocp.CheckpointManagerOptions(
      # The loop decides when to save (interval, preemption, end); Orbax must not second-guess it.
      save_interval_steps=1,
      preservation_policy=ocm.AnyPreservationPolicy(policies),
      # best_fn is what makes Orbax write the metrics item at all; the policy above does the keeping.
      best_fn=(lambda m: m[BEST_METRIC]) if keep_best else None,
      best_mode="min",
      enable_async_checkpointing=async_save,
      read_only=read_only,
      create=not read_only,
  )
  handlers = {
      "state": state_handler or ocp.StandardCheckpointHandler(),
      "config": ocp.JsonCheckpointHandler(),
      "data": ocp.JsonCheckpointHandler(),
  }
  return ocp.CheckpointManager(directory, options=options, item_handlers=handlers)


class Checkpointer:
  """The train loop's view: save / restore / wait, with the no-NaN rule enforced on save."""

  def __init__(self, workdir: str, config: ml_collections.ConfigDict):
    self.directory = os.path.join(os.path.abspath(workdir), "checkpoints")
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
        args=ocp.args.Composite(
            state=ocp.args.StandardSave(state),
            config=ocp.args.JsonSave(config_to_json(self.config)),
            data=ocp.args.JsonSave(data_position),
        ),
        metrics=metrics, force=True)

  def restore(self, step: int, target_state: Any) -> tuple[Any, dict, dict]:
    """-> (state laid out as `target_state`'s shardings, data position, saved config dict)."""
    check_compatible(target_state, self.state_metadata(step), f"{self.directory}/{step}")
    restored = self.manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(target_state),
        config=ocp.args.JsonRestore(),
        data=ocp.args.JsonRestore(),
    ))
    return restored["state"], dict(restored["data"]), dict(restored["config"])

  def state_metadata(self, step: int) -> Any:
    return _tree_of_metadata(self.manager.item_metadata(step)["state"])

  def wait(self) -> None:
    self.manager.wait_until_finished()

  def close(self) -> None:
    self.manager.close()


def _tree_of_metadata(meta):
  return meta.tree if hasattr(meta, "tree") else meta


def _flat_shapes(tree) -> dict:
  out = {}
  for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
    key = "/".join(str(getattr(k, "key", getattr(k, "name", getattr(k, "idx", k)))) for k in path)
    out[key] = tuple(getattr(leaf, "shape", ()))
  return out


def check_compatible(expected: Any, saved: Any, where: str, prefix: str = "") -> None:
  """Raise a ValueError naming the first key whose presence or shape differs."""
  want, have = _flat_shapes(expected), _flat_shapes(saved)
  if prefix:
    have = {k[len(prefix):]: v for k, v in have.items() if k.startswith(prefix)}
    want = {k[len(prefix):]: v for k, v in want.items() if k.startswith(prefix)}
  for key in sorted(set(want) | set(have)):
    if key not in have:
      raise ValueError(f"checkpoint {where} does not match this config: '{prefix}{key}' "
                       f"(shape {want[key]}) is missing from the checkpoint. Wrong config or workdir?")
    if key not in want:
      raise ValueError(f"checkpoint {where} does not match this config: the checkpoint has "
                       f"'{prefix}{key}' (shape {have[key]}) which this config's model lacks. "
                       "Wrong config or workdir?")
    if want[key] != have[key]:
      raise ValueError(f"checkpoint {where} does not match this config: '{prefix}{key}' has shape "
                       f"{have[key]} in the checkpoint but {want[key]} in this config's model.")


def load_for_inference(path: str, config: Optional[ml_collections.ConfigDict] = None,
                       step: Optional[int] = None) -> tuple[ml_collections.ConfigDict, dict]:
  """A workdir or checkpoints dir -> (config, {"params", "batch_stats"}) on the default device.

  Only params and batch_stats are read (the optimizer moments, 2x the params, stay on disk).
  Without `config` the checkpoint's own config is used; with one, the checkpoint must match its
  model (same parameter names and shapes) or a ValueError names the first mismatched key.
  """
  from satracker_jax.models.satracker import build_model  # imported late: `satracker --help` stays quick
  from satracker_jax.train import state as state_lib

  directory = checkpoint_dir(path)
  manager = make_manager(directory, async_save=False, read_only=True,
                         state_handler=ocp.PyTreeCheckpointHandler())
  step = manager.latest_step() if step is None else step
  if step is None:
    raise FileNotFoundError(f"no checkpoint under {directory}")
  saved_config = config_from_json(dict(manager.restore(step, args=ocp.args.Composite(
      config=ocp.args.JsonRestore()))["config"]))
  config = saved_config if config is None else config
  model = build_model(config.model)
  abstract = jax.eval_shape(lambda: state_lib.init_variables(model, config.model,
                                                              jax.random.PRNGKey(0)))
  saved = _tree_of_metadata(manager.item_metadata(step)["state"])
  where = f"{directory}/{step}"
  for part in ("params", "batch_stats"):
    check_compatible({part: abstract[part]}, {part: saved.get(part, {})}, where)
  device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
  target = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=device), abstract)
  restore_args = jax.tree.map(lambda a: ocp.ArrayRestoreArgs(sharding=device), abstract)
  restored = manager.restore(step, args=ocp.args.Composite(state=ocp.args.PyTreeRestore(
      item=target, restore_args=restore_args, partial_restore=True)))
  manager.close()
  variables = {"params": restored["state"]["params"],
               "batch_stats": restored["state"].get("batch_stats", {})}
  return config, variables
