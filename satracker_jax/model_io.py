"""A model as data: the variable tree of a config, built, initialised, checked and loaded.

Everything that *uses* a model (tracker, evaluation, export, `satracker track`, the demo) and the
trainer itself reach the model's variables through this module, never through each other:

    abstract = abstract_variables(config)          # {"params", "batch_stats"} as ShapeDtypeStructs
    abstract = model_shapes(model, config.model)   # the same for a built model (traced once each)
    variables = random_variables(config, seed=0)   # freshly initialised (smoke runs, benchmarks)
    check_variables(config, variables, "where")    # ValueError naming the first mismatched entry
    config, variables = load_variables(path)       # a trained model, ready for inference

`load_variables` reads four kinds of source (`describe_source` says which a path is), local or at
a bucket URL (gs://...; paths go through `satracker_jax.paths`, i.e. etils.epath, as Orbax's do):
- a training workdir or its `checkpoints/` folder (Orbax; the latest step unless `step=`): only
  params and batch_stats are read, the optimizer moments (2x the params) stay on disk, and the
  checkpoint's own config is returned;
- a model folder written by `satracker export --format orbax` (`export.save_model_folder`):
  MODEL_FILE (format + config) and an Orbax checkpoint of params and batch_stats in VARIABLES_DIR;
- a params file written by `save_variables` (`.npz` with every variable and the config as JSON);
- the output of `satracker convert` (a folder holding `params.npz`, or that file): pretrained
  backbone weights only, so it needs `config=` and every other parameter keeps a fresh
  initialisation (seed `config.seed`) — a way to try converted weights, not a trained tracker.

A `config` given for a source that carries its own is a check, not a replacement: the source's
variables must fit its model (same parameter names and shapes) or a ValueError names the first
missing / extra / wrong-shaped parameter.
"""
from __future__ import annotations

import concurrent.futures
import io
import json
import logging
import os
import zlib
from typing import Any, Optional

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import linen as nn

from satracker_jax import config_utils, paths, utils
from satracker_jax.models import build_model, initializers, layout

# The items of a training checkpoint (train/checkpoint.py writes them; inference reads two).
STATE_ITEM, CONFIG_ITEM, DATA_ITEM = "state", "config", "data"
VARIABLE_PARTS = ("params", "batch_stats")
PARAMS_FILE_FORMAT = "satracker-variables/1"
# A model folder (`satracker export --format orbax`): MODEL_FILE, then VARIABLES_DIR (Orbax).
MODEL_FILE, MODEL_FORMAT, VARIABLES_DIR = "satracker_model.json", "satracker-model/1", "variables"
_CONFIG_KEY = "__config_json__"


# -- building ------------------------------------------------------------------------------------
def input_shapes(model_config, batch_size: int = 1) -> tuple:
  """The model's inputs as ShapeDtypeStructs (what initialisation traces with)."""
  t, s, L = model_config.template_size, model_config.search_size, model_config.max_text_len
  spec = jax.ShapeDtypeStruct
  return (spec((batch_size, t, t, 3), jnp.float32), spec((batch_size, 4), jnp.float32),
          spec((batch_size, s, s, 3), jnp.float32), spec((batch_size, L), jnp.int32),
          spec((batch_size, L), jnp.int32))


def init_variables(model, model_config, rng) -> dict:
  """`{"params", "batch_stats"}` of `model` (any Linen module with SATracker's call signature),
  initialised by JAX from `rng`. Training and the verbs use `host_variables` instead."""
  variables = nn.meta.unbox(model.lazy_init(rng, *input_shapes(model_config), train=False))
  return {"params": variables["params"], "batch_stats": variables.get("batch_stats", {})}


# Tracing a model's initialisation costs about as much as tracing its forward pass (2 s for tiny on
# the 2-core machine), and a verb asks for the shapes several times (load, check, restore target).
# The traced shapes are kept per model (Linen modules built from equal configs are equal), at most
# this many; callers get fresh dict containers, so no caller's edit reaches the cache.
_SHAPES_CACHE: dict = {}
_SHAPES_CACHE_SIZE = 16


def _shapes_once(kind: str, model, model_config, trace) -> dict:
  key = (kind, model, input_shapes(model_config))
  try:
    hit = _SHAPES_CACHE.get(key)
  except TypeError:  # a module with an unhashable field: traced every time
    return trace()
  if hit is None:
    hit = _SHAPES_CACHE[key] = trace()
    while len(_SHAPES_CACHE) > _SHAPES_CACHE_SIZE:
      _SHAPES_CACHE.pop(next(iter(_SHAPES_CACHE)))
  return _fresh_dicts(hit)


