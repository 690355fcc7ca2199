"""Tokenizers: WordPiece ids equal HF `tokenizers`' BertWordPieceTokenizer; SentencePiece round-trips."""
import string

import ml_collections
import numpy as np
import pytest

from satracker_jax import tokenizer as tk

MAX_LEN = 16

WORDS = """
the a an man woman person in on of red blue green coat car dog cat walking running left right
is and with at to by white black small big bird boat ball player shirt holding front behind
track tracking target un ##able ##s ##ing ##ed ##er ##ly ##est cafe naive resume ##ume
play ##ful ##ness over ##lap under ##ground snow ##board rider bicycle ##cycle bi zebra
""".split()
CJK = list("人车狗红色的在左右走跑")
SENTENCES = [
    "The man in a RED coat walking left.",
    "a dog, running; fast!? (behind the car)",
    "Café naïve résumé",                      # accents stripped
    "红色的车 在左 走",                         # CJK split into single characters
    "红色car人dog",                             # CJK next to latin
    "the snowboarder overlaps playfulness",    # ## continuation pieces
    "xyzzy qw€rty привет",                     # letters split to pieces; unsplittable -> [UNK]
    "zebra" * 30,                              # > 100 chars -> [UNK]
    "",                                        # empty -> [CLS][SEP]
    "   \t\n  ",                               # whitespace only
    "tab\tnew\nline\r\x00control\x07char\u200b",  # control / zero-width chars dropped
    "the man $5 + a cat ^ ` ~ | @ # rider",    # ASCII symbols are punctuation for BERT
    "a b c d e f g h i j k l m n o p q r s t u v w x y z 1 2 3",  # truncation keeps [SEP]
    "«quoted» – dash — and … ellipsis",       # Unicode P* punctuation
    "unable bicycle underground bikes",
]


@pytest.fixture(scope="module")
def vocab_file(tmp_path_factory):
  path = str(tmp_path_factory.mktemp("vocab") / "vocab.txt")
  size = tk.write_wordpiece_vocab(WORDS + CJK + ["«", "»", "–", "—", "…"], path)
  assert size > 150
  return path


def test_write_wordpiece_vocab_layout(vocab_file):
  lines = open(vocab_file, encoding="utf-8").read().splitlines()
  assert lines[:5] == ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
  assert len(lines) == len(set(lines))
  for ch in string.ascii_lowercase + string.digits:
    assert ch in lines and "##" + ch in lines


def test_wordpiece_matches_hf_tokenizers(vocab_file):
  tokenizers = pytest.importorskip("tokenizers")
  ref = tokenizers.BertWordPieceTokenizer(
      vocab_file, lowercase=True, strip_accents=True, handle_chinese_chars=True, clean_text=True)
  ref.enable_truncation(max_length=MAX_LEN)
  ref.enable_padding(length=MAX_LEN, pad_id=0, pad_token="[PAD]")
  tok = tk.WordPieceTokenizer(vocab_file, max_len=MAX_LEN)
  assert tok.vocab_size == ref.get_vocab_size()
  for sentence in SENTENCES:
    ids, mask = tok.encode(sentence)
    expected = ref.encode(sentence)
    np.testing.assert_array_equal(ids, expected.ids, err_msg=repr(sentence))
    np.testing.assert_array_equal(mask, expected.attention_mask, err_msg=repr(sentence))
    assert ids.dtype == np.int32 and mask.dtype == np.int32


def test_wordpiece_framing_and_unknowns(vocab_file):
  tok = tk.WordPieceTokenizer(vocab_file, max_len=MAX_LEN)
  ids, mask = tok.encode("")
  assert list(ids[:2]) == [tok.cls_id, tok.sep_id] and mask.sum() == 2 and (ids[2:] == tok.pad_id).all()
  assert tok.tokenize("Café snowboarder 红色") == ["cafe", "snow", "##board", "##er", "红", "色"]
  assert tok.tokenize("gl€rp " + "a" * 101 + " ab") == ["[UNK]", "[UNK]", "a", "##b"]
  ids, mask = tok.encode(SENTENCES[-3])  # long sentence: truncated, [SEP] kept
  assert mask.all() and ids[-1] == tok.sep_id


def test_encode_batch_and_type_errors(vocab_file):
  tok = tk.WordPieceTokenizer(vocab_file, max_len=MAX_LEN)
  ids, mask = tok.encode_batch(SENTENCES[:3])
  assert ids.shape == mask.shape == (3, MAX_LEN) and ids.dtype == np.int32
  np.testing.assert_array_equal(ids[1], tok.encode(SENTENCES[1])[0])
  assert tok.encode_batch([])[0].shape == (0, MAX_LEN)
  with pytest.raises(TypeError, match="decode_sentence_bytes"):
    tok.encode(b"bytes")


def test_decode_sentence_bytes():
  assert tk.decode_sentence_bytes("红色 car".encode("utf-8"), "x.txt") == "红色 car"
  assert tk.decode_sentence_bytes(b"\xef\xbb\xbfbom", "x.txt") == "bom"
  with pytest.raises(ValueError, match=r"seq1/language\.txt.*UTF-8"):
    tk.decode_sentence_bytes(b"caf\xe9", "seq1/language.txt")


