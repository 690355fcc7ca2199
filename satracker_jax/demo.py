"""The main job on embedded data, start to finish on a CPU (`satracker demo`, `run_demo`).

1. generate the synthetic VL tracking data set (train + held-out test split) into WORKDIR/synthetic;
2. train the tiny SATracker on the train split (WORKDIR/runs/<variant>, resumable);
3. track every held-out test sequence (WORKDIR/results/<variant>, pytracking raw layout);
4. write WORKDIR/report: metrics.json (the `analyze` schema), success / precision plots,
   per-sequence CSV, results.md and a GIF of one tracked test sequence with its sentence.

`--ablations` trains and evaluates the paper's ablations as well (no TEM, no SAM, no DM loss, no
text); `--seeds N` trains every variant with N training seeds on the same data (runs/<variant>,
runs/<variant>_seed<k>); every model is evaluated under each protocol of `--protocols` (default
nl_bb, plus nl when the config trains grounding) into results/<run>/<protocol>. With either,
WORKDIR/report/ablations.{md,json,png} give mean ± std over the seeds that finished so far.
Runs go seed by seed (every variant of seed 0 first), and a finished run is never redone, so a
long `--ablations --seeds 3` can be stopped (SIGTERM saves the step in flight; Ctrl-C or a kill
keeps the last periodic checkpoint) and continued by the same command, across sessions.

Re-running picks up where an interrupted demo stopped, and reuses nothing that another request
produced. Every output records what produced it and is reused only when that is identical:
- WORKDIR/synthetic/.complete: the generation fingerprint (generator version, seed, count, size...;
  `data_pipelines.synthetic_store`); another one re-generates.
- WORKDIR/runs/<run>/demo_run.json: the run identity (SHA-256 of the variant's whole config,
  steps and seed included, the data fingerprint, and the training code's version: a hash of the
  model, loss, train-loop and input-pipeline sources, so an update trains again); another one
  trains from scratch. Why not resume: the schedule depends on total_steps, so a 4-step run
  continued to 2,500 steps is not the 2,500-step model. A folder there that the demo did not stamp
  (no demo_run.json) is not deleted: the demo stops and names it.
- WORKDIR/runs/<run>/demo_done.json: the run identity once training reached its last step
  (training is then skipped).
- WORKDIR/results/<run>/<protocol>/demo_model.json: the run identity plus the checkpoint step that
  was tracked; another one tracks every test video again.
WORKDIR/report/ is rewritten as a whole on every run.
"""
from __future__ import annotations

import copy
import hashlib
import importlib.util
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


class Interrupted(Exception):
  """The demo stopped before its report (a preemption signal during training); rerun to go on."""


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


# The sources a trained model is a function of besides its config and data: (package, path in it).
TRAINING_CODE = (("satracker_jax", "models"), ("satracker_jax", "train"),
                 ("satracker_jax", "losses.py"), ("satracker_jax", "boxes.py"),
                 ("satracker_jax", "grounding.py"), ("satracker_jax", "tokenizer.py"),
                 ("satracker_jax", "model_io.py"), ("satracker_jax", "config_utils.py"),
                 ("data_pipelines", ""))


def _training_code_files() -> list[tuple[str, str]]:
  """[(name, absolute path)] of every .py file of TRAINING_CODE, sorted by name."""
  files = []
  for package, sub in TRAINING_CODE:
    base = importlib.util.find_spec(package).submodule_search_locations[0]
    path = os.path.join(base, sub)
    found = [path] if os.path.isfile(path) else [
        os.path.join(d, f) for d, _, fs in os.walk(path) for f in fs if f.endswith(".py")]
    files += [(os.path.join(package, os.path.relpath(f, base)), f) for f in found]
  return sorted(files)


def training_code_version() -> str:
  """SHA-256 (16 hex digits) of the training code's sources, names included: an update of the
  model, the losses, the train loop or the input pipeline gives another run identity."""
  h = hashlib.sha256()
  for name, path in _training_code_files():
    with open(path, "rb") as f:
      h.update(name.encode() + b"\0" + f.read() + b"\0")
  return h.hexdigest()[:16]


