"""One training run in its own process, driven by tests/test_train_*.py (see train_helpers).

argv: --workdir DIR --overrides '["train.total_steps=60", ...]' --extra '{...}'
extra: mode ("standin" | "real_data" | "real_model" | "real_input"), fields to add to config.train (test hooks such as
debug_nan_steps that base.py may not declare), and multi-process coordinates.
Prints `RESULT {json}` last and saves the final state to WORKDIR/final_state.npz (process 0): one
array per leaf, keyed by its path ("params/patch_embed/kernel", "opt_state/...").
"""
import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _path_key(path) -> str:
  import jax
  parts = []
  for entry in path:
    if isinstance(entry, jax.tree_util.DictKey):
      parts.append(str(entry.key))
    elif isinstance(entry, jax.tree_util.GetAttrKey):
      parts.append(entry.name)
    else:
      parts.append(str(getattr(entry, "idx", entry)))
  return "/".join(parts)


def main():
  ap = argparse.ArgumentParser()
  ap.add_argument("--workdir", required=True)
  ap.add_argument("--overrides", default="[]")
  ap.add_argument("--extra", default="{}")
  a = ap.parse_args()
  extra = json.loads(a.extra)

  import jax
  if extra.get("coordinator"):
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(coordinator_address=extra["coordinator"],
                               num_processes=extra["num_processes"], process_id=extra["process_id"])
  import numpy as np
  from satracker_jax import config_utils
  from satracker_jax.train import loop
  import train_helpers as th

  mode = extra.get("mode", "standin")
  config = config_utils.load_config(extra.get("config", "configs/tiny.py"), json.loads(a.overrides))
  for k, v in extra.get("train_fields", {}).items():
    config.train[k] = tuple(v) if isinstance(v, list) else v
  kwargs = {}
  if mode == "standin":
    config.model.template_size, config.model.search_size, config.model.max_text_len = 16, 32, 8
    kwargs = dict(model=th.standin_model(), loss_fn=th.standin_loss,
                  dataset_fn=th.standin_dataset(config.seed))
  elif mode == "real_data":  # everything real: SATracker, losses, tf.data sampler
    pass
  elif mode == "real_model":  # the real SATracker and losses on stand-in batches (no TF)
    kwargs = dict(dataset_fn=th.standin_dataset(config.seed, config.model))
  elif mode == "real_input":  # the stand-in model and loss on the real input pipeline
    kwargs = dict(model=th.standin_model(), loss_fn=th.standin_loss)
  try:
    summary = loop.train(config, a.workdir, **kwargs)
  except loop.TrainingStopped as e:
    summary = {"stopped": str(e)}
  state = summary.pop("state", None)
  if state is not None:
    from jax.experimental import multihost_utils
    state = multihost_utils.process_allgather(state, tiled=True)
    flat = {_path_key(path): np.asarray(v) for path, v in jax.tree_util.tree_flatten_with_path(state)[0]}
    if jax.process_index() == 0:
      np.savez(os.path.join(a.workdir, "final_state.npz"), **flat)
  if "step" in summary:
    # A plain listing: a CheckpointManager here would start cross-process barriers on one process.
    root = os.path.join(a.workdir, "checkpoints")
    summary["checkpoints"] = sorted(int(d) for d in os.listdir(root) if d.isdigit())
  summary["process_index"] = jax.process_index()
  summary["device_count"] = jax.device_count()
  print("RESULT " + json.dumps(summary), flush=True)


if __name__ == "__main__":
  main()
