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
