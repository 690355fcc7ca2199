"""`satracker convert`: MAE/timm/OSTrack ViT and HuggingFace BERT weights -> SATracker backbone.

    satracker convert --vit mae_pretrain_vit_base.pth --bert bert-base-uncased/ \
        --config configs/base.py --out weights/satracker_b
    satracker train --config configs/base.py --config.train.init_from=weights/satracker_b \
        --config.text.vocab_file=weights/satracker_b/vocab.txt ...

Output (plain NumPy, readable without JAX or Orbax):
- `DIR/params.npz`: flat `{"vit_block_0/attn/query/kernel": array, ...}`, names as in the Flax
  parameter tree (`/`-joined), float32, backbone only.
- `DIR/report.json`: sources, what each target came from, unused / unexpected / missing keys,
  how the position embeddings were made, and `vocab_file` (the BERT vocab.txt copied to DIR).
`load_pretrained(params, DIR)` merges `params.npz` into a freshly initialised tree: fusion (TEM,
SAM), DM projections and the head stay new. The target names and shapes come from the model
itself (`jax.eval_shape` of `init`), so a model rename shows up as an error here, not as silently
unloaded weights.

Conversion rules (PyTorch -> Flax): Dense `weight [out, in]` -> `kernel [in, out]`; conv
OIHW -> HWIO; LayerNorm `weight|gamma` -> `scale`, `bias|beta` -> `bias`; the fused timm
`attn.qkv` is split into `query`/`key`/`value`; `pos_embed` loses its class token and is resized
to the template and search grids with PyTorch's bicubic (`F.interpolate`, a=-0.75,
align_corners=False), as OSTrack does; OSTrack's own `pos_embed_z`/`pos_embed_x` win when present.
The final ViT norm is `norm`, or MAE fine-tuning's `fc_norm` when `norm` is absent.

Policy: a wrong-shaped key is always an error naming the first one (a ViT-L checkpoint never
half-loads into ViT-B). Keys no rule knows ("unexpected": e.g. blocks beyond the model's depth)
are errors unless `--allow-unused`; backbone parameters a given checkpoint does not provide
("missing") are errors unless `--allow-missing`. Keys that are known to be irrelevant (class
token, MAE decoder, classifier heads, BERT pooler / MLM heads, OSTrack's box head) are reported
as "unused" and never fail.
"""
from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
from typing import Any, Callable, Mapping, Optional

import numpy as np

from satracker_jax import weights_io

PARAMS_FILE = "params.npz"
REPORT_FILE = "report.json"
VOCAB_FILE = "vocab.txt"

VIT_BRANCH = re.compile(r"^(patch_embed/|pos_embed_template$|pos_embed_search$|vit_block_\d+/|vit_norm/)")
BERT_BRANCH = re.compile(r"^(bert_embeddings/|bert_layer_\d+/)")


# ---------------------------------------------------------------------------------------------
# Rule tables: (PyTorch module regex, Flax module template filled with the regex groups, kind).
# The parameter suffix (weight/bias/gamma/beta) is handled by the kind.

VIT_RULES = (
    (r"patch_embed\.proj", "patch_embed", "conv"),
    (r"blocks\.(\d+)\.norm([12])", "vit_block_{0}/norm{1}", "norm"),
    (r"blocks\.(\d+)\.attn\.qkv", "vit_block_{0}/attn", "qkv"),
    (r"blocks\.(\d+)\.attn\.proj", "vit_block_{0}/attn/out", "dense"),
    (r"blocks\.(\d+)\.mlp\.fc([12])", "vit_block_{0}/mlp/fc{1}", "dense"),
    (r"norm", "vit_norm", "norm"),
)
# Known but deliberately not converted: (regex on the full key, reason).
VIT_UNUSED = (
    (r"cls_token$", "class token: the tracker has no class token"),
    (r"dist_token$|mask_token$|decoder[._].*", "MAE/DeiT pre-training only"),
    (r"head\..*|head_dist\..*", "classification head"),
    (r"box_head\..*", "OSTrack box head: the SATracker head starts new"),
)

