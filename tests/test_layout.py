"""The stored parameter layout (stacked blocks, fused qkv, fused cross-attention kv), the per-block
names at its edges, and the layouts of earlier versions, which load through a mapping."""
import re

import flax.linen as nn
import jax
import numpy as np
import pytest

from satracker_jax import model_io, weights_io
from satracker_jax.models import initializers, layout


def _per_block(rng, blocks=3, dim=4):
  flat = {}
  for i in range(blocks):
    for part in ("query", "key", "value"):
      flat[f"vit_block_{i}/attn/{part}/kernel"] = rng.standard_normal((dim, dim)).astype(np.float32)
      flat[f"vit_block_{i}/attn/{part}/bias"] = rng.standard_normal(dim).astype(np.float32)
    flat[f"vit_block_{i}/norm1/scale"] = rng.standard_normal(dim).astype(np.float32)
  flat["bert_layer_0/attention/query/kernel"] = np.ones((2, 2), np.float32)
  flat["bert_layer_0/attention/key/kernel"] = 2 * np.ones((2, 2), np.float32)
  flat["bert_layer_0/attention/value/kernel"] = 3 * np.ones((2, 2), np.float32)
  flat["vit_norm/scale"] = np.ones(dim, np.float32)
  return flat


def test_per_block_and_stacked_round_trip_with_fused_qkv():
  flat = _per_block(np.random.default_rng(0))
  stored = layout.to_stacked(flat)
  assert stored["vit_blocks/attn/qkv/kernel"].shape == (3, 4, 12)
  assert stored["bert_layers/attention/qkv/kernel"].shape == (1, 2, 6)
  # q | k | v along the output axis, row i = block i.
  np.testing.assert_array_equal(stored["vit_blocks/attn/qkv/kernel"][2][:, 4:8], flat["vit_block_2/attn/key/kernel"])
  np.testing.assert_array_equal(stored["bert_layers/attention/qkv/kernel"][0][:, 4:], 3.0)
  back = layout.to_per_block(stored)
  assert set(back) == set(flat)
  for k in flat:
    np.testing.assert_array_equal(back[k], flat[k])
  assert layout.is_per_block(flat) and not layout.is_per_block(stored)
  assert layout.row_names("vit_blocks/attn/qkv/kernel", 2) == ["vit_block_0/attn/qkv/kernel",
                                                                "vit_block_1/attn/qkv/kernel"]


def test_per_block_gaps_and_missing_projections_are_named():
  flat = _per_block(np.random.default_rng(1))
  gap = {k: v for k, v in flat.items() if not k.startswith("vit_block_1/")}
  with pytest.raises(layout.LayoutError, match="vit_block_1 is missing"):
    layout.to_stacked(gap, "old.npz")
  no_value = {k: v for k, v in flat.items() if k != "vit_block_0/attn/value/bias"}
  with pytest.raises(layout.LayoutError, match=r"old.npz: vit_block_0/attn: bias of \['value'\] is missing"):
    layout.to_stacked(no_value, "old.npz")


def split_cross_kv(flat):
  """The inverse of `layout.fuse_cross_kv`: each fusion module's `kv` leaf given as `key` and
  `value`, as versions before the fused kv stored them."""
  out = {}
  for name, value in flat.items():
    m = re.match(r"^((?:tem|sam)_\d+/\w+_attn)/kv/(kernel|bias)$", name)
    if not m:
      out[name] = value
      continue
    half = value.shape[-1] // 2
    out[f"{m.group(1)}/key/{m.group(2)}"] = value[..., :half]
    out[f"{m.group(1)}/value/{m.group(2)}"] = value[..., half:]
  return out


def add_head_conv_bias(params, batch_stats, seed=3):
  """The inverse of `layout.fold_head_conv_bias`: a bias on each of the head's 3x3 convs and the
  same amount added to its BatchNorm's running mean, as versions before the bias-free convs had.
  Multiples of 1/8, so that folding them back out is exact."""
  rng = np.random.default_rng(seed)
  params, batch_stats = dict(params), dict(batch_stats)
  for name in [n for n in batch_stats if re.match(r"^box_head/\w+_tower/bn_\d+/mean$", n)]:
    tower, _, leaf = name.rpartition("/bn_")
    bias = (rng.integers(-16, 16, batch_stats[name].shape) / 8).astype(np.float32)
    params[f"{tower}/conv_{leaf.partition('/')[0]}/bias"] = bias
    batch_stats[name] = batch_stats[name] + bias
  return params, batch_stats


def _flat(tree):
  """Nested variables (device or host arrays) -> flat `{"a/b/c": numpy array}`."""
  return weights_io.flatten(jax.device_get(tree), sep="/")


