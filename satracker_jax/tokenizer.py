"""Sentence -> `(ids, mask)` for the text branch: BERT WordPiece or SentencePiece, one interface.

    tok = build_tokenizer(config.text, max_len=config.model.max_text_len)
    ids, mask = tok.encode("the man in a red coat")   # np.int32 [max_len] each
    ids, mask = tok.encode_batch(sentences)            # np.int32 [N, max_len] each

Every sequence is framed `[CLS] tokens [SEP]`, truncated to `max_len` keeping the closing token,
and padded; `mask` is 1 on real tokens (the framing tokens included) and 0 on padding.

WordPiece follows the original BERT recipe so that ids match `vocab.txt` of a pretrained BERT
(and HF `tokenizers`' BertWordPieceTokenizer, which the tests compare against).

SentencePiece framing: the model's own `bos` and `eos` pieces play [CLS] / [SEP] and its `pad`
piece pads. Models made by `train_sentencepiece` reserve pad=0, unk=1, bos=2, eos=3, so padding is
id 0 as with WordPiece. A model without a pad piece pads with id 0: the mask, not the id, is what
keeps padding out of attention.

A vocabulary (vocab.txt, .model) may also lie on a bucket (`gs://...`, any scheme TensorFlow's file
systems know): it is then read through `data_pipelines/files.py`, which needs TensorFlow.
"""
from __future__ import annotations

import os
import string
import unicodedata
from typing import Iterable, Sequence

import numpy as np

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
MAX_CHARS_PER_WORD = 100  # BERT: longer "words" are almost always junk (URLs, hashes) -> [UNK]
# config.text field that names each tokenizer's vocabulary.
VOCABULARY_FIELDS = {"wordpiece": "vocab_file", "sentencepiece": "spm_model"}


def vocabulary_field(kind: str) -> str:
  """The config.text field naming the vocabulary of tokenizer `kind` ("" for an unknown kind)."""
  return VOCABULARY_FIELDS.get(str(kind), "")


def vocabulary_exists(path: str) -> bool:
  from data_pipelines import files  # noqa: PLC0415  (os for a local path; TensorFlow for a URL only)
  return files.isfile(path)


def read_vocabulary(path: str, what: str) -> bytes:
  """The bytes of a vocabulary file, local or on a bucket; FileNotFoundError naming `what`."""
  if not path or not vocabulary_exists(path):
    raise FileNotFoundError(f"{what} file not found: {path!r}")
  from data_pipelines import files  # noqa: PLC0415
  return files.read_bytes(path)


def decode_sentence_bytes(data: bytes, path: str) -> str:
  """UTF-8 (optionally with BOM) bytes of a language file -> str; a clear error names the file."""
  try:
    return data.decode("utf-8-sig")
  except UnicodeDecodeError as e:
    bad = data[e.start:e.start + 1].hex()
    raise ValueError(f"{path}: sentence file is not valid UTF-8 (byte 0x{bad} at offset {e.start}); "
                     "re-save it as UTF-8") from None


# ---------------------------------------------------------------------------------------------
# BERT basic tokenizer: text -> words.


def _is_whitespace(ch: str) -> bool:
  return ch in " \t\n\r" or unicodedata.category(ch) == "Zs"


def _is_control(ch: str) -> bool:
  # \t \n \r are whitespace for BERT, not control characters to delete.
  if ch in "\t\n\r":
    return False
  # All C* categories, as Google's BERT (what pretrained vocabularies saw). The one known
  # difference from HF's Rust tokenizer: unassigned code points (Cn) are dropped here, [UNK] there.
  return unicodedata.category(ch).startswith("C")


def _is_punctuation(ch: str) -> bool:
  cp = ord(ch)
  # BERT treats every non-alphanumeric ASCII symbol ($, +, ^, `, ...) as punctuation even though
  # Unicode files some of them under S* (symbol) categories.
  if 33 <= cp <= 47 or 58 <= cp <= 64 or 91 <= cp <= 96 or 123 <= cp <= 126:
    return True
  return unicodedata.category(ch).startswith("P")


# CJK Unified Ideographs blocks (as in BERT). Hangul and Japanese kana are deliberately absent:
# those scripts use spaces / are handled by WordPiece like any other letters.
_CJK_RANGES = (
    (0x4E00, 0x9FFF), (0x3400, 0x4DBF), (0x20000, 0x2A6DF), (0x2A700, 0x2B73F),
    (0x2B740, 0x2B81F), (0x2B820, 0x2CEAF), (0xF900, 0xFAFF), (0x2F800, 0x2FA1F),
)


def _is_cjk(cp: int) -> bool:
  return any(lo <= cp <= hi for lo, hi in _CJK_RANGES)


def _clean_and_space(text: str) -> str:
  """Drops NUL / U+FFFD / control chars, maps whitespace to ' ', isolates CJK ideographs."""
  out = []
  for ch in text:
    cp = ord(ch)
    if cp == 0 or cp == 0xFFFD or _is_control(ch):
      continue
    if _is_whitespace(ch):
      out.append(" ")
    elif _is_cjk(cp):
      out.extend((" ", ch, " "))
    else:
      out.append(ch)
  return "".join(out)


