"""launch/: the SLURM script requeues itself at its time limit; launchers start JAX's own cluster
detection. SLURM and the cluster are stand-ins: `srun` / `scontrol` / `make` are small shell scripts
on PATH that log what they were asked to do. `DRY_RUN=1` makes every launcher print the commands it
would run; the tests read those commands as argument lists."""
import os
import shlex
import signal
import subprocess
import time

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SBATCH = os.path.join(REPO, "launch", "slurm_gpu.sbatch")

FAKE_SRUN = """#!/usr/bin/env bash
echo "srun SATRACKER_DISTRIBUTED=$SATRACKER_DISTRIBUTED $*" >> "$LAUNCH_LOG"
trap 'echo "srun got TERM: saved" >> "$LAUNCH_LOG"; exit 0' TERM
echo $$ > "$LAUNCH_LOG.srun_pid"
for _ in $(seq "$FAKE_SRUN_TICKS"); do sleep 0.05; done
echo "srun finished all steps" >> "$LAUNCH_LOG"
exit "$FAKE_SRUN_RC"
"""
FAKE_SCONTROL = """#!/usr/bin/env bash
echo "scontrol $*" >> "$LAUNCH_LOG"
"""
FAKE_MAKE = """#!/usr/bin/env bash
echo "make $*" >> "$LAUNCH_LOG"
"""


