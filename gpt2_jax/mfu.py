"""Model FLOPs utilization: training FLOPs per token and the peak FLOP/s of known devices.

FLOPs per trained token = 6 * N + 12 * L * T * D, where N is the non-embedding parameter count
(Kaplan et al.'s N: the blocks and final LayerNorm, biases included, which are negligible) plus
the tied output projection V_padded * D, a real matmul (position-embedding lookups do none);
12 * L * T * D is attention's QK^T and AV (2 matmuls * 2 FLOPs per
multiply-add * 3 for forward + backward, over T keys). This is PaLM's formula (appendix B),
which nanoGPT also uses; it ignores softmax, LayerNorm and GELU, and does not count remat.

MFU = achieved model FLOP/s / (peak dense bf16 FLOP/s per device * devices). Devices with no
table entry (CPUs) report None, printed as "n/a".

References:
  Chowdhery et al. 2022, "PaLM", appendix B.
  Kaplan et al. 2020, "Scaling Laws for Neural Language Models", section 2.1.
  Peak numbers: gpt2_jax/chips.py (vendor datasheets, dense, no sparsity).
"""

from __future__ import annotations

from gpt2_jax.chips import chip
from gpt2_jax.config import ModelConfig
from gpt2_jax.model import non_embedding_params


def flops_per_token(config: ModelConfig, seq_len: int) -> float:
    matmul_params = non_embedding_params(config) + config.n_vocab_padded * config.n_embd
    return 6.0 * matmul_params + 12.0 * config.n_layer * seq_len * config.n_embd


def peak_flops(device_kind: str) -> float | None:
    """Peak dense bf16 FLOP/s of one device of this kind (gpt2_jax/chips.py), None if unknown."""
    row = chip(device_kind)
    return None if row is None else row.peak_bf16_flops


def mfu(tokens_per_second: float, config: ModelConfig, seq_len: int, device_kind: str, n_devices: int) -> float | None:
    peak = peak_flops(device_kind)
    if peak is None:
        return None
    return tokens_per_second * flops_per_token(config, seq_len) / (peak * n_devices)
