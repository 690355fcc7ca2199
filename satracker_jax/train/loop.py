"""`train(config, workdir)`: the whole training run, resumable from any checkpoint it wrote.

Determinism contract: sample k of the stream is a function of (seed, k) (the sampler's job), the
step's randomness is fold_in(key, step), and a checkpoint carries the next global sample index.
So a run killed at any point and restarted ends bitwise equal to an uninterrupted one (same
device count and platform). Measured on CPU (tests/test_train_runs.py). On GPU, XLA's default
kernels are not run-to-run deterministic (atomic scatter-adds and reductions in the backward pass,
autotuned convolution algorithms), so a resumed GPU run drifts from an uninterrupted one by float
rounding that grows with the steps; `XLA_FLAGS=--xla_gpu_deterministic_ops=true` asks XLA for
deterministic kernels at a cost we have not measured (no GPU was available; launch/README.md).
"""
from __future__ import annotations

import copy
import fnmatch
import hashlib
import os
import signal
import tempfile
import time
from typing import Callable, Iterator, Optional

import jax

from satracker_jax import compile_cache, config_utils, model_io, paths
from satracker_jax.train import checkpoint as ckpt_lib
from satracker_jax.train import metrics_writer as mw
from satracker_jax.train import optimizer as optim_lib
from satracker_jax.train import resume as resume_lib
from satracker_jax.train import sharding as sharding_lib
from satracker_jax.train import state as state_lib

LOSS_EMA_DECAY = 0.98


class TrainingStopped(RuntimeError):
  """Training cannot continue (diverged); the message says why and what was kept."""


class _Preemption:
  """SIGTERM -> finish the current step, save, exit 0 (single process).

  Multi-process runs rely on JAX's preemption sync manager instead (via Orbax's
  `reached_preemption`), so that every host agrees on the step at which to save.
  """

  def __init__(self):
    self.requested = False
    self._previous = None

  def install(self):
    if jax.process_count() == 1:
      self._previous = signal.signal(signal.SIGTERM, self._handle)
    return self

  def _handle(self, signum, frame):
    del signum, frame
    self.requested = True

  def uninstall(self):
    if self._previous is not None:
      signal.signal(signal.SIGTERM, self._previous)

  def reached(self, manager, step: int) -> bool:
    if jax.process_count() == 1:
      return self.requested
    return bool(manager.reached_preemption(step))


def prepare_config(config):
  config = copy.deepcopy(config)
  if config.train.bf16:
    # bf16 compute, f32 master weights: the model keeps param_dtype f32 and casts per op.
    config.model.dtype = "bfloat16"
  return config


# Config fields the compiled train step never reads (logging, checkpointing, where the data lives,
# how it is read, evaluation): runs that differ only in them share one stored executable
# (compile_cache.executable). Everything else of the config is part of the key.
NOT_IN_STEP = ("train.log_every", "train.checkpoint_every", "train.keep_checkpoints", "train.keep_best",
               "train.tensorboard", "train.async_checkpointing", "train.init_from", "train.debug_signal",
               "data.datasets.*.root", "data.cache_dir", "data.backend", "data.workers", "data.threads",
               "data.num_parallel_calls", "data.processes", "data.prefetch", "tracker.*", "eval.*")


def step_program_key(config) -> dict:
  """The config as the train step's compiled program depends on it (see NOT_IN_STEP)."""
  fields = resume_lib.flat(config_utils.config_to_json(config))
  return {k: v for k, v in fields.items() if not any(fnmatch.fnmatch(k, p) for p in NOT_IN_STEP)}


def default_model(config):
  from satracker_jax.models import build_model  # noqa: PLC0415
  return build_model(config.model)


def default_loss_fn(config) -> Callable:
  from satracker_jax.losses import compute_losses  # noqa: PLC0415
  return lambda out, batch: compute_losses(out, batch, config.loss, model_config=config.model)


def default_dataset_fn(config, workdir: str) -> Callable[..., Iterator[dict]]:
  # data.backend "tf" (tf.data) or "numpy" (no TensorFlow imported): data_pipelines/batches.py.
  from data_pipelines import batches, synthetic  # noqa: PLC0415
  from data_pipelines.readers import DatasetError  # noqa: PLC0415
  _maybe_generate_synthetic(config, workdir)
  check_data_roots(config)
  sampler = batches.backend_module(config)
  if "synthetic" in config.data.get("datasets", {}):
    synthetic.resolve_vocab_file(config)

  def dataset_fn(start_index, process_index, process_count, batch_size):
    try:
      return sampler.make_dataset(config, start_index=start_index, process_index=process_index,
                                  process_count=process_count, batch_size=batch_size)
    except (DatasetError, FileNotFoundError) as e:  # a wrong root, split or data set layout
      raise config_utils.ConfigError(str(e)) from None
  return dataset_fn