BERT_RULES = (
    (r"embeddings\.(word|position|token_type)_embeddings", "bert_embeddings/{0}_embeddings", "embed"),
    (r"embeddings\.LayerNorm", "bert_embeddings/layer_norm", "norm"),
    (r"encoder\.layer\.(\d+)\.attention\.self\.(query|key|value)", "bert_layer_{0}/attention/{1}", "dense"),
    (r"encoder\.layer\.(\d+)\.attention\.output\.dense", "bert_layer_{0}/attention/out", "dense"),
    (r"encoder\.layer\.(\d+)\.attention\.output\.LayerNorm", "bert_layer_{0}/attention_norm", "norm"),
    (r"encoder\.layer\.(\d+)\.intermediate\.dense", "bert_layer_{0}/intermediate", "dense"),
    (r"encoder\.layer\.(\d+)\.output\.dense", "bert_layer_{0}/output", "dense"),
    (r"encoder\.layer\.(\d+)\.output\.LayerNorm", "bert_layer_{0}/output_norm", "norm"),
)
BERT_UNUSED = (
    (r"embeddings\.position_ids$", "buffer, not a weight"),
    (r"pooler\..*", "pooler: the tracker uses token features"),
    (r"cls\..*", "pre-training heads (MLM / NSP)"),
)


def _dense(suffix):
  return {"weight": ("kernel", lambda a: a.T), "bias": ("bias", None)}.get(suffix)


def _norm(suffix):
  return {"weight": ("scale", None), "gamma": ("scale", None), "bias": ("bias", None),
          "beta": ("bias", None)}.get(suffix)


def _conv(suffix):
  return {"weight": ("kernel", lambda a: a.transpose(2, 3, 1, 0)), "bias": ("bias", None)}.get(suffix)


def _embed(suffix):
  return {"weight": ("embedding", None)}.get(suffix)


def _qkv(suffix, w) -> Optional[list]:
  """timm's fused [3C, C] projection -> three Dense layers (PyTorch stores q, k, v in that order)."""
  if suffix not in ("weight", "bias"):
    return None
  if w.shape[0] % 3:
    raise ValueError(f"fused qkv {suffix} has leading dim {w.shape[0]}, not a multiple of 3")
  c = w.shape[0] // 3
  parts = [w[i * c:(i + 1) * c] for i in range(3)]
  if suffix == "weight":
    return [(f"{n}/kernel", p.T) for n, p in zip(("query", "key", "value"), parts)]
  return [(f"{n}/bias", p) for n, p in zip(("query", "key", "value"), parts)]


_KINDS: dict[str, Callable] = {"dense": _dense, "norm": _norm, "conv": _conv, "embed": _embed}


def _apply_rule(rules, key: str, value: np.ndarray):
  """-> (sort order, [(flax_name, array)]) or None if no rule matches."""
  module, _, suffix = key.rpartition(".")
  for index, (pattern, template, kind) in enumerate(rules):
    m = re.fullmatch(pattern, module)
    if not m:
      continue
    target = template.format(*m.groups())
    if m.groups() and m.group(1).isdigit():
      layer = int(m.group(1))
    else:  # unnumbered modules listed before the layers (embeddings) sort first, after (norm) last
      first_layered = min(i for i, rule in enumerate(rules) if r"(\d+)" in rule[0])
      layer = -1 if index < first_layered else 1 << 30
    # Model order (layer by layer, weights before biases) so "the first mismatched key" is the
    # one a reader expects, whatever order the checkpoint file stores its keys in.
    order = (layer, index, suffix not in ("weight", "gamma"), key)
    if kind == "qkv":
      pieces = _qkv(suffix, value)
      if pieces is None:
        return None
      return order, [(f"{target}/{name}", arr) for name, arr in pieces]
    mapping = _KINDS[kind](suffix)
    if mapping is None:
      return None
    name, fn = mapping
    return order, [(f"{target}/{name}", fn(value) if fn else value)]
  return None


# ---------------------------------------------------------------------------------------------
# Position embeddings.


def _cubic_weights(t: np.ndarray, a: float = -0.75) -> np.ndarray:
  """Keys cubic convolution weights for taps at offsets -1, 0, 1, 2 (PyTorch uses a = -0.75)."""
  def near(x):  # |x| <= 1
    return ((a + 2) * x - (a + 3)) * x * x + 1
  def far(x):  # 1 < |x| < 2
    return ((a * x - 5 * a) * x + 8 * a) * x - 4 * a
  return np.stack([far(t + 1), near(t), near(1 - t), far(2 - t)], axis=-1)


