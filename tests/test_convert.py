"""Weight conversion: PyTorch-layout ViT/BERT -> SATracker backbone, checked numerically.

Default run: an independent NumPy forward over the raw PyTorch-named arrays (torch_layout_reference)
is the reference. `pytest -m torch`: real PyTorch modules (HF BertModel, an MAE-layout ViT) are.
"""
import argparse
import json
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from satracker_jax import convert, weights_io
from satracker_jax.cli import convert as convert_cli
from satracker_jax.config_utils import load_config
from satracker_jax.models import build_model
import torch_layout_reference as ref

# A small config with the full structure: identity text map, one TEM and one SAM stage.
VIT_DIM, VIT_HEADS, DEPTH, MLP = 64, 2, 2, 256
BERT_DIM, BERT_HEADS, VOCAB, INTER, MAXPOS = 32, 2, 120, 64, 16
TEXT_LEN = 12
SMALL_OVERRIDES = [
    "model.template_size=32", "model.search_size=64", f"model.max_text_len={TEXT_LEN}",
    f"model.vit.dim={VIT_DIM}", f"model.vit.depth={DEPTH}", f"model.vit.heads={VIT_HEADS}",
    f"model.bert.vocab_size={VOCAB}", f"model.bert.dim={BERT_DIM}", f"model.bert.layers={DEPTH}",
    f"model.bert.heads={BERT_HEADS}", f"model.bert.intermediate={INTER}", f"model.bert.max_position={MAXPOS}",
    "model.text_layer_map=()", "model.tem_layers=(0,)", "model.sam_layers=(1,)", "model.dm_layers=(1,)",
    "model.fusion_heads=2", "model.dm_dim=16", "model.head_channels=16",
]
TOL = 1e-4


def small_config():
  return load_config("configs/tiny.py", SMALL_OVERRIDES)


def convert_args(out, vit=None, bert=None, vocab=None, allow_unused=False, allow_missing=False):
  return argparse.Namespace(vit=vit, bert=bert, vocab=vocab, config="configs/tiny.py", out=str(out),
                            allow_unused=allow_unused, allow_missing=allow_missing)


def random_inputs(rng, cfg):
  m = cfg.model
  template = rng.uniform(0, 255, (2, m.template_size, m.template_size, 3)).astype(np.float32)
  search = rng.uniform(0, 255, (2, m.search_size, m.search_size, 3)).astype(np.float32)
  ids = rng.integers(4, VOCAB, (2, TEXT_LEN)).astype(np.int32)
  mask = np.zeros((2, TEXT_LEN), np.int32)
  mask[0, :7], mask[1, :TEXT_LEN] = 1, 1
  ids[0, 7:] = 0
  box = np.array([[0.5, 0.5, 0.4, 0.6], [0.45, 0.5, 0.3, 0.3]], np.float32)
  return template, box, search, ids, mask


def fresh_variables(model, inputs, rng):
  """Stand-in for `model.init` (whose XLA compile takes ~20 s on a busy CPU): the real tree's
  names and shapes, random weights everywhere except the fusion gates, which are 0 as the model
  initialises them, and BatchNorm statistics (0 mean, unit variance)."""
  shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), *map(jnp.asarray, inputs), train=False))

  def fill(path, s):
    name = jax.tree_util.keystr(path, simple=True, separator="/")
    if name.endswith("gate") or name.endswith("/mean"):
      return np.zeros(s.shape, s.dtype)
    if name.endswith("/var"):
      return np.ones(s.shape, s.dtype)
    return (0.2 * rng.standard_normal(s.shape)).astype(s.dtype)
  return jax.tree_util.tree_map_with_path(fill, shapes)


def model_features(cfg, convert_dir, inputs):
  """Zero-gate SATracker with the converted backbone -> (vision_tokens, text_tokens, load report)."""
  model = build_model(cfg.model)
  variables = fresh_variables(model, inputs, np.random.default_rng(99))
  params, report = convert.load_pretrained(variables["params"], str(convert_dir))
  # One compile beats eagerly compiling each of the model's ops.
  apply = jax.jit(model.apply, static_argnames="train")
  out = apply({**variables, "params": params}, *map(jnp.asarray, inputs), train=False)
  return np.asarray(out["vision_tokens"]), np.asarray(out["text_tokens"]), report