def _fresh_dicts(tree):
  return {k: _fresh_dicts(v) for k, v in tree.items()} if isinstance(tree, dict) else tree


def _boxed_shapes(model, model_config) -> dict:
  """The model's variables as shapes, each parameter still boxed with its initialiser's rule."""
  boxed_init = lambda *inputs: nn.Module.init(model, jax.random.key(0), *inputs, train=False)
  return _shapes_once("boxed", model, model_config,
                      lambda: jax.eval_shape(boxed_init, *input_shapes(model_config)))


def host_variables(model, model_config, seed: int) -> dict:
  """`{"params", "batch_stats"}` as numpy float32 arrays drawn on the host from the abstract shapes
  (models/initializers.py: every parameter says what it draws), so initialising compiles nothing.

  Each parameter's numbers depend on the seed and its name only (numpy's PCG64 seeded with both):
  the same on every platform and process, and a new parameter leaves the others unchanged.
  BatchNorm statistics start as Flax's do: mean 0, var 1.
  """
  boxed = _boxed_shapes(model, model_config)
  is_box = lambda x: isinstance(x, initializers.Initialised)

  def value(part, path, leaf):
    name = "/".join(_key_name(k) for k in path)
    if is_box(leaf):
      rng = np.random.default_rng([int(seed), zlib.crc32(f"{part}/{name}".encode())])
      return initializers.draw(leaf.rule, leaf.value.shape, rng)
    if part == "batch_stats" and name.rpartition("/")[2] in ("mean", "var"):
      return np.full(leaf.shape, 1.0 if name.endswith("var") else 0.0, np.float32)
    raise ValueError(f"{part}/{name} was created without an initialiser of "
                     "satracker_jax/models/initializers.py, so it cannot be drawn on the host")

  out = {}
  # numpy fills large arrays without the GIL: one thread per core.
  with concurrent.futures.ThreadPoolExecutor(utils.usable_cpu_count()) as pool:
    for part in VARIABLE_PARTS:
      leaves, treedef = jax.tree_util.tree_flatten_with_path(boxed.get(part, {}), is_leaf=is_box)
      values = list(pool.map(lambda item: value(part, *item), leaves))
      out[part] = jax.tree_util.tree_unflatten(treedef, values)
  return out


def model_shapes(model, model_config) -> dict:
  """`{"params", "batch_stats"}` of `model` as ShapeDtypeStructs (traced once per model)."""
  def unboxed():
    variables = nn.meta.unbox(_boxed_shapes(model, model_config))  # the same trace serves both
    return {"params": variables["params"], "batch_stats": variables.get("batch_stats", {})}
  return _shapes_once("abstract", model, model_config, unboxed)


def abstract_variables(config) -> dict:
  """Shapes and dtypes of the config's variables; nothing is allocated."""
  return model_shapes(build_model(config.model), config.model)


def random_variables(config, seed: int = 0) -> dict:
  """Freshly initialised variables on the default device (benchmarks, smoke runs, tests)."""
  return jax.device_put(host_variables(build_model(config.model), config.model, seed))


# -- checking ------------------------------------------------------------------------------------
def _key_name(k) -> str:
  return str(getattr(k, "key", getattr(k, "name", getattr(k, "idx", k))))


def flat_shapes(tree) -> dict[str, tuple]:
  """{"a/b/c": shape} of every leaf."""
  return {"/".join(_key_name(k) for k in path): tuple(getattr(leaf, "shape", ()))
          for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]}


def check_compatible(expected: Any, saved: Any, where: str) -> None:
  """ValueError naming the first key (sorted) whose presence or shape differs."""
  want, have = flat_shapes(expected), flat_shapes(saved)
  for key in sorted(set(want) | set(have)):
    if key not in have:
      raise ValueError(f"{where} does not match this config: '{key}' (shape {want[key]}) is "
                       "missing from it. Wrong config or wrong checkpoint?")
    if key not in want:
      raise ValueError(f"{where} does not match this config: it has '{key}' (shape {have[key]}) "
                       "which this config's model lacks. Wrong config or wrong checkpoint?")
    if want[key] != have[key]:
      raise ValueError(f"{where} does not match this config: '{key}' has shape {have[key]} there "
                       f"but {want[key]} in this config's model.")


def check_variables(config, variables: dict, where: str) -> None:
  """ValueError naming the first parameter whose presence or shape differs from `config.model`."""
  abstract = abstract_variables(config)
  for part in VARIABLE_PARTS:
    check_compatible({part: abstract[part]}, {part: variables.get(part, {})}, where)


