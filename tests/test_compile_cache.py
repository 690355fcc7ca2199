"""compile_cache.executable: a program built from a config alone is stored whole and a later
process (here: a later call) loads it without tracing; anything that changes the program changes
the key; a damaged file is removed and the program compiled again; a program with parts the key
cannot name is not stored."""
import os
import random

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from satracker_jax import compile_cache


TRACES = []
SALT = [0.0]


@pytest.fixture()
def cache(tmp_path, monkeypatch):
  """Our executables in `tmp_path`, and a program of this test's own: a constant drawn per test
  makes its HLO new, so JAX's persistent cache (the suite's, which the earlier tests of a worker
  may have filled) never holds it, and a program JAX loaded is never stored whole."""
  monkeypatch.setattr(compile_cache, "active_directory", lambda: str(tmp_path))
  SALT[0] = random.random()
  return tmp_path


def new_step():
  """A new function object each time, as each process has: JAX's in-memory trace cache (keyed on
  the function) cannot serve it, so a call that does not trace it loaded it."""
  salt = SALT[0]

  def step(state, x):
    TRACES.append(1)  # runs while tracing only
    new = {"w": state["w"] - 0.1 * jnp.tanh(x @ state["w"]).sum(0), "n": state["n"] + 1}
    return new, {"loss": jnp.sum(new["w"] ** 2) + 0.0 * (salt * jnp.sum(x))}
  return step


def fresh_args():
  return ({"w": jnp.arange(16.0).reshape(4, 4) / 16, "n": jnp.zeros((), jnp.int32)}, jnp.ones((3, 4)))


def stored(cache):
  folder = cache / "executables"
  return sorted(os.listdir(folder)) if folder.exists() else []


def test_a_stored_program_loads_without_tracing_and_computes_the_same(cache):
  TRACES.clear()
  args = fresh_args()  # (its small jnp programs are outside the watches)
  with compile_cache.CompileWatch("step") as first:
    compiled = compile_cache.executable("step", jax.jit(new_step(), donate_argnums=0), args, {"lr": 0.1})
  expected = compiled(*fresh_args())
  assert len(TRACES) == 1 and len(stored(cache)) == 1 and first.hits == 0
  args = fresh_args()
  with compile_cache.CompileWatch("step") as second:
    loaded = compile_cache.executable("step", jax.jit(new_step(), donate_argnums=0), args, {"lr": 0.1})
  got = loaded(*fresh_args())
  assert len(TRACES) == 1, "the stored program was traced again"
  assert second.hits == 1 and second.misses == 0 and second.cached
  for a, b in zip(jax.tree.leaves(expected), jax.tree.leaves(got)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


@pytest.mark.parametrize("change", ["key", "shape", "dtype", "source", "what", "host"])
def test_whatever_changes_the_program_changes_the_key(cache, monkeypatch, change):
  state, x = fresh_args()
  base = compile_cache.executable_key("step", {"lr": 0.1}, (state, x))
  what, key = "step", {"lr": 0.1}
  if change == "key":
    key = {"lr": 0.2}
  elif change == "shape":
    x = jnp.ones((5, 4))
  elif change == "dtype":
    state = {**state, "w": state["w"].astype(jnp.bfloat16)}
  elif change == "source":
    monkeypatch.setattr(compile_cache, "source_fingerprint", lambda: "edited")
  elif change == "host":
    monkeypatch.setattr(compile_cache, "host_cpu", lambda: "another cpu")
  else:
    what = "other"
  assert compile_cache.executable_key(what, key, (state, x)) != base
  assert compile_cache.executable_key("step", {"lr": 0.1}, fresh_args()) == base or change in ("source", "host")


def test_the_source_fingerprint_reads_the_package():
  fp = compile_cache.source_fingerprint()
  assert len(fp) == 64 and fp == compile_cache.source_fingerprint()


def test_a_damaged_file_is_removed_and_the_program_compiled_again(cache, capsys):
  compile_cache.executable("step", jax.jit(new_step()), fresh_args(), {"lr": 0.1})
  (name,) = stored(cache)
  (cache / "executables" / name).write_bytes(b"not a pickle")
  TRACES.clear()
  compiled = compile_cache.executable("step", jax.jit(new_step()), fresh_args(), {"lr": 0.1})
  assert len(TRACES) == 1 and "unreadable" in capsys.readouterr().err
  assert np.isfinite(float(compiled(*fresh_args())[1]["loss"]))
  # Stored again when this compile was XLA's own, left to JAX's cache when that served it.
  path = cache / "executables" / name
  assert not path.exists() or path.read_bytes() != b"not a pickle"


def test_no_key_no_local_folder_or_no_cache_stores_nothing(cache, monkeypatch):
  jitted = jax.jit(new_step())
  assert compile_cache.executable("step", jitted, fresh_args(), None) is jitted
  monkeypatch.setattr(compile_cache, "active_directory", lambda: "gs://bucket/cache")
  assert compile_cache.executable("step", jitted, fresh_args(), {"lr": 0.1}) is jitted
  monkeypatch.setattr(compile_cache, "active_directory", lambda: None)
  assert compile_cache.executable("step", jitted, fresh_args(), {"lr": 0.1}) is jitted
  assert stored(cache) == []


def test_the_train_step_key_ignores_logging_and_paths_but_not_the_model(tiny_config):
  import copy
  from satracker_jax.train import loop
  base = loop.step_program_key(tiny_config)
  same = copy.deepcopy(tiny_config)
  same.train.log_every, same.train.checkpoint_every = 7, 11
  assert loop.step_program_key(same) == base
  for field, value in (("train.batch_size", 64), ("optim.lr", 1.0), ("model.dtype", "bfloat16"),
                       ("train.total_steps", 12345)):
    other = copy.deepcopy(tiny_config)
    section, name = field.split(".")
    setattr(other[section], name, value)
    assert loop.step_program_key(other) != base, field


def test_a_cache_folder_that_cannot_be_written_costs_only_the_next_start(cache, capsys):
  (cache / "executables").write_text("a file where the folder should be")
  compiled = compile_cache.executable("step", jax.jit(new_step()), fresh_args(), {"lr": 0.1})
  assert np.isfinite(float(compiled(*fresh_args())[1]["loss"]))
  assert "could not store the step" in capsys.readouterr().err


class LoadedByJaxCache:
  """A jitted function whose compile JAX's persistent cache serves (the hit event it sends)."""

  def __init__(self, jitted):
    self.jitted = jitted

  def lower(self, *args):
    lowered = self.jitted.lower(*args)

    class Lowered:
      def compile(self):
        compiled = lowered.compile()
        compile_cache._on_event("/jax/compilation_cache/cache_hits")
        return compiled
    return Lowered()


def test_a_program_jax_loaded_from_its_cache_is_not_stored_again(cache):
  # XLA:CPU's serialisation of a deserialised executable drops kernels (the copy fails when it
  # runs: "Function wrapped_iota not found"); such a program stays in JAX's cache alone.
  compiled = compile_cache.executable("step", LoadedByJaxCache(jax.jit(new_step())), fresh_args(), {"lr": 0.1})
  assert np.isfinite(float(compiled(*fresh_args())[1]["loss"]))
  assert stored(cache) == []
