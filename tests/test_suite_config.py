"""The suite's own settings that protect every other test."""


def test_every_test_has_a_default_timeout(pytestconfig):
  # pytest-timeout reads this ini option; unset, a hung collective would block `make test` forever.
  assert pytestconfig.pluginmanager.hasplugin("timeout")
  assert float(pytestconfig.getini("timeout") or 0) == 900