# -- sources -------------------------------------------------------------------------------------
def checkpoint_dir(path: str) -> str:
  """A workdir or a checkpoints dir -> the checkpoints dir."""
  root = paths.resolve(path)
  sub = root / "checkpoints"
  return os.fspath(sub if sub.is_dir() else root)


def _load_npz(path: str):
  """np.load of a local file, or of an object read whole from a bucket."""
  if paths.is_url(path):
    return np.load(io.BytesIO(paths.resolve(path).read_bytes()), allow_pickle=False)
  return np.load(path, allow_pickle=False)


def describe_source(path: str) -> str:
  """'params_file' | 'converted' | 'model_folder' | 'checkpoint' for a path `load_variables` reads."""
  root = paths.resolve(path)
  try:
    exists, is_dir = root.exists(), root.is_dir()
  except Exception as e:  # noqa: BLE001 - a bucket that cannot be reached: say so in one line
    raise FileNotFoundError(f"{path}: cannot read it ({paths.one_line(e)})") from None
  if not exists:
    raise FileNotFoundError(f"{path}: no such file or folder (expected a training workdir, an Orbax "
                            "checkpoints folder, a model folder from `satracker export --format "
                            "orbax`, a params .npz or a `satracker convert` output)")
  if not is_dir:
    if not str(path).endswith(".npz"):
      raise ValueError(f"{path}: not a model file (expected a .npz params file or a folder)")
    with _load_npz(str(path)) as data:
      return "params_file" if _CONFIG_KEY in data.files else "converted"
  if (root / MODEL_FILE).exists():
    return "model_folder"
  from satracker_jax import convert  # noqa: PLC0415  (numpy-only at import)
  if (root / convert.PARAMS_FILE).is_file() and not (root / "checkpoints").is_dir():
    return "converted"
  return "checkpoint"


def load_variables(path: str, config: Optional[ml_collections.ConfigDict] = None,
                   step: Optional[int] = None) -> tuple[ml_collections.ConfigDict, dict]:
  """(config, {"params", "batch_stats"}) on the default device, from any source above."""
  kind = describe_source(path)
  if kind == "params_file":
    return _load_params_file(path, config)
  if kind == "model_folder":
    return _load_model_folder(path, config)
  if kind == "converted":
    return _load_converted(path, config)
  return _load_checkpoint(path, config, step)


def load_model(source: str | None, config_spec: str | None = None, overrides=(),
               step: Optional[int] = None) -> tuple[ml_collections.ConfigDict, dict, bool]:
  """(config, variables, random) the way the verbs (eval, track, export) load a model.

  With `source`: `load_variables(source)`, its config changed by `overrides` (tracker settings,
  typically), which may not change the model's parameters; a `config_spec` file given as well is
  only checked against the variables (wrong file or wrong checkpoint is an error). A converted
  source has no config of its own: `config_spec` is then required and used. Without `source`,
  `config_spec` with freshly initialised weights and `random=True` (a pipeline smoke test).
  """
  if not source:
    if not config_spec:
      raise ValueError("give a checkpoint (or a config, to smoke-test with random weights)")
    config = config_utils.load_config(config_spec, overrides)
    return config, random_variables(config), True
  given = config_utils.load_config(config_spec, overrides) if config_spec else None
  if describe_source(source) == "converted":
    return load_variables(source, config=given)[0:2] + (False,)
  config, variables = load_variables(source, step=step)
  config_utils.apply_overrides(config, overrides)
  if overrides:
    check_variables(config, variables, f"{source} with config overrides {list(overrides)}")
  if given is not None:
    check_variables(given, variables, f"{source} vs config {config_spec}")
  return config, variables, False


def save_variables(path: str, config, variables: dict) -> str:
  """Writes every variable and the config to one `.npz` that `load_variables` reads back."""
  if not path.endswith(".npz"):
    path += ".npz"
  from satracker_jax import weights_io  # noqa: PLC0415
  arrays = {}
  for part in VARIABLE_PARTS:
    for name, value in weights_io.flatten(jax.device_get(variables.get(part, {})), sep="/").items():
      arrays[f"{part}/{name}"] = np.asarray(value)
  meta = {"format": PARAMS_FILE_FORMAT, "config": config_utils.config_to_json(config)}
  arrays[_CONFIG_KEY] = np.frombuffer(json.dumps(meta).encode("utf-8"), np.uint8)
  target = paths.resolve(path)
  paths.ensure_dir(target.parent, "params file folder")
  buffer = io.BytesIO()
  np.savez(buffer, **arrays)
  target.write_bytes(buffer.getvalue())
  return os.fspath(target) if paths.is_url(path) else path