def write_vocab(folder, n=VOCAB):
  with open(os.path.join(folder, "vocab.txt"), "w") as f:
    f.write("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]"] + [f"w{i}" for i in range(n - 4)]) + "\n")


# ---------------------------------------------------------------------------------------------
# Default run: NumPy reference.


def test_zero_gate_model_matches_numpy_reference(tmp_path, capsys):
  """OSTrack-style ViT (.safetensors, `backbone.` prefix) + HF-style BERT (.npz, `bert.` prefix)."""
  rng = np.random.default_rng(0)
  cfg = small_config()
  vit = ref.vit_state_dict(VIT_DIM, DEPTH, MLP, grid=3, rng=rng, ostrack_grids=(2, 4))
  bert = ref.bert_state_dict(VOCAB, BERT_DIM, DEPTH, INTER, MAXPOS, rng=rng)
  from safetensors.numpy import save_file
  vit_path = str(tmp_path / "ostrack.safetensors")
  save_file({"backbone." + k: v for k, v in vit.items()}
            | {"box_head.conv1_ctr.0.weight": np.zeros((3, 3), np.float32)}, vit_path)
  bert_dir = tmp_path / "bert"
  bert_dir.mkdir()
  np.savez(bert_dir / "model.npz", **{"bert." + k: v for k, v in bert.items()},
           **{"cls.predictions.bias": np.zeros(VOCAB, np.float32)})
  write_vocab(bert_dir)

  out = tmp_path / "converted"
  assert convert_cli.run(convert_args(out, vit=vit_path, bert=str(bert_dir)), SMALL_OVERRIDES) == 0
  printed = capsys.readouterr().out
  assert "unexpected: 0" in printed and "missing (left as initialised): 0" in printed
  report = json.loads((out / "report.json").read_text())
  assert report["vocab_file"] == "vocab.txt" and (out / "vocab.txt").exists()
  assert {"pos_embed", "cls_token", "pooler.dense.weight", "cls.predictions.bias",
          "box_head.conv1_ctr.0.weight"} <= set(report["unused"])
  assert report["mapped"]["vit_block_1/attn/key/kernel"] == "blocks.1.attn.qkv.weight"

  inputs = random_inputs(rng, cfg)
  vision, text, load_report = model_features(cfg, out, inputs)
  assert load_report["vocab_file"] == str(out / "vocab.txt")
  # Only fusion / DM / head parameters stay new.
  new_roots = {n.split("/")[0] for n in load_report["new"]}
  assert new_roots == {"tem_0", "sam_1", "dm_1", "box_head"}, new_roots

  template, _, search, ids, mask = inputs
  want_v = ref.vit_track_features(vit, template, search, vit["pos_embed_z"], vit["pos_embed_x"], VIT_HEADS)
  want_t = ref.bert_forward(bert, ids, mask, BERT_HEADS)
  dv, dt = np.abs(vision - want_v).max(), np.abs(text - want_t).max()
  print(f"numpy reference max abs diff: vision {dv:.2e}, text {dt:.2e}")
  assert dv < TOL and dt < TOL


def test_mae_pos_embed_drops_cls_and_resamples():
  cfg = small_config()
  vit = ref.vit_state_dict(VIT_DIM, DEPTH, MLP, grid=3, rng=np.random.default_rng(1))
  result = convert.convert_state_dicts(vit, None, cfg.model)
  grid = vit["pos_embed"][0, 1:]
  np.testing.assert_allclose(result.params["pos_embed_template"][0], convert.resample_grid(grid, (2, 2)))
  np.testing.assert_allclose(result.params["pos_embed_search"][0], convert.resample_grid(grid, (4, 4)))
  assert "class token dropped" in result.pos_embed["pos_embed_search"]
  assert result.unexpected == [] and result.missing == []
  # Same grid: identity; the cubic weights vanish at integer offsets.
  np.testing.assert_allclose(convert.resample_grid(grid, (3, 3)), grid)


