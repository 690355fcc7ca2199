"""Tiny SATracker for tests and the CPU demo: dim 192 / depth 4, text 128 / 2 layers, 64 / 128 crops.

`arg` may be "runlocal" to shrink data and steps further for smoke runs.
"""
from configs import base

# The arguments get_config understands (`configs/tiny.py:runlocal`); any other is an error.
ARGS = ("runlocal",)


def get_config(arg=None):
  c = base.get_config()
  m = c.model
  m.template_size = 64
  m.search_size = 128
  m.vit.update(dim=192, depth=4, heads=3)
  m.bert.update(vocab_size=1000, dim=128, layers=2, heads=2, intermediate=512, max_position=64)
  # 2 text layers for 4 visual stages: each BERT layer serves two consecutive stages.
  m.text_layer_map = (0, 0, 1, 1)
  m.tem_layers = (0, 1)
  m.sam_layers = (2, 3)
  m.dm_layers = (2, 3)
  m.fusion_heads = 4
  m.dm_dim = 64
  m.head_channels = 64
  c.train.batch_size = 8
  c.train.total_steps = 1000
  c.train.log_every = 10
  c.train.checkpoint_every = 100
  c.optim.warmup_steps = 50
  c.optim.backbone_lr_mult = 1.0  # trained from scratch
  if arg == "runlocal":
    c.train.total_steps = 10
    c.train.checkpoint_every = 5
  return c