def _start_sbatch(tmp_path, ticks, rc=0):
  bin_dir = tmp_path / "bin"
  bin_dir.mkdir()
  for name, text in (("srun", FAKE_SRUN), ("scontrol", FAKE_SCONTROL), ("make", FAKE_MAKE)):
    (bin_dir / name).write_text(text)
    (bin_dir / name).chmod(0o755)
  log = tmp_path / "launch.log"
  env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "LAUNCH_LOG": str(log),
         "FAKE_SRUN_TICKS": str(ticks), "FAKE_SRUN_RC": str(rc), "SLURM_JOB_ID": "4242",
         "SLURM_SUBMIT_DIR": REPO}
  proc = subprocess.Popen(["bash", SBATCH, "configs/base.py", str(tmp_path / "run")], env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
  return proc, log


def _wait_for(path, timeout=30.0):
  deadline = time.time() + timeout
  while not os.path.exists(path):
    assert time.time() < deadline, f"{path} never appeared"
    time.sleep(0.05)


def test_sbatch_asks_for_a_signal_to_the_batch_shell_before_the_limit():
  with open(SBATCH) as f:
    directives = [line.split()[1] for line in f if line.startswith("#SBATCH")]
  assert any(d.startswith("--signal=B:USR1@") for d in directives), directives
  assert "--requeue" in directives


def test_time_limit_signal_saves_then_requeues_the_job(tmp_path):
  proc, log = _start_sbatch(tmp_path, ticks=600)  # a run that would outlive the test
  _wait_for(f"{log}.srun_pid")
  proc.send_signal(signal.SIGUSR1)  # what SLURM sends 5 minutes before the time limit
  out, _ = proc.communicate(timeout=30)
  assert proc.returncode == 0, out
  lines = log.read_text().splitlines()
  assert lines[0] == "make env ACCEL=cuda"  # the CUDA jaxlib before anything runs
  assert lines[1].startswith("srun SATRACKER_DISTRIBUTED=1 ")
  assert "train --config configs/base.py --workdir" in lines[1]
  # Training is asked to save first; the requeue comes only after it exited.
  assert lines[2:] == ["srun got TERM: saved", "scontrol requeue 4242"], lines


@pytest.mark.parametrize("rc", [0, 3])
def test_a_run_that_ends_by_itself_is_not_requeued(tmp_path, rc):
  proc, log = _start_sbatch(tmp_path, ticks=1, rc=rc)
  out, _ = proc.communicate(timeout=30)
  assert proc.returncode == rc, out
  lines = log.read_text().splitlines()
  assert lines[2:] == ["srun finished all steps"], lines


def test_launch_switch_hands_cluster_detection_to_jax(monkeypatch):
  import jax
  from satracker_jax.train import sharding
  calls = []
  monkeypatch.setattr(jax.distributed, "initialize", lambda **kw: calls.append(kw))
  for var in ("SATRACKER_DISTRIBUTED", "JAX_COORDINATOR_ADDRESS", "SLURM_NTASKS",
              "SLURM_STEP_NUM_TASKS", "TPU_WORKER_HOSTNAMES"):
    monkeypatch.delenv(var, raising=False)
  assert sharding.maybe_initialize_distributed() is False and calls == []
  monkeypatch.setenv("SATRACKER_DISTRIBUTED", "1")
  assert sharding.maybe_initialize_distributed() is True
  # No coordinator, count or id: JAX detects them (TPU metadata, SLURM, Open MPI, GKE).
  assert calls == [{"local_device_ids": None}]


def _dry_run(script, *args, **env):
  """The commands `script` would run, each as an argument list."""
  p = subprocess.run(["bash", os.path.join(REPO, "launch", script), *args], text=True,
                     env={**os.environ, "DRY_RUN": "1", **env}, stdout=subprocess.PIPE,
                     stderr=subprocess.PIPE, timeout=30)
  assert p.returncode == 0, p.stderr
  return [shlex.split(line) for line in p.stdout.splitlines() if not line.startswith("[slurm]")]


def test_tpu_script_installs_the_tpu_build_then_starts_every_worker_with_the_launch_switch():
  install, train = _dry_run("tpu_pod.sh", "my-tpu", "us-central2-b", "configs/base.py",
                            "gs://bucket/run 1", "--config.seed=3")
  ssh = ["gcloud", "compute", "tpus", "tpu-vm", "ssh", "my-tpu", "--zone", "us-central2-b",
         "--worker=all", "--command"]
  assert install[:-1] == ssh and shlex.split(install[-1]) == ["cd", "satracker-jax", "&&", "make",
                                                             "env", "ACCEL=tpu"]
  assert train[:-1] == ssh
  remote = shlex.split(train[-1])
  assert remote == ["cd", "satracker-jax", "&&", "SATRACKER_DISTRIBUTED=1", ".venv/bin/satracker",
                    "train", "--config", "configs/base.py", "--workdir", "gs://bucket/run 1",
                    "--config.train.platform=tpu", "--config.seed=3", "2>&1", "|", "tee", "-a",
                    "~/train.log"]


def test_slurm_script_installs_the_cuda_build_and_asks_for_gpus():
  make, srun = _dry_run("slurm_gpu.sbatch", "configs/base.py", "/shared/run", "--config.seed=3",
                        SLURM_JOB_ID="7", SLURM_SUBMIT_DIR=REPO)
  assert make == ["make", "env", "ACCEL=cuda"]
  assert srun == ["srun", "--kill-on-bad-exit=1", ".venv/bin/satracker", "train", "--config",
                  "configs/base.py", "--workdir", "/shared/run", "--config.train.platform=gpu",
                  "--config.seed=3"]
  make, _ = _dry_run("slurm_gpu.sbatch", "configs/base.py", "/shared/run", ACCEL="cuda13",
                     SLURM_JOB_ID="7", SLURM_SUBMIT_DIR=REPO)
  assert make == ["make", "env", "ACCEL=cuda13"]


def test_local_script_starts_two_cpu_processes_that_meet_at_one_coordinator():
  commands = _dry_run("local_two_process.sh", "/tmp/two", "--config.seed=3", PORT="23456")
  assert len(commands) == 2
  for i, argv in enumerate(commands):
    assert argv[:2] == ["JAX_PLATFORMS=cpu", "XLA_FLAGS=--xla_force_host_platform_device_count=1"]
    assert argv[2:] == [".venv/bin/satracker", "train", "--config", "configs/synthetic.py:runlocal",
                        "--workdir", "/tmp/two", "--coordinator", "127.0.0.1:23456",
                        "--num-processes", "2", "--process-id", str(i), "--cpu-collectives", "gloo",
                        "--config.train.mesh.data=-1", "--config.train.mesh.fsdp=2", "--config.seed=3"]
