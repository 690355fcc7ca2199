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


def test_accel_markdown_rounds_the_eval_data_and_language_figures():
  report = {"config": "configs/base.py",
            "eval": {"sequences": 16, "frames": 100, "frame_size": [1280, 720], "data": "synthetic JPEG",
                     "runs": {"end to end": {"frames_per_s": 396.8123, "cpu_ms_per_frame": 7.9456},
                              "host only": {"frames_per_s": None, "cpu_ms_per_frame": 6.81}}},
            "data": {"samples_per_s": 1234.5678, "cpus": 16, "train_samples_per_s": None},
            "language": {"rows": [{"batch": 64, "samples_per_s": 5021.77}]}}
  md = accel._markdown(report)
  assert "| end to end | 397 | 7.9 |" in md and "| host only | n/a | 6.8 |" in md
  assert "1,235 samples/s on 16 cores vs the train step's n/a samples/s" in md
  assert "| 64 | 5,022 |" in md and "5021.77" not in md


def test_the_gpu_script_names_tests_that_exist():
  """`.ci/gpu` runs these on a lent GPU, where nobody would notice a renamed test until then."""
  import re
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  script = open(os.path.join(root, ".ci", "gpu")).read()
  named = re.findall(r"(tests/test_\w+\.py)(?:::(\w+))?", script)
  assert len(named) >= 4
  for path, test in named:
    source = open(os.path.join(root, path)).read()
    assert not test or f"def {test}(" in source, (path, test)
  assert "def test_cudnn_attention_with_padding_masks_in_bf16" in open(os.path.join(root, "tests/test_attention.py")).read()