def _bicubic_matrix(n_in: int, n_out: int) -> np.ndarray:
  """[n_out, n_in] matrix of torch's bicubic resize along one axis (align_corners=False).

  Source positions are not clamped at 0 for cubic (unlike linear); the taps are clamped to the
  border, which is what `F.interpolate` does.
  """
  scale = n_in / n_out
  src = (np.arange(n_out) + 0.5) * scale - 0.5
  base = np.floor(src)
  weights = _cubic_weights(src - base)
  m = np.zeros((n_out, n_in), np.float64)
  for k in range(4):
    idx = np.clip(base.astype(int) - 1 + k, 0, n_in - 1)
    np.add.at(m, (np.arange(n_out), idx), weights[:, k])
  return m


def resample_grid(tokens: np.ndarray, new_grid: tuple[int, int]) -> np.ndarray:
  """[g*g, C] square-grid tokens -> [gh*gw, C] with PyTorch bicubic semantics."""
  n, c = tokens.shape
  g = int(round(n ** 0.5))
  if g * g != n:
    raise ValueError(f"position embedding with {n} tokens is not a square grid")
  gh, gw = new_grid
  if (gh, gw) == (g, g):
    return np.asarray(tokens, np.float32)
  grid = np.asarray(tokens, np.float64).reshape(g, g, c)
  out = np.einsum("ij,jkc,lk->ilc", _bicubic_matrix(g, gh), grid, _bicubic_matrix(g, gw))
  return out.reshape(gh * gw, c).astype(np.float32)


def _strip_cls(pe: np.ndarray, key: str) -> tuple[np.ndarray, bool]:
  tokens = pe.reshape(-1, pe.shape[-1])
  n = tokens.shape[0]
  if round((n - 1) ** 0.5) ** 2 == n - 1 and n > 1:
    return tokens[1:], True
  if round(n ** 0.5) ** 2 == n:
    return tokens, False
  raise ValueError(f"{key}: {n} position tokens are neither a square grid nor a grid + class token")


def _vit_pos_embeds(state, grids) -> tuple[list, dict, list]:
  """-> ([(source_key, flax_name, array)], info, unused keys)."""
  (tg, sg) = grids
  out, info, unused = [], {}, []
  if "pos_embed_z" in state and "pos_embed_x" in state:
    for key, name, g in (("pos_embed_z", "pos_embed_template", tg), ("pos_embed_x", "pos_embed_search", sg)):
      tokens, _ = _strip_cls(state[key], key)
      out.append((key, name, resample_grid(tokens, (g, g))[None]))
      info[name] = f"{key} ({int(round(tokens.shape[0] ** 0.5))}^2 grid) -> {g}x{g}"
    if "pos_embed" in state:
      unused.append(("pos_embed", "OSTrack's pos_embed_z / pos_embed_x are used instead"))
  elif "pos_embed" in state:
    tokens, had_cls = _strip_cls(state["pos_embed"], "pos_embed")
    g0 = int(round(tokens.shape[0] ** 0.5))
    for name, g in (("pos_embed_template", tg), ("pos_embed_search", sg)):
      out.append(("pos_embed", name, resample_grid(tokens, (g, g))[None]))
      info[name] = f"pos_embed ({g0}x{g0}{', class token dropped' if had_cls else ''}) -> {g}x{g} bicubic"
  return out, info, unused


# ---------------------------------------------------------------------------------------------
# Conversion.


@dataclasses.dataclass
class ConversionResult:
  params: dict[str, np.ndarray]            # flax name -> array
  mapped: dict[str, str]                   # flax name -> source key
  unused: dict[str, str]                   # source key -> reason
  unexpected: list[str]                    # source keys no rule maps into this model
  missing: list[str]                       # backbone params of a converted branch left new
  pos_embed: dict[str, str]

  def report(self) -> dict[str, Any]:
    return {"mapped": self.mapped, "unused": self.unused, "unexpected": self.unexpected,
            "missing": self.missing, "pos_embed": self.pos_embed}


