"""Evaluation over several devices: the slots of one BatchedTracker are sharded over 8 (fake CPU)
devices and give the same boxes as on one device.

XLA_FLAGS must be set before jax is imported, so the work runs in a subprocess.
"""
import json
import os
import re
import subprocess
import sys

TESTS = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(TESTS)

WORKER = r"""
import json, os, sys
sys.path[:0] = [sys.argv[1], sys.argv[2]]
import jax
import jax.numpy as jnp
import numpy as np
from satracker_jax import config_utils, model_io
from satracker_jax import tracker as tracker_lib
from satracker_jax.evaluation import results_io, runner
from test_runner import BrightnessNet, write_sequences
from test_tracker import FakeTokenizer

tmp = sys.argv[3]
assert len(jax.local_devices()) == 8, jax.local_devices()
config = config_utils.load_config("tiny")
feat = config.model.search_size // config.model.patch_size
specs = [(f"seq_{i}", (96 + 8 * (i % 3), 128 + 8 * (i % 2)), 3 + i % 4, i) for i in range(10)]
sequences = write_sequences(os.path.join(tmp, "data"), specs, ext="jpg")
kwargs = dict(apply_fn=BrightnessNet(feat), tokenizer=FakeTokenizer(config.model.max_text_len),
              progress=False)
variables = {"w": jnp.zeros(())}
result = {}
for label, devices in (("eight", None), ("one", jax.local_devices()[:1])):
  out = os.path.join(tmp, label)
  summary = runner.track_sequences(config, variables, sequences, out, parallel=8, workers=2,
                                   devices=devices, **kwargs)
  result[label] = {"devices": summary.devices, "tracked": len(summary.tracked),
                   "boxes": {s.name: results_io.read_boxes(results_io.results_path(out, s.name)).tolist()
                             for s in sequences}}

# The real network (a one-stage tiny model, so it compiles fast) on the same batch, sharded or not.
small = config_utils.load_config("tiny", ["model.vit.depth=1", "model.text_layer_map=(0,)",
                                          "model.tem_layers=(0,)", "model.sam_layers=(0,)",
                                          "model.dm_layers=(0,)"])
real = model_io.random_variables(small)
rng = np.random.default_rng(0)
frames = [rng.integers(0, 255, (120, 160, 3), dtype=np.uint8) for _ in range(8)]
outs = {}
for label, devices in (("eight", None), ("one", jax.local_devices()[:1])):
  bt = tracker_lib.BatchedTracker(small, real, 8, tokenizer=FakeTokenizer(small.model.max_text_len),
                                  devices=devices)
  for i, f in enumerate(frames):
    bt.init(i, f, (40 + i, 30, 50, 40), "a box")
  pending = bt.submit(frames[::-1])
  shards = len(pending.out["box"].sharding.device_set)
  outs[label] = (shards, np.asarray(pending.out["score_map"]).tolist(), bt.collect(pending))
result["model_shards"] = {k: v[0] for k, v in outs.items()}
result["model_score_max_diff"] = float(np.abs(np.array(outs["eight"][1]) - np.array(outs["one"][1])).max())
result["model_box_max_diff"] = float(max(np.abs(a[0] - b[0]).max()
                                         for a, b in zip(outs["eight"][2], outs["one"][2])))
print("RESULT" + json.dumps(result))
"""


def test_eval_over_eight_devices_gives_the_same_boxes_as_one(tmp_path):
  flags = re.sub(r"--xla_force_host_platform_device_count=\d+", "", os.environ.get("XLA_FLAGS", ""))
  env = dict(os.environ, XLA_FLAGS=f"{flags} --xla_force_host_platform_device_count=8".strip(),
             JAX_PLATFORMS="cpu")
  proc = subprocess.run([sys.executable, "-c", WORKER, TESTS, REPO, str(tmp_path)], env=env,
                        capture_output=True, text=True, timeout=240)
  assert proc.returncode == 0, proc.stderr[-3000:]
  line = next(l for l in proc.stdout.splitlines() if l.startswith("RESULT"))
  result = json.loads(line[len("RESULT"):])
  eight, one = result["eight"], result["one"]
  assert (eight["devices"], one["devices"]) == (8, 1)
  assert eight["tracked"] == one["tracked"] == 10  # 10 sequences through 8 slots: slots refill
  assert eight["boxes"] == one["boxes"]  # exactly: each slot's computation is the same
  # The model itself, batch-sharded over 8 devices: same outputs up to float reassociation.
  assert result["model_shards"] == {"eight": 8, "one": 1}
  assert result["model_score_max_diff"] < 1e-4, result["model_score_max_diff"]
  assert result["model_box_max_diff"] < 1e-2, result["model_box_max_diff"]
