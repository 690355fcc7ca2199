"""Load `configs/x.py[:arg]` files and apply `--config.a.b=value` overrides (big_vision style)."""
from __future__ import annotations

import ast
import importlib.util
import json
import os
from typing import Sequence

import ml_collections

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
  raise FileNotFoundError(f"config file not found: {path!r} (also looked for {candidate!r})")


def load_config(spec: str, overrides: Sequence[str] = ()) -> ml_collections.ConfigDict:
  """`spec` is 'path/to/config.py' or 'path/to/config.py:arg'; overrides are 'a.b=value'."""
  path, _, arg = spec.partition(":")
  path = _resolve_path(path)
  module_spec = importlib.util.spec_from_file_location(f"_satracker_config_{os.path.basename(path)[:-3]}", path)
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  if not hasattr(module, "get_config"):
    raise ValueError(f"{path}: a config file must define get_config(arg=None)")
  config = module.get_config(arg or None)
  apply_overrides(config, overrides)
  return config


def _parse_value(text: str, current):
  if isinstance(current, str):
    return text
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
  for item in overrides:
    item = item[2:] if item.startswith("--") else item
    item = item[len("config."):] if item.startswith("config.") else item
    key, sep, text = item.partition("=")
    if not sep:
      raise ValueError(f"override {item!r} must look like key.sub=value")
    node = config
    parts = key.split(".")
    for part in parts[:-1]:
      if part not in node:
        raise KeyError(f"override {key!r}: config has no field {part!r}")
      node = node[part]
    leaf = parts[-1]
    if leaf not in node:
      raise KeyError(f"override {key!r}: config has no field {leaf!r} (fields: {sorted(node.keys())})")
    node[leaf] = _parse_value(text, node[leaf])


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
          raise ValueError(f"{a} needs a value")
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
