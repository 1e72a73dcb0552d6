"""Byte-level BPE (GPT-2's BBPE) and a sentencepiece backend behind one `Tokenizer` interface.

Train a vocabulary (`train_bbpe`, `train_sentencepiece`, or `gpt2-jax tokenizer train`), save it
to a directory, load any vocabulary with `load_tokenizer("gpt2" | DIR)`. Files: GPT-2's
encoder.json + vocab.bpe, tiktoken's rank file, sentencepiece's model (see `formats`, `vocab`).

This package depends on no other gpt2_jax module.
"""

from gpt2_jax.tokenizer.errors import TokenizerError
from gpt2_jax.tokenizer.formats import ENDOFTEXT, BPEVocab
from gpt2_jax.tokenizer.sentencepiece_backend import train_sentencepiece
from gpt2_jax.tokenizer.trainer import train_bbpe
from gpt2_jax.tokenizer.vocab import BPETokenizer, Tokenizer, load_tokenizer

__all__ = [
    "Tokenizer", "BPETokenizer", "TokenizerError", "load_tokenizer", "train_bbpe", "train_sentencepiece", "BPEVocab",
    "ENDOFTEXT",
]
