"""`satracker bench track`: tracker frames/s, single stream and batched.

  satracker bench track --config configs/base.py --json bench_track.json [--frames 100] \
      [--parallel 8] [--bf16] [--frame-size 1280x720]

Measures, on random-initialised weights (speed does not depend on their values) and synthetic
frames with a moving target:
- `loop`: the full single-stream tracker (`Tracker.track`: host crop + resize, upload, the jitted
  step, box mapping), what a user of the tracker gets;
- `step`: the device step alone on a prepared search crop (upper bound without host work);
- `crop`: the host-side search crop alone;
- with `--parallel N`: the same for a `BatchedTracker` of N slots, frames/s counting all N streams.
Compilation is excluded (warm-up calls) and the compile count is reported (it must be 1 each).

How close the step is to what the device can do: its matmul FLOPs per call (the loop-free count of
bench/flops.py), the rate the step reaches, and the rate of one matmul of the ViT's MLP shape
([tokens, dim] @ [dim, hidden], the step's compute dtype) on the same device, timed alone. A step
near 100% of that reference is bound by the matmul library, not by the program around it.
"""
from __future__ import annotations

import time

import jax
import numpy as np

from satracker_jax import config_utils, model_io, utils
from satracker_jax import boxes as box_lib
from satracker_jax import tracker as tracker_lib

WARMUP = 3


class FixedTokenizer:
  """Speed does not depend on the words; avoids needing a vocabulary file for a benchmark (the
  tracker's and the evaluation's, bench/eval.py)."""

  def __init__(self, max_len: int):
    self.ids = np.zeros(max_len, np.int32)
    self.mask = np.zeros(max_len, np.int32)
    n = min(max_len, 12)  # a typical sentence length in tokens
    self.ids[:n] = np.arange(n) + 100
    self.mask[:n] = 1

  def encode(self, text):
    return self.ids.copy(), self.mask.copy()


def _frames(height: int, width: int, count: int, seed: int = 0):
  """Frames with a bright target drifting over a noise background, and its first box."""
  rng = np.random.default_rng(seed)
  background = rng.integers(0, 200, (height, width, 3), dtype=np.uint8)
  w, h = width // 8, height // 6
  frames = []
  for i in range(count):
    frame = background.copy()
    x = int(width * 0.3 + 2 * i) % (width - w)
    y = int(height * 0.4 + i) % (height - h)
    frame[y:y + h, x:x + w] = (240, 60, 40)
    frames.append(frame)
  return frames, np.array([width * 0.3, height * 0.4, w, h], np.float64)


def _time(fn, n: int) -> float:
  """Seconds per call of `fn` (which must block until its work is done)."""
  for _ in range(WARMUP):
    fn()
  start = time.perf_counter()
  for _ in range(n):
    fn()
  return (time.perf_counter() - start) / n


def _bench_tracker(config, variables, tok, frames, box, num_frames: int, slots: int) -> dict:
  bt = tracker_lib.BatchedTracker(config, variables, slots, tokenizer=tok)
  for s in range(slots):
    bt.init(s, frames[0], box, "the red target")
  # The step's compile (or cache load), outside the timed calls; said before and after.
  watch = bt.warmup(say=lambda line: print(line, flush=True))
  cursor = [0]

  def loop():
    cursor[0] += 1
    frame = frames[1 + cursor[0] % (len(frames) - 1)]
    bt.track([frame] * slots)  # returns host numpy: the step has finished

  loop_s = _time(loop, num_frames)
  params = box_lib.crop_params(box, bt.search_factor, bt.search_size)
  crop_s = _time(lambda: box_lib.crop_image(frames[1], params), num_frames)
  search = np.stack([box_lib.crop_image(frames[1], params)] * slots)
  step_s = _time(lambda: jax.block_until_ready(bt.step(search)), num_frames)
  return {
      "slots": slots,
      "loop_ms_per_call": 1e3 * loop_s, "loop_fps": slots / loop_s,
      "step_ms_per_call": 1e3 * step_s, "step_fps": slots / step_s,
      "crop_ms_per_frame": 1e3 * crop_s,
      "compiles": bt.trace_count,
      "compile_s": watch.seconds, "compile": watch.as_dict(),
  }