def check_data_roots(config) -> None:
  """`ConfigError` (one line) for data sets to train on whose root is empty or not a folder,
  before the model is built or the workdir written (a wrong split or layout: at the first batch)."""
  datasets = {name: spec for name, spec in config.data.get("datasets", {}).items()
              if float(spec.get("weight", 1.0)) > 0}
  empty = [name for name, spec in sorted(datasets.items()) if not spec.get("root", "")]
  if empty:
    fields = ", ".join(f"data.datasets.{name}.root" for name in empty)
    raise config_utils.ConfigError(
        f"{fields} {'is' if len(empty) == 1 else 'are'} empty: give each data set's folder "
        f"(--config.data.datasets.{empty[0]}.root=DIR) or leave it out "
        f"(--config.data.datasets.{empty[0]}.weight=0)")
  # A bucket root is read by the tf backend (data_pipelines/files.py); the numpy one cannot, which
  # is said before any bucket is asked anything.
  from data_pipelines import batches, files  # noqa: PLC0415
  problem = batches.bucket_root_problem(config, str(config.data.get("backend", "tf")))
  if problem:
    raise config_utils.ConfigError(problem)
  for name, spec in sorted(datasets.items()):
    root = str(spec.root)
    try:
      found = files.isdir(root)
    except OSError as e:  # a bucket that cannot be read (no credentials, no such bucket...)
      raise config_utils.ConfigError(f"data.datasets.{name}.root={root}: cannot read it "
                                     f"({paths.one_line(e)})") from None
    if not found:
      raise config_utils.ConfigError(f"data.datasets.{name}.root={root}: no such folder; give the "
                                     f"{name} data set's root (--config.data.datasets.{name}.root=DIR)")


def synthetic_root_for(workdir: str) -> str:
  """WORKDIR/synthetic; for a bucket workdir a local folder instead (the generator and the readers
  write and read plain files), one per workdir URL and process: the videos are a function of the
  config, so every host generates the same ones for itself."""
  if not paths.is_url(workdir):
    return paths.join(workdir, "synthetic")
  tag = hashlib.sha1(str(workdir).encode()).hexdigest()[:12]
  return os.path.join(tempfile.gettempdir(), "satracker-synthetic", tag, f"p{jax.process_index()}")


def _maybe_generate_synthetic(config, workdir: str) -> None:
  """A synthetic data set with an empty root is generated into `synthetic_root_for(workdir)`, once
  per generation fingerprint (`data_pipelines.synthetic_store`: another seed, count or size
  generates again instead of silently reusing the old videos)."""
  datasets = config.data.get("datasets", {})
  if "synthetic" not in datasets or datasets["synthetic"].get("root", ""):
    return
  root = synthetic_root_for(workdir)
  config.data.datasets.synthetic.root = root  # our private copy (prepare_config)
  if jax.process_index() == 0 or paths.is_url(workdir):
    from data_pipelines import synthetic_store  # noqa: PLC0415
    _, generated = synthetic_store.ensure_generated(config, root)
    if generated:
      mw.print_line(f"generated synthetic data into {root}")
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils  # noqa: PLC0415
    multihost_utils.sync_global_devices("synthetic data generated")


def check_tokenizer_fits_model(config) -> None:
  """Fails at start-up when the configured tokenizer can emit ids past `model.bert.vocab_size`
  (they would turn into NaN embeddings, and training would stop later blaming the lr).

  Skipped when the config names no vocabulary: then the data pipeline, not a tokenizer, makes the
  ids (stand-in data in tests) or fails itself asking for one.
  """
  from satracker_jax import tokenizer as tokenizer_lib  # noqa: PLC0415
  text = config.get("text")
  if text is None:
    return
  source = text.get("spm_model", "") if text.get("tokenizer") == "sentencepiece" else text.get("vocab_file", "")
  if not source or "{" in source:  # unset, or a placeholder no data set has resolved
    return
  try:
    tok = tokenizer_lib.build_tokenizer(text, max_len=config.model.max_text_len)
  except FileNotFoundError as e:
    field = "text.spm_model" if text.get("tokenizer") == "sentencepiece" else "text.vocab_file"
    raise config_utils.ConfigError(f"{field}={source}: {e}; give the tokenizer's file "
                                   f"(--config.{field}=PATH)") from None
  tokenizer_lib.check_fits_model(tok, config.model.bert.vocab_size)


