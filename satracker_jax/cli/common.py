"""What several verbs share: the model arguments (--checkpoint / --config) and loading them."""
from __future__ import annotations

import argparse
import sys


def add_model_arguments(parser: argparse.ArgumentParser, config_help: str = "") -> None:
  parser.add_argument("--checkpoint", default="",
                      help="training workdir, its checkpoints/ folder, a params .npz, or a "
                           "`satracker convert` output (with --config) (default: none: "
                           "random weights for --config, to check a pipeline)")
  parser.add_argument("--config", default="",
                      help=(config_help or "config file[:arg]; checked against the checkpoint") +
                           " (default: the checkpoint's own config)")


def count_arg(option: str, minimum: int = 1):
  """An argparse `type` for a whole number >= `minimum` (a batch, a number of frames or steps); a
  mistake ends as one line and exit 2 (`cli.main`), not a traceback from deep inside JAX."""
  def parse(text: str) -> int:
    from satracker_jax.config_utils import ConfigError  # noqa: PLC0415
    try:
      value = int(text)
    except ValueError:
      value = None
    if value is None or value < minimum:
      raise ConfigError(f"{option} {text!r}: expected a whole number >= {minimum}")
    return value
  return parse


def frame_size_arg(option: str):
  """An argparse `type` for a frame size WxH (every verb's one syntax) -> (width, height). A
  mistake, the old H,W of `bench track` included, ends as one line and exit 2 (`cli.main`)."""
  def parse(text: str) -> tuple[int, int]:
    from data_pipelines.synthetic import parse_size  # noqa: PLC0415  (numpy + Pillow only)
    from satracker_jax.config_utils import ConfigError  # noqa: PLC0415
    try:
      return parse_size(text)
    except ValueError as e:
      # Not a ValueError: argparse would swallow the message and say "invalid parse value".
      raise ConfigError(f"{option} {e}") from None
  return parse


def load_model(args, overrides, needs_vocab: bool = False, synthetic_root: str = ""):
  """(config, variables) from --checkpoint / --config; a clear one-line exit on any mismatch.

  `needs_vocab` (verbs that tokenize): a vocabulary the config cannot name is a one-line error.
  `synthetic_root`: the synthetic data set the verb reads, whose vocab.txt a synthetic config's
  `text.vocab_file` ("{synthetic_root}/vocab.txt") means when no checkpoint has resolved it."""
  from satracker_jax import model_io, tokenizer  # noqa: PLC0415
  try:
    config, variables, random = model_io.load_model(args.checkpoint, args.config, overrides)
  except (ValueError, FileNotFoundError, KeyError) as e:
    raise SystemExit(str(e).strip("'\"")) from None
  vocab = str(config.text.get("vocab_file", ""))
  if needs_vocab and "{synthetic_root}" in vocab:
    if not synthetic_root:
      raise SystemExit(f"text.vocab_file is {vocab!r}: a synthetic config's vocabulary is the one its "
                       "data set was generated with; give a trained --checkpoint, or "
                       "--config.text.vocab_file=ROOT/vocab.txt of the synthetic data set")
    config.text.vocab_file = vocab.replace("{synthetic_root}", str(synthetic_root))
  if needs_vocab:  # a missing vocabulary file: one line now, not a traceback after the model loads
    kind = str(config.text.get("tokenizer", "wordpiece"))
    field = tokenizer.vocabulary_field(kind)
    path = str(config.text.get(field, "")) if field else ""
    if path and not tokenizer.vocabulary_exists(path):
      raise SystemExit(f"text.{field} {path}: no such file (the {kind} tokenizer's vocabulary; "
                       f"--config.text.{field}=PATH)")
  if random:
    print("WARNING: no --checkpoint: using RANDOMLY INITIALISED weights", file=sys.stderr)
  return config, variables
