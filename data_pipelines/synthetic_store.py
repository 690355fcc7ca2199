"""A generated synthetic data set on disk that knows what produced it (`ensure_generated`).

`ROOT/.complete` is written last and holds the *generation fingerprint*: the generator version and
every field of `config.data.synthetic` (seed, sequence count, test split, frames, size, mode
probabilities...). A root whose fingerprint equals the requested one is reused; any difference
(another seed, count, size or generator version, or a root from before fingerprints, whose
`.complete` is empty) clears the root and generates again. Why clear rather than overwrite: a
smaller count or another split would otherwise leave old videos behind that the readers pick up.

Only folders that hold nothing but what the generator writes are ever deleted; anything else is an
error naming the file, so a mistyped root never costs user data.
"""
from __future__ import annotations

import json
import os
from typing import Optional

from data_pipelines import synthetic

COMPLETE_FILE = ".complete"  # one of synthetic.GENERATED_NAMES (the only names ever cleared)


def fingerprint(synthetic_config) -> dict:
  """The generator version and every `config.data.synthetic` field, JSON-normalised (tuples ->
  lists, size -> [w, h]) so that a fingerprint read back from disk compares equal."""
  params = synthetic_config.to_dict() if hasattr(synthetic_config, "to_dict") else dict(synthetic_config)
  if "size" in params:
    params["size"] = list(synthetic.parse_size(params["size"]))
  return json.loads(json.dumps({"generator_version": synthetic.GENERATOR_VERSION, **params},
                               sort_keys=True))


def recorded_fingerprint(root: str) -> Optional[dict]:
  """The fingerprint in ROOT/.complete; None when the root is absent, unfinished or pre-fingerprint."""
  path = os.path.join(root, COMPLETE_FILE)
  try:
    with open(path) as f:
      text = f.read()
  except FileNotFoundError:
    return None
  try:
    recorded = json.loads(text) if text.strip() else None
  except json.JSONDecodeError:
    return None
  return recorded if isinstance(recorded, dict) else None


def ensure_generated(config, root: str, progress: bool = True) -> tuple[dict, bool]:
  """Generates `config.data.synthetic` into `root` unless it is already there, exactly.

  Returns (the fingerprint, whether it (re)generated). `config.data.synthetic` may carry any
  field `synthetic.generate_from_config` reads; all of them are part of the fingerprint.
  """
  want = fingerprint(config.data.synthetic)
  if recorded_fingerprint(root) == want:
    return want, False
  if os.path.isdir(root):
    synthetic.clear_generated(root)
  synthetic.generate_from_config(config, root, progress=progress)
  with open(os.path.join(root, COMPLETE_FILE), "w") as f:
    json.dump(want, f, indent=1, sort_keys=True)
    f.write("\n")
  return want, True