def matmul_reference(config, calls: int = 20) -> dict:
  """GFLOP/s of one [tokens, dim] @ [dim, hidden] matmul of the config's ViT in its compute dtype."""
  import jax.numpy as jnp  # noqa: PLC0415
  from satracker_jax.models import build_model  # noqa: PLC0415
  cfg = build_model(config.model).config
  tokens, dim = cfg.num_template + cfg.num_search, cfg.vit.dim
  hidden = int(dim * cfg.vit.mlp_ratio)
  rng = np.random.default_rng(0)
  a = jnp.asarray(rng.standard_normal((tokens, dim)), cfg.compute_dtype)
  b = jnp.asarray(rng.standard_normal((dim, hidden)), cfg.compute_dtype)
  matmul = jax.jit(jnp.matmul)
  # The best of a few short rounds: a lone kernel of a few ms is easily slowed by other work on a
  # shared machine, and the reference is meant as what the device can do.
  seconds = min(_time(lambda: matmul(a, b).block_until_ready(), calls) for _ in range(5))
  return {"shape": [tokens, dim, hidden], "dtype": cfg.resolved_dtype,
          "gflops_per_s": 2 * tokens * dim * hidden / seconds / 1e9}


def step_flops(config, variables, slots: int) -> float:
  """Matmul FLOPs of one tracker step of `slots` slots."""
  from satracker_jax.bench.flops import function_flops  # noqa: PLC0415
  specs = tracker_lib.step_input_specs(config, slots)
  return function_flops(tracker_lib.make_step_fn(tracker_lib.model_apply_fn(config)), variables,
                        *specs.values())


def run(config_spec: str = "configs/tiny.py", overrides=(), *, frames: int = 100, parallel: int = 0,
        bf16: bool = False, frame_size: tuple[int, int] = (640, 480)) -> dict:
  """Times the tracker of `config_spec` (+ overrides) on `frame_size` (W, H) frames; `parallel`
  > 1 also times a BatchedTracker of that many slots. Prints a table, returns the JSON dict."""
  from satracker_jax.models import count_params  # noqa: PLC0415
  config = config_utils.load_config(config_spec, overrides)
  if bf16:
    config.model.dtype = "bfloat16"
  width, height = (int(v) for v in frame_size)
  num_calls = int(frames)
  variables = model_io.random_variables(config)
  tok = FixedTokenizer(config.model.max_text_len)
  video, box = _frames(height, width, 16)
  runs = [_bench_tracker(config, variables, tok, video, box, num_calls, 1)]
  if parallel > 1:
    runs.append(_bench_tracker(config, variables, tok, video, box, max(1, num_calls // parallel),
                               parallel))
  for r in runs:
    r["step_gflop"] = step_flops(config, variables, r["slots"]) / 1e9
    r["step_gflops_per_s"] = r["step_gflop"] / (r["step_ms_per_call"] / 1e3)
  reference = matmul_reference(config)
  m = config.model
  result = {
      "bench": "track",
      "config": config_spec,
      "overrides": list(overrides),
      "dtype": m.dtype,
      "params": int(count_params(variables["params"])),
      "template_size": int(m.template_size), "search_size": int(m.search_size),
      "frame_size": [width, height],
      "frames": num_calls,
      "single": runs[0],
      "batched": runs[1] if len(runs) > 1 else None,
      "compile_s": runs[0]["compile_s"], "compile": runs[0]["compile"],
      "matmul_reference": reference,
      "machine": utils.machine_info(),
  }
  rows = [[f"{r['slots']}", r["loop_fps"], r["loop_ms_per_call"], r["step_fps"], r["step_ms_per_call"],
           r["crop_ms_per_frame"], r["step_gflops_per_s"],
           100 * r["step_gflops_per_s"] / reference["gflops_per_s"], r["compiles"]] for r in runs]
  print(f"{config_spec} ({m.dtype}, {result['params'] / 1e6:.1f}M params, frames {height}x{width}, "
        f"{result['machine']['device_kind']} x{result['machine']['num_devices']})")
  print(utils.format_table(["streams", "loop fps", "loop ms/call", "step fps", "step ms/call",
                            "crop ms/frame", "step GFLOP/s", "% of matmul", "compiles"], rows,
                           floatfmt=".2f"))
  tokens, dim, hidden = reference["shape"]
  print(f"step: {runs[0]['step_gflop']:.2f} GFLOP of matmuls per frame; matmul reference "
        f"[{tokens}x{dim}] @ [{dim}x{hidden}] {reference['dtype']} alone: "
        f"{reference['gflops_per_s']:.1f} GFLOP/s on this device")
  return result
