"""Shared pytest fixtures: the tiny config and one tiny model initialised once per session."""
import atexit
import os
import shutil
import sys
import tempfile

import pytest

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Config files import `configs.base`; make that work under the bare `pytest` entry point too
# (`python -m pytest` already puts the working directory on sys.path).
if REPO_ROOT not in sys.path:
  sys.path.insert(0, REPO_ROOT)

# Compile time dominates this suite on a small CPU. LLVM's optimisation level changes how fast the
# compiled code runs, not what it computes (XLA:CPU does no fast-math reassociation at any level),
# and at 0 every compile costs about 40% less CPU. Set before JAX starts its backend; subprocesses
# inherit it through the environment. `XLA_FLAGS=--xla_backend_optimization_level=2 pytest` runs
# the suite as compiled for users.
if "--xla_backend_optimization_level" not in os.environ.get("XLA_FLAGS", ""):
  os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_backend_optimization_level=0").strip()
# Likewise XLA:CPU's older kernel emitters: at level 0 they compile the tiny train step in 11.3
# instead of 16.5 s (2026-12-07), and the whole suite took 6 min 16 s instead of 7 min 9 s on 2
# workers, every test passing either way. (At the users' level 2 they compile base's step slower,
# so nothing else sets this.) `XLA_FLAGS=--xla_cpu_use_fusion_emitters=true pytest` runs with the
# emitters users get.
if "--xla_cpu_use_fusion_emitters" not in os.environ.get("XLA_FLAGS", ""):
  os.environ["XLA_FLAGS"] = (os.environ["XLA_FLAGS"] + " --xla_cpu_use_fusion_emitters=false").strip()

# The same programs compile again and again through fresh `jax.jit` objects: every `loop.train`
# call, every subprocess (CLI, demo, multi-device workers). One persistent compilation cache per
# session turns a repeat into a load of the same executable (bitwise the same code). It starts empty,
# so the suite still compiles everything once, and is deleted at the end. A cache the caller set
# (JAX_COMPILATION_CACHE_DIR) is used as it is.
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
  _SESSION_JAX_CACHE = tempfile.mkdtemp(prefix="satracker-tests-jax-cache-")
  os.environ["JAX_COMPILATION_CACHE_DIR"] = _SESSION_JAX_CACHE
  atexit.register(shutil.rmtree, _SESSION_JAX_CACHE, ignore_errors=True)


@pytest.fixture(scope="session")
def tiny_config():
  from satracker_jax.config_utils import load_config
  return load_config(os.path.join(REPO_ROOT, "configs", "tiny.py"))


@pytest.fixture(scope="session")
def tiny_model(tiny_config):
  from satracker_jax.models import build_model
  return build_model(tiny_config.model)


@pytest.fixture(scope="session")
def tiny_batch(tiny_model):
  """Random batch of 8 (the tiny config's batch size) in the sampler's layout."""
  from satracker_jax.smoke import random_batch
  return random_batch(tiny_model.config, 8, seed=0)


@pytest.fixture(scope="session")
def tiny_variables(tiny_config):
  """The tiny model's initialisation as training makes it (drawn on the host); {"params", "batch_stats"}."""
  from satracker_jax import model_io
  return model_io.random_variables(tiny_config, seed=0)


@pytest.fixture(scope="session")
def tiny_apply(tiny_model):
  """The tiny model's jitted apply, shared so that each input shape / flag compiles once per session."""
  import jax
  return jax.jit(tiny_model.apply, static_argnames=("train", "dense_matching"))


# `make test` hands whole files to 2 pytest-xdist workers in collection order
# (`--dist loadfile --no-loadscope-reorder`; xdist's default order is by test count). A slow file
# that starts last keeps one worker busy while the other idles, so the slowest files (measured on
# the 2-core machine, docs/BENCHMARKS.md "Tests") are collected first, slowest first; the two
# train_runs files first of all, so that their reference runs start together on the two workers.
SLOW_FILES_FIRST = (
    "test_train_runs.py", "test_train_runs_one_device.py", "test_models.py", "test_demo.py",
    "test_train_step.py", "test_scale.py", "test_export.py", "test_input_workers.py",
    "test_train_unit.py", "test_bench_accel.py", "test_suite_config.py", "test_sampler.py",
    "test_numpy_sampler.py", "test_model_io.py", "test_grounding.py", "test_convert.py",
    "test_real_data.py", "test_runner.py")


def pytest_collection_modifyitems(items):
  rank = {name: i for i, name in enumerate(SLOW_FILES_FIRST)}
  # A stable sort: each file's tests keep their order, the files not listed theirs after the rest.
  items.sort(key=lambda item: rank.get(item.path.name, len(rank)))