def preemption_sync_active() -> bool:
  """Whether JAX's preemption sync manager runs (multi-process: all hosts agree on the step at
  which to save after a SIGTERM). It exists only after `jax.distributed.initialize()` with
  `jax_enable_preemption_service` on (the default); JAX has no public getter for it."""
  try:
    from jax._src import distributed  # noqa: PLC0415
    return distributed.global_state.preemption_sync_manager is not None
  except (ImportError, AttributeError):  # pragma: no cover - a JAX without this internal
    return jax.process_count() > 1 and bool(jax.config.jax_enable_preemption_service)


def _preemption_line() -> str:
  if jax.process_count() == 1:
    return "preemption: SIGTERM handler (single process: finish the step, save, exit 0)"
  if preemption_sync_active():
    return (f"preemption sync: active ({jax.process_count()} processes save at one agreed step "
            "after a SIGTERM)")
  return (f"preemption sync: INACTIVE ({jax.process_count()} processes, JAX's preemption service "
          "is off): a SIGTERM ends the run without a save; the last periodic checkpoint is kept")


def _init_from_pretrained(model, config) -> dict:
  """The variables `train.init_from` names. A model of ours (a training workdir, an Orbax
  checkpoints folder or a params .npz): all its weights, checked against this config's model — a
  warm start: optimizer, schedule and step start afresh, and the data stream at sample 0 (a new
  `seed` gives new samples). A
  `satracker convert` output: the pretrained ViT / BERT merged into a fresh initialisation."""
  source = config.train.init_from
  if model_io.describe_source(source) != "converted":
    _, variables = model_io.load_variables(source)
    model_io.check_variables(config, variables, f"train.init_from={source}")
    n = len(jax.tree.leaves(variables["params"]))
    mw.print_line(f"init_from {source}: all {n} parameter tensors of that model (a warm start: "
                  "optimizer, schedule and step start afresh)")
    return jax.device_get(variables)
  from satracker_jax.convert import load_pretrained  # noqa: PLC0415
  variables = model_io.host_variables(model, config.model, int(config.seed))
  params, report = load_pretrained(variables["params"], config.train.init_from)
  mw.print_line(f"init_from {config.train.init_from}:")
  for k, v in (report.items() if isinstance(report, dict) else [("report", report)]):
    if isinstance(v, (list, tuple)):
      # Top-level module counts keep the line short: "vit_block_0 x16, bert_layer_0 x16, ...".
      groups: dict[str, int] = {}
      for name in v:
        top = str(name).split("/")[0]
        groups[top] = groups.get(top, 0) + 1
      v = f"{len(v)} tensors" + (": " + ", ".join(f"{g} x{n}" for g, n in groups.items()) if groups else "")
    mw.print_line(f"  {k}: {v}")
  return {"params": params, "batch_stats": variables["batch_stats"]}


def check_resume(config, workdir: str, allow: bool) -> list[str]:
  """The lines to print about how `config` differs from the workdir's latest checkpoint's; raises
  `ConfigError` for a change that makes it another run (train/resume.py). [] for a fresh workdir."""
  saved = ckpt_lib.latest_saved_config(workdir)
  if saved is None:
    return []
  step, saved_config = saved
  if "synthetic" in config.data.get("datasets", {}):
    # As the checkpoint has them: the root an empty one generates into, the vocab file inside it.
    from data_pipelines import synthetic  # noqa: PLC0415
    config = copy.deepcopy(config)
    config.data.datasets.synthetic.root = (config.data.datasets.synthetic.get("root", "")
                                           or synthetic_root_for(workdir))
    synthetic.resolve_vocab_file(config)
  lr_at = lambda cfg, at: float(optim_lib.lr_schedule(
      config_utils.config_from_json(cfg).optim, int(cfg["train"]["total_steps"]))(at))
  return resume_lib.check(saved_config, config, f"{paths.join(workdir, 'checkpoints')}/{step}", step,
                          allow=allow, lr_at=lr_at)


