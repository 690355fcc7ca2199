"""Load `configs/x.py[:arg]` files and apply `--config.a.b=value` overrides (big_vision style).

Every mistake a user can make here (a config file that is not there, an override path the config
does not have, a value of the wrong type, a model section that cannot build a model) raises
`ConfigError` with a one-line message; `satracker` prints it and exits 2, like an argparse error.
"""
from __future__ import annotations

import ast
import difflib
import importlib.util
import json
import os
from typing import Sequence

import ml_collections


class ConfigError(Exception):
  """A config the user wrote or typed is wrong; the message is one line that says how to fix it.

  Deliberately not a ValueError: verbs turn ValueErrors from data and checkpoints into their own
  exit-1 messages, while a config mistake is a usage error (exit 2) and must reach the CLI intact.
  """


CONFIG_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs")


def _resolve_path(path: str) -> str:
  if os.path.exists(path):
    return path
  # `tiny` or `tiny.py` or `configs/tiny.py` from anywhere.
  name = os.path.basename(path)
  if not name.endswith(".py"):
    name += ".py"
  candidate = os.path.join(CONFIG_DIR, name)
  if os.path.exists(candidate):
    return candidate
  known = sorted(f for f in os.listdir(CONFIG_DIR) if f.endswith(".py") and not f.startswith("_"))
  raise ConfigError(f"config file not found: {path!r} (also looked for {candidate!r}; "
                    f"configs/ has {', '.join(known)})")


def load_config(spec: str, overrides: Sequence[str] = ()) -> ml_collections.ConfigDict:
  """`spec` is 'path/to/config.py' or 'path/to/config.py:arg'; overrides are 'a.b=value'.

  The model section is validated here (cheap, no tracing), so an impossible model fails before a
  verb creates a workdir or loads data, with the same one-line `ConfigError` as a typo.
  """
  path, _, arg = spec.partition(":")
  path = _resolve_path(path)
  module_spec = importlib.util.spec_from_file_location(f"_satracker_config_{os.path.basename(path)[:-3]}", path)
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  if not hasattr(module, "get_config"):
    raise ConfigError(f"{path}: a config file must define get_config(arg=None)")
  check_config_arg(spec, path, module, arg)
  try:
    config = module.get_config(arg or None)
  except (ValueError, KeyError, TypeError) as e:
    raise ConfigError(f"{spec}: get_config({arg or None!r}) failed: {_one_line(e)}") from None
  apply_overrides(config, overrides)
  validate_model(config)
  validate_data(config)
  return config


def check_config_arg(spec: str, path: str, module, arg: str) -> None:
  """`ConfigError` naming the arguments a config file defines (its `ARGS`) when `arg` is not one
  of them: a typo must not silently give the config's default variant."""
  if not arg:
    return
  known = getattr(module, "ARGS", None)
  if known is None:
    raise ConfigError(f"--config {spec}: {path} declares no ARGS, so its argument {arg!r} cannot "
                      "be checked; list the arguments get_config understands in ARGS = (...)")
  if arg in known:
    return
  if not known:
    raise ConfigError(f"--config {spec}: {os.path.basename(path)} takes no argument; "
                      f"use --config {spec.partition(':')[0]}")
  close = difflib.get_close_matches(arg, known, n=1)
  hint = f"; did you mean {spec.partition(':')[0]}:{close[0]}?" if close else ""
  raise ConfigError(f"--config {spec}: {os.path.basename(path)} has no argument {arg!r}; it "
                    f"defines: {', '.join(known)}{hint}")


def _one_line(error: BaseException) -> str:
  return " ".join(str(error).strip("'\"").split())


def validate_model(config: ml_collections.ConfigDict) -> None:
  """`ConfigError` when `config.model` cannot build a model (every problem, on one line)."""
  if "model" not in config:
    return
  # Lazy: `satracker --help` and the numpy-only verbs must not pay for importing the model.
  from satracker_jax.models.config import model_config_from_dict  # noqa: PLC0415
  try:
    model_config_from_dict(config.model)
  except (ValueError, TypeError) as e:
    head, *items = [line.strip() for line in str(e).splitlines() if line.strip()]
    raise ConfigError(" ".join([head] + ["; ".join(items)]) if items else head) from None