def run_identity(config, data_fingerprint: dict) -> dict:
  """What a trained model is a function of: the whole config (before the data root is filled in,
  so a moved workdir is still the same run), the data it was trained on and the training code."""
  config_json = json.dumps(config_utils.config_to_json(config), sort_keys=True)
  return {"config_sha256": hashlib.sha256(config_json.encode()).hexdigest(),
          "data": data_fingerprint, "code": training_code_version()}


def _read_json(path: str):
  try:
    with open(path) as f:
      return json.load(f)
  except (OSError, ValueError):
    return None


def _keep_only_if(directory: str, stamp: str, identity: dict, what: str, name: str) -> None:
  """Deletes `directory` unless its `stamp` file records `identity`; then records it. A non-empty
  folder without the stamp was not made by the demo: ConfigError naming it, nothing deleted."""
  path = os.path.join(directory, stamp)
  if os.path.isdir(directory) and _read_json(path) != identity:
    if not os.path.exists(path):
      if os.listdir(directory):
        raise config_utils.ConfigError(
            f"{directory}: not made by the demo (no {stamp}); refusing to delete it: move it "
            "away or choose another --workdir")
    else:
      _say(f"[{name}] {directory} holds {what} of another request; deleting it")
      shutil.rmtree(directory)
  os.makedirs(directory, exist_ok=True)
  if not os.path.exists(path):
    utils.write_json(path, identity)


def _train(name: str, config, workdir: str, identity: dict) -> tuple[str, int, float]:
  """Trains runs/<name> to config.train.total_steps (resuming; skipped when already there).
  -> (run_dir, final step, seconds spent training in this call)."""
  from satracker_jax.train import loop  # noqa: PLC0415
  run_dir = os.path.join(workdir, "runs", name)
  _keep_only_if(run_dir, "demo_run.json", identity, "a training run", name)
  total = int(config.train.total_steps)
  done = _read_json(os.path.join(run_dir, "demo_done.json"))
  if done == {**identity, "step": total}:
    _say(f"[{name}] already trained ({total} steps) in {run_dir}")
    return run_dir, total, 0.0
  t0 = time.time()
  _say(f"[{name}] training {total} steps -> {run_dir}")
  summary = loop.train(config, run_dir)
  step = int(summary.get("step", 0))
  if summary.get("stopped_by") == "preempted" or step < total:
    # A partly trained model is not the demo's model: evaluating it would report a number that
    # means nothing. The checkpoint is saved; the same command continues from it.
    raise Interrupted(f"[{name}] training stopped at step {step} of {total} "
                      f"({summary.get('stopped_by')}); the checkpoint is saved in {run_dir}: run "
                      "the same command again to continue")
  utils.write_json(os.path.join(run_dir, "demo_done.json"), {**identity, "step": total})
  return run_dir, step, time.time() - t0


def _evaluate(name: str, protocol: str, config, variables, identity: dict, step: int, workdir: str,
              test_sequences, parallel: int, progress: bool) -> dict:
  """Tracks the test split under `protocol` into results/<name>/<protocol> (kept when it holds
  this model's results) and scores it. Under `nl` also `grounding_single_frame`: frame-0
  grounding accuracy over the sequences a single frame can resolve (`Sequence.single_frame`)."""
  from satracker_jax.evaluation import runner  # noqa: PLC0415
  out_dir = os.path.join(workdir, "results", name, protocol)
  _keep_only_if(out_dir, "demo_model.json", {**identity, "step": step},
                "results of another model", name)
  t0 = time.time()
  metrics = runner.evaluate(config, variables, test_sequences, out_dir, parallel=parallel,
                            progress=progress, dataset=DATASET, name=name, protocol=protocol,
                            write_report=False)[name]
  metrics = {**metrics, "eval_seconds": time.time() - t0, "results_dir": out_dir}
  if protocol == "nl":  # scored by runner.evaluate (grounding_scores), named for the tables here
    metrics["grounding_single_frame"] = metrics.pop("grounding_accuracy_single_frame")
  return metrics