def train(config, workdir: str, *, model=None, loss_fn: Optional[Callable] = None,
          dataset_fn: Optional[Callable] = None, allow_config_changes: bool = False) -> dict:
  """Trains until `config.train.total_steps`; returns a summary dict (final step, last loss...,
  and the final sharded `state`).

  `model` / `loss_fn(out, batch)` / `dataset_fn(start_index, process_index, process_count,
  batch_size)` default to the real SATracker, its losses and the sampler `data.backend` picks
  (tf.data or numpy, `default_dataset_fn`); tests and benchmarks swap them.
  A resume prints how `config` differs from the checkpoint's and refuses (`ConfigError`) a change
  that makes it another run unless `allow_config_changes` (train/resume.py).
  """
  config = prepare_config(config)
  # A resume under another config is refused before anything is generated, built or written.
  resume_lines = check_resume(config, workdir, allow_config_changes)
  # Then the data (a wrong root fails before anything is built), before the Checkpointer: a
  # generated synthetic root is then part of the saved config.
  dataset_fn = dataset_fn if dataset_fn is not None else default_dataset_fn(config, workdir)
  tc = config.train
  is_main = jax.process_index() == 0
  prefix = f"[p{jax.process_index()}] " if jax.process_count() > 1 else ""
  say = lambda s: mw.print_line(prefix + s)

  mesh = sharding_lib.make_mesh(tc.mesh)
  n_dev = mesh.devices.size
  global_bs = int(tc.batch_size)
  if global_bs % n_dev or global_bs % jax.process_count():
    raise ValueError(f"train.batch_size={global_bs} must divide by the {n_dev} devices of the mesh "
                     f"and the {jax.process_count()} processes")
  local_bs = global_bs // jax.process_count()
  total = int(tc.total_steps)

  # A step built from the config alone may be stored whole in the compilation cache (no tracing
  # in the next process); one with a model or loss passed in is compiled through JAX's cache only.
  program_key = step_program_key(config) if model is None and loss_fn is None else None
  model = model if model is not None else default_model(config)
  loss_fn = loss_fn if loss_fn is not None else default_loss_fn(config)
  abstract_vars = model_io.model_shapes(model, config.model)
  tx, schedule = optim_lib.build_optimizer(config, abstract_vars["params"], fsdp=mesh.shape["fsdp"])
  abstract = state_lib.abstract_state(model, config, tx)
  state_sh = sharding_lib.state_shardings(abstract, mesh)

  say(f"mesh {dict(mesh.shape)} over {n_dev} devices ({jax.devices()[0].platform}), "
      f"{jax.process_count()} process(es); global batch {global_bs}, local {local_bs}; "
      f"{state_lib.param_count(abstract['params']) / 1e6:.2f}M params")
  say(_preemption_line())
  for line in resume_lines:
    say(line)
  if is_main:
    say("lr multipliers:\n" + optim_lib.describe_multipliers(abstract_vars["params"], config.optim))

  check_tokenizer_fits_model(config)
  ckpt = ckpt_lib.Checkpointer(workdir, config)
  latest = ckpt.latest_step()
  loss_ema, replaced_total = float("nan"), 0
  if latest is not None:
    state, data_pos, _ = ckpt.restore(latest, state_lib.with_shardings(abstract, state_sh))
    start_index = int(data_pos["next_sample_index"])
    loss_ema = float(data_pos.get("loss_ema", float("nan")))
    replaced_total = int(data_pos.get("replaced_total", 0))
    say(f"resumed from {ckpt.directory}/{latest} (next sample {start_index})")
  else:
    variables = _init_from_pretrained(model, config) if tc.init_from else None
    state = state_lib.create_sharded_state(model, config, tx, state_sh, variables)
    start_index = 0
  step = int(jax.device_get(state["step"]))
  if start_index != step * global_bs:
    raise config_utils.ConfigError(
        f"checkpoint step {step} with next sample {start_index}: the global batch changed from "
        f"{start_index // max(step, 1)} to {global_bs}; keep train.batch_size fixed to resume")

  writer = mw.MetricsWriter(workdir, is_main=is_main, tensorboard=bool(tc.get("tensorboard", True)))
  step_fn = state_lib.make_train_step(model, tx, schedule, loss_fn, config)
  train_step = None
  watch = None  # the first step's compile
  max_bad = int(tc.max_consecutive_nonfinite)
  # Test hook ("KILL" | "TERM", step): signal ourselves right after that step (a hard crash, or
  # a preemption notice that must end in a clean save).
  signal_name, signal_at = tuple(tc.get("debug_signal", ()) or ("", 0))
  preempt = _Preemption().install()
  # Closed in `finally` (the input's worker processes ignore SIGTERM/SIGINT: the loop decides).
  batches = iter(dataset_fn(start_index, jax.process_index(), jax.process_count(), local_bs))

  # (step, device metrics) not fetched yet. Fetched in one transfer one step after each log step
  # (the host keeps dispatching meanwhile) and before each save; the non-finite stop is therefore
  # seen up to train.log_every steps late (those steps skip their updates anyway).
  pending = []
  window_t, window_step = time.time(), step
  last = {}
  stopped_by = "done"

  def absorb(keep_newest=False):
    """Fetches the pending steps' metrics (all, or all but the newest) in one transfer."""
    nonlocal pending
    n = len(pending) - int(keep_newest)
    window, pending = pending[:n], pending[n:]
    for (step_done, _), metrics in zip(window, jax.device_get([m for _, m in window])):
      absorb_one(step_done, metrics)

  def absorb_one(step_done, metrics):
    nonlocal loss_ema, replaced_total, window_t, window_step, last
    m = {k: float(v) for k, v in metrics.items()}
    if m["finite"]:
      loss_ema = m["loss"] if loss_ema != loss_ema else (
          LOSS_EMA_DECAY * loss_ema + (1 - LOSS_EMA_DECAY) * m["loss"])
    replaced_total += int(m.pop("replaced", 0))
    last = m
    if int(m["nonfinite_run"]) >= max_bad:
      raise TrainingStopped(
          f"step {step_done}: {int(m['nonfinite_run'])} consecutive non-finite losses/gradients "
          f"(train.max_consecutive_nonfinite={max_bad}); training stopped. The latest checkpoint "
          f"({ckpt.latest_step()}) holds the last finite state; lower the lr or check the data.")
    if step_done % int(tc.log_every) == 0 or step_done == total:
      now = time.time()
      # nan for the compiled step itself (no steady steps timed yet): the line shows eta "?".
      sps = (step_done - window_step) / max(now - window_t, 1e-9) if step_done > window_step else float("nan")
      window_t, window_step = now, step_done
      scalars = {**{k: v for k, v in m.items() if k not in ("finite", "nonfinite_run")},
                 "steps_per_s": sps, "samples_per_s": sps * global_bs,
                 "eta_s": (total - step_done) / sps if sps > 0 else float("nan"),
                 "replaced_total": replaced_total, "train_loss_ema": loss_ema}
      writer.write(step_done, scalars)
      say(mw.console_line(step_done, total, scalars))

  def save(step_done):
    finite = bool(jax.device_get(state_lib.all_finite(
        (state["params"], state["batch_stats"], state["opt_state"]))))
    ckpt.save(step_done, state, {"next_sample_index": step_done * global_bs, "step": step_done,
                                 "loss_ema": loss_ema, "replaced_total": replaced_total},
              loss_ema, finite)

  try:
    while step < total:
      local = next(batches)
      keys = [k for k in state_lib.BATCH_KEYS if k in local]
      if train_step is None:
        train_step = state_lib.jit_train_step(step_fn, state_sh, mesh, keys)
      batch = state_lib.device_batch(local, mesh)
      if watch is None:
        with compile_cache.CompileWatch("train step", say=say) as watch:
          train_step = compile_cache.executable("train step", train_step, (state, batch), program_key)
          state, metrics = train_step(state, batch)
        say(watch.line())
        # The rate (and ETA) counts from the first step's end: the compile is not a step.
        window_t, window_step = time.time(), step + 1
      else:
        state, metrics = train_step(state, batch)
      step += 1
      if signal_at and step == int(signal_at) and signal_name == "TERM":
        os.kill(os.getpid(), signal.SIGTERM)
      pending.append((step, metrics))
      if (step - 1) % int(tc.log_every) == 0 and len(pending) > 1:
        absorb(keep_newest=True)
      preempted = preempt.reached(ckpt.manager, step)
      if step % int(tc.checkpoint_every) == 0 or step == total or preempted:
        absorb()
        save(step)
      if signal_at and step == int(signal_at) and signal_name == "KILL":
        os.kill(os.getpid(), signal.SIGKILL)
      if preempted:
        stopped_by = "preempted"
        say(f"preemption signal: saved step {step}, exiting")
        break
    absorb()
  finally:
    close_input = getattr(batches, "close", None)
    if close_input is not None:
      close_input()
    preempt.uninstall()
    ckpt.wait()
    ckpt.close()
    writer.close()
  return {"step": step, "loss": last.get("loss"), "loss_ema": loss_ema, "stopped_by": stopped_by,
          "nonfinite_total": int(last.get("nonfinite_total", 0)), "replaced_total": replaced_total,
          "state": state}
