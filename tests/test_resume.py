"""A resume continues one run: it prints what changed in the config, refuses the changes that make
it another run (unless --allow-config-changes), states the schedule a new total_steps implies, and
names a mismatched parameter, not its optimizer moments (1 CPU device, stand-in model)."""
import os

import jax
import jax.numpy as jnp
import pytest

from satracker_jax import config_utils
from satracker_jax.train import checkpoint as ckpt_lib
from satracker_jax.train import loop
import train_helpers as th


def small_config(**train):
  config = config_utils.load_config("configs/tiny.py")
  config.model.template_size, config.model.search_size, config.model.max_text_len = 16, 32, 8
  config.optim.warmup_steps = 2
  config.train.update(batch_size=4, total_steps=4, checkpoint_every=2, log_every=1,
                      tensorboard=False, async_checkpointing=False)
  config.train.update(**train)
  return config


def train(config, workdir, **kwargs):
  return loop.train(config, str(workdir), model=th.standin_model(), loss_fn=th.standin_loss,
                    dataset_fn=th.standin_dataset(0), **kwargs)


def checkpoints(workdir):
  return sorted(int(n) for n in os.listdir(workdir / "checkpoints") if n.isdigit())


def test_resume_prints_changes_refuses_another_run_and_states_the_schedule(tmp_path, capsys):
  wd = tmp_path / "run"
  train(small_config(), wd)
  assert checkpoints(wd) == [2, 4]
  capsys.readouterr()

  # Another lr (or model, loss, data...): refused in one line naming the field and the option.
  with pytest.raises(config_utils.ConfigError) as refused:
    train(_with(small_config(), "optim.lr=1e-3"), wd)
  message = str(refused.value)
  assert "\n" not in message and "optim.lr 0.0004 -> 0.001" in message
  assert "--allow-config-changes" in message and f"{wd}/checkpoints/4" in message
  assert checkpoints(wd) == [2, 4]  # nothing trained

  # The batch: never, the option or not (the data position counts samples of that batch).
  with pytest.raises(config_utils.ConfigError, match=r"train\.batch_size 4 -> 8.*init_from="):
    train(small_config(batch_size=8), wd, allow_config_changes=True)

  # A larger total_steps: allowed, with the lr the new schedule gives at the resume step; a
  # logging change is printed and goes through.
  summary = train(small_config(total_steps=8, log_every=2), wd)
  out = capsys.readouterr().out
  assert summary["step"] == 8 and checkpoints(wd)[-1] == 8
  assert "config changed since" in out and "train.log_every 1 -> 2" in out
  schedule = [line for line in out.splitlines() if line.startswith("train.total_steps 4 -> 8")]
  assert len(schedule) == 1 and "lr at step 4: 0 under the saved schedule" in schedule[0], out
  assert "(the decay restarts from a higher lr)" in schedule[0]

  # With the option, another lr continues the run, and says so.
  summary = train(_with(small_config(total_steps=10, log_every=2), "optim.lr=1e-3"), wd,
                  allow_config_changes=True)
  out = capsys.readouterr().out
  assert summary["step"] == 10 and "optim.lr 0.0004 -> 0.001" in out
  assert "continuing with the changes to optim.lr (--allow-config-changes)" in out


def test_the_same_config_resumes_silently(tmp_path, capsys):
  wd = tmp_path / "run"
  train(small_config(total_steps=2), wd)
  capsys.readouterr()
  assert train(small_config(total_steps=2), wd)["step"] == 2
  assert "config changed" not in capsys.readouterr().out


def test_a_checkpoint_of_another_model_names_the_parameter_not_the_optimizer_key(tmp_path):
  ckpt = ckpt_lib.Checkpointer(str(tmp_path), small_config())
  zeros = lambda *shape: jnp.zeros(shape, jnp.float32)
  state = {"params": {"head": {"kernel": zeros(2, 3)}},
           "opt_state": [{"mu": {"head": {"kernel": zeros(2, 3)}}}]}
  ckpt.save(1, state, {"next_sample_index": 4}, 1.0, True)
  ckpt.wait()
  target = jax.tree.map(lambda a: jax.ShapeDtypeStruct((2, 5), a.dtype), state)
  with pytest.raises(ValueError, match=r"'params/head/kernel' has shape \(2, 3\) there but \(2, 5\)"):
    ckpt.restore(1, target)
  ckpt.close()


def _with(config, *overrides):
  config_utils.apply_overrides(config, overrides)
  return config


def test_change_kinds():
  from satracker_jax.train import resume
  saved = {"train": {"log_every": 1, "total_steps": 4, "batch_size": 4, "mesh": {"data": -1}},
           "model": {"remat": "none", "vit": {"dim": 64}}, "data": {"datasets": {"x": {"root": "a"}}}}
  kinds = {k: resume._kind(k, *v) for k, v in resume.changes(saved, {
      "train": {"log_every": 2, "total_steps": 8, "batch_size": 8, "mesh": {"data": 2}, "new": 1},
      "model": {"remat": "full", "vit": {"dim": 128}},
      "data": {"datasets": {"x": {"root": "b"}, "y": {"root": "c"}}}}).items()}
  assert kinds == {"train.log_every": "free", "train.total_steps": "schedule",
                   "train.batch_size": "never", "train.mesh.data": "free", "train.new": "free",
                   "model.remat": "free", "model.vit.dim": "meaning",
                   "data.datasets.x.root": "free", "data.datasets.y.root": "meaning"}


def test_the_first_rate_and_eta_do_not_count_the_compile(tmp_path, monkeypatch, capsys):
  # Issue 25: the first ETA was 20x off (the compile counted as a step). A 2 s "compile" here.
  import time
  from satracker_jax import compile_cache
  real_exit = compile_cache.CompileWatch.__exit__

  def slow_exit(self, *exc):
    time.sleep(2.0)
    return real_exit(self, *exc)

  monkeypatch.setattr(compile_cache.CompileWatch, "__exit__", slow_exit)
  train(small_config(total_steps=3, log_every=1, checkpoint_every=100), tmp_path / "run")
  logged = {m["step"]: m for m in th.metrics(tmp_path / "run")}
  assert logged[1]["steps_per_s"] != logged[1]["steps_per_s"]  # nan: the compiled step is not timed
  assert logged[2]["steps_per_s"] > 2.0 and logged[3]["steps_per_s"] > 2.0, logged
  assert "step 1/3" in capsys.readouterr().out


def test_a_finished_workdir_says_so_instead_of_loss_none(tmp_path, monkeypatch, capsys):
  from satracker_jax import cli
  monkeypatch.setattr(loop, "train", lambda config, workdir, **kw: {
      "step": 1000, "loss": None, "loss_ema": float("nan"), "stopped_by": "done",
      "nonfinite_total": 0, "replaced_total": 0, "state": None})
  assert cli.main(["train", "--config", "configs/tiny.py", "--workdir", str(tmp_path)]) == 0
  out = capsys.readouterr().out
  assert "loss None" not in out
  assert "finished: step 1000: the workdir already holds train.total_steps=1000" in out
