"""`satracker bench accel`: the accelerator report runs end to end on CPU with small shapes."""
import json
import os

from satracker_jax.bench import accel

# configs/tiny.py at 2 stages (every module kind, as tests/test_scale.py): the kernels part traces
# and compiles a real train step, and the 4-stage one costs a third more for the same report.
MICRO = ("model.vit.depth=2", "model.text_layer_map=(0,1)", "model.tem_layers=(0,)", "model.sam_layers=(1,)",
         "model.dm_layers=(1,)")


def test_accel_report_writes_each_part_and_reports_a_failed_one(tmp_path):
  out = str(tmp_path / "report")
  # environment and kernels in this process; a part that fails (an unknown config file for the
  # language part's subprocess is not needed: "nope" is not a part) must not stop the others.
  report = accel.run("configs/tiny.py", MICRO, small=True, out=out, parts=("environment", "nope", "kernels"))
  with open(os.path.join(out, "accel.json")) as f:
    saved = json.load(f)
  assert saved["environment"]["compute_dtype"] == "float32"  # CPU: model.dtype "auto" is f32
  assert "nope" in saved["errors"] and "environment" not in saved["errors"]
  k = saved["kernels"]
  assert k["kernels_per_step"] > 100 and len(k["top10"]) == 10
  assert k["source"].startswith("host XLA ops")
  md = open(os.path.join(out, "accel.md")).read()
  assert "Kernels per train step" in md and "nope: FAILED" in md
  assert report["kernels"] == k


def test_bench_track_counts_the_steps_matmuls_per_slot_and_times_the_mlp_matmul(tiny_config, tiny_variables):
  from satracker_jax.bench import track
  one = track.step_flops(tiny_config, tiny_variables, 1)
  # Every matmul of the step is per slot, so two slots cost exactly twice one.
  assert one > 1e8 and track.step_flops(tiny_config, tiny_variables, 2) == 2 * one
  ref = track.matmul_reference(tiny_config, calls=2)
  m = tiny_config.model
  tokens = (m.template_size // m.patch_size) ** 2 + (m.search_size // m.patch_size) ** 2
  assert ref["shape"] == [tokens, m.vit.dim, 4 * m.vit.dim] and ref["dtype"] == "float32"
  assert ref["gflops_per_s"] > 0