def test_layout_transforms():
  vit = ref.vit_state_dict(VIT_DIM, DEPTH, MLP, grid=3, rng=np.random.default_rng(2))
  params = convert.convert_state_dicts(vit, None, small_config().model).params
  qkv = vit["blocks.0.attn.qkv.weight"]
  np.testing.assert_array_equal(params["vit_block_0/attn/query/kernel"], qkv[:VIT_DIM].T)
  np.testing.assert_array_equal(params["vit_block_0/attn/value/kernel"], qkv[2 * VIT_DIM:].T)
  np.testing.assert_array_equal(params["vit_block_0/attn/key/bias"], vit["blocks.0.attn.qkv.bias"][VIT_DIM:2 * VIT_DIM])
  np.testing.assert_array_equal(params["patch_embed/kernel"], vit["patch_embed.proj.weight"].transpose(2, 3, 1, 0))
  np.testing.assert_array_equal(params["vit_block_1/norm2/scale"], vit["blocks.1.norm2.weight"])


def test_fc_norm_used_when_norm_absent():
  vit = ref.vit_state_dict(VIT_DIM, DEPTH, MLP, grid=3, rng=np.random.default_rng(3))
  vit["fc_norm.weight"], vit["fc_norm.bias"] = vit.pop("norm.weight"), vit.pop("norm.bias")
  result = convert.convert_state_dicts(vit, None, small_config().model)
  assert result.mapped["vit_norm/scale"] == "fc_norm.weight" and not result.missing


def test_base_config_takes_vit_b_and_bert_base():
  """Acceptance 2 on full shapes (zero-stride arrays: no 200M-parameter allocation)."""
  cfg = load_config("configs/base.py")
  vit = ref.vit_state_dict(768, 12, 3072, grid=14, make=ref.zero_stride)
  vit["pos_embed"] = np.zeros_like(vit["pos_embed"])  # resampled for real: must be a real array
  bert = ref.bert_state_dict(30522, 768, 12, 3072, make=ref.zero_stride)
  result = convert.convert_state_dicts(vit, bert, cfg.model)
  assert result.missing == [] and result.unexpected == []
  expected = convert.expected_param_shapes(cfg.model)
  new = {n.split("/")[0].rstrip("0123456789").rstrip("_") for n in set(expected) - set(result.params)}
  assert new == {"tem", "sam", "dm", "box_head"}, new
  assert set(result.unused) == {"cls_token", "pooler.dense.weight", "pooler.dense.bias"}


def test_vit_large_into_base_fails_naming_first_key(tmp_path):
  """Acceptance 3."""
  cfg = load_config("configs/base.py")
  vit_l = ref.vit_state_dict(1024, 24, 4096, grid=14, make=ref.zero_stride)
  vit_l["pos_embed"] = np.zeros_like(vit_l["pos_embed"])
  with pytest.raises(ValueError, match=r"'patch_embed\.proj\.weight' \(1024, 3, 16, 16\).*expects \(16, 16, 3, 768\)"):
    convert.convert_state_dicts(vit_l, None, cfg.model)


def test_cli_errors_on_mismatch_unexpected_and_missing(tmp_path):
  rng = np.random.default_rng(4)
  vit = ref.vit_state_dict(VIT_DIM, DEPTH + 1, MLP, grid=3, rng=rng)  # one block too many
  path = str(tmp_path / "vit.npz")
  np.savez(path, **vit)
  with pytest.raises(SystemExit, match=r"unexpected checkpoint keys, first 'blocks\.2\.attn\.proj\.bias'"):
    convert_cli.run(convert_args(tmp_path / "a", vit=path), SMALL_OVERRIDES)
  assert not (tmp_path / "a").exists()
  assert convert_cli.run(convert_args(tmp_path / "b", vit=path, allow_unused=True), SMALL_OVERRIDES) == 0
  assert len(json.loads((tmp_path / "b" / "report.json").read_text())["unexpected"]) == 12

  del vit["blocks.2.mlp.fc1.weight"]
  for k in [k for k in vit if k.startswith(("blocks.1.", "blocks.2."))]:
    del vit[k]
  np.savez(path, **vit)
  with pytest.raises(SystemExit, match=r"backbone parameters not in the checkpoint, first 'vit_block_1/"):
    convert_cli.run(convert_args(tmp_path / "c", vit=path), SMALL_OVERRIDES)

  wide = ref.vit_state_dict(VIT_DIM * 2, DEPTH, MLP, grid=3, rng=rng)
  np.savez(path, **wide)
  with pytest.raises(SystemExit, match=r"patch_embed\.proj\.weight"):
    convert_cli.run(convert_args(tmp_path / "d", vit=path), SMALL_OVERRIDES)


