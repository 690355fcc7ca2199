"""The suite's own settings that protect every other test."""
import os


def test_every_test_has_a_default_timeout(pytestconfig):
  # pytest-timeout reads this ini option; unset, a hung collective would block `make test` forever.
  assert pytestconfig.pluginmanager.hasplugin("timeout")
  assert float(pytestconfig.getini("timeout") or 0) == 900


def test_the_suite_compiles_at_llvm_level_0_unless_told_otherwise():
  # tests/conftest.py: ~40% less CPU per compile; the suite's time budget depends on it.
  assert "--xla_backend_optimization_level" in os.environ.get("XLA_FLAGS", "")
