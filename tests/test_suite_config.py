"""The suite's own settings that protect every other test."""
import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_every_test_has_a_default_timeout(pytestconfig):
  # pytest-timeout reads this ini option; unset, a hung collective would block `make test` forever.
  assert pytestconfig.pluginmanager.hasplugin("timeout")
  assert float(pytestconfig.getini("timeout") or 0) == 900


def test_the_suite_compiles_at_llvm_level_0_unless_told_otherwise():
  # tests/conftest.py: ~40% less CPU per compile; the suite's time budget depends on it.
  assert "--xla_backend_optimization_level" in os.environ.get("XLA_FLAGS", "")
  # and with XLA:CPU's older emitters (another third off each compile at level 0)
  assert "--xla_cpu_use_fusion_emitters" in os.environ.get("XLA_FLAGS", "")


def test_ci_runs_with_satracker_ci_set():
  with open(os.path.join(REPO, ".ci", "run")) as f:
    assert "export SATRACKER_CI=1" in f.read()


@pytest.mark.parametrize("ci", [False, True], ids=["local", "ci"])
def test_a_test_missing_the_shared_data_says_so_locally_and_fails_in_ci(tmp_path, ci):
  env = {k: v for k, v in os.environ.items() if k != "SATRACKER_CI"}
  # Both archives absent: every test of the file stops at its archive's check, so the run only
  # reports (about 1 s, where the TNL2K analyses took 12 s) and both archives' messages are seen.
  env["SATRACKER_REAL_DATA"] = str(tmp_path / "absent" / "real.tar.xz")
  env["SATRACKER_TNL2K_TOOLKIT"] = str(tmp_path / "absent" / "tnl2k_toolkit.tar.xz")
  env["COLUMNS"] = "400"  # summary lines are cut at the terminal width
  if ci:
    env["SATRACKER_CI"] = "1"
  p = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                      "tests/test_real_data.py"], cwd=REPO, env=env, capture_output=True,
                     text=True, timeout=300)
  summary = p.stdout[p.stdout.find("short test summary"):]
  if ci:
    assert p.returncode == 1 and "ERROR tests/test_real_data.py" in summary, p.stdout[-3000:]
    assert "real.tar.xz not found" in summary and "CI (SATRACKER_CI set) needs it" in summary
    assert "tnl2k_toolkit.tar.xz not found" in summary
  else:
    assert p.returncode == 0 and "SKIPPED" in summary, p.stdout[-3000:]
    assert "real.tar.xz not found" in summary and "tnl2k_toolkit.tar.xz not found" in summary
