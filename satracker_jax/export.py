"""A trained model for shipping (`satracker export`): the tracker's device step as StableHLO
(`--format stablehlo`, the default) or the model alone as an Orbax folder (`--format orbax`).

    exported, meta, leaves = export_step(config, variables, batch_size=1, weights="baked")
    save_exported(path, exported, meta, leaves);  step = load_exported(path)

The exported function is `tracker.make_step_fn` (network + Hann-windowed decode):

  step(template u8 [B,Ht,Wt,3], template_box f32 [B,4], search u8 [B,Hs,Ws,3],
       text_ids i32 [B,L], text_mask i32 [B,L], window f32 [Hf,Wf])
    -> {"box" f32 [B,4] (normalised cx,cy,w,h in the search crop), "score" f32 [B],
        "score_map" [B,Hf,Wf,1] logits, "size_map" [B,Hf,Wf,2], "offset_map" [B,Hf,Wf,2]}

Weights: `--weights baked` (default) folds the variables into the module as constants, so FILE
alone runs the network (simplest to ship; fine up to a few hundred MB — the serialised module is
a flatbuffer limited to 2 GB, so ViT-L exports should use `inputs`). `--weights inputs` makes the
variables the first argument (a flat list) and writes them to `FILE.weights.npz`, which
`load_exported` reads and binds. Either way `FILE.json` records the input/output shapes and dtypes,
the weight mode, the platforms and the model config. Host-side cropping and box mapping are not
in the export (they are plain numpy; see `satracker_jax/tracker.py`).

`load_exported(FILE)` deserialises and runs the step without this package's model code (jax and
numpy only).

    save_model_folder(out, config, variables)     # --format orbax

writes the model alone: params and batch_stats as an Orbax checkpoint (`out/variables`, each array
written as it lies: a sharded array by the processes that hold its shards) and the config
(`out/satracker_model.json`, written last: a folder without it is not a model). No optimizer state,
no step, no data position. `model_io.load_variables(out)` restores it onto one device whatever
device count wrote it, so `eval`, `track`, `export` and `train.init_from` read it like a workdir.
Either format may be written to a bucket URL (gs://...).
"""
from __future__ import annotations

import io
import json
import os
from typing import Sequence

import jax
import numpy as np

from satracker_jax import config_utils, model_io, paths
from satracker_jax import tracker as tracker_lib

FORMAT = "satracker-step/1"
INPUT_NAMES = ("template", "template_box", "search", "text_ids", "text_mask", "window")


def sidecar_path(path: str) -> str:
  return path + ".json"


def weights_path(path: str) -> str:
  return path + ".weights.npz"


def export_step(config, variables, batch_size: int = 1, weights: str = "baked",
                platforms: Sequence[str] | None = None, apply_fn=None):
  """Returns (jax.export.Exported, metadata dict, weight leaves or None)."""
  if weights not in ("baked", "inputs"):
    raise ValueError(f"weights must be 'baked' or 'inputs', got {weights!r}")
  step = tracker_lib.make_step_fn(apply_fn or tracker_lib.model_apply_fn(config))
  specs = tracker_lib.step_input_specs(config, batch_size)
  in_specs = [specs[n] for n in INPUT_NAMES]
  leaves = None
  if weights == "baked":
    def fn(*inputs):
      return step(variables, *inputs)
    exported = jax.export.export(jax.jit(fn), platforms=platforms)(*in_specs)
  else:
    leaves, treedef = jax.tree.flatten(variables)
    leaf_specs = [jax.ShapeDtypeStruct(np.shape(l), l.dtype) for l in leaves]

    def fn(weight_list, *inputs):
      return step(jax.tree.unflatten(treedef, weight_list), *inputs)
    exported = jax.export.export(jax.jit(fn), platforms=platforms)(leaf_specs, *in_specs)
  outputs = jax.tree.unflatten(exported.out_tree, exported.out_avals)
  meta = {
      "format": FORMAT,
      "weights": weights,
      "num_weights": 0 if leaves is None else len(leaves),
      "inputs": [{"name": n, "shape": list(s.shape), "dtype": str(np.dtype(s.dtype))}
                 for n, s in zip(INPUT_NAMES, in_specs)],
      "outputs": {k: {"shape": list(a.shape), "dtype": str(np.dtype(a.dtype))} for k, a in outputs.items()},
      "platforms": list(exported.platforms),
      "calling_convention_version": exported.calling_convention_version,
      "jax_version": jax.__version__,
      "model": config.model.to_dict(),
      "tracker": config.tracker.to_dict(),
      "crop": {"template_factor": float(config.data.template_factor),
               "search_factor": float(config.data.search_factor)},
  }
  return exported, meta, leaves


