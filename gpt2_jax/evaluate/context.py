"""What every task needs to run: the scorer, the tokenizer, the protocol and its settings.

Built once per `gpt2-jax eval` run by `runner.evaluate` and passed to each task's `run`.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the scorer imports JAX; the registry (and `gpt2-jax --help`) must not
    from gpt2_jax.evaluate.contamination import Overlap
    from gpt2_jax.evaluate.scorer import Scorer
    from gpt2_jax.tokenizer import Tokenizer

PROTOCOLS = ("paper", "lm-eval")


@dataclasses.dataclass
class EvalContext:
    scorer: "Scorer"
    tokenizer: "Tokenizer"
    protocol: str  # "paper" or "lm-eval"
    stride: int  # rolling-window stride in tokens (lm-eval: always n_ctx)
    limit: int | None  # at most this many documents/examples per task (None = all)
    overlap: "Overlap | None" = None  # --overlap: flags examples whose 8-grams are in the training data

    @property
    def n_ctx(self) -> int:
        return self.scorer.config.n_ctx

    @property
    def prefix_id(self) -> int:
        """The token before a document's first token: <|endoftext|>, as in lm-eval (GPT-2's BOS = EOS)."""
        return self.tokenizer.eot_id

    def encode(self, text: str) -> list[int]:
        return self.tokenizer.encode(text)