def _train_and_eval(name: str, config, workdir: str, identity: dict, test_sequences, protocols,
                    parallel: int, progress: bool) -> dict:
  """-> {"train_seconds", "final_step", "run_dir", protocol: metrics for each protocol}."""
  from satracker_jax import model_io  # noqa: PLC0415
  run_dir, step, train_s = _train(name, config, workdir, identity)
  trained_config, variables = model_io.load_variables(run_dir)
  row = {"train_seconds": train_s, "final_step": step, "run_dir": run_dir}
  for protocol in protocols:
    row[protocol] = _evaluate(name, protocol, trained_config, variables, identity, step, workdir,
                              test_sequences, parallel, progress)
  row["eval_seconds"] = sum(row[p]["eval_seconds"] for p in protocols)
  return row


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
  # One legend for every frame (also those whose target is absent): the GIF's frames keep one size.
  legend = [("tracker", visualize.PRED_COLOR), ("ground truth", visualize.GT_COLOR)]
  frames = []
  for i, frame_path in enumerate(sequence.frames):
    frame = visualize.load_frame(frame_path)
    gt = sequence.boxes[i] if np.all(np.isfinite(sequence.boxes[i])) else None
    frames.append(visualize.draw_tracking(frame, box=boxes[i], sentence=sequence.sentence,
                                          gt_box=gt, frame_index=i, legend=legend))
  return visualize.write_gif(frames, path, fps=10.0)


def _mean_std(values) -> str:
  values = [v for v in values if v == v]
  if not values:
    return "–"
  if len(values) == 1:
    return f"{values[0]:.2f}"
  return f"{np.mean(values):.2f} ± {np.std(values, ddof=1):.2f}"


def ablation_summary(rows: dict, variants, protocols) -> dict:
  """{variant: {"runs": [names], protocol: {metric: [values per seed]}}} in %, over the runs
  that finished (`rows`: run name -> _train_and_eval row, `variants`: run name -> variant)."""
  out = {}
  for name, row in rows.items():
    entry = out.setdefault(variants[name], {"runs": []})
    entry["runs"].append(name)
    for protocol in protocols:
      metrics = row.get(protocol) or {}
      per = entry.setdefault(protocol, {})
      for key in ("auc", "precision", "norm_precision", "grounding_single_frame"):
        if key in metrics:
          per.setdefault(key, []).append(100 * float(metrics[key]))
  return out


def _ablation_table(summary: dict, protocols, seeds: int) -> str:
  headers = ["variant", "seeds"]
  for protocol in protocols:
    headers += [f"{protocol} AUC", f"{protocol} P"]
    if protocol == "nl":
      headers.append("nl grounding")
  table = []
  for variant, entry in summary.items():
    line = [variant, f"{len(entry['runs'])}/{seeds}"]
    for protocol in protocols:
      per = entry.get(protocol, {})
      line += [_mean_std(per.get("auc", [])), _mean_std(per.get("precision", []))]
      if protocol == "nl":
        line.append(_mean_std(per.get("grounding_single_frame", [])))
    table.append(line)
  return utils.format_table(headers, table)


def _ablation_runs_table(rows: dict, protocols) -> str:
  headers = ["run", "steps", "train s"] + [f"{p} AUC" for p in protocols]
  if "nl" in protocols:
    headers.append("nl grounding")
  table = []
  for name, r in rows.items():
    line = [name, r["final_step"], f"{r['train_seconds']:.0f}"]
    line += [f"{100 * r[p]['auc']:.2f}" for p in protocols]
    if "nl" in protocols:
      line.append(f"{100 * r['nl']['grounding_single_frame']:.1f}")
    table.append(line)
  return utils.format_table(headers, table)


