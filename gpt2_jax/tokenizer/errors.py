"""The one exception type of the tokenizer package."""


class TokenizerError(ValueError):
    """A vocabulary, corpus or request cannot be used; the message says why and how to fix it."""