def _parts(flat):
  """Flat `params/...` and `batch_stats/...` variables -> (params, batch_stats), each flat."""
  part = lambda name: {k[len(name) + 1:]: v for k, v in flat.items() if k.startswith(name + "/")}
  return part("params"), part("batch_stats")


# The layouts of earlier versions, made from today's flat variables (params, batch_stats): before
# the stacked blocks (per-block names, separate q/k/v and cross-attention k/v), before the fused
# cross-attention kv, and before the bias-free head convs (which both earlier ones had too).
EARLIER = {
    "per_block": lambda p, s: add_head_conv_bias(split_cross_kv(layout.to_per_block(p)), s),
    "cross_kv": lambda p, s: add_head_conv_bias(split_cross_kv(p), s),
    "head_conv_bias": add_head_conv_bias,
}
EARLIER_SAYS = {"per_block": "per-block", "cross_kv": "separate cross-attention key / value",
                "head_conv_bias": "head conv biases before BatchNorm"}


class _TowerWithConvBias(nn.Module):
  """models/head.ConvTower as versions before the bias-free convs had it."""
  channels: tuple

  @nn.compact
  def __call__(self, x, train: bool):
    for k, c in enumerate(self.channels):
      x = initializers.Conv(c, (3, 3), padding=1, name=f"conv_{k}")(x)
      x = initializers.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5, name=f"bn_{k}")(x)
      x = nn.relu(x)
    return initializers.Conv(1, (1, 1), name="out")(x)


def test_a_head_conv_bias_folds_into_the_running_mean_and_computes_the_same():
  """The head conv's bias of an earlier layout, folded into BatchNorm's running mean, gives the
  same outputs in inference (running statistics) and in training (batch statistics, and the
  updated running mean is the folded one's)."""
  from satracker_jax.models.head import ConvTower
  x = jax.random.normal(jax.random.PRNGKey(0), (2, 4, 4, 3))
  old = _TowerWithConvBias((4, 2))
  variables = nn.meta.unbox(old.init(jax.random.PRNGKey(1), x, train=False))
  rng = np.random.default_rng(4)
  params = {k: (v + rng.standard_normal(v.shape).astype(np.float32) if k.endswith("/bias") else v)
            for k, v in _flat(variables["params"]).items()}
  stats = {k: (rng.standard_normal(v.shape).astype(np.float32) if k.endswith("/mean") else v + 1.0)
           for k, v in _flat(variables["batch_stats"]).items()}
  assert layout.has_head_conv_bias(["box_head/score_tower/conv_0/bias"])
  prefix = lambda d: {f"box_head/score_tower/{k}": v for k, v in d.items()}
  strip = lambda d: weights_io.unflatten({k[len("box_head/score_tower/"):]: v for k, v in d.items()})
  new_params, new_stats = layout.fold_head_conv_bias(prefix(params), prefix(stats), "old.npz")
  assert set(new_params) == set(prefix({k: v for k, v in params.items() if not re.match(r"conv_\d/bias", k)}))
  before = {"params": weights_io.unflatten(params), "batch_stats": weights_io.unflatten(stats)}
  after = {"params": strip(new_params), "batch_stats": strip(new_stats)}
  new = ConvTower((4, 2), 1)
  np.testing.assert_allclose(new.apply(after, x, train=False), old.apply(before, x, train=False),
                             rtol=1e-5, atol=1e-5)
  y_old, s_old = old.apply(before, x, train=True, mutable=["batch_stats"])
  y_new, s_new = new.apply(after, x, train=True, mutable=["batch_stats"])
  np.testing.assert_allclose(y_new, y_old, rtol=1e-5, atol=1e-5)
  _, folded = layout.fold_head_conv_bias(prefix(params), prefix(_flat(s_old["batch_stats"])))
  for k, v in prefix(_flat(s_new["batch_stats"])).items():
    np.testing.assert_allclose(v, folded[k], rtol=1e-5, atol=1e-5)
  with pytest.raises(layout.LayoutError, match=r"old.npz: box_head/score_tower/conv_1/bias has no running "
                                               r"mean box_head/score_tower/bn_1/mean"):
    layout.fold_head_conv_bias({"box_head/score_tower/conv_1/bias": np.zeros(2, np.float32)}, {}, "old.npz")