def test_load_pretrained_resamples_pos_embed_and_rejects_foreign_names(tmp_path):
  cfg = small_config()
  vit = ref.vit_state_dict(VIT_DIM, DEPTH, MLP, grid=3, rng=np.random.default_rng(5))
  path = str(tmp_path / "vit.npz")
  np.savez(path, **vit)
  assert convert_cli.run(convert_args(tmp_path / "out", vit=path), SMALL_OVERRIDES) == 0
  bigger = load_config("configs/tiny.py", SMALL_OVERRIDES + ["model.search_size=96"])
  model = build_model(bigger.model)
  shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), *map(jnp.asarray, random_inputs(
      np.random.default_rng(0), bigger)), train=False))
  params = jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), shapes["params"])
  new_params, report = convert.load_pretrained(params, str(tmp_path / "out"))
  assert report["resampled"] == ["pos_embed_search"]
  assert new_params["pos_embed_search"].shape == (1, 36, VIT_DIM)
  assert not np.any(new_params["vit_blocks"]["attn"]["qkv"]["kernel"] == 0)  # every row, q, k and v
  assert all(n.startswith(("bert_", "tem_", "sam_", "dm_", "box_head")) for n in report["new"])

  del params["vit_blocks"]
  with pytest.raises(ValueError, match="vit_block_0/"):
    convert.load_pretrained(params, str(tmp_path / "out"))
  with pytest.raises(FileNotFoundError, match="satracker convert"):
    convert.load_pretrained(params, str(tmp_path / "nowhere"))


def test_load_pretrained_keeps_sharding(tmp_path):
  vit = ref.vit_state_dict(VIT_DIM, DEPTH, MLP, grid=3, rng=np.random.default_rng(6))
  np.savez(tmp_path / "vit.npz", **vit)
  assert convert_cli.run(convert_args(tmp_path / "out", vit=str(tmp_path / "vit.npz")), SMALL_OVERRIDES) == 0
  cfg = small_config()
  model = build_model(cfg.model)
  mesh = jax.make_mesh((1,), ("data",), axis_types=(jax.sharding.AxisType.Explicit,))
  replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
  params = jax.device_put(
      fresh_variables(model, random_inputs(np.random.default_rng(0), cfg), np.random.default_rng(1))["params"],
      replicated)
  new_params, _ = convert.load_pretrained(params, str(tmp_path / "out"))
  leaf = new_params["vit_blocks"]["mlp"]["fc1"]["kernel"]
  assert isinstance(leaf, jax.Array) and leaf.sharding == params["vit_blocks"]["mlp"]["fc1"]["kernel"].sharding
  np.testing.assert_array_equal(np.asarray(leaf)[0], vit["blocks.0.mlp.fc1.weight"].T)
  np.testing.assert_array_equal(np.asarray(new_params["vit_blocks"]["attn"]["qkv"]["kernel"])[1],
                                vit["blocks.1.attn.qkv.weight"].T)  # timm's fused qkv, transposed
  np.testing.assert_array_equal(np.asarray(new_params["tem_0"]["search_attn"]["query"]["kernel"]),
                                np.asarray(params["tem_0"]["search_attn"]["query"]["kernel"]))