def _upgrade_layout(variables: dict, where: str) -> dict:
  """Variables of an earlier parameter layout (per-block blocks, separate cross-attention key /
  value, head conv biases) -> the stored layout, in memory (models/layout.py); stored variables
  pass through."""
  from satracker_jax import weights_io  # noqa: PLC0415
  params = variables.get("params", {})
  what = layout.earlier_layout(params)
  if not what:
    return variables
  flat = lambda tree: weights_io.flatten(jax.device_get(tree), sep="/")
  print(f"{where}: parameter layout of an earlier version ({what}) mapped to the current one in "
        "memory; `satracker export --format orbax` writes it in the current layout")
  params, batch_stats = layout.upgrade_variables(flat(params), flat(variables.get("batch_stats", {})), where)
  return dict(variables, params=weights_io.unflatten(params), batch_stats=weights_io.unflatten(batch_stats))


def _checked_config(source_config, config, variables_or_abstract, where: str):
  if config is None:
    return source_config
  check_variables(config, variables_or_abstract, f"{where} (checked against the given config)")
  return config


def _load_params_file(path: str, config):
  with _load_npz(path) as data:
    meta = json.loads(bytes(data[_CONFIG_KEY]).decode("utf-8"))
    if meta.get("format") != PARAMS_FILE_FORMAT:
      raise ValueError(f"{path}: unknown params file format {meta.get('format')!r}")
    flat = {name: data[name] for name in data.files if name != _CONFIG_KEY}
  from satracker_jax import weights_io  # noqa: PLC0415
  tree = weights_io.unflatten(flat)
  variables = _upgrade_layout({part: tree.get(part, {}) for part in VARIABLE_PARTS}, path)
  source_config = config_utils.config_from_json(meta["config"])
  check_variables(source_config, variables, path)
  config = _checked_config(source_config, config, variables, path)
  return config, jax.device_put(variables)


def _load_converted(path: str, config):
  if config is None:
    raise ValueError(f"{path}: converted weights carry no config; give one (--config) to load them")
  from satracker_jax import convert  # noqa: PLC0415
  variables = jax.device_get(random_variables(config, seed=int(config.get("seed", 0))))
  params, _ = convert.load_pretrained(variables["params"], path)
  return config, jax.device_put({"params": params, "batch_stats": variables["batch_stats"]})


def _single_device_target(abstract):
  """(target tree, restore args) that place every variable on the default device, whatever the
  device count or sharding it was saved from."""
  import orbax.checkpoint as ocp  # noqa: PLC0415
  device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
  target = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=device), abstract)
  return target, jax.tree.map(lambda a: ocp.ArrayRestoreArgs(sharding=device), abstract)


def read_model_file(path: str) -> dict:
  """The MODEL_FILE of a model folder: {"format", "config" (JSON dict)}, format checked."""
  where = paths.join(path, MODEL_FILE)
  meta = json.loads(paths.resolve(where).read_text())
  if meta.get("format") != MODEL_FORMAT:
    raise ValueError(f"{where}: unknown model folder format {meta.get('format')!r} "
                     f"(expected {MODEL_FORMAT!r})")
  return meta


def _load_model_folder(path: str, config):
  import orbax.checkpoint as ocp  # noqa: PLC0415

  source_config = config_utils.config_from_json(read_model_file(path)["config"])
  directory = paths.join(path, VARIABLES_DIR)
  with ocp.PyTreeCheckpointer() as checkpointer:
    meta = checkpointer.metadata(directory)
    meta = getattr(meta, "item_metadata", meta)
    saved = meta.tree if hasattr(meta, "tree") else meta
    saved = {part: saved.get(part, {}) for part in VARIABLE_PARTS}
    check_variables(source_config, saved, path)
    config = _checked_config(source_config, config, saved, path)
    target, restore_args = _single_device_target(abstract_variables(config))
    restored = checkpointer.restore(directory, args=ocp.args.PyTreeRestore(
        item=target, restore_args=restore_args))
  return config, {"params": restored["params"], "batch_stats": restored.get("batch_stats", {})}


# Orbax writes an array held whole by several devices (under data parallelism: every parameter and
# moment) "replica-parallel" by default on CPU and TPU: each replica writes a slice of it, cut by a
# jitted slice on its device, one program per array shape. Within one process this gains nothing
# (one host writes every slice anyway) and costs a compile per shape on the first save and a
# dispatch per slice on every save. On the 2-core CPU machine (2026-12-07), the 10 saves of the
# tests' 8-device run (data 4 x fsdp 2, 0.36 M parameters) took 34 s instead of 12 s, the first
# compiling ~180 slice programs; 4 saves of 150 replicated arrays of distinct shapes on 8 devices
# took 60 s for the first and ~1 s for each later one, instead of ~0.4 s. Here a
# replicated array is written by replica 0 alone, except across processes where each replica's
# slice would be at least this large (then the write is spread over the hosts, as Orbax intends).
REPLICA_PARALLEL_MIN_BYTES = 1 << 20


