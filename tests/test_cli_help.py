"""`satracker <verb> --help`: every option described, with its default; one frame-size syntax."""
import argparse
import importlib

import pytest

from satracker_jax import cli


def _parsers(verb):
  """(name, parser) of the verb, and of each `bench` sub-verb, built as `cli.main` builds them."""
  module = importlib.import_module(f"satracker_jax.cli.{verb}")
  parser = argparse.ArgumentParser(prog=f"satracker {verb}", description=cli.VERBS[verb],
                                   formatter_class=cli.HelpFormatter)
  module.add_arguments(parser)
  found = [(verb, parser)]
  for action in parser._actions:
    if isinstance(action, argparse._SubParsersAction):
      found += [(f"{verb} {name}", sub) for name, sub in action.choices.items()]
  return found


def _flag(action):
  return isinstance(action, (argparse._StoreTrueAction, argparse._StoreFalseAction,
                             argparse._HelpAction, argparse._SubParsersAction))


@pytest.mark.parametrize("verb", list(cli.VERBS))
def test_every_option_is_described_with_its_default(verb):
  for name, parser in _parsers(verb):
    assert parser.description, f"satracker {name} has no description"
    formatter = cli.HelpFormatter(prog=name)
    problems = []
    one_required = {a for g in parser._mutually_exclusive_groups if g.required for a in g._group_actions}
    for action in parser._actions:
      text = formatter._get_help_string(action)
      if not action.help:
        problems.append(f"{action.option_strings}: no help")
      elif not (_flag(action) or action.required or action in one_required) and "default" not in text.lower():
        problems.append(f"{action.option_strings}: no default in {text!r}")
    assert not problems, f"satracker {name}: " + "; ".join(problems)


def test_train_help_mentions_overrides_and_resume(capsys):
  with pytest.raises(SystemExit):
    cli.main(["train", "--help"])
  text = " ".join(capsys.readouterr().out.split())
  assert "--config.train.total_steps=" in text and "resume" in text


@pytest.mark.parametrize("argv", [["bench", "track", "--frame-size", "480,640"],
                                  ["bench", "eval", "--frame-size", "1280,720"],
                                  ["synth", "--out", "unused", "--size", "160,120"]])
def test_one_frame_size_syntax_and_the_old_one_is_one_line(argv, capsys, tmp_path):
  rc = cli.main(argv)
  out, err = capsys.readouterr()
  assert rc == 2 and out == ""
  assert err.count("\n") == 1 and "expected WxH" in err, err
  w, h = argv[-1].split(",")
  assert f"{h}x{w}" in err or f"{w}x{h}" in err, err  # says the new form


def test_bench_track_takes_wxh(monkeypatch):
  from satracker_jax.cli import bench
  seen = {}
  monkeypatch.setattr(importlib.import_module("satracker_jax.bench.track"), "run",
                      lambda config, overrides, **options: seen.update(options) or {})
  assert cli.main(["bench", "track", "--frame-size", "640x480"]) == 0
  assert seen["frame_size"] == (640, 480)
  assert bench.BENCHES["track"][0]
