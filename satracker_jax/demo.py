"""The main job on embedded data, start to finish on a CPU (`satracker demo`, `run_demo`).

1. generate the synthetic VL tracking data set (train + held-out test split) into WORKDIR/synthetic;
2. train the tiny SATracker on the train split (WORKDIR/runs/<variant>, resumable);
3. track every held-out test sequence (WORKDIR/results/<variant>, pytracking raw layout);
4. write WORKDIR/report: metrics.json (the `analyze` schema), success / precision plots,
   per-sequence CSV, results.md and a GIF of one tracked test sequence with its sentence.

`--ablations` trains and evaluates the paper's ablations as well (no TEM, no SAM, no DM loss, no
text) and writes WORKDIR/report/ablations.md.

Re-running picks up where an interrupted demo stopped, and reuses nothing that another request
produced. Every output records what produced it and is reused only when that is identical:
- WORKDIR/synthetic/.complete: the generation fingerprint (generator version, seed, count, size...;
  `data_pipelines.synthetic_store`); another one re-generates.
- WORKDIR/runs/<variant>/demo_run.json: the run identity (SHA-256 of the variant's whole config,
  steps and seed included, plus the data fingerprint); another one trains from scratch. Why not
  resume: the schedule depends on total_steps, so a 4-step run continued to 2,500 steps is not the
  2,500-step model.
- WORKDIR/results/<variant>/demo_model.json: the run identity plus the checkpoint step that was
  tracked; another one tracks every test video again.
WORKDIR/report/ is rewritten as a whole on every run.
"""
from __future__ import annotations

import copy
import hashlib
import json
import os
import shutil
import time

import numpy as np

from satracker_jax import config_utils, utils

# variant name -> config overrides; "full" is the model as configured.
ABLATIONS = {
    "full": [],
    "no_tem": ["model.use_tem=False"],
    "no_sam": ["model.use_sam=False"],
    "no_dm": ["loss.dm_weight=0.0"],
    "no_text": ["model.use_text=False"],
}
DATASET = "synthetic"


def _say(text: str) -> None:
  print(f"[demo] {text}", flush=True)


def _prepare_data(config, workdir: str, progress: bool) -> tuple[str, dict]:
  """-> (root, generation fingerprint); generates unless the root holds exactly this request."""
  from data_pipelines import synthetic_store  # noqa: PLC0415
  root = os.path.join(os.path.abspath(workdir), "synthetic")
  want = synthetic_store.fingerprint(config.data.synthetic)
  have = synthetic_store.recorded_fingerprint(root)
  if have == want:
    _say(f"synthetic data already in {root}")
    return root, want
  s = config.data.synthetic
  why = ""
  if os.path.isdir(root):
    changed = sorted(k for k in set(want) | set(have or {}) if (have or {}).get(k) != want.get(k))
    why = (f" (replacing the data there: {', '.join(changed)} changed)" if have
           else " (replacing unfinished or unrecorded data there)")
  _say(f"generating {s.sequences} synthetic sequences ({s.test_sequences} held out for testing) "
       f"into {root}{why}")
  synthetic_store.ensure_generated(config, root, progress=progress)
  return root, want


def _use_data(config, root: str) -> None:
  from data_pipelines import synthetic  # noqa: PLC0415
  config.data.datasets.synthetic.root = root
  synthetic.resolve_vocab_file(config, root)


def run_identity(config, data_fingerprint: dict) -> dict:
  """What a trained model is a function of: the whole config (before the data root is filled in,
  so a moved workdir is still the same run) and the data it was trained on."""
  config_json = json.dumps(config_utils.config_to_json(config), sort_keys=True)
  return {"config_sha256": hashlib.sha256(config_json.encode()).hexdigest(),
          "data": data_fingerprint}


def _read_json(path: str):
  try:
    with open(path) as f:
      return json.load(f)
  except (OSError, ValueError):
    return None


def _keep_only_if(directory: str, stamp: str, identity: dict, what: str, name: str) -> None:
  """Deletes `directory` unless its `stamp` file records `identity`; then records it."""
  path = os.path.join(directory, stamp)
  if os.path.isdir(directory) and _read_json(path) != identity:
    _say(f"[{name}] {directory} holds {what} of another request; deleting it")
    shutil.rmtree(directory)
  os.makedirs(directory, exist_ok=True)
  if not os.path.exists(path):
    utils.write_json(path, identity)


def _train_and_eval(name: str, config, workdir: str, identity: dict, test_sequences, parallel: int,
                    progress: bool) -> dict:
  from satracker_jax import model_io  # noqa: PLC0415
  from satracker_jax.evaluation import runner  # noqa: PLC0415
  from satracker_jax.train import loop  # noqa: PLC0415
  run_dir = os.path.join(workdir, "runs", name)
  out_dir = os.path.join(workdir, "results", name)
  _keep_only_if(run_dir, "demo_run.json", identity, "a training run", name)
  t0 = time.time()
  _say(f"[{name}] training {config.train.total_steps} steps -> {run_dir}")
  summary = loop.train(config, run_dir)
  if summary.get("stopped_by") not in (None, "", "total_steps", "done"):
    _say(f"[{name}] training stopped early: {summary.get('stopped_by')}")
  train_s = time.time() - t0
  step = int(summary.get("step", 0))
  trained_config, variables = model_io.load_variables(run_dir)
  _keep_only_if(out_dir, "demo_model.json", {**identity, "step": step},
                "results of another model", name)
  t0 = time.time()
  metrics = runner.evaluate(trained_config, variables, test_sequences, out_dir, parallel=parallel,
                            progress=progress, dataset=DATASET, name=name,
                            write_report=False)[name]
  return {**metrics, "train_seconds": train_s, "eval_seconds": time.time() - t0,
          "results_dir": out_dir, "final_step": step}


