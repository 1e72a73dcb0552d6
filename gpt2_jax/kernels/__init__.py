"""Pallas flash attention kernels (GPU via Triton, TPU via Mosaic); independent of the rest of gpt2_jax."""

from gpt2_jax.kernels.block_sizes import BlockSizes, KernelConfigError
from gpt2_jax.kernels.dropout_mask import keep_mask, seed_from_key
from gpt2_jax.kernels.flash_attention import default_backend, flash_attention

__all__ = ["BlockSizes", "KernelConfigError", "default_backend", "flash_attention", "keep_mask", "seed_from_key"]
