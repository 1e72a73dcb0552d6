"""Tile sizes of the flash attention kernels, validated once, before anything is traced.

A kernel tiles the [T, T] score matrix of one (batch row, head) into [block_q, block_k] tiles.
The forward pass walks key tiles for each query tile; the backward pass has two kernels, one that
walks query tiles for each key tile (dK, dV) and one that walks key tiles for each query tile (dQ),
so each of the three has its own pair. The constraints differ per backend: Triton's `tl.dot`
wants power-of-two tiles of at least 16; Mosaic (TPU) wants query tiles in multiples of 8
sublanes and key tiles in multiples of 128 lanes, because key tiles are the lane dimension of
the score tile.

References:
  Dao 2023, "FlashAttention-2", section 3 (tiling, work partitioning between the two passes).
  Triton tutorial 06 "Fused Attention" (tile sizes for head size 64 on Hopper).
"""

from __future__ import annotations

import dataclasses
import math

BACKENDS = ("gpu", "tpu")
MAX_HEAD_DIM = 256  # a [block, H] tile of q, k, v and the accumulator must fit in on-chip memory


class KernelConfigError(ValueError):
    """A block size or input the kernels cannot tile; the message names the value and a fix."""


@dataclasses.dataclass(frozen=True)
class BlockSizes:
    """Tile sizes; `num_warps`/`num_stages` only matter for the GPU (Triton) kernels."""

    block_q: int = 128
    block_k: int = 64
    block_q_dkv: int = 32
    block_k_dkv: int = 128
    block_q_dq: int = 128
    block_k_dq: int = 32
    num_warps: int = 4
    num_stages: int = 2

    @classmethod
    def default(cls, backend: str) -> "BlockSizes":
        if backend == "tpu":  # 128 x 128 score tiles match the MXU and the lane width
            return cls(block_q=128, block_k=128, block_q_dkv=128, block_k_dkv=128, block_q_dq=128, block_k_dq=128)
        return cls()

    def pairs(self) -> dict[str, tuple[int, int]]:
        return {
            "forward": (self.block_q, self.block_k),
            "dkv": (self.block_q_dkv, self.block_k_dkv),
            "dq": (self.block_q_dq, self.block_k_dq),
        }

    def validate(self, backend: str) -> "BlockSizes":
        if backend not in BACKENDS:
            raise KernelConfigError(f"kernel backend={backend!r} is not one of {BACKENDS}")
        for name, value in dataclasses.asdict(self).items():
            if not isinstance(value, int) or value < 1:
                raise KernelConfigError(f"BlockSizes.{name}={value!r} must be a positive int")
        for pass_name, (bq, bk) in self.pairs().items():
            if backend == "gpu":
                for b in (bq, bk):
                    if b < 16 or b & (b - 1):
                        raise KernelConfigError(
                            f"{pass_name} block size {b} cannot be tiled by the Triton kernel: it needs a power of "
                            f"two >= 16 (tl.dot's smallest tile); try 16, 32, 64 or 128"
                        )
            else:
                if bq % 8:
                    raise KernelConfigError(
                        f"{pass_name} query block {bq} is not a multiple of 8 (TPU sublanes); try {max(8, bq // 8 * 8)}"
                    )
                if bk % 128:
                    raise KernelConfigError(
                        f"{pass_name} key block {bk} is not a multiple of 128 (TPU lanes); try {max(128, bk // 128 * 128)}"
                    )
        return self

    def fitted(self, backend: str, seq_len: int) -> tuple["BlockSizes", int]:
        """Blocks shrunk for short sequences (no tile larger than the padded sequence needs),
        and the padded length every tile divides."""
        self.validate(backend)
        smallest = 16 if backend == "gpu" else 128
        cap = max(smallest, 1 << max(0, (seq_len - 1).bit_length()))  # next power of two >= seq_len
        shrink = {}
        for name in ("block_q", "block_k", "block_q_dkv", "block_k_dkv", "block_q_dq", "block_k_dq"):
            value = getattr(self, name)
            shrink[name] = min(value, cap) if value > cap and cap % 8 == 0 else value
        fitted = dataclasses.replace(self, **shrink).validate(backend)
        tile = math.lcm(*[b for pair in fitted.pairs().values() for b in pair])
        return fitted, -(-seq_len // tile) * tile