def _strip_accents(text: str) -> str:
  return "".join(ch for ch in unicodedata.normalize("NFD", text) if unicodedata.category(ch) != "Mn")


def _split_punctuation(word: str) -> list[str]:
  pieces, current = [], []
  for ch in word:
    if _is_punctuation(ch):
      if current:
        pieces.append("".join(current))
        current = []
      pieces.append(ch)
    else:
      current.append(ch)
  if current:
    pieces.append("".join(current))
  return pieces


def basic_tokenize(text: str, lower_case: bool = True) -> list[str]:
  words = []
  for word in _clean_and_space(text).split():
    if lower_case:
      word = _strip_accents(word.lower())
    words.extend(_split_punctuation(word))
  return words


# ---------------------------------------------------------------------------------------------
# Tokenizers.


class _Framed:
  """Shared `[CLS] ... [SEP]` framing, truncation and padding; subclasses give `_piece_ids`."""
  max_len: int
  cls_id: int
  sep_id: int
  pad_id: int

  def _piece_ids(self, text: str) -> list[int]:
    raise NotImplementedError

  def encode(self, text: str) -> tuple[np.ndarray, np.ndarray]:
    if not isinstance(text, str):
      raise TypeError(f"encode() takes str, got {type(text).__name__}; decode bytes with "
                      "decode_sentence_bytes first")
    body = self._piece_ids(text)[:self.max_len - 2]  # truncation keeps the closing [SEP]
    tokens = [self.cls_id, *body, self.sep_id]
    ids = np.full((self.max_len,), self.pad_id, np.int32)
    mask = np.zeros((self.max_len,), np.int32)
    ids[:len(tokens)] = tokens
    mask[:len(tokens)] = 1
    return ids, mask

  def encode_batch(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    if not texts:
      empty = np.zeros((0, self.max_len), np.int32)
      return empty, empty.copy()
    ids, masks = zip(*(self.encode(t) for t in texts))
    return np.stack(ids), np.stack(masks)


def _check_max_len(max_len: int) -> int:
  if max_len < 2:
    raise ValueError(f"max_len={max_len}: need room for at least the two framing tokens")
  return int(max_len)


class WordPieceTokenizer(_Framed):
  """BERT basic tokenization + greedy longest-match-first WordPiece over a `vocab.txt`."""

  def __init__(self, vocab_file: str, max_len: int = 40, lower_case: bool = True):
    data = read_vocabulary(vocab_file, "WordPiece vocab")
    self.vocab_file = vocab_file
    self.max_len = _check_max_len(max_len)
    self.lower_case = lower_case
    text = decode_sentence_bytes(data, vocab_file)
    self.vocab: dict[str, int] = {}
    for index, line in enumerate(text.splitlines()):
      token = line.strip()
      if token:
        self.vocab.setdefault(token, index)
    self.inv_vocab = {i: t for t, i in self.vocab.items()}
    missing = [t for t in ("[UNK]", "[CLS]", "[SEP]", "[PAD]") if t not in self.vocab]
    if missing:
      raise ValueError(f"{vocab_file}: vocab lacks the special tokens {missing}")
    self.unk_id = self.vocab["[UNK]"]
    self.cls_id = self.vocab["[CLS]"]
    self.sep_id = self.vocab["[SEP]"]
    self.pad_id = self.vocab["[PAD]"]
    self.vocab_size = len(text.splitlines())

  def _wordpiece(self, word: str) -> list[int]:
    if len(word) > MAX_CHARS_PER_WORD:
      return [self.unk_id]
    ids, start = [], 0
    while start < len(word):
      end = len(word)
      match = None
      while start < end:
        piece = word[start:end] if start == 0 else "##" + word[start:end]
        match = self.vocab.get(piece)
        if match is not None:
          break
        end -= 1
      if match is None:
        # One unsplittable stretch makes the whole word unknown (BERT), not a partial word.
        return [self.unk_id]
      ids.append(match)
      start = end
    return ids

  def tokenize(self, text: str) -> list[str]:
    return [self.inv_vocab.get(i, "[UNK]") for i in self._piece_ids(text)]

  def _piece_ids(self, text: str) -> list[int]:
    ids = []
    for word in basic_tokenize(text, self.lower_case):
      ids.extend(self._wordpiece(word))
    return ids


class SentencePieceTokenizer(_Framed):
  """SentencePiece pieces framed by the model's bos/eos (see the module docstring)."""

  def __init__(self, model_file: str, max_len: int = 40, lower_case: bool = False):
    data = read_vocabulary(model_file, "SentencePiece model")
    import sentencepiece as spm  # pylint: disable=g-import-not-at-top
    self.model_file = model_file
    self.max_len = _check_max_len(max_len)
    self.lower_case = lower_case
    self.sp = spm.SentencePieceProcessor(model_proto=data)
    self.cls_id, self.sep_id = self.sp.bos_id(), self.sp.eos_id()
    if self.cls_id < 0 or self.sep_id < 0:
      raise ValueError(f"{model_file}: the model has no bos/eos piece (trained with bos_id/eos_id=-1); "
                       "they frame every sentence like [CLS]/[SEP]")
    self.pad_id = max(self.sp.pad_id(), 0)
    self.unk_id = self.sp.unk_id()
    self.vocab_size = self.sp.get_piece_size()

  def _piece_ids(self, text: str) -> list[int]:
    return list(self.sp.encode(text.lower() if self.lower_case else text, out_type=int))

  def tokenize(self, text: str) -> list[str]:
    return list(self.sp.encode(text.lower() if self.lower_case else text, out_type=str))


def build_tokenizer(text_cfg, max_len: int):
  """`text_cfg` is `config.text`: tokenizer = "wordpiece" (vocab_file) | "sentencepiece" (spm_model)."""
  kind = text_cfg.tokenizer
  lower_case = bool(text_cfg.get("lower_case", True))
  if kind == "wordpiece":
    if not text_cfg.vocab_file:
      raise ValueError("config.text.vocab_file is empty: the WordPiece tokenizer needs a vocab.txt "
                       "(`satracker convert` copies the BERT checkpoint's into its output dir)")
    return WordPieceTokenizer(text_cfg.vocab_file, max_len=max_len, lower_case=lower_case)
  if kind == "sentencepiece":
    if not text_cfg.spm_model:
      raise ValueError("config.text.spm_model is empty: the SentencePiece tokenizer needs a .model file")
    return SentencePieceTokenizer(text_cfg.spm_model, max_len=max_len, lower_case=lower_case)
  raise ValueError(f"config.text.tokenizer={kind!r}: expected 'wordpiece' or 'sentencepiece'")


def check_fits_model(tok, model_vocab_size: int) -> None:
  """Refuses a tokenizer whose ids do not all index the model's word-embedding table.

  Why at start-up: JAX gathers out of range without an error (`nn.Embed` returns NaN rows for
  ids >= vocab_size), so a too-large vocabulary shows up steps later as a non-finite loss that
  looks like a learning-rate problem.
  """
  if int(tok.vocab_size) > int(model_vocab_size):
    source = getattr(tok, "vocab_file", None) or getattr(tok, "model_file", None) or type(tok).__name__
    raise ValueError(
        f"the tokenizer's vocabulary ({source}) has {tok.vocab_size} tokens but the model's text "
        f"embedding has config.model.bert.vocab_size={model_vocab_size}: ids >= {model_vocab_size} "
        f"would become NaN in the embedding. Set --config.model.bert.vocab_size={tok.vocab_size} "
        f"(or larger), or use the vocabulary the model was built for.")


# ---------------------------------------------------------------------------------------------
# Vocabulary builders for synthetic data sets.


def write_wordpiece_vocab(words: Iterable[str], path: str) -> int:
  """Writes a BERT-style vocab.txt: specials, `words`, then single characters and their `##` forms.

  The single letters/digits (and ASCII punctuation) guarantee that any lower-case ASCII sentence
  tokenizes without [UNK]. Returns the vocabulary size.
  """
  tokens = list(SPECIAL_TOKENS)
  seen = set(tokens)

  def add(token):
    if token and token not in seen:
      seen.add(token)
      tokens.append(token)

  for word in words:
    if any(_is_whitespace(ch) for ch in word):
      raise ValueError(f"vocabulary entry {word!r} contains whitespace")
    add(word)
  chars = string.ascii_lowercase + string.digits
  for ch in chars:
    add(ch)
  for ch in string.punctuation:
    add(ch)
  for ch in chars:
    add("##" + ch)
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  with open(path, "w", encoding="utf-8") as f:
    f.write("\n".join(tokens) + "\n")
  return len(tokens)


def train_sentencepiece(sentences: Iterable[str], out_prefix: str, vocab_size: int = 1000,
                        model_type: str = "unigram") -> str:
  """Trains a SentencePiece model on `sentences`; returns the path of `<out_prefix>.model`.

  Ids pad=0, unk=1, bos=2, eos=3 so padding is id 0 like WordPiece's [PAD]. `hard_vocab_limit`
  is off because tiny synthetic corpora cannot always fill the requested size.
  """
  import sentencepiece as spm  # pylint: disable=g-import-not-at-top
  sentences = [s for s in sentences if s.strip()]
  if not sentences:
    raise ValueError("train_sentencepiece needs at least one non-empty sentence")
  os.makedirs(os.path.dirname(os.path.abspath(out_prefix)), exist_ok=True)
  spm.SentencePieceTrainer.train(
      sentence_iterator=iter(sentences), model_prefix=out_prefix, vocab_size=vocab_size,
      model_type=model_type, pad_id=0, unk_id=1, bos_id=2, eos_id=3, hard_vocab_limit=False,
      character_coverage=1.0, minloglevel=2)
  return out_prefix + ".model"
