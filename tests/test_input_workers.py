"""The numpy input's worker processes (`data.workers=processes`) belong to the trainer (issue 22).

SLURM, GCE preemption and Ctrl-C signal the whole process group. A SIGTERM to the group of a
`data.workers=processes:2` run must end like a preemption notice to the trainer alone: the step in
flight is saved, the run exits 0, a resume continues bitwise, and no worker process is left. A
trainer killed outright (SIGKILL) leaves no orphaned workers either. The stand-in model on the real input
pipeline (tests/train_worker.py `real_input`) keeps each run a few seconds.
"""
import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

import train_helpers as th

TOTAL = 40
OVERRIDES = ["data.backend=numpy", "data.workers=processes:2", "train.batch_size=4", "train.log_every=1",
             f"train.total_steps={TOTAL}", "train.checkpoint_every=1000", "train.keep_checkpoints=2",
             "model.search_size=32", "model.template_size=16", "model.max_text_len=16"]
EXTRA = {"mode": "real_input", "config": "configs/synthetic.py:runlocal",
         "train_fields": {"tensorboard": False}}


@pytest.fixture(scope="module")
def cache_env(tmp_path_factory):
  # The three training runs compile the same programs: the second and third load them.
  return {"JAX_COMPILATION_CACHE_DIR": str(tmp_path_factory.mktemp("jax_cache")),
          "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
          "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "0"}


@pytest.fixture(scope="module")
def overrides(tmp_path_factory):
  from data_pipelines import synthetic
  root = tmp_path_factory.mktemp("synthetic")
  synthetic.generate(str(root), 4, seed=0, frames=6, size=(96, 72), test_sequences=1, progress=False)
  return OVERRIDES + [f"data.datasets.synthetic.root={root}"]


def _live_processes_in_group(pgid: int) -> list[int]:
  """Processes (not zombies) whose process group is `pgid`, from /proc."""
  pids = []
  for entry in os.listdir("/proc"):
    if not entry.isdigit():
      continue
    try:
      with open(f"/proc/{entry}/stat") as f:
        state, _, pgrp = f.read().rsplit(")", 1)[1].split()[:3]
    except (OSError, ValueError):
      continue  # gone meanwhile
    if int(pgrp) == pgid and state != "Z":
      pids.append(int(entry))
  return pids


def _input_workers_of(pid: int) -> list[int]:
  """The spawned multiprocessing children of `pid` (its resource tracker aside)."""
  children = []
  for entry in os.listdir("/proc"):
    try:
      with open(f"/proc/{entry}/stat") as f:
        ppid = int(f.read().rsplit(")", 1)[1].split()[1])
      with open(f"/proc/{entry}/cmdline", "rb") as f:
        cmdline = f.read()
    except (OSError, ValueError, IndexError):
      continue
    if ppid == pid and b"spawn_main" in cmdline:
      children.append(int(entry))
  return children


def _signal_all(pids, sig) -> None:
  for pid in pids:
    try:
      os.kill(pid, sig)
    except ProcessLookupError:
      pass  # killed by the SIGTERM (what a worker must not be)


def _wait_until_group_is_gone(pgid: int, timeout: float = 10.0) -> list[int]:
  deadline = time.time() + timeout
  while (left := _live_processes_in_group(pgid)) and time.time() < deadline:
    time.sleep(0.1)
  return left


pytestmark = pytest.mark.skipif(not os.path.isdir("/proc"), reason="reads process groups from /proc")


def test_sigterm_to_the_process_group_saves_resumes_bitwise_and_leaves_no_worker(
    tmp_path, overrides, cache_env):
  reference = th.run_worker(tmp_path / "reference", overrides=overrides, extra=EXTRA, env=cache_env,
                            wait=False)
  run = th.run_worker(tmp_path / "run", overrides=overrides, extra=EXTRA, env=cache_env, wait=False,
                      new_session=True)
  try:
    lines, signalled = [], False
    for line in run.stdout:  # the trainer's console, read as it is written
      lines.append(line)
      if not signalled and line.startswith("step 3/"):
        # The input-bound case, made certain: the workers are paused, so the trainer soon waits for
        # its next batch (a worker that dies now breaks that wait).
        workers = _input_workers_of(run.pid)
        assert len(workers) == 2, workers
        _signal_all(workers, signal.SIGSTOP)
        time.sleep(1.0)
        os.killpg(run.pid, signal.SIGTERM)  # what SLURM / a GCE preemption sends: the whole group
        _signal_all(workers, signal.SIGCONT)
        signalled = True
    output = "".join(lines)
    assert run.wait(60) == 0, f"the trainer did not exit cleanly:\n{output[-6000:]}"
    assert signalled, output[-3000:]
    assert not _wait_until_group_is_gone(run.pid), "input worker processes outlived the trainer"
    result = th.result_of(output)
    saved = result["step"]
    assert result["stopped_by"] == "preempted" and 3 <= saved < TOTAL, output[-3000:]
    assert f"preemption signal: saved step {saved}, exiting" in output
    assert result["checkpoints"] == [saved]

    resumed = th.result_of(th.run_worker(tmp_path / "run", overrides=overrides, extra=EXTRA,
                                         env=cache_env).stdout)
    assert resumed["step"] == TOTAL and resumed["stopped_by"] == "done"
    out, _ = reference.communicate(timeout=300)
    assert reference.returncode == 0, out[-6000:]
    want, got = th.final_state(tmp_path / "reference"), th.final_state(tmp_path / "run")
    assert set(got) == set(want)
    for key in want:
      np.testing.assert_array_equal(got[key], want[key], err_msg=key)
  finally:
    for process in (reference, run):  # on a failure: nothing left running for the next tests
      if process.poll() is None:
        process.kill()
        process.wait()


def test_a_sigkilled_trainer_leaves_no_orphaned_workers(tmp_path, overrides):
  # The trainer's side of the input only (no JAX): take a batch, then die by SIGKILL while the
  # workers are busy making the next ones. Nothing runs in the dead process to stop them.
  code = textwrap.dedent("""
      import os, signal, sys
      sys.path.insert(0, "tests")
      from satracker_jax import config_utils
      from data_pipelines import numpy_sampler, synthetic
      config = config_utils.load_config("configs/synthetic.py:runlocal", sys.argv[1:])
      synthetic.resolve_vocab_file(config)
      it = numpy_sampler.make_dataset(config)
      next(it)
      print("workers", *it._on_close.__self__._pool._processes, flush=True)
      os.kill(os.getpid(), signal.SIGKILL)
  """)
  log = tmp_path / "console.txt"  # a file, not a pipe: orphans would hold a pipe open
  with open(log, "w") as console:
    run = subprocess.Popen([sys.executable, "-c", code, *overrides], cwd=th.REPO,
                           env={**os.environ, "PYTHONPATH": th.REPO}, stdout=console,
                           stderr=subprocess.STDOUT, start_new_session=True)
    run.wait(timeout=120)
  output = log.read_text()
  assert run.returncode == -signal.SIGKILL, output[-3000:]
  (line,) = [line for line in output.splitlines() if line.startswith("workers ")]
  workers = [int(pid) for pid in line.split()[1:]]
  assert len(workers) == 2
  left = _wait_until_group_is_gone(run.pid)
  for pid in left:  # don't leave them to the rest of the suite
    os.kill(pid, signal.SIGKILL)
  assert not left, f"{len(left)} input worker process(es) orphaned by a SIGKILLed trainer"