def use_orbax_array_writer() -> None:
  """Registers Orbax's jax.Array handler with the rule above (the registry is global and Orbax
  reads it at each save; called by every writer: the trainer's checkpoints and model exports).
  Orbax's own default stays in force on GPUs, where it already writes from one replica."""
  global _ARRAY_WRITER
  import orbax.checkpoint as ocp  # noqa: PLC0415
  # The default handler's metadata store, as Orbax's own registry builds it (>= 0.12).
  from orbax.checkpoint._src.metadata import array_metadata_store  # noqa: PLC0415

  parallel = jax.process_count() > 1 and jax.default_backend() not in ("gpu", "cuda", "rocm")
  if _ARRAY_WRITER == parallel:
    return
  handler = ocp.type_handlers.ArrayHandler(
      use_replica_parallel=parallel, min_slice_bytes_for_replica_parallel=REPLICA_PARALLEL_MIN_BYTES,
      array_metadata_store=array_metadata_store.Store())
  absl_logger = logging.getLogger("absl")
  absl_logger.addFilter(_drop_override_notice)  # Orbax logs a WARNING for every replaced handler
  try:
    ocp.type_handlers.register_type_handler(jax.Array, handler, override=True)
  finally:
    absl_logger.removeFilter(_drop_override_notice)
  _ARRAY_WRITER = parallel


_ARRAY_WRITER = None  # the `parallel` setting registered by this process, None before the first


def _drop_override_notice(record) -> bool:
  return not str(record.msg).startswith("Type handler registry")


def drop_read_only_notice(record) -> bool:
  """A logging filter (the absl logger) for Orbax's notice about a read-only manager."""
  return not str(record.msg).startswith("Given directory is read only")


def _load_checkpoint(path: str, config, step):
  import orbax.checkpoint as ocp  # noqa: PLC0415  (only checkpoints need Orbax)

  directory = checkpoint_dir(path)
  # Orbax warns "Given directory is read only" for every read-only manager: what we asked for,
  # nothing a user of eval / track / export can act on.
  absl_logger = logging.getLogger("absl")
  absl_logger.addFilter(drop_read_only_notice)
  try:
    manager = ocp.CheckpointManager(
        directory, options=ocp.CheckpointManagerOptions(read_only=True, create=False,
                                                        save_interval_steps=0),
        # The data position is not read here; naming its handler keeps Orbax from warning that it
        # "could not be restored" at every load.
        item_handlers={STATE_ITEM: ocp.PyTreeCheckpointHandler(),
                       CONFIG_ITEM: ocp.JsonCheckpointHandler(),
                       DATA_ITEM: ocp.JsonCheckpointHandler()})
  finally:
    absl_logger.removeFilter(drop_read_only_notice)
  try:
    step = manager.latest_step() if step is None else step
    if step is None:
      raise FileNotFoundError(f"no checkpoint under {directory}")
    saved_config = config_utils.config_from_json(dict(manager.restore(step, args=ocp.args.Composite(
        **{CONFIG_ITEM: ocp.args.JsonRestore()}))[CONFIG_ITEM]))
    where = f"checkpoint {directory}/{step}"
    meta = manager.item_metadata(step)[STATE_ITEM]
    saved = meta.tree if hasattr(meta, "tree") else meta
    saved = {part: saved.get(part, {}) for part in VARIABLE_PARTS}
    if config is None:
      config = saved_config
    else:
      where += " (checked against the given config)"
    legacy = layout.is_earlier(saved["params"])
    if not legacy:
      check_variables(config, saved, where)
    # A checkpoint of an earlier layout restores as it was saved, then maps (_upgrade_layout).
    abstract = saved if legacy else abstract_variables(config)
    target, restore_args = _single_device_target(abstract)
    restored = manager.restore(step, args=ocp.args.Composite(**{STATE_ITEM: ocp.args.PyTreeRestore(
        item=target, restore_args=restore_args, partial_restore=True)}))[STATE_ITEM]
  finally:
    manager.close()
  variables = {"params": restored["params"], "batch_stats": restored.get("batch_stats", {})}
  if legacy:
    variables = jax.device_put(_upgrade_layout(variables, where))
    check_variables(config, variables, where)
  return config, variables
