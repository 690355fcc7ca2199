"""configs/synthetic.py, the demo's recipe: its text length holds every sentence the generator
writes (max_text_len is 16 to save compute: a longer sentence would silently lose its last words)."""
from data_pipelines import synthetic
from satracker_jax import config_utils
from satracker_jax.tokenizer import WordPieceTokenizer, write_wordpiece_vocab


def test_every_generated_sentence_fits_the_demo_text_length(tmp_path):
  config = config_utils.load_config("configs/synthetic.py")
  vocab = str(tmp_path / "vocab.txt")
  write_wordpiece_vocab(synthetic.vocabulary_words(), vocab)
  tok = WordPieceTokenizer(vocab, max_len=64)
  longest = ""
  for mode in synthetic.MODES:
    for i in range(12):
      sentence = synthetic.render_sequence(0, i, 2, 64, 48, modes={mode: 1})["sentence"]
      longest = max(longest, sentence, key=lambda s: len(tok.tokenize(s)))
  # [CLS] + pieces + [SEP]; the horizontal flip swaps left/right words, never adds any.
  assert len(tok.tokenize(longest)) + 2 <= config.model.max_text_len, longest


def test_language_recipe_mixes_the_three_protocols_and_keeps_the_demo_schedule():
  from data_pipelines import processing  # noqa: PLC0415
  from satracker_jax import demo  # noqa: PLC0415

  demo_config = config_utils.load_config("configs/synthetic.py", [])
  language = config_utils.load_config("configs/synthetic.py:language", [])
  assert list(processing.protocol_probabilities(language.data.protocols)) == [0.5, 0.1, 0.4]
  # The demo evaluates a model trained with grounding samples under both protocols by default.
  assert demo._default_protocols(language) == ("nl_bb", "nl")
  assert demo._default_protocols(demo_config) == ("nl_bb",)
  # Same schedule and the same number of training videos as the demo; only the test split grows.
  assert (language.train.total_steps, language.train.batch_size) == (
      demo_config.train.total_steps, demo_config.train.batch_size)
  train = lambda c: c.data.synthetic.sequences - c.data.synthetic.test_sequences  # noqa: E731
  assert train(language) == train(demo_config)
  assert language.data.synthetic.test_sequences > demo_config.data.synthetic.test_sequences


def test_language_large_recipe_is_the_language_mix_at_scale_on_worker_processes():
  from data_pipelines import processing  # noqa: PLC0415

  language = config_utils.load_config("configs/synthetic.py:language", [])
  large = config_utils.load_config("configs/synthetic.py:language_large", [])  # validates
  config_utils.validate_data(large)
  assert (large.data.backend, large.data.workers) == ("numpy", "processes")
  assert (list(processing.protocol_probabilities(large.data.protocols))
          == list(processing.protocol_probabilities(language.data.protocols)))
  train = lambda c: c.data.synthetic.sequences - c.data.synthetic.test_sequences  # noqa: E731
  assert train(large) > train(language)
  assert large.data.synthetic.test_sequences == 200