# `data.backend` values (data_pipelines/batches.py maps each to its module).
DATA_BACKENDS = ("tf", "numpy")
# `data.workers` kinds: "threads" (both backends) or "processes" (numpy backend only).
WORKER_KINDS = ("threads", "processes")
# Input-parallelism fields replaced by `data.workers` (issue 24): each fails in one line.
RENAMED_FIELDS = {
    "data.threads": "data.workers (e.g. --config.data.workers=threads:4)",
    "data.num_parallel_calls": "data.workers (e.g. --config.data.workers=threads:4)",
    "data.processes": "data.workers (e.g. --config.data.workers=processes:8; processes: one per core)",
}


def _renamed(path: str) -> str:
  return f"{path} was replaced by {RENAMED_FIELDS[path]}; see configs/base.py"


def parse_workers(value) -> tuple[str, int]:
  """`data.workers` -> (kind, count): "threads" | "processes", optionally ":N" (N >= 1 workers).

  Without a count, one worker per CPU this process may use (tf threads: tf.data's autotuner on
  TensorFlow's shared pool). `ConfigError` (one line) for anything else."""
  text = str(value).strip()
  kind, sep, count = text.partition(":")
  if kind not in WORKER_KINDS or (sep and not (count.isdigit() and int(count) >= 1)):
    raise ConfigError(f"data.workers={value!r}: expected threads or processes, optionally with a "
                      "count (threads:4, processes:16; without one: one per usable core)")
  return kind, int(count) if sep else -1


def validate_data(config: ml_collections.ConfigDict) -> None:
  """`ConfigError` for a `data` section the input pipeline would refuse later, at its first batch."""
  data = config.get("data", {})
  for path in RENAMED_FIELDS:
    if path.split(".", 1)[1] in data:  # a config file of its own still setting an old name
      raise ConfigError(_renamed(path))
  backend = data.get("backend", "tf")
  if backend not in DATA_BACKENDS:
    raise ConfigError(f"data.backend={backend!r}: expected one of {', '.join(DATA_BACKENDS)} "
                      "(numpy: no TensorFlow needed)")
  kind, _ = parse_workers(data.get("workers", "threads"))
  if kind == "processes" and backend != "numpy":
    raise ConfigError(f"data.workers={data.workers} needs data.backend=numpy (the tf backend "
                      "makes samples on threads: data.workers=threads[:N])")


def config_paths(config: ml_collections.ConfigDict, prefix: str = "") -> list[str]:
  """Every dotted path of a config, groups and leaves ('train', 'train.total_steps', ...)."""
  paths = []
  for key in config.keys():
    path = f"{prefix}{key}"
    paths.append(path)
    value = config[key]
    if isinstance(value, (ml_collections.ConfigDict, dict)):
      paths.extend(config_paths(value, path + "."))
  return paths


def suggest_paths(key: str, config: ml_collections.ConfigDict, limit: int = 3) -> list[str]:
  """Settable paths closest to `key`: the same field name in another group ranks first
  (`total_steps` -> `train.total_steps`), then spelling similarity of the whole path (difflib)."""
  groups = set()
  paths = config_paths(config)
  for p in paths:
    groups.add(p.rpartition(".")[0])
  leaves = [p for p in paths if p not in groups]
  name = key.rsplit(".", 1)[-1]
  close = set(difflib.get_close_matches(key, leaves, n=limit, cutoff=0.6))
  close |= {p for p in leaves if p.rsplit(".", 1)[-1] in
            difflib.get_close_matches(name, [q.rsplit(".", 1)[-1] for q in leaves], n=limit, cutoff=0.75)}
  score = lambda p: (p.rsplit(".", 1)[-1] == name) + difflib.SequenceMatcher(None, key, p).ratio()
  return sorted(close - {key}, key=lambda p: (-score(p), p))[:limit]


def _parse_value(text: str, current):
  if isinstance(current, str):
    return text
  if isinstance(current, bool) and text.strip().lower() in ("true", "false"):
    return text.strip().lower() == "true"  # shells and YAML habits: --config.model.use_sam=false
  try:
    value = ast.literal_eval(text)
  except (ValueError, SyntaxError):
    value = text
  if isinstance(current, float) and isinstance(value, int) and not isinstance(value, bool):
    value = float(value)
  if isinstance(current, tuple) and isinstance(value, list):
    value = tuple(value)
  if isinstance(current, tuple) and isinstance(value, int):
    value = (value,)
  return value


