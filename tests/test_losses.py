import jax
import jax.numpy as jnp
import numpy as np

from satracker_jax import losses

GRID = 8
LOSS_CFG = dict(focal_weight=1.0, giou_weight=2.0, l1_weight=5.0, dm_weight=1.0,
                focal_alpha=2.0, focal_beta=4.0, heatmap_sigma_factor=1.0 / 6.0)
# Jitted once per input shape: op-by-op dispatch on a small shared CPU is slower than one compile.
_losses = jax.jit(lambda out, batch: losses.compute_losses(out, batch, LOSS_CFG))


def _fake_out(rng, b, pred_box=None, dm_stages=2, dim=16):
  unit = lambda x: x / np.linalg.norm(x, axis=-1, keepdims=True)
  dm = tuple({"patch_emb": jnp.asarray(unit(rng.normal(size=(b, GRID * GRID, dim))), jnp.float32),
              "text_emb": jnp.asarray(unit(rng.normal(size=(b, dim))), jnp.float32),
              "logit_scale": jnp.float32(1 / 0.07)} for _ in range(dm_stages))
  if pred_box is None:
    pred_box = rng.uniform(0.2, 0.6, (b, 4))
  return {"score_map": jnp.asarray(rng.normal(size=(b, GRID, GRID, 1)), jnp.float32),
          "pred_box": jnp.asarray(pred_box, jnp.float32), "dm": dm}


def _batch(box, text_mask=None):
  b = len(box)
  mask = np.ones((b, 10), np.int32) if text_mask is None else text_mask
  ids = (np.arange(b)[:, None] + 5) * mask  # a different sentence per sample
  return {"search_box": np.asarray(box, np.float32), "text_ids": ids, "text_mask": mask}


def test_heatmap_peak_and_shape():
  heat = losses.gaussian_heatmap(jnp.asarray([[0.3, 0.7, 0.9, 0.9], [0.99, 0.0, 0.0, 0.0]]), GRID)
  assert heat.shape == (2, GRID, GRID)
  assert heat[0, 5, 2] == 1.0 and heat[1, 0, 7] == 1.0  # (row, col) of floor(centre * grid)
  assert int((heat == 1.0).sum()) == 2 and float(heat.max()) == 1.0 and float(heat.min()) >= 0.0
  # OSTrack radii are small (CenterNet IoU-0.7 radius): a box of 7x7 cells gets radius 1.
  assert float(heat[0].sum()) > 1.5


def test_losses_finite_and_nonnegative_including_degenerate_inputs():
  rng = np.random.default_rng(0)
  box = np.array([[0.5, 0.5, 0.3, 0.2], [0.5, 0.5, 0.0, 0.0], [1.3, -0.2, 0.1, 0.1], [0.0, 1.0, 2.0, 2.0]])
  mask = np.ones((4, 10), np.int32)
  mask[1] = 0  # a sample without any sentence
  degenerate_pred = np.array([[0.5, 0.5, 0.0, 0.0]] * 4)
  for pred in (None, degenerate_pred):
    total, terms = _losses(_fake_out(rng, 4, pred), _batch(box, mask))
    for name, value in {"total": total, **terms}.items():
      assert np.isfinite(float(value)), name
      assert float(value) >= 0.0, name
  grads = jax.jit(jax.grad(lambda o: losses.compute_losses(o, _batch(box, mask), LOSS_CFG)[0]))(
      _fake_out(rng, 4))
  assert all(np.all(np.isfinite(g)) for g in jax.tree.leaves(grads))


def test_giou_and_l1_zero_for_identical_boxes():
  rng = np.random.default_rng(1)
  box = rng.uniform(0.3, 0.6, (4, 4))
  _, terms = _losses(_fake_out(rng, 4, box), _batch(box))
  assert abs(float(terms["giou"])) < 1e-5
  assert float(terms["l1"]) < 1e-6
  assert abs(float(terms["iou"]) - 1.0) < 1e-5


