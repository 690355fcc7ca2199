"""`satracker bench eval --config C [--frame-size WxH] --json FILE`: offline-evaluation frames/s.

    from satracker_jax.bench import eval as bench_eval
    result = bench_eval.run("configs/tiny.py", frame_size=(1280, 720))

What users get from `satracker eval`, end to end, on JPEG videos on disk: synthetic videos are
generated at `frame_size` (default 1280x720, the size of most LaSOT / TNL2K frames) into a
temporary folder (or read from `data_root`) and tracked by `evaluation.runner.track_sequences`,
the function behind the verb (decode-ahead pool, reduced-scale JPEG decoding, slots over all
local devices). Three rates, frames per second of wall time (compilation excluded):
- `host only`: the network replaced by a no-op that keeps the previous box, so only decoding,
  cropping, uploads and bookkeeping remain: the most frames/s this host can feed a device;
- `host only, full decode`: the same with every frame decoded at full size (`reduced_decode=False`),
  what the reduced-scale decoding saves;
- `end to end`: the config's network on every crop (random weights: speed does not depend on
  their values), with the no-op's boxes so the crops follow the targets as a trained tracker's
  do (`ModelWithNoOpBoxes`); with `checkpoint`, a trained model and its own boxes.
If `end to end` is close to `host only`, the host limits you; if far below, the device does.
"per core" divides frames/s by `os.cpu_count()`; other processes sharing the cores lower it (the
machine's load average is recorded before and after). "frames/CPU-s" divides the frames by the
CPU time the process used (all its threads): the cost of a frame, which sharing does not change
much, so it is the figure to compare across loaded runs.

A stage table times one frame's host work alone on the same files: full decode to an array (what
the old pipeline and a crop on the device both need), decode at the scale the crop allows, and the
crop itself.
"""
from __future__ import annotations

import os
import shutil
import tempfile
import time

import jax.numpy as jnp
import numpy as np

from satracker_jax import boxes as box_lib
from satracker_jax import config_utils, model_io, utils
from satracker_jax.bench.track import FixedTokenizer