def expected_param_shapes(model_config) -> dict[str, tuple]:
  """Flat per-block `{name: shape}` of the model's parameters (models/layout.py), nothing allocated."""
  import flax.linen as nn  # pylint: disable=g-import-not-at-top
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  from satracker_jax.models import build_model, layout, model_config_from_dict  # pylint: disable=g-import-not-at-top
  cfg = model_config_from_dict(model_config)
  model = build_model(cfg)
  t, s, n = cfg.template_size, cfg.search_size, cfg.max_text_len
  shapes = jax.eval_shape(lambda: nn.meta.unbox(model.init(
      jax.random.key(0), jnp.zeros((1, t, t, 3)), jnp.full((1, 4), 0.5), jnp.zeros((1, s, s, 3)),
      jnp.zeros((1, n), jnp.int32), jnp.ones((1, n), jnp.int32), train=False)))
  stored = {name: tuple(x.shape) for name, x in flatten_params(shapes["params"]).items()}
  return layout.shapes_to_per_block(stored)


def flatten_params(tree: Mapping) -> dict[str, Any]:
  """{'a/b/c': leaf} for a nested parameter dict."""
  return weights_io.flatten(tree, sep="/")


def _grids(model_config) -> tuple[int, int]:
  from satracker_jax.models import model_config_from_dict  # pylint: disable=g-import-not-at-top
  cfg = model_config_from_dict(model_config)
  return cfg.template_grid, cfg.search_grid


def _shape_error(key, name, source_shape, got, want):
  return ValueError(
      f"shape mismatch at checkpoint key {key!r} {tuple(source_shape)} -> {name} {tuple(got)}, "
      f"but the model expects {tuple(want)}: the checkpoint does not fit this config "
      "(e.g. ViT-L weights into a ViT-B config); pick the matching config")


def convert_state_dicts(vit_state: Optional[Mapping[str, np.ndarray]],
                        bert_state: Optional[Mapping[str, np.ndarray]],
                        model_config, expected: Optional[Mapping[str, tuple]] = None) -> ConversionResult:
  """PyTorch-named dicts (prefixes already stripped) -> flax-named arrays, checked against the model.

  Raises ValueError at the first wrong-shaped key (in ViT then BERT module order). Arrays that
  need no copy stay views of the inputs, so a shape-only check over zero-stride arrays is cheap.
  """
  expected = dict(expected) if expected is not None else expected_param_shapes(model_config)
  params, mapped, unused, unexpected, pos_info = {}, {}, {}, [], {}
  branches = []
  if vit_state is not None:
    branches.append((vit_state, VIT_RULES, VIT_UNUSED, VIT_BRANCH))
  if bert_state is not None:
    branches.append((bert_state, BERT_RULES, BERT_UNUSED, BERT_BRANCH))

  for state, rules, unused_rules, branch in branches:
    state = dict(state)
    converted = []  # (order, source key, [(name, array)])
    renamed = {}
    if rules is VIT_RULES:
      pos, pos_info, pos_unused = _vit_pos_embeds(state, _grids(model_config))
      for key, name, arr in pos:
        # Right after the patch embedding (layer -1, rule 0), before the blocks.
        converted.append(((-1, 0, 2, key), key, [(name, arr)]))
      unused.update(dict(pos_unused))
      handled = {"pos_embed", "pos_embed_z", "pos_embed_x"}
      # MAE fine-tuned checkpoints with global pooling keep the final LayerNorm as fc_norm.
      if "norm.weight" not in state and "fc_norm.weight" in state:
        renamed = {"norm." + k[len("fc_norm."):]: k for k in state if k.startswith("fc_norm.")}
        state = {(("norm." + k[len("fc_norm."):]) if k.startswith("fc_norm.") else k): v for k, v in state.items()}
      elif "fc_norm.weight" in state:
        for k in ("fc_norm.weight", "fc_norm.bias"):
          if k in state:
            unused[k] = "global-pool norm; the tracker uses `norm`"
            handled.add(k)
    else:
      handled = set()
    for key, value in state.items():
      if key in handled:
        continue
      reason = next((r for p, r in unused_rules if re.fullmatch(p, key)), None)
      if reason:
        unused[key] = reason
        continue
      hit = _apply_rule(rules, key, np.asarray(value))
      if hit is None:
        unexpected.append(key)
        continue
      order, pieces = hit
      converted.append((order, key, pieces))

    for _, key, pieces in sorted(converted, key=lambda c: c[0]):
      if any(name not in expected for name, _ in pieces):
        unexpected.append(key)  # e.g. block 12 of a 24-block checkpoint into a 12-block model
        continue
      for name, arr in pieces:
        if tuple(arr.shape) != expected[name]:
          raise _shape_error(renamed.get(key, key), name, np.shape(state[key]), arr.shape, expected[name])
        arr = arr if arr.dtype == np.float32 else arr.astype(np.float32)
        params[name] = arr
        mapped[name] = renamed.get(key, key)

  missing = []
  for state, _, _, branch in branches:
    missing += sorted(n for n in expected if branch.match(n) and n not in params)
  return ConversionResult(params, mapped, unused, sorted(unexpected), missing, pos_info)


