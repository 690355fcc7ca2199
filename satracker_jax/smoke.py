"""One jitted forward+backward of a config on random inputs (`satracker smoke`), and the random
batches tests and benchmarks feed the model.

`smoke(config)` returns every output's shape, each loss term, the parameter count and the
compile/step times: the quickest check that a config builds, traces and differentiates.
"""
from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import numpy as np

from satracker_jax import losses, model_io
from satracker_jax.models import build_model, count_params


def random_batch(model_config, batch_size: int, seed: int = 0) -> dict:
  """Random images, plausible boxes and token ids in the shapes of docs/INTERFACES.md "Batches"."""
  rng = np.random.default_rng(seed)
  m = model_config
  length = m.max_text_len
  lengths = rng.integers(3, length + 1, size=batch_size)
  text_mask = (np.arange(length)[None] < lengths[:, None]).astype(np.int32)
  text_ids = rng.integers(1, m.bert.vocab_size, size=(batch_size, length)).astype(np.int32) * text_mask
  box = lambda: np.concatenate([rng.uniform(0.3, 0.7, (batch_size, 2)), rng.uniform(0.1, 0.5, (batch_size, 2))],
                               -1).astype(np.float32)
  return {
      "template": rng.integers(0, 256, (batch_size, m.template_size, m.template_size, 3), dtype=np.uint8),
      "template_box": box(),
      "search": rng.integers(0, 256, (batch_size, m.search_size, m.search_size, 3), dtype=np.uint8),
      "search_box": box(),
      "text_ids": text_ids,
      "text_mask": text_mask,
  }


def model_inputs(batch: dict) -> tuple:
  return tuple(batch[k] for k in ("template", "template_box", "search", "text_ids", "text_mask"))


def smoke(config, batch_size: int = 8, seed: int = 0) -> dict:
  """One jitted init + forward + backward of `config` on a random batch.

  Returns {"parameters", "outputs": {path: (shape, dtype)}, "total", "terms": {name: value},
  "grad_norm", "init_s", "first_step_s", "second_step_s", "finite"}.
  """
  model = build_model(config.model)
  batch = random_batch(config.model, batch_size, seed)
  inputs = model_inputs(batch)

  t0 = time.perf_counter()
  variables = model_io.random_variables(config, seed)  # drawn on the host: nothing compiled
  jax.block_until_ready(variables)
  init_s = time.perf_counter() - t0

  def loss_fn(params, batch_stats, batch):
    out, new_state = model.apply({"params": params, "batch_stats": batch_stats}, *model_inputs(batch),
                                 train=True, mutable=["batch_stats"])
    total, terms = losses.compute_losses(out, batch, config.loss, model_config=config.model)
    return total, (terms, out, new_state)

  step = jax.jit(jax.value_and_grad(loss_fn, has_aux=True))
  t0 = time.perf_counter()
  (total, (terms, out, _)), grads = step(variables["params"], variables["batch_stats"], batch)
  jax.block_until_ready(grads)
  first_s = time.perf_counter() - t0
  t0 = time.perf_counter()
  jax.block_until_ready(step(variables["params"], variables["batch_stats"], batch))
  second_s = time.perf_counter() - t0

  grad_norm = float(jnp.sqrt(sum(jnp.sum(jnp.square(g)) for g in jax.tree.leaves(grads))))
  total = float(total)
  return {
      "parameters": count_params(variables["params"]),
      "outputs": {jax.tree_util.keystr(path): (tuple(leaf.shape), str(leaf.dtype))
                  for path, leaf in jax.tree.flatten_with_path(out)[0]},
      "total": total,
      "terms": {name: float(value) for name, value in terms.items()},
      "grad_norm": grad_norm,
      "init_s": init_s, "first_step_s": first_s, "second_step_s": second_s,
      "finite": bool(np.isfinite(total) and np.isfinite(grad_norm)),
  }