def test_focal_loss_near_zero_for_a_perfect_score_map():
  box = jnp.asarray([[0.3, 0.6, 0.4, 0.3], [0.8, 0.2, 0.1, 0.1]])
  heat = losses.gaussian_heatmap(box, GRID)
  perfect = jnp.where(heat == 1.0, 20.0, -20.0)
  assert float(losses.focal_loss(perfect, heat)) < 1e-3
  wrong = jnp.where(heat == 1.0, -20.0, 20.0)
  assert float(losses.focal_loss(wrong, heat)) > 10.0
  # Predicting the Gaussian target itself is also far better than an uninformed map.
  as_target = jax.scipy.special.logit(jnp.clip(heat, 1e-4, 1 - 1e-4))
  assert float(losses.focal_loss(as_target, heat)) < 0.1 * float(losses.focal_loss(jnp.zeros_like(heat), heat))


def test_inbox_mask_falls_back_to_centre_cell():
  mask = losses.inbox_patch_mask(jnp.asarray([[0.5, 0.5, 0.5, 0.5], [0.3, 0.3, 0.01, 0.01]]), GRID)
  assert int(mask[0].sum()) == 16
  assert int(mask[1].sum()) == 1 and bool(mask[1, 2 * GRID + 2])


def test_dm_loss_prefers_sentence_matching_target_patches():
  box = np.array([[0.25, 0.25, 0.4, 0.4], [0.7, 0.7, 0.4, 0.4]])
  inbox = np.asarray(losses.inbox_patch_mask(jnp.asarray(box, jnp.float32), GRID))
  dim = 4
  eye = np.eye(dim)
  # Sample b: in-box patches point along e_b, background patches along e_3.
  patches = np.where(inbox[..., None], eye[[0, 1]][:, None, :], eye[3])
  def dm_terms(text):
    out = {"score_map": jnp.zeros((2, GRID, GRID, 1)), "pred_box": jnp.asarray(box, jnp.float32),
           "dm": ({"patch_emb": jnp.asarray(patches, jnp.float32), "text_emb": jnp.asarray(text, jnp.float32),
                   "logit_scale": jnp.float32(10.0)},)}
    return _losses(out, _batch(box))[1]
  matching = dm_terms(eye[[0, 1]])
  background = dm_terms(eye[[3, 3]])
  assert float(matching["dm_t2p"]) < float(background["dm_t2p"])
  assert float(matching["dm_p2t"]) < float(background["dm_p2t"])
  assert float(matching["dm"]) < 0.1 * float(background["dm"])


def test_dm_zero_without_text():
  rng = np.random.default_rng(2)
  box = rng.uniform(0.3, 0.6, (2, 4))
  _, terms = losses.compute_losses(_fake_out(rng, 2), _batch(box), LOSS_CFG, model_config={"use_text": False})
  assert float(terms["dm"]) == 0.0 and float(terms["dm_t2p"]) == 0.0 and float(terms["dm_p2t"]) == 0.0


def test_an_empty_sentence_gets_no_dense_matching_loss():
  """A `bb` sample (sentence dropped: [CLS][SEP] only) has nothing to match patches against: its
  own patches must not move the DM loss, while a sample with words does."""
  rng = np.random.default_rng(5)
  box = rng.uniform(0.3, 0.6, (3, 4))
  mask = np.ones((3, 10), np.int32)
  mask[1, 2:] = 0  # [CLS][SEP]
  out = _fake_out(rng, 3)
  _, base = _losses(out, _batch(box, mask))
  for row, should_change in ((1, False), (0, True)):
    moved = dict(out, dm=tuple(dict(s, patch_emb=s["patch_emb"].at[row].set(-s["patch_emb"][row]))
                               for s in out["dm"]))
    _, terms = _losses(moved, _batch(box, mask))
    assert (abs(float(terms["dm"]) - float(base["dm"])) > 1e-4) == should_change, row