# ---------------------------------------------------------------------------------------------
# Loading converted weights into a model.


def _params_path(convert_dir: str) -> str:
  path = convert_dir if convert_dir.endswith(".npz") else os.path.join(convert_dir, PARAMS_FILE)
  if not os.path.isfile(path):
    raise FileNotFoundError(f"{path}: no converted weights (run `satracker convert ... --out DIR` first)")
  return path


def _place_like(value: np.ndarray, like):
  """Puts `value` where `like` lives: same dtype and, for jax Arrays, the same sharding
  (per-shard callback, so it works when the sharding spans several processes)."""
  import jax  # pylint: disable=g-import-not-at-top
  dtype = getattr(like, "dtype", value.dtype)
  value = np.asarray(value).astype(dtype, copy=False)
  sharding = getattr(like, "sharding", None)
  if isinstance(like, jax.Array) or (isinstance(like, jax.ShapeDtypeStruct) and sharding is not None):
    return jax.make_array_from_callback(value.shape, sharding, lambda index: value[index])
  return value


def load_pretrained(params, convert_dir: str) -> tuple[dict, dict]:
  """Merges `convert_dir/params.npz` into `params` (the `variables["params"]` tree).

  Returns (new_params, report) with report = {"loaded": [...], "new": [...], "resampled": [...],
  "vocab_file": path or None}; names are per-block (models/layout.py), as in the file. Every
  converted name must exist in the model with the same shape; position embeddings of a different
  grid are resized (bicubic) instead, so converted weights serve any template / search size.
  Fusion, DM and head parameters are absent from the file and keep their fresh initialisation.
  A stacked leaf (`vit_blocks/...`) is rebuilt from the file's rows and placed like the leaf it
  replaces (same dtype and sharding); rows the file lacks keep their values.
  """
  from satracker_jax.models import layout  # pylint: disable=g-import-not-at-top
  if isinstance(params, Mapping) and set(params) >= {"params"} and "vit_norm" not in params:
    raise ValueError("load_pretrained takes variables['params'], not the whole variables dict")
  path = _params_path(convert_dir)
  stored = flatten_params(params)
  per_block = layout.to_per_block(stored)  # views of the stored leaves (rows, q/k/v thirds)
  loaded, resampled, values = [], [], {}
  with np.load(path, allow_pickle=False) as data:
    for name in data.files:
      if name not in per_block:
        raise ValueError(f"{path}: converted parameter {name!r} does not exist in this model "
                         "(converted for another config, or the model's names changed)")
      value = data[name]
      want = tuple(per_block[name].shape)
      if value.shape != want:
        if name.startswith("pos_embed_") and value.ndim == 3 and len(want) == 3 and value.shape[-1] == want[-1]:
          g = int(round(want[1] ** 0.5))
          value = resample_grid(value[0], (g, g))[None]
          resampled.append(name)
        if value.shape != want:
          raise ValueError(f"{path}: {name} has shape {value.shape}, the model expects {want}")
      values[name] = value
      loaded.append(name)
  # Rebuild each stored leaf that the file touches: untouched rows come from the current values.
  touched = {n for n in stored if any(k in values for k in layout.to_per_block({n: _shape_only(stored[n])}))}
  rebuilt = layout.to_stacked({k: (values[k] if k in values else np.asarray(v))
                               for k, v in layout.to_per_block(
                                   {n: stored[n] for n in touched}).items()}, where=path)
  for name in touched:
    stored[name] = _place_like(rebuilt[name], stored[name])
  report_path = os.path.join(os.path.dirname(path), REPORT_FILE)
  vocab = None
  if os.path.isfile(report_path):
    with open(report_path) as f:
      saved = json.load(f)
    if saved.get("vocab_file"):
      vocab = os.path.join(os.path.dirname(path), saved["vocab_file"])
  report = {"loaded": sorted(loaded), "new": sorted(set(per_block) - set(loaded)), "resampled": resampled,
            "vocab_file": vocab}
  return weights_io.unflatten(stored), report