def _text_cfg(**kw):
  cfg = ml_collections.ConfigDict(dict(tokenizer="wordpiece", vocab_file="", spm_model="", lower_case=True))
  cfg.update(kw)
  return cfg


def test_build_tokenizer_dispatch_and_errors(vocab_file, tmp_path):
  tok = tk.build_tokenizer(_text_cfg(vocab_file=vocab_file), max_len=8)
  assert isinstance(tok, tk.WordPieceTokenizer) and tok.max_len == 8
  missing = str(tmp_path / "nope" / "vocab.txt")
  with pytest.raises(FileNotFoundError, match="nope/vocab.txt"):
    tk.build_tokenizer(_text_cfg(vocab_file=missing), max_len=8)
  with pytest.raises(ValueError, match="vocab_file"):
    tk.build_tokenizer(_text_cfg(), max_len=8)
  with pytest.raises(FileNotFoundError, match="missing.model"):
    tk.build_tokenizer(_text_cfg(tokenizer="sentencepiece", spm_model=str(tmp_path / "missing.model")), 8)
  with pytest.raises(ValueError, match="bpe2"):
    tk.build_tokenizer(_text_cfg(tokenizer="bpe2"), 8)


def test_sentencepiece_train_and_round_trip(tmp_path):
  corpus = [f"the {c} {o} is {a} the {p}" for c in ("red", "blue", "green", "white")
            for o in ("car", "dog", "man", "boat", "bird") for a in ("left of", "behind", "near")
            for p in ("tree", "house")]
  model = tk.train_sentencepiece(corpus, str(tmp_path / "spm" / "synth"), vocab_size=60)
  tok = tk.build_tokenizer(_text_cfg(tokenizer="sentencepiece", spm_model=model), max_len=24)
  assert isinstance(tok, tk.SentencePieceTokenizer)
  assert (tok.pad_id, tok.cls_id, tok.sep_id) == (0, 2, 3) and tok.vocab_size <= 60
  ids, mask = tok.encode("The red car is behind the house")
  n = int(mask.sum())
  assert ids[0] == tok.cls_id and ids[n - 1] == tok.sep_id and (ids[n:] == 0).all()
  assert tok.sp.decode(ids[1:n - 1].tolist()) == "the red car is behind the house"  # lower_case=True
  ids, mask = tok.encode("")
  assert list(ids[:2]) == [2, 3] and mask.sum() == 2
  ids, mask = tok.encode(" ".join(corpus[:5]))
  assert mask.all() and ids[-1] == tok.sep_id


def test_a_vocabulary_on_a_bucket_is_read_through_the_file_systems(vocab_file, tmp_path):
  """TensorFlow's in-memory file system (`ram://`) stands in for a bucket."""
  tf = pytest.importorskip("tensorflow")
  url = "ram://tokenizer-test/vocab.txt"
  tf.io.gfile.makedirs("ram://tokenizer-test")
  tf.io.gfile.copy(vocab_file, url, overwrite=True)
  assert tk.vocabulary_exists(url) and not tk.vocabulary_exists("ram://tokenizer-test/nope.txt")
  local, remote = (tk.build_tokenizer(_text_cfg(vocab_file=p), max_len=MAX_LEN) for p in (vocab_file, url))
  for sentence in SENTENCES:
    assert all(np.array_equal(a, b) for a, b in zip(local.encode(sentence), remote.encode(sentence)))
  with pytest.raises(FileNotFoundError, match="ram://tokenizer-test/nope.txt"):
    tk.build_tokenizer(_text_cfg(vocab_file="ram://tokenizer-test/nope.txt"), max_len=8)
  model = tk.train_sentencepiece(SENTENCES[:2] * 20, str(tmp_path / "spm" / "m"), vocab_size=40)
  tf.io.gfile.copy(model, "ram://tokenizer-test/m.model", overwrite=True)
  spm_cfg = lambda path: _text_cfg(tokenizer="sentencepiece", spm_model=path)
  local, remote = (tk.build_tokenizer(spm_cfg(p), 16) for p in (model, "ram://tokenizer-test/m.model"))
  assert np.array_equal(local.encode(SENTENCES[0])[0], remote.encode(SENTENCES[0])[0])
  assert tk.vocabulary_field("sentencepiece") == "spm_model" and tk.vocabulary_field("bpe2") == ""


def test_check_fits_model_names_both_sizes(vocab_file):
  import flax.linen as nn
  import jax
  import jax.numpy as jnp
  tok = tk.WordPieceTokenizer(vocab_file, max_len=MAX_LEN)
  tk.check_fits_model(tok, tok.vocab_size)  # exactly the table's size fits
  tk.check_fits_model(tok, tok.vocab_size + 100)
  small = tok.vocab_size - 1
  with pytest.raises(ValueError, match=rf"vocab\.txt\) has {tok.vocab_size} tokens.*"
                                        rf"config\.model\.bert\.vocab_size={small}"):
    tk.check_fits_model(tok, small)
  # Why the check exists: an id past the table is no error in JAX, it is a NaN embedding.
  embed = nn.Embed(small, 4)
  variables = embed.init(jax.random.PRNGKey(0), jnp.zeros((1,), jnp.int32))
  assert bool(jnp.isnan(embed.apply(variables, jnp.array([small], jnp.int32))).all())