def test_cross_attention_key_and_value_fuse_and_split_back():
  rng = np.random.default_rng(2)
  flat = {"tem_1/search_attn/kv/kernel": rng.standard_normal((4, 6)).astype(np.float32),
          "tem_1/search_attn/kv/bias": rng.standard_normal(6).astype(np.float32),
          "tem_1/search_attn/query/kernel": np.ones((4, 3), np.float32),
          "vit_blocks/attn/qkv/kernel": np.ones((2, 4, 12), np.float32)}
  old = split_cross_kv(flat)
  np.testing.assert_array_equal(old["tem_1/search_attn/value/kernel"], flat["tem_1/search_attn/kv/kernel"][:, 3:])
  assert layout.is_earlier(old) and not layout.is_per_block(old) and not layout.is_earlier(flat)
  assert layout.is_earlier(weights_io.unflatten(old)) and not layout.is_earlier(weights_io.unflatten(flat))
  back = layout.upgrade(old)
  assert set(back) == set(flat)
  for k in flat:
    np.testing.assert_array_equal(back[k], flat[k])
  with pytest.raises(layout.LayoutError, match=r"old.npz: tem_1/search_attn/value/bias is missing"):
    layout.upgrade({k: v for k, v in old.items() if k != "tem_1/search_attn/value/bias"}, "old.npz")


@pytest.mark.parametrize("earlier", sorted(EARLIER))
def test_a_params_file_of_an_earlier_layout_loads_through_the_mapping(tiny_config, tiny_variables, tmp_path,
                                                                      capsys, earlier):
  """A model saved by an earlier version loads as the same model: the file written here is today's
  variables in yesterday's names."""
  path = model_io.save_variables(str(tmp_path / "new.npz"), tiny_config, tiny_variables)
  with np.load(path) as data:
    arrays = dict(data)
  params, stats = EARLIER[earlier](*_parts(arrays))
  old = {**{f"params/{k}": v for k, v in params.items()}, **{f"batch_stats/{k}": v for k, v in stats.items()}}
  assert ("params/tem_1/search_attn/key/kernel" in old) == (earlier != "head_conv_bias")
  assert ("params/vit_block_3/attn/query/kernel" in old) == (earlier == "per_block")
  assert "params/box_head/size_tower/conv_2/bias" in old
  rest = {k: v for k, v in arrays.items() if not k.startswith(("params/", "batch_stats/"))}
  np.savez(tmp_path / "old.npz", **old, **rest)
  _, loaded = model_io.load_variables(str(tmp_path / "old.npz"))
  said = capsys.readouterr().out
  assert "parameter layout of an earlier version" in said and EARLIER_SAYS[earlier] in said
  want = _flat(tiny_variables)
  got = _flat(loaded)
  assert set(got) == set(want)
  for k in want:
    np.testing.assert_array_equal(got[k], want[k])


@pytest.mark.parametrize("earlier", sorted(EARLIER))
def test_a_training_checkpoint_of_an_earlier_layout_loads_for_inference_and_refuses_resume(
    tiny_config, tiny_variables, tmp_path, earlier):
  """Orbax checkpoints written by an earlier version: eval / track / init_from read their weights
  through the mapping; resuming the run (whose optimizer state has the old tree) is one clear error."""
  from satracker_jax.train import checkpoint as ckpt_lib
  stored = _flat(tiny_variables)
  old_params, old_stats = map(weights_io.unflatten, EARLIER[earlier](*_parts(stored)))
  config = tiny_config.copy_and_resolve_references()
  config.train.async_checkpointing = False
  ckpt = ckpt_lib.Checkpointer(str(tmp_path), config)
  state = {"step": np.int32(7), "params": old_params, "batch_stats": old_stats, "opt_state": {"mu": old_params}}
  ckpt.save(7, state, {"next_sample_index": 56}, 1.0, True)
  ckpt.wait()
  _, loaded = model_io.load_variables(str(tmp_path))
  got = _flat(loaded)
  assert set(got) == set(stored)
  for k in stored:
    np.testing.assert_array_equal(got[k], stored[k])
  with pytest.raises(ValueError, match=EARLIER_SAYS[earlier] + r".* of an earlier satracker-jax.*train.init_from="):
    ckpt.restore(7, state)
  ckpt.close()


def test_rows_given_apart_compute_what_the_stack_computes(tiny_model, tiny_apply, tiny_variables, tiny_batch):
  """Inference hands the blocks their rows as separate buffers (slb.unstack_rows, the tracker does
  it once); the outputs are those of the stacked parameters, unrolled and scanned."""
  from satracker_jax.models import slb
  from satracker_jax.smoke import model_inputs
  inputs = [x[:2] for x in model_inputs(tiny_batch)]
  rows = dict(tiny_variables, params=slb.unstack_rows(tiny_variables["params"]))
  assert isinstance(rows["params"]["vit_blocks"], tuple) and len(rows["params"]["vit_blocks"]) == 4
  want = tiny_apply(tiny_variables, *inputs)
  got = tiny_apply(rows, *inputs)
  for key in ("score_map", "vision_tokens", "text_tokens"):
    np.testing.assert_array_equal(np.asarray(got[key]), np.asarray(want[key]))