def _pick_gif_sequence(sequences):
  """A test sequence whose sentence has to be read: prefer one with a look-alike distractor."""
  for s in sequences:
    attrs = os.path.join(os.path.dirname(s.frames[0]), os.pardir, "attributes.json")
    if os.path.exists(attrs):
      with open(attrs) as f:
        if json.load(f).get("identical_distractor"):
          return s
  return sequences[0]


def _write_gif(sequence, results_dir: str, path: str) -> str:
  from satracker_jax import visualize  # noqa: PLC0415
  from satracker_jax.evaluation import results_io  # noqa: PLC0415
  boxes = results_io.read_boxes(results_io.results_path(results_dir, sequence.name))
  frames = []
  for i, frame_path in enumerate(sequence.frames):
    frame = visualize.load_frame(frame_path)
    gt = sequence.boxes[i] if np.all(np.isfinite(sequence.boxes[i])) else None
    frames.append(visualize.draw_tracking(frame, box=boxes[i], sentence=sequence.sentence, gt_box=gt,
                                          frame_index=i))
  return visualize.write_gif(frames, path, fps=10.0)


def _ablation_table(rows: dict) -> str:
  headers = ["variant", "AUC", "P", "NP", "train s", "steps"]
  table = [[name, f"{100 * r['auc']:.2f}", f"{100 * r['precision']:.2f}",
            f"{100 * r['norm_precision']:.2f}", f"{r['train_seconds']:.0f}", r["final_step"]]
           for name, r in rows.items()]
  return utils.format_table(headers, table)


def run_demo(workdir: str = "demo_workdir", config_spec: str = "configs/synthetic.py",
             overrides=(), ablations: bool = False, steps: int = 0, seed: int = -1,
             parallel: int = 1, progress: bool = True) -> dict:
  """Runs the demo (see the module docstring); returns what it wrote to report/demo.json.

  `steps` > 0 and `seed` >= 0 replace the config's total_steps and seeds (training and data).
  """
  from data_pipelines import readers  # noqa: PLC0415
  from satracker_jax.evaluation import analyze  # noqa: PLC0415

  started = time.time()
  workdir = os.path.abspath(workdir)
  os.makedirs(workdir, exist_ok=True)
  config = config_utils.load_config(config_spec, overrides)
  if steps > 0:
    config.train.total_steps = steps
  if seed >= 0:
    config.seed = seed
    config.data.synthetic.seed = seed

  phases = {}
  t0 = time.time()
  root, data_fingerprint = _prepare_data(config, workdir, progress)
  test_sequences = readers.load_dataset(DATASET, root, "test")
  phases["data"] = time.time() - t0
  _say(f"{len(test_sequences)} held-out test sequences")

  variants = ABLATIONS if ablations else {"full": ABLATIONS["full"]}
  rows = {}
  for name, variant_overrides in variants.items():
    variant = copy.deepcopy(config)
    config_utils.apply_overrides(variant, variant_overrides)
    identity = run_identity(variant, data_fingerprint)
    _use_data(variant, root)
    rows[name] = _train_and_eval(name, variant, workdir, identity, test_sequences, parallel, progress)
  phases["train"] = sum(r["train_seconds"] for r in rows.values())
  phases["evaluate"] = sum(r["eval_seconds"] for r in rows.values())

  t0 = time.time()
  report_dir = os.path.join(workdir, "report")
  shutil.rmtree(report_dir, ignore_errors=True)  # nothing in it may outlive the run that wrote it
  report = analyze.evaluate(test_sequences, {n: r["results_dir"] for n, r in rows.items()}, DATASET)
  paths = analyze.write_report(report, report_dir, title="synthetic test split")
  gif_sequence = _pick_gif_sequence(test_sequences)
  gif = _write_gif(gif_sequence, rows["full"]["results_dir"], os.path.join(report_dir, "tracked.gif"))
  if ablations:
    with open(os.path.join(report_dir, "ablations.md"), "w") as f:
      f.write("# Ablations on the synthetic test split\n\n" + _ablation_table(rows) + "\n")
  phases["report"] = time.time() - t0
  wall = time.time() - started
  summary = {
      "config": config_spec, "overrides": list(overrides), "seed": int(config.seed),
      "total_steps": int(config.train.total_steps), "variants": rows,
      "phase_seconds": phases, "machine": utils.machine_info(), "wall_seconds": wall}
  utils.write_json(os.path.join(report_dir, "demo.json"), summary)

  # The evaluation above printed each variant's table already; the ablation table is the only
  # one that adds something (all variants side by side).
  if ablations:
    print()
    print(_ablation_table(rows))
  print()
  _say(f"Everything is under {workdir}:")
  _say(f"  metrics      {paths['metrics']}")
  _say(f"  table        {paths['table']}")
  _say(f"  plots        {os.path.join(report_dir, 'success.png')}, precision.png, norm_precision.png")
  _say(f"  GIF          {gif}  ({gif_sequence.name}: \"{gif_sequence.sentence}\")")
  if ablations:
    _say(f"  ablations    {os.path.join(report_dir, 'ablations.md')}")
  _say(f"  checkpoints  {os.path.join(workdir, 'runs')}   raw results {os.path.join(workdir, 'results')}")
  _say("time: " + ", ".join(f"{k} {v / 60:.1f} min" for k, v in phases.items()))
  full = rows["full"]
  _say(f"done in {wall / 60:.1f} min: AUC {100 * full['auc']:.2f} (P {100 * full['precision']:.2f}, "
       f"NP {100 * full['norm_precision']:.2f}) on {full['num_sequences']} held-out videos, "
       f"{full['final_step']} training steps")
  return summary
