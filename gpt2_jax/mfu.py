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
  Peak numbers: vendor datasheets (dense, no sparsity): NVIDIA H100 SXM 989 TFLOP/s bf16,
  H200 989, A100 312; Google Cloud TPU v4 275, v5e 197, v5p 459, v6e (Trillium) 918.
"""

from __future__ import annotations

from gpt2_jax.config import ModelConfig
from gpt2_jax.model import non_embedding_params

# device_kind substring (lower case) -> peak dense bf16 FLOP/s per device
PEAK_FLOPS = {
    "h200": 989e12,
    "h100": 989e12,
    "a100": 312e12,
    "tpu v6": 918e12,
    "tpu v5p": 459e12,
    "tpu v5 lite": 197e12,
    "tpu v5e": 197e12,
    "tpu v4": 275e12,
}


def flops_per_token(config: ModelConfig, seq_len: int) -> float:
    matmul_params = non_embedding_params(config) + config.n_vocab_padded * config.n_embd
    return 6.0 * matmul_params + 12.0 * config.n_layer * seq_len * config.n_embd


def peak_flops(device_kind: str) -> float | None:
    kind = device_kind.lower()
    for key, peak in PEAK_FLOPS.items():
        if key in kind:
            return peak
    return None


def mfu(tokens_per_second: float, config: ModelConfig, seq_len: int, device_kind: str, n_devices: int) -> float | None:
    peak = peak_flops(device_kind)
    if peak is None:
        return None
    return tokens_per_second * flops_per_token(config, seq_len) / (peak * n_devices)