def apply_overrides(config: ml_collections.ConfigDict, overrides: Sequence[str]) -> None:
  """Sets each 'a.b=value' (or '--config.a.b=value'); `ConfigError` names the first bad one.

  Values are parsed as Python literals and must keep the field's type (ints widen to floats,
  lists and scalars become tuples for tuple fields), so a typo cannot silently turn a number into
  a string.
  """
  touched_model = False
  for item in overrides:
    item = item[2:] if item.startswith("--") else item
    item = item[len("config."):] if item.startswith("config.") else item
    key, sep, text = item.partition("=")
    if not sep or not key:
      raise ConfigError(f"override --config.{item} must look like --config.key.sub=value")
    node = config
    parts = key.split(".")
    for depth, part in enumerate(parts):
      if not isinstance(node, (ml_collections.ConfigDict, dict)):
        group = ".".join(parts[:depth])
        raise ConfigError(f"--config.{key}: {group} is a value ({node!r}), not a group of fields")
      if part not in node:
        if ".".join(parts[:depth + 1]) in RENAMED_FIELDS:
          raise ConfigError(f"--config.{key}={text}: {_renamed('.'.join(parts[:depth + 1]))}")
        suggestions = suggest_paths(key, config)
        hint = f"; did you mean {' or '.join(suggestions)}?" if suggestions else ""
        where = ".".join(parts[:depth + 1])
        missing = f"no config field {key!r}" if where == key else f"no config field {where!r} (in {key!r})"
        raise ConfigError(f"--config.{key}={text}: {missing}{hint}")
      if depth < len(parts) - 1:
        node = node[part]
    leaf = parts[-1]
    current = node[leaf]
    if isinstance(current, (ml_collections.ConfigDict, dict)):
      raise ConfigError(f"--config.{key}={text}: {key} is a group of fields "
                        f"({', '.join(sorted(current.keys()))}); set one of them")
    value = _parse_value(text, current)
    if current is not None and not _fits(value, current):
      raise ConfigError(f"--config.{key}={text}: expected {_type_name(current)} "
                        f"(like the current {current!r}), got {type(value).__name__} {value!r}")
    try:
      node[leaf] = value
    except (TypeError, ValueError) as e:
      raise ConfigError(f"--config.{key}={text}: {_one_line(e)}") from None
    touched_model = touched_model or parts[0] == "model"
  if touched_model:
    validate_model(config)


def _type_name(value) -> str:
  return "a tuple" if isinstance(value, tuple) else type(value).__name__


def _fits(value, current) -> bool:
  """Whether `value` may replace `current` (ConfigDict's own check, plus tuple element types)."""
  if isinstance(current, bool):
    return isinstance(value, bool)
  if isinstance(current, int):
    return isinstance(value, int) and not isinstance(value, bool)
  if isinstance(current, float):
    return isinstance(value, (int, float)) and not isinstance(value, bool)
  if isinstance(current, tuple):
    return isinstance(value, tuple)
  return True


def split_config_overrides(argv: Sequence[str]) -> tuple[list[str], list[str]]:
  """Separates `--config.x=y` items (and `--config.x y`) from other CLI arguments."""
  rest, overrides = [], []
  argv = list(argv)
  i = 0
  while i < len(argv):
    a = argv[i]
    if a.startswith("--config."):
      if "=" in a:
        overrides.append(a[2:])
      else:
        if i + 1 >= len(argv):
          raise ConfigError(f"{a} needs a value ({a}=VALUE)")
        overrides.append(f"{a[2:]}={argv[i + 1]}")
        i += 1
    else:
      rest.append(a)
    i += 1
  return rest, overrides


def config_to_json(config: ml_collections.ConfigDict) -> dict:
  """A JSON-able dict (what checkpoints and params files store)."""
  return json.loads(config.to_json_best_effort())


def config_from_json(d: dict) -> ml_collections.ConfigDict:
  """Inverse of `config_to_json`. JSON has no tuples; configs use tuples for every sequence field
  (layer lists, lr_rules), so lists come back as tuples."""
  def fix(v):
    if isinstance(v, list):
      return tuple(fix(x) for x in v)
    if isinstance(v, dict):
      return {k: fix(x) for k, x in v.items()}
    return v
  return ml_collections.ConfigDict(fix(d))
