"""Tiny SATracker trained on procedural videos (`satracker synth`): the CPU demo's config.

An empty synthetic root means "generate into WORKDIR/synthetic" (train loop, from the
`data.synthetic` fields). The WordPiece vocab is the generated `vocab.txt`: `{synthetic_root}` in
`text.vocab_file` is replaced by the data set root at run time
(`data_pipelines.synthetic.resolve_vocab_file`, called by the sampler).
"""
import ml_collections

from configs import tiny

# The arguments get_config understands (`configs/synthetic.py:language`); any other is an error.
ARGS = ("language", "language_large", "runlocal")


def get_config(arg=None):
  """`arg`: None (the demo), "language" (the mixed-protocol recipe), "language_large" (the same
  at an accelerator's scale) or "runlocal" (tests)."""
  c = tiny.get_config(arg)
  c.data.datasets = ml_collections.ConfigDict(dict(
      synthetic=dict(root="", weight=1.0, split="train"),
  ))
  c.data.synthetic = ml_collections.ConfigDict(dict(
      sequences=200, frames=48, size="160x120", seed=0, test_sequences=20,
      # Probabilities of the generator's modes (data_pipelines/synthetic.py: why the sentence is
      # needed in each); `--config.data.synthetic.modes.relation=0.5` reweights one (normalised).
      modes=dict(direction=0.1, vertical=0.1, horizontal=0.1, none=0.1,
                 absolute=0.2, attribute=0.2, relation=0.2),
  ))
  # Synthetic videos are short: the whole video is within reach of the template.
  c.data.max_gap = 100
  c.text.tokenizer = "wordpiece"
  c.text.vocab_file = "{synthetic_root}/vocab.txt"
  # The generated vocab has ~140 tokens (specials, the generator's words, characters); 256 leaves
  # room and keeps the embedding small. tests/test_synthetic.py asserts that it fits.
  c.model.bert.vocab_size = 256
  # The longest generated sentence is 11 tokens with [CLS]/[SEP] (tests/test_synthetic_config.py
  # holds it under this); 16 instead of tiny's 40 cuts the step's CPU time by 15%
  # (docs/BENCHMARKS.md "The demo: where the time goes").
  c.model.max_text_len = 16
  # The demo's budget: training is 98% of its time, and its cost is proportional to the samples
  # seen (the step's CPU time is linear in the batch). 2,400 x 12 = 28,800 samples keeps nearly all
  # the updates of the former 2,500 x 16 at 72% of the samples; three seeds scored the same mean
  # AUC (docs/EXPERIMENTS.md).
  c.train.batch_size = 12
  c.train.total_steps = 2400
  c.train.checkpoint_every = 600
  c.train.keep_checkpoints = 1
  if arg in ("language", "language_large"):
    c.data.protocols = ml_collections.ConfigDict(dict(nl_bb=0.5, bb=0.1, nl=0.4))
  if arg == "language":
    # The language recipe (docs/EXPERIMENTS.md "Protocols"; `satracker demo --config configs/synthetic.py:language
    # --ablations --seeds 3`): the demo's schedule, training mixed as UVLTrack does (box + sentence,
    # box only, sentence only = grounding), and 60 held-out videos so that frame-0 grounding
    # accuracy is measured over ~54 single-frame videos instead of ~18. The same 180 training
    # videos' worth of scenes as the demo.
    c.data.synthetic.update(sequences=240, test_sequences=60)
  if arg == "language_large":
    # The language recipe (the same mix) at an accelerator's scale (docs/EXPERIMENTS.md): 8,000
    # training videos instead of 180 (grounding memorises the scenes it sees), batch 64,
    # the TF-free input in one worker process per core, 200 held-out videos (178 single-frame:
    # a grounding accuracy to about +-0.04). total_steps is the most the recipe runs;
    # docs/EXPERIMENTS.md gives the steps of the measured run (5,990: what 15 minutes of an H200 allowed).
    c.data.synthetic.update(sequences=8200, test_sequences=200)
    c.data.backend = "numpy"
    c.data.workers = "processes"  # one per usable core
    c.train.update(batch_size=64, total_steps=20000, checkpoint_every=2500, log_every=100)
    c.optim.update(lr=5e-4, warmup_steps=500)
  if arg == "runlocal":
    c.data.synthetic.update(sequences=12, frames=24, test_sequences=4)
    c.train.update(batch_size=8, total_steps=10, checkpoint_every=5)
  return c