def _shape_only(leaf) -> np.ndarray:
  """A zero-stride stand-in of `leaf`'s shape (no data read, no device transfer)."""
  return np.broadcast_to(np.float32(0), tuple(leaf.shape))


# ---------------------------------------------------------------------------------------------
# Checkpoint files -> a converted-weights folder (what `satracker convert` runs).


def load_branch(path: str, prefix: str) -> dict[str, np.ndarray]:
  """A checkpoint file or HF folder -> its state dict with `prefix` (e.g. "backbone.") stripped."""
  state = weights_io.load_state_dict(weights_io.find_checkpoint_file(path))
  return weights_io.strip_prefix(state, prefix)


def find_vocab(vocab: Optional[str], bert: Optional[str]) -> Optional[str]:
  """The vocab.txt to ship: `vocab` if given, else the one next to the BERT checkpoint (or None)."""
  if vocab:
    if not os.path.isfile(vocab):
      raise FileNotFoundError(f"vocab file {vocab!r} does not exist")
    return vocab
  if bert:
    folder = bert if os.path.isdir(bert) else os.path.dirname(os.path.abspath(bert))
    candidate = os.path.join(folder, VOCAB_FILE)
    if os.path.isfile(candidate):
      return candidate
  return None


class ConversionError(ValueError):
  """The checkpoints do not convert cleanly into the config; `report` says what was found."""

  def __init__(self, problems: list[str], report: dict):
    super().__init__("conversion failed:\n  " + "\n  ".join(problems))
    self.problems = problems
    self.report = report


def convert_to_folder(out: str, config, vit: Optional[str] = None, bert: Optional[str] = None,
                      vocab: Optional[str] = None, allow_unused: bool = False,
                      allow_missing: bool = False, config_name: str = "",
                      overrides=()) -> dict:
  """Converts the ViT and/or BERT checkpoints into `out` (params.npz, report.json, vocab.txt).

  Returns the report (also written as report.json). Raises `ConversionError` (with the report)
  on unexpected / missing keys unless allowed, ValueError on wrong shapes, FileNotFoundError on
  missing files. Nothing is written unless the conversion succeeds.
  """
  if not vit and not bert:
    raise ValueError("give a ViT and/or a BERT checkpoint")
  vit_state = load_branch(vit, "backbone.") if vit else None
  bert_state = load_branch(bert, "bert.") if bert else None
  result = convert_state_dicts(vit_state, bert_state, config.model)

  problems = []
  if result.unexpected and not allow_unused:
    problems.append(f"{len(result.unexpected)} unexpected checkpoint keys, first {result.unexpected[0]!r} "
                    "(this model has no place for them; --allow-unused to ignore)")
  if result.missing and not allow_missing:
    problems.append(f"{len(result.missing)} backbone parameters not in the checkpoint, first "
                    f"{result.missing[0]!r} (--allow-missing to leave them initialised)")
  report = {"format": "satracker-convert/1", "config": config_name, "overrides": list(overrides),
            "sources": {"vit": vit, "bert": bert}, "params_file": PARAMS_FILE,
            "vocab_file": None, **result.report()}
  vocab = find_vocab(vocab, bert)
  if vocab:
    lines = sum(1 for _ in open(vocab, encoding="utf-8"))
    rows = result.params.get("bert_embeddings/word_embeddings/embedding")
    if rows is not None and lines > rows.shape[0]:
      problems.append(f"{vocab}: {lines} tokens but the word embedding has {rows.shape[0]} rows")
  if problems:
    raise ConversionError(problems, report)

  os.makedirs(out, exist_ok=True)
  if vocab:
    shutil.copyfile(vocab, os.path.join(out, VOCAB_FILE))
    report["vocab_file"] = VOCAB_FILE
  np.savez(os.path.join(out, PARAMS_FILE), **{k: np.ascontiguousarray(v) for k, v in result.params.items()})
  with open(os.path.join(out, REPORT_FILE), "w") as f:
    json.dump(report, f, indent=1)
  return report
