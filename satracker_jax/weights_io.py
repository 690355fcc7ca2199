"""Read PyTorch-named checkpoints into flat `{name: np.ndarray}` dicts, without unsafe unpickling.

Formats:
- `.safetensors`: `safetensors.numpy` (no torch needed; bfloat16 comes back as ml_dtypes.bfloat16).
- `.npz`: `np.load(allow_pickle=False)`.
- `.pth` / `.pt` / `.bin` / `.ckpt`: `torch.load(map_location="cpu", weights_only=True)` when torch is
  installed (`pip install -e .[torch]`). Never plain pickle: a checkpoint is untrusted input, and
  `weights_only=True` refuses arbitrary Python objects (it fails on e.g. OSTrack's full training
  checkpoints, which pickle a settings object; the error says how to extract the weights).

Container layouts are unwrapped: MAE's `{"model": state_dict}`, OSTrack's `{"net": ...}`, Lightning's
`{"state_dict": ...}`, DDP's `module.` prefixes. Model prefixes (`backbone.`, `bert.`) are removed by
`strip_prefix`, which the converter applies per branch.
"""
from __future__ import annotations

import os
from typing import Any, Mapping

import numpy as np

TORCH_SUFFIXES = (".pth", ".pt", ".bin", ".ckpt")
# Keys under which training scripts nest the weights, tried in order.
WRAPPER_KEYS = ("model", "net", "state_dict", "model_state_dict", "module")


def _load_safetensors(path: str) -> dict[str, np.ndarray]:
  from safetensors.numpy import load_file  # pylint: disable=g-import-not-at-top
  return dict(load_file(path))


def _load_npz(path: str) -> dict[str, np.ndarray]:
  with np.load(path, allow_pickle=False) as data:
    return {k: data[k] for k in data.files}


def _torch_to_numpy(value) -> Any:
  import torch  # pylint: disable=g-import-not-at-top
  if isinstance(value, torch.Tensor):
    t = value.detach().cpu()
    if t.dtype == torch.bfloat16:  # numpy has no bfloat16; float32 holds it exactly
      t = t.to(torch.float32)
    return t.numpy()
  if isinstance(value, Mapping):
    return {k: _torch_to_numpy(v) for k, v in value.items()}
  return value


def _load_torch(path: str):
  try:
    import torch  # pylint: disable=g-import-not-at-top
  except ImportError:
    raise ImportError(
        f"{path}: reading PyTorch checkpoints needs torch; install it with `pip install -e .[torch]` "
        "or convert the file to .safetensors first") from None
  try:
    obj = torch.load(path, map_location="cpu", weights_only=True)
  except Exception as e:  # torch raises UnpicklingError subclasses that vary across versions
    raise ValueError(
        f"{path}: torch.load(weights_only=True) refused the file ({type(e).__name__}: {str(e)[:200]}). "
        "It pickles Python objects besides tensors; if you trust it, extract the weights once with "
        "`torch.save(torch.load(p, weights_only=False)['net'], 'weights.pth')` (or save as .safetensors)"
    ) from None
  return _torch_to_numpy(obj)


def flatten(tree: Mapping, sep: str = ".", prefix: str = "") -> dict[str, Any]:
  """{'a<sep>b<sep>c': leaf} for a nested mapping (no JAX needed)."""
  out = {}
  for k, v in tree.items():
    name = f"{prefix}{k}"
    if isinstance(v, Mapping):
      out.update(flatten(v, sep, name + sep))
    else:
      out[name] = v
  return out


def unflatten(flat: Mapping[str, Any], sep: str = "/") -> dict:
  """{"a/b/c": leaf} -> nested dicts (the inverse of `flatten`)."""
  tree: dict = {}
  for name, value in flat.items():
    node = tree
    *parents, leaf = name.split(sep)
    for p in parents:
      node = node.setdefault(p, {})
    node[leaf] = value
  return tree


def unwrap_state_dict(obj: Any, path: str = "<checkpoint>") -> dict[str, np.ndarray]:
  """Finds the weight dict inside a loaded checkpoint and returns it flat, arrays only."""
  if not isinstance(obj, Mapping):
    raise ValueError(f"{path}: expected a dict of tensors, found {type(obj).__name__}")
  for key in WRAPPER_KEYS:
    inner = obj.get(key)
    if isinstance(inner, Mapping) and inner:
      return unwrap_state_dict(inner, path)
  flat = flatten(obj, sep=".")
  arrays = {k: v for k, v in flat.items() if isinstance(v, np.ndarray)}
  if not arrays:
    raise ValueError(f"{path}: no arrays found (top-level keys: {sorted(obj)[:10]})")
  # DDP-wrapped models save every key as `module.<name>`.
  if all(k.startswith("module.") for k in arrays):
    arrays = {k[len("module."):]: v for k, v in arrays.items()}
  return arrays


def load_state_dict(path: str) -> dict[str, np.ndarray]:
  """Any supported checkpoint file -> flat `{pytorch_name: np.ndarray}`."""
  if not os.path.isfile(path):
    raise FileNotFoundError(f"checkpoint not found: {path!r}")
  lower = path.lower()
  if lower.endswith(".safetensors"):
    obj = _load_safetensors(path)
  elif lower.endswith(".npz"):
    obj = _load_npz(path)
  elif lower.endswith(TORCH_SUFFIXES):
    obj = _load_torch(path)
  else:
    raise ValueError(f"{path}: unknown checkpoint format; expected .safetensors, .npz or "
                     f"{'/'.join(TORCH_SUFFIXES)}")
  return unwrap_state_dict(obj, path)


def strip_prefix(state: Mapping[str, np.ndarray], prefix: str) -> dict[str, np.ndarray]:
  """Removes `prefix` from the keys that carry it; keys without it are kept as they are, so
  the converter reports them (e.g. OSTrack's `box_head.*`, HF's `cls.*`) instead of losing them."""
  if not any(k.startswith(prefix) for k in state):
    return dict(state)
  return {(k[len(prefix):] if k.startswith(prefix) else k): v for k, v in state.items()}


def find_checkpoint_file(path: str) -> str:
  """A file is returned as is; a HF-style directory yields its weights file."""
  if os.path.isdir(path):
    for name in ("model.safetensors", "pytorch_model.bin", "model.npz", "model.pth"):
      candidate = os.path.join(path, name)
      if os.path.isfile(candidate):
        return candidate
    raise FileNotFoundError(f"{path}: directory holds no model.safetensors / pytorch_model.bin / model.npz")
  return path