def save_exported(path: str, exported, meta: dict, leaves=None) -> list[str]:
  paths.ensure_dir(paths.resolve(path).parent, "--out folder")
  paths.resolve(path).write_bytes(bytes(exported.serialize()))
  written = [path]
  if leaves is not None:
    buffer = io.BytesIO()
    np.savez(buffer, **{f"w{i:05d}": np.asarray(l) for i, l in enumerate(leaves)})
    paths.resolve(weights_path(path)).write_bytes(buffer.getvalue())
    written.append(weights_path(path))
  paths.resolve(sidecar_path(path)).write_text(json.dumps(meta, indent=2, default=list) + "\n")
  written.append(sidecar_path(path))
  return written


def save_model_folder(out: str, config, variables: dict) -> list[str]:
  """The model alone as an Orbax folder (module docstring); returns the paths written."""
  import orbax.checkpoint as ocp  # noqa: PLC0415

  model_io.check_variables(config, variables, "the model to export")
  folder = paths.ensure_dir(out, "--out")
  model_file = folder / model_io.MODEL_FILE
  if model_file.exists():
    model_file.unlink()  # the folder is not a model again until the new variables are complete
  items = {part: variables.get(part, {}) for part in model_io.VARIABLE_PARTS}
  model_io.use_orbax_array_writer()
  with ocp.StandardCheckpointer() as checkpointer:
    checkpointer.save(folder / model_io.VARIABLES_DIR, items, force=True)
    checkpointer.wait_until_finished()
  if jax.process_index() == 0:
    model_file.write_text(json.dumps({"format": model_io.MODEL_FORMAT,
                                      "config": config_utils.config_to_json(config)}, indent=2) + "\n")
  return [os.fspath(folder / model_io.VARIABLES_DIR), os.fspath(model_file)]


class ExportedStep:
  """A deserialised step: `step(template, template_box, search, text_ids, text_mask, window)`."""

  def __init__(self, exported, meta: dict, leaves=None):
    self.exported = exported
    self.meta = meta
    self._leaves = leaves
    # jit so repeated calls reuse one compilation of the deserialised module.
    self._call = jax.jit(exported.call)

  def __call__(self, template, template_box, search, text_ids, text_mask, window) -> dict:
    inputs = (template, template_box, search, text_ids, text_mask, window)
    for spec, value in zip(self.meta["inputs"], inputs):
      shape = tuple(np.shape(value))
      dtype = str(np.dtype(value.dtype if hasattr(value, "dtype") else np.asarray(value).dtype))
      if shape != tuple(spec["shape"]) or dtype != spec["dtype"]:
        raise ValueError(f"exported step input {spec['name']!r}: expected {spec['dtype']}{spec['shape']}, "
                         f"got {dtype}{list(shape)}")
    if self._leaves is not None:
      return self._call(self._leaves, *inputs)
    return self._call(*inputs)


def load_exported(path: str) -> ExportedStep:
  meta = json.loads(paths.resolve(sidecar_path(path)).read_text())
  if meta.get("format") != FORMAT:
    raise ValueError(f"{sidecar_path(path)}: not a {FORMAT} sidecar (format={meta.get('format')!r})")
  exported = jax.export.deserialize(bytearray(paths.resolve(path).read_bytes()))
  leaves = None
  if meta["weights"] == "inputs":
    with np.load(io.BytesIO(paths.resolve(weights_path(path)).read_bytes())) as data:
      leaves = [data[f"w{i:05d}"] for i in range(meta["num_weights"])]
    leaves = [jax.device_put(l) for l in leaves]
  return ExportedStep(exported, meta, leaves)