def test_weights_io_formats_and_errors(tmp_path, monkeypatch):
  arrays = {"backbone.a.weight": np.ones((2, 3), np.float32), "box_head.b": np.zeros(2, np.float32)}
  np.savez(tmp_path / "w.npz", **arrays)
  state = weights_io.strip_prefix(weights_io.load_state_dict(str(tmp_path / "w.npz")), "backbone.")
  assert set(state) == {"a.weight", "box_head.b"}
  nested = {"model": {"module.x": np.ones(1)}, "epoch": 3}
  assert set(weights_io.unwrap_state_dict(nested)) == {"x"}
  assert set(weights_io.unwrap_state_dict({"net": {"backbone.x": np.ones(1)}, "optimizer": {}})) == {"backbone.x"}
  with pytest.raises(FileNotFoundError, match="nope.pth"):
    weights_io.load_state_dict(str(tmp_path / "nope.pth"))
  (tmp_path / "w.h5").write_bytes(b"")
  with pytest.raises(ValueError, match="unknown checkpoint format"):
    weights_io.load_state_dict(str(tmp_path / "w.h5"))
  (tmp_path / "w.pth").write_bytes(b"not a zip")
  monkeypatch.setitem(sys.modules, "torch", None)  # as if torch were not installed
  with pytest.raises(ImportError, match=r"pip install -e \.\[torch\]"):
    weights_io.load_state_dict(str(tmp_path / "w.pth"))


# ---------------------------------------------------------------------------------------------
# `pytest -m torch`: real PyTorch reference models.


