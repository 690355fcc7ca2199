"""`satracker <verb> ...`: one entry point for every workflow.

Every verb is a module of this package (`cli/<verb>.py`) exposing `add_arguments(parser)` and
`run(args, overrides) -> exit code`: argument parsing and printing only. The work behind each verb
is a plain library function (named in the verb module's docstring) that Python callers and tests
use without argparse. Verb modules are imported only when their verb runs, so `satracker --help`
is quick and nothing pulls in TensorFlow unless the verb needs the input pipeline. A config
mistake anywhere below (`config_utils.ConfigError`: an unknown `--config.` path, a value of the
wrong type, an invalid model, a data root that is not there, a resume under another config) ends as
one line on stderr and exit 2, like an argparse error; so does a verb's own refusal of a user's
mistake (`raise SystemExit("message")`: a missing file, a wrong --root or --split). A traceback
means a bug.
"""
from __future__ import annotations

import argparse
import importlib
import os
import sys

from satracker_jax import config_utils

# verb -> (module, one-line help)
VERBS = {
    "smoke": "jitted forward+backward of a config on random inputs",
    "synth": "write procedural VL tracking videos (TNL2K layout)",
    "train": "train a config (sharded, Orbax checkpoints, resumable)",
    "eval": "track a benchmark and write raw results + metrics",
    "analyze": "AUC / P / NP, plots and tables from raw result folders",
    "track": "track one video or frame folder and draw the boxes",
    "convert": "convert MAE/OSTrack ViT and BERT weights for init_from",
    "export": "serialise the tracker step with jax.export (StableHLO)",
    "bench": "benchmarks: data | train | track | eval | accel | scale (table + JSON)",
    "demo": "synthetic data -> train tiny -> evaluate -> report",
}


def build_parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(
      prog="satracker",
      description="SATracker in JAX/Flax. Config fields are overridden with --config.a.b=value.")
  sub = parser.add_subparsers(dest="verb", metavar="VERB")
  for verb, help_text in VERBS.items():
    sub.add_parser(verb, help=help_text, add_help=False)
  return parser


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
  """Every option's help ends with its default, unless the help already says it ("default: ...")
  or there is nothing to say (a flag, an empty or required value). Descriptions and epilogs keep
  their line breaks."""

  def _get_help_string(self, action):
    text = action.help or ""
    default = action.default
    if ("default" in text.lower() or default is None or default is False or default == ""
        or default == argparse.SUPPRESS or action.required or not action.option_strings):
      return text
    return f"{text} (default: {default})" if text else f"(default: {default})"


def add_compile_cache_options(parser: argparse.ArgumentParser, suppress: bool = False) -> None:
  """--compile-cache / --no-compile-cache (every verb; `suppress`: for sub-verbs, whose parser
  must not overwrite what the verb's own parser read)."""
  default = (lambda v: argparse.SUPPRESS) if suppress else (lambda v: v)
  group = parser.add_argument_group("compilation cache (every verb)")
  group.add_argument("--compile-cache", default=default(None), metavar="DIR",
                     help="persistent XLA compilation cache (default: $SATRACKER_COMPILE_CACHE or "
                          "~/.cache/satracker-jax/xla): a second run of the same config compiles nothing")
  group.add_argument("--no-compile-cache", action="store_true", default=default(False),
                     help="compile everything afresh")


def usage_line(verb: str, message: str) -> str:
  """`satracker VERB: message` on one line (a message that names the verb already keeps it)."""
  message = " ".join(str(message).split())
  named = message.startswith((f"satracker {verb}: ", f"satracker {verb} "))
  return message if named else f"satracker {verb}: {message}"


def main(argv=None) -> int:
  argv = list(sys.argv[1:] if argv is None else argv)
  parser = build_parser()
  if not argv or argv[0] in ("-h", "--help"):
    parser.print_help()
    return 0
  verb = argv[0]
  if verb not in VERBS:
    parser.error(f"unknown verb {verb!r}; choose from {', '.join(VERBS)}")
  help_text = VERBS[verb]
  # TensorFlow's C++ INFO and WARNING lines (start-up notices, tf.data's end-of-sequence notes, a
  # bucket's failed credential lookup before our own one-line error says why) tell a user nothing to
  # act on; its errors still show. Read once when TensorFlow loads, so set before any verb runs.
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
  # Its oneDNN notice ("oneDNN custom operations are on...", twice per process) prints whatever
  # that level says; only turning the custom ops off silences it, and the input pipeline does not
  # need them (decode, crop and resize: 1.9 ms CPU per sample without, 2.3 ms with, measured with
  # `satracker bench data` for the demo).
  os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
  module_name = f"{__name__}.{verb}"
  try:
    module = importlib.import_module(module_name)
  except ModuleNotFoundError as e:
    if e.name and module_name.startswith(e.name):
      print(f"satracker {verb}: not available in this build ({module_name} missing)", file=sys.stderr)
      return 2
    raise
  verb_parser = argparse.ArgumentParser(prog=f"satracker {verb}", description=help_text,
                                        epilog=getattr(module, "EPILOG", None),
                                        formatter_class=HelpFormatter)
  module.add_arguments(verb_parser)
  add_compile_cache_options(verb_parser)
  try:
    rest, overrides = config_utils.split_config_overrides(argv[1:])
    args = verb_parser.parse_args(rest)
    from satracker_jax import compile_cache  # noqa: PLC0415  (imports JAX: only once a verb runs)
    compile_cache.enable(args.compile_cache, disabled=args.no_compile_cache)
    result = module.run(args, overrides)
  except config_utils.ConfigError as e:
    # A usage error like argparse's own: one line, exit 2, no traceback.
    print(usage_line(verb, e), file=sys.stderr)
    return 2
  except SystemExit as e:
    if not isinstance(e.code, str):  # argparse's own exits (2 after its message, 0 for --help)
      raise
    print(usage_line(verb, e.code), file=sys.stderr)
    return 2
  return int(result or 0)


if __name__ == "__main__":
  sys.exit(main())
