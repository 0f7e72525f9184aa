"""Tiny random models with a character tokenizer, so evals run end to end on text in seconds."""

from __future__ import annotations

import string

import pytest

from jaxprune import converters
from tests.helpers import make_tiny_hf

CHARS = "\n" + "".join(chr(c) for c in range(32, 127))
VOCAB = 2 + len(CHARS)  # <eos>, <unk>, then one id per character
CHAT = ("{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}\n{% endfor %}"
        "{% if add_generation_prompt %}<assistant>{% endif %}")


def char_tokenizer():
  """A transformers tokenizer with one token per character (ids 2...), EOS 0."""
  from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
  from transformers import PreTrainedTokenizerFast

  vocab = {"<eos>": 0, "<unk>": 1, **{c: i + 2 for i, c in enumerate(CHARS)}}
  tk = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
  tk.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
  tk.decoder = decoders.Fuse()
  tok = PreTrainedTokenizerFast(tokenizer_object=tk, eos_token="<eos>", unk_token="<unk>")
  tok.chat_template = CHAT
  return tok


def make_tiny_with_tokenizer(folder, model_type: str = "llama", **overrides):
  """``make_tiny_hf`` plus the character tokenizer saved beside it; (folder, LoadedModel)."""
  make_tiny_hf(folder, model_type, vocab_size=VOCAB, eos_token_id=0, bos_token_id=None, pad_token_id=None,
               **overrides)
  char_tokenizer().save_pretrained(folder)
  return folder, converters.load_model(str(folder))


@pytest.fixture(scope="session")
def tiny(tmp_path_factory):
  """(folder, LoadedModel) of a tiny llama with the character tokenizer."""
  return make_tiny_with_tokenizer(tmp_path_factory.mktemp("evals") / "llama", "llama")


assert set(string.printable) - set(CHARS) <= set("\t\r\x0b\x0c")


@pytest.fixture(scope="session")
def tiny_long(tmp_path_factory):
  """Like `tiny` with a 4096-position context, for few-shot prompts counted in characters."""
  return make_tiny_with_tokenizer(tmp_path_factory.mktemp("evals") / "long", "llama", max_position_embeddings=4096)