def _torch_mae_vit(torch, dim, depth, heads, mlp, grid, patch=16):
  """MAE/timm `VisionTransformer` layout (same parameter names), written out for the test."""
  nn = torch.nn

  class Attn(nn.Module):
    def __init__(self):
      super().__init__()
      self.qkv, self.proj = nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)

    def forward(self, x):
      b, n, c = x.shape
      q, k, v = self.qkv(x).reshape(b, n, 3, heads, c // heads).permute(2, 0, 3, 1, 4)
      y = torch.softmax(q @ k.transpose(-2, -1) * (c // heads) ** -0.5, dim=-1) @ v
      return self.proj(y.transpose(1, 2).reshape(b, n, c))

  class Mlp(nn.Module):
    def __init__(self):
      super().__init__()
      self.fc1, self.fc2 = nn.Linear(dim, mlp), nn.Linear(mlp, dim)

    def forward(self, x):
      return self.fc2(nn.functional.gelu(self.fc1(x)))

  class Block(nn.Module):
    def __init__(self):
      super().__init__()
      self.norm1, self.attn = nn.LayerNorm(dim, eps=1e-6), Attn()
      self.norm2, self.mlp = nn.LayerNorm(dim, eps=1e-6), Mlp()

    def forward(self, x):
      x = x + self.attn(self.norm1(x))
      return x + self.mlp(self.norm2(x))

  class PatchEmbed(nn.Module):
    def __init__(self):
      super().__init__()
      self.proj = nn.Conv2d(3, dim, patch, stride=patch)

  class ViT(nn.Module):
    def __init__(self):
      super().__init__()
      self.patch_embed = PatchEmbed()
      self.cls_token = nn.Parameter(torch.randn(1, 1, dim) * 0.2)
      self.pos_embed = nn.Parameter(torch.randn(1, 1 + grid * grid, dim) * 0.2)
      self.blocks = nn.ModuleList([Block() for _ in range(depth)])
      self.norm = nn.LayerNorm(dim, eps=1e-6)

    def embed(self, images, g):
      """OSTrack: tokens + pos_embed (class token dropped) resized to this grid by F.interpolate."""
      pe = self.pos_embed[:, 1:].reshape(1, grid, grid, dim).permute(0, 3, 1, 2)
      pe = nn.functional.interpolate(pe, size=(g, g), mode="bicubic", align_corners=False)
      tokens = self.patch_embed.proj(images).flatten(2).transpose(1, 2)
      return tokens + pe.flatten(2).transpose(1, 2)

    def track_features(self, template, search):
      x = torch.cat([self.embed(template, template.shape[-1] // patch),
                     self.embed(search, search.shape[-1] // patch)], dim=1)
      for block in self.blocks:
        x = block(x)
      return self.norm(x)

  model = ViT()
  with torch.no_grad():  # non-trivial LayerNorm parameters so a scale/bias swap would show
    for name, p in model.named_parameters():
      if "norm" in name:
        p.copy_((1.0 if name.endswith("weight") else 0.0) + 0.1 * torch.randn_like(p))
      elif "cls_token" not in name and "pos_embed" not in name:
        p.copy_(0.2 * torch.randn_like(p))
  return model.eval()


@pytest.mark.torch
def test_parity_with_pytorch_models(tmp_path):
  """Acceptance 1: our ViT features and BERT last_hidden_state vs PyTorch (float32, 1e-4)."""
  torch = pytest.importorskip("torch")
  transformers = pytest.importorskip("transformers")
  torch.manual_seed(0)
  cfg = small_config()
  vit = _torch_mae_vit(torch, VIT_DIM, DEPTH, VIT_HEADS, MLP, grid=3)
  torch.save({"model": vit.state_dict(), "epoch": 799}, tmp_path / "mae.pth")  # MAE's wrapping
  bert = transformers.BertModel(transformers.BertConfig(
      vocab_size=VOCAB, hidden_size=BERT_DIM, num_hidden_layers=DEPTH, num_attention_heads=BERT_HEADS,
      intermediate_size=INTER, max_position_embeddings=MAXPOS, hidden_act="gelu",
      hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0), add_pooling_layer=True).eval()
  bert_dir = tmp_path / "bert-tiny"
  bert.save_pretrained(bert_dir)  # HF directory: model.safetensors + config.json
  write_vocab(bert_dir)

  out = tmp_path / "converted"
  assert convert_cli.run(convert_args(out, vit=str(tmp_path / "mae.pth"), bert=str(bert_dir)), SMALL_OVERRIDES) == 0
  inputs = random_inputs(np.random.default_rng(7), cfg)
  vision, text, _ = model_features(cfg, out, inputs)

  template, _, search, ids, mask = inputs
  to_nchw = lambda im: torch.from_numpy(
      ((im / 255.0 - ref.IMAGENET_MEAN) / ref.IMAGENET_STD).astype(np.float32)).permute(0, 3, 1, 2)
  with torch.no_grad():
    want_v = vit.track_features(to_nchw(template), to_nchw(search)).numpy()
    want_t = bert(input_ids=torch.from_numpy(ids).long(),
                  attention_mask=torch.from_numpy(mask).long()).last_hidden_state.numpy()
  dv, dt = np.abs(vision - want_v).max(), np.abs(text - want_t).max()
  print(f"\nPyTorch parity (float32) max abs diff: ViT features {dv:.3e}, BERT last_hidden_state {dt:.3e}")
  assert dv < TOL and dt < TOL


@pytest.mark.torch
def test_bicubic_matches_torch_interpolate():
  torch = pytest.importorskip("torch")
  rng = np.random.default_rng(8)
  worst = 0.0
  for g, new in ((14, 8), (14, 16), (3, 5), (14, 14), (7, 3)):
    tokens = rng.standard_normal((g * g, 6)).astype(np.float32)
    want = torch.nn.functional.interpolate(
        torch.from_numpy(tokens).reshape(1, g, g, 6).permute(0, 3, 1, 2), size=(new, new),
        mode="bicubic", align_corners=False).permute(0, 2, 3, 1).reshape(new * new, 6).numpy()
    worst = max(worst, np.abs(convert.resample_grid(tokens, (new, new)) - want).max())
  print(f"\nbicubic vs F.interpolate max abs diff: {worst:.2e}")
  assert worst < 1e-5


@pytest.mark.torch
def test_torch_checkpoints_unwrap_and_refuse_pickles(tmp_path):
  torch = pytest.importorskip("torch")
  torch.save({"net": {"backbone.blocks.0.norm1.weight": torch.ones(3, dtype=torch.bfloat16),
                      "box_head.x": torch.zeros(1)}, "epoch": 3}, tmp_path / "ostrack.pth.tar.pth")
  state = weights_io.strip_prefix(weights_io.load_state_dict(str(tmp_path / "ostrack.pth.tar.pth")), "backbone.")
  assert set(state) == {"blocks.0.norm1.weight", "box_head.x"}
  assert state["blocks.0.norm1.weight"].dtype == np.float32

  # argparse.Namespace stands in for the settings objects full training checkpoints pickle.
  torch.save({"net": {"w": torch.ones(1)}, "settings": argparse.Namespace(lr=1e-4)}, tmp_path / "full.pth")
  with pytest.raises(ValueError, match=r"weights_only=True.*refused"):
    weights_io.load_state_dict(str(tmp_path / "full.pth"))
