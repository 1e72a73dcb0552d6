"""Byte-level BPE vocabularies: loading GPT-2's official files and encoding/decoding text.

This package depends on no other gpt2_jax module.
"""

from gpt2_jax.tokenizer.vocab import Tokenizer, TokenizerError, load_tokenizer

__all__ = ["Tokenizer", "TokenizerError", "load_tokenizer"]
