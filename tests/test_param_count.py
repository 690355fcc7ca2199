"""SATracker-B's parameter count, exactly: the formula is exact, and 1% of it (2.4 M) is more than
the whole DM head (3 x ~0.4 M), so a tolerance would hide a missing or duplicated module."""
import os

import jax
import numpy as np

from satracker_jax.config_utils import load_config
from satracker_jax.models import build_model

CONFIGS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs")
BASE_PARAMS = 237_914_868  # 237,916,308 before the head's 3x3 convs lost their bias (3 towers x 480)


def _abstract_params(config):
  model = build_model(config.model)
  m = model.config
  args = (np.zeros((1, m.template_size, m.template_size, 3), np.uint8), np.zeros((1, 4), np.float32),
          np.zeros((1, m.search_size, m.search_size, 3), np.uint8),
          np.zeros((1, m.max_text_len), np.int32), np.ones((1, m.max_text_len), np.int32))
  return jax.eval_shape(lambda: model.init(jax.random.key(0), *args))["params"]


def _count(tree) -> int:
  return int(sum(np.prod(x.shape) for x in jax.tree.leaves(tree)))


def test_base_parameter_count_is_exact():
  params = _abstract_params(load_config(os.path.join(CONFIGS, "base.py")))
  groups = {}
  for name, sub in params.items():
    top = name.rstrip("0123456789").rstrip("_")
    groups[top] = groups.get(top, 0) + _count(sub)
  # The new modules, each pinned on its own (ViT-B + BERT-base + 3 TEM + 3 SAM + 3 DM + head).
  # norm (scale, bias), vision and text projections (kernel, bias), log(1/tau)
  assert groups["dm"] == 3 * (2 * 768 + 2 * (768 * 256 + 256) + 1)
  assert _count(params) == BASE_PARAMS