def _ablation_plot(summary: dict, protocols, path: str) -> str:
  """Bars: mean AUC per variant and protocol, error bars = std over seeds, dots = each seed."""
  import matplotlib  # noqa: PLC0415
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # noqa: PLC0415
  variants = list(summary)
  width = 0.8 / len(protocols)
  fig, ax = plt.subplots(figsize=(1.4 * len(variants) + 2, 3.6))
  for k, protocol in enumerate(protocols):
    xs = np.arange(len(variants)) + (k - (len(protocols) - 1) / 2) * width
    values = [summary[v].get(protocol, {}).get("auc", []) for v in variants]
    means = [np.mean(v) if v else np.nan for v in values]
    stds = [np.std(v, ddof=1) if len(v) > 1 else 0.0 for v in values]
    ax.bar(xs, means, width * 0.9, yerr=stds, capsize=3, label=protocol, alpha=0.8)
    for x, v in zip(xs, values):
      ax.plot([x] * len(v), v, "k.", markersize=4)
  ax.set_xticks(np.arange(len(variants)), variants)
  ax.set_ylabel("AUC (%)")
  ax.set_title("ablations on the synthetic test split (mean ± std over seeds; dots: seeds)")
  ax.legend()
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)
  return path


def _default_protocols(config) -> tuple:
  """nl_bb, plus nl when the config trains grounding (data.protocols.nl > 0)."""
  from data_pipelines import processing  # noqa: PLC0415
  probabilities = processing.protocol_probabilities(config.data.get("protocols", None))
  return ("nl_bb", "nl") if probabilities[processing.PROTOCOLS.index("nl")] > 0 else ("nl_bb",)


