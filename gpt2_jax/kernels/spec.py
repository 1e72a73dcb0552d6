"""The static description of one flash attention call that every kernel is specialized on.

Built once by `flash_attention` from the caller's arguments (after validation and padding), so
the kernels see resolved numbers only: fitted block sizes, the real and padded sequence lengths,
the softmax scale and the dropout rate. Hashable, because it is a static argument of
`jax.custom_vjp` and part of the compilation cache key.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from gpt2_jax.kernels.block_sizes import BlockSizes

# Masked scores get the most negative finite float32, as the reference does: a masked entry has
# probability exactly 0 once any real score is seen, and no row can turn into NaN.
MASK_VALUE = float(np.finfo(np.float32).min)


@dataclasses.dataclass(frozen=True)
class KernelSpec:
    backend: str  # "gpu" (Triton) or "tpu" (Mosaic)
    blocks: BlockSizes
    seq_len: int  # the caller's T
    padded_len: int  # T rounded up so every block size divides it
    sm_scale: float
    causal: bool
    segmented: bool
    dropout_rate: float
    interpret: bool

    @property
    def keep_scale(self) -> float:
        return 1.0 / (1.0 - self.dropout_rate)