class NoOpNet:
  """The network replaced by nothing: a score peak at the crop's centre and the first box's size
  (read from the template box, since the search crop is `search_factor / template_factor` times
  larger), so the tracker keeps the previous box and only the host work remains."""

  def __init__(self, config):
    m = config.model
    self.feat = m.search_size // m.patch_size
    self.ratio = float(config.data.template_factor) / float(config.data.search_factor)

  def __call__(self, variables, template, template_box, search, text_ids, text_mask):
    b, f = search.shape[0], self.feat
    score = jnp.zeros((b, f, f, 1), jnp.float32).at[:, f // 2, f // 2].set(1.0)
    size = jnp.broadcast_to((template_box[:, 2:] * self.ratio)[:, None, None, :], (b, f, f, 2))
    # With an even feature size, cell f/2 with offset 0 is exactly the crop centre.
    offset = jnp.zeros((b, f, f, 2), jnp.float32)
    return {"score_map": score, "size_map": size, "offset_map": offset}


class ModelWithNoOpBoxes:
  """The config's network computed in full on every crop, with the no-op's boxes: random weights
  would let the boxes drift to the whole frame (cheap 1/8 decodes, unlike a trained tracker that
  follows its target), so the crops follow the targets as a trained model's would. `out * 0.0` is
  not simplified away by XLA (IEEE: NaN * 0 is NaN), so the network's cost is all there."""

  def __init__(self, config):
    from satracker_jax import tracker as tracker_lib  # noqa: PLC0415
    self.model = tracker_lib.model_apply_fn(config)
    self.noop = NoOpNet(config)

  def __call__(self, variables, template, template_box, search, text_ids, text_mask):
    out = self.model(variables, template, template_box, search, text_ids, text_mask)
    boxes = self.noop(variables, template, template_box, search, text_ids, text_mask)
    return {k: boxes[k] + 0.0 * out[k].astype(jnp.float32) for k in boxes}


def _stage_times(sequences, config, frames: int = 60) -> dict:
  """Milliseconds per frame of each host stage, one thread, on the benchmark's own files."""
  from satracker_jax.evaluation.decode import decode_frame, decode_scale  # noqa: PLC0415
  from satracker_jax.visualize import load_frame  # noqa: PLC0415
  work = []
  for seq in sequences:
    for path, box in zip(seq.frames[1:], seq.boxes[:-1]):
      if np.isfinite(box).all() and box[2] > 0 and box[3] > 0:
        work.append((path, box_lib.crop_params(box, config.data.search_factor,
                                               config.model.search_size)))
  work = work[::max(1, len(work) // frames)][:frames]  # spread over every video
  out = int(config.model.search_size)

  def timed(fn) -> float:
    # CPU time of this thread: what the stage costs, whatever else shares the cores.
    fn(*work[0])  # warm the file cache and Pillow
    start = time.thread_time()
    for item in work:
      fn(*item)
    return 1e3 * (time.thread_time() - start) / len(work)

  scales = [decode_scale(p.size, out) for _, p in work]
  return {
      "frames": len(work),
      "full_decode_to_array_ms": timed(lambda path, p: load_frame(path)),
      "full_decode_and_crop_image_ms": timed(lambda path, p: box_lib.crop_image(load_frame(path), p)),
      "scaled_decode_ms": timed(lambda path, p: decode_frame(path, decode_scale(p.size, out))),
      "scaled_decode_and_crop_ms": timed(
          lambda path, p: decode_frame(path, decode_scale(p.size, out)).crop(p)),
      "mean_decode_scale": float(np.mean(scales)),
  }


def _track(config, variables, sequences, out_dir, **kwargs) -> dict:
  from satracker_jax.evaluation import runner  # noqa: PLC0415
  shutil.rmtree(out_dir, ignore_errors=True)
  summary = runner.track_sequences(config, variables, sequences, out_dir, progress=False,
                                   tokenizer=FixedTokenizer(config.model.max_text_len), **kwargs)
  if summary.failed:
    raise RuntimeError(f"benchmark sequences failed: {summary.failed}")
  cores = os.cpu_count() or 1
  return {"frames": summary.frames, "seconds": summary.seconds,
          "frames_per_s": summary.frames_per_s, "frames_per_s_per_core": summary.frames_per_s / cores,
          "cpu_ms_per_frame": 1e3 * summary.cpu_seconds / max(summary.frames, 1),
          "frames_per_cpu_s": summary.frames_per_cpu_s,
          "parallel": summary.parallel, "devices": summary.devices, "workers": summary.workers,
          "decode_scales": {str(k): v for k, v in sorted(summary.decode_scales.items())},
          "redecodes": summary.redecodes}


def run(config_spec: str = "configs/tiny.py", overrides=(), *, frame_size=(1280, 720),
        sequences: int = 8, frames: int = 60, parallel: int = 8, workers: int = 0,
        data_root: str = "", model: bool = True, full_decode: bool = True, seed: int = 0,
        checkpoint: str = "") -> dict:
  """Times evaluation of `config_spec` (+ overrides) on JPEG videos of `frame_size` (W, H).
  Prints a table, returns the JSON dict. `model=False` skips the end-to-end run (no compile);
  `checkpoint` runs a trained model end to end, its own boxes included."""
  from data_pipelines import readers, synthetic  # noqa: PLC0415  (numpy-only modules)
  if checkpoint:
    config, trained, _ = model_io.load_model(checkpoint, None, overrides)
  else:
    config = config_utils.load_config(config_spec, overrides)
  width, height = (int(v) for v in frame_size)
  tmp = tempfile.TemporaryDirectory(prefix="satracker_bench_eval_")
  try:
    root = data_root
    if not root:
      root = os.path.join(tmp.name, "data")
      synthetic.generate(root, sequences=sequences, seed=seed, frames=frames, size=(width, height),
                         test_sequences=sequences, progress=False)
    seqs = readers.load_dataset("synthetic", root, "test", use_cache=False)
    num_frames = sum(len(s.frames) for s in seqs)
    first = seqs[0].frames[0]
    load_before = os.getloadavg()
    options = dict(parallel=parallel, workers=workers)
    rows = {}
    noop = NoOpNet(config)
    rows["host only"] = _track(config, {"noop": jnp.zeros(())}, seqs, os.path.join(tmp.name, "a"),
                               apply_fn=noop, **options)
    if full_decode:
      rows["host only, full decode"] = _track(config, {"noop": jnp.zeros(())}, seqs,
                                              os.path.join(tmp.name, "b"), apply_fn=noop,
                                              reduced_decode=False, **options)
    params = None
    if model:
      from satracker_jax.models import count_params  # noqa: PLC0415
      if checkpoint:
        variables, apply_fn, label = trained, None, "end to end (trained model)"
      else:
        variables = model_io.random_variables(config)
        apply_fn, label = ModelWithNoOpBoxes(config), "end to end (model, no-op boxes)"
      params = int(count_params(variables["params"]))
      rows[label] = _track(config, variables, seqs, os.path.join(tmp.name, "c"), apply_fn=apply_fn,
                           **options)
    stages = _stage_times(seqs, config)
    load_after = os.getloadavg()
  finally:
    tmp.cleanup()

  result = {
      "bench": "eval", "config": config_spec, "overrides": list(overrides),
      "checkpoint": checkpoint or None, "params": params, "search_size": int(config.model.search_size),
      "frame_size": [width, height], "data": data_root or f"synthetic JPEG, generated ({seed=})",
      "first_frame": os.path.basename(first), "sequences": len(seqs), "frames": num_frames,
      "runs": rows, "stages_ms_per_frame": stages,
      "load_average_before": list(load_before), "load_average_after": list(load_after),
      "machine": utils.machine_info(),
  }
  print(f"{config_spec}: {len(seqs)} videos, {num_frames} JPEG frames of {width}x{height}, "
        f"{result['machine']['device_kind']} x{result['machine']['num_devices']}, "
        f"{result['machine']['cpu_count']} cores, load {load_before[0]:.1f} -> {load_after[0]:.1f}")
  table = [[name, r["frames_per_s"], r["frames_per_s_per_core"], r["cpu_ms_per_frame"],
            r["frames_per_cpu_s"], r["parallel"], r["devices"], r["workers"],
            " ".join(f"1/{k}:{v}" for k, v in r["decode_scales"].items()), r["redecodes"]]
           for name, r in rows.items()]
  print(utils.format_table(["run", "frames/s", "per core", "CPU ms/frame", "frames/CPU-s",
                            "parallel", "devices", "workers", "decode scales", "redecodes"], table,
                           floatfmt=".1f"))
  print(utils.format_table(["host stage (1 thread)", "ms/frame"],
                           [[k[:-3].replace("_", " "), v] for k, v in stages.items()
                            if k.endswith("_ms")], floatfmt=".2f"))
  return result