def run_demo(workdir: str = "demo_workdir", config_spec: str = "configs/synthetic.py",
             overrides=(), ablations: bool = False, steps: int = 0, seed: int = -1,
             seeds: int = 1, protocols=None, parallel: int = 1, progress: bool = True) -> dict:
  """Runs the demo (see the module docstring); returns what it wrote to report/demo.json.

  `steps` > 0 and `seed` >= 0 replace the config's total_steps and seeds (training and data).
  `seeds` > 1 trains each variant that many times, with training seeds seed, seed+1, ... on the
  same data (runs/<variant>, runs/<variant>_seed<k>). `protocols`: those each model is evaluated
  under (default nl_bb, plus nl when the config trains grounding).
  """
  from data_pipelines import readers  # noqa: PLC0415
  from satracker_jax.evaluation import analyze, runner  # noqa: PLC0415

  started = time.time()
  workdir = os.path.abspath(workdir)
  config = config_utils.load_config(config_spec, overrides)
  if steps > 0:
    config.train.total_steps = steps
  if seed >= 0:
    config.seed = seed
    config.data.synthetic.seed = seed
  if seeds < 1:
    raise config_utils.ConfigError(f"--seeds {seeds}: need at least 1")
  protocols = tuple(protocols) if protocols else _default_protocols(config)
  unknown = [p for p in protocols if p not in runner.PROTOCOLS]
  if unknown or "nl_bb" not in protocols:
    raise config_utils.ConfigError(f"--protocols {','.join(protocols)}: need nl_bb, and only "
                                   f"{', '.join(runner.PROTOCOLS)}")
  os.makedirs(workdir, exist_ok=True)  # only once the arguments hold: a refused demo leaves nothing

  phases = {}
  t0 = time.time()
  root, data_fingerprint = _prepare_data(config, workdir, progress)
  test_sequences = readers.load_dataset(DATASET, root, "test")
  phases["data"] = time.time() - t0
  _say(f"{len(test_sequences)} held-out test sequences")

  variant_overrides = ABLATIONS if ablations else {"full": ABLATIONS["full"]}
  rows, variant_of = {}, {}
  # Seed-major: after an interruption the finished runs cover every variant evenly.
  for k in range(seeds):
    for variant, extra in variant_overrides.items():
      name = variant if k == 0 else f"{variant}_seed{int(config.seed) + k}"
      run_config = copy.deepcopy(config)
      config_utils.apply_overrides(run_config, extra)
      run_config.seed = int(config.seed) + k  # the data (data.synthetic.seed) stays the same
      identity = run_identity(run_config, data_fingerprint)
      _use_data(run_config, root)
      rows[name] = _train_and_eval(name, run_config, workdir, identity, test_sequences, protocols,
                                   parallel, progress)
      variant_of[name] = variant
  phases["train"] = sum(r["train_seconds"] for r in rows.values())
  phases["evaluate"] = sum(r["eval_seconds"] for r in rows.values())

  t0 = time.time()
  report_dir = os.path.join(workdir, "report")
  shutil.rmtree(report_dir, ignore_errors=True)  # nothing in it may outlive the run that wrote it
  first_seed = list(variant_overrides)
  report = analyze.evaluate(test_sequences, {n: rows[n]["nl_bb"]["results_dir"] for n in first_seed},
                            DATASET)
  paths = analyze.write_report(report, report_dir,
                               title=analyze.report_title(DATASET, "test", "nl_bb"))
  gif_sequence = _pick_gif_sequence(test_sequences)
  gif = _write_gif(gif_sequence, rows["full"]["nl_bb"]["results_dir"],
                   os.path.join(report_dir, "tracked.gif"))
  summary_table = None
  if ablations or seeds > 1:
    ablation = ablation_summary(rows, variant_of, protocols)
    summary_table = _ablation_table(ablation, protocols, seeds)
    with open(os.path.join(report_dir, "ablations.md"), "w") as f:
      f.write("# Ablations on the synthetic test split\n\n"
              f"{len(test_sequences)} held-out videos; mean ± std over training seeds (same data); "
              "AUC and P in %; nl grounding = frame-0 IoU > 0.5 over the videos a single frame "
              "resolves.\n\n" + summary_table + "\n\n## Every run\n\n"
              + _ablation_runs_table(rows, protocols) + "\n")
    utils.write_json(os.path.join(report_dir, "ablations.json"),
                     {"protocols": list(protocols), "seeds": seeds, "variants": ablation})
    _ablation_plot(ablation, protocols, os.path.join(report_dir, "ablations.png"))
  phases["report"] = time.time() - t0
  wall = time.time() - started
  summary = {
      "config": config_spec, "overrides": list(overrides), "seed": int(config.seed),
      "seeds": seeds, "protocols": list(protocols), "total_steps": int(config.train.total_steps),
      "variants": rows, "phase_seconds": phases, "machine": utils.machine_info(),
      "wall_seconds": wall}
  utils.write_json(os.path.join(report_dir, "demo.json"), summary)

  # The evaluation above printed each run's table already; the ablation table is the only one
  # that adds something (all variants side by side).
  if summary_table:
    print()
    print(summary_table)
  print()
  _say(f"Everything is under {workdir}:")
  _say(f"  metrics      {paths['metrics']}")
  _say(f"  table        {paths['table']}")
  _say(f"  plots        {os.path.join(report_dir, 'success.png')}, precision.png, norm_precision.png")
  _say(f"  GIF          {gif}  ({gif_sequence.name}: \"{gif_sequence.sentence}\")")
  if summary_table:
    _say(f"  ablations    {os.path.join(report_dir, 'ablations.md')}, ablations.png")
  _say(f"  checkpoints  {os.path.join(workdir, 'runs')}   raw results {os.path.join(workdir, 'results')}")
  _say("time: " + ", ".join(f"{k} {v / 60:.1f} min" for k, v in phases.items()))
  full = rows["full"]["nl_bb"]
  line = (f"done in {wall / 60:.1f} min: AUC {100 * full['auc']:.2f} (P {100 * full['precision']:.2f}, "
          f"NP {100 * full['norm_precision']:.2f}) on {full['num_sequences']} held-out videos")
  if "nl" in protocols:
    nl = rows["full"]["nl"]
    line += (f"; sentence only (nl): AUC {100 * nl['auc']:.2f}, frame-0 grounding "
             f"{100 * nl['grounding_single_frame']:.0f}% of {nl['num_single_frame']}")
  _say(f"{line}, {rows['full']['final_step']} training steps")
  return summary
