"""What each accelerator can do: peak FLOP/s, memory and bandwidths, looked up by device kind.

One table serves MFU (peak dense bf16 FLOP/s), the memory check of `--compile-only` (HBM per
device) and its roofline estimate (HBM, inter-chip and data-center bandwidth). Numbers are the
vendors' datasheet figures per chip (dense, no sparsity); where a vendor publishes none, the row
says what was assumed. JAX names the chips by `device.device_kind`, e.g. "TPU v5 lite" for v5e,
"TPU v4", "TPU v5p" (also "TPU v5"), "TPU v6 lite" for v6e, "NVIDIA H100 80GB HBM3".

References (per chip):
  Cloud TPU docs, "TPU v4": 275 TFLOP/s bf16, 32 GiB HBM2 at 1200 GB/s. ICI: the TPU v4 paper
    (Jouppi et al. 2023, ISCA) gives 6 links of 50 GB/s per chip (used here: 300 GB/s).
  Cloud TPU docs, "TPU v5e": 197 TFLOP/s bf16, 16 GB HBM2 at 819 GB/s, ICI 400 GB/s
    bidirectional per chip, per-host NIC 2 x 100 Gbps for 8 chips (data-center network 6.4 Tbps
    per 256-chip pod = 3.125 GB/s per chip).
  Cloud TPU docs, "TPU v5p": 459 TFLOP/s bf16, 95 GB HBM2e at 2765 GB/s, ICI 4800 Gbps.
  Cloud TPU docs, "TPU v6e": 918 TFLOP/s bf16, 32 GB HBM at 1638 GB/s, ICI 800 GB/s
    bidirectional per chip.
  DCN for v4, v5p, v6e: no per-chip figure is published; v5e's 3.125 GB/s per chip is assumed.
  HBM sizes are taken as GiB for v5e and v6e: libtpu's compiler reports 15.75 GiB available on a
  v5e (16 GiB less its reserve) when a program does not fit.
  NVIDIA H100 SXM / H200 datasheets: 989 TFLOP/s dense bf16; 80 GB at 3.35 TB/s (H100),
    141 GB at 4.8 TB/s (H200); NVLink 900 GB/s. A100 SXM: 312 TFLOP/s, 80 GB at 2.04 TB/s,
    NVLink 600 GB/s.
"""

from __future__ import annotations

import dataclasses

GB = 1e9
GIB = 2**30
_V5E_DCN = 6.4e12 / 8 / 256  # bytes/s per chip: 6.4 Tbps per 256-chip pod


@dataclasses.dataclass(frozen=True)
class Chip:
    name: str  # the Cloud TPU / vendor name, e.g. "v5e"
    peak_bf16_flops: float  # dense bf16 FLOP/s per device
    hbm_bytes: float  # memory per device
    hbm_bandwidth: float  # bytes/s
    ici_bandwidth: float  # bytes/s per device, bidirectional (NVLink on GPUs)
    dcn_bandwidth: float | None  # bytes/s per device between slices (None: not a TPU slice)


# device_kind substring (lower case) -> chip; first match wins, so longer keys come first.
CHIPS: dict[str, Chip] = {
    "tpu v6 lite": Chip("v6e", 918e12, 32 * GIB, 1638 * GB, 800 * GB, _V5E_DCN),
    "tpu v6e": Chip("v6e", 918e12, 32 * GIB, 1638 * GB, 800 * GB, _V5E_DCN),
    "tpu v5 lite": Chip("v5e", 197e12, 16 * GIB, 819 * GB, 400 * GB, _V5E_DCN),
    "tpu v5e": Chip("v5e", 197e12, 16 * GIB, 819 * GB, 400 * GB, _V5E_DCN),
    "tpu v5p": Chip("v5p", 459e12, 95 * GB, 2765 * GB, 600 * GB, _V5E_DCN),
    "tpu v5": Chip("v5p", 459e12, 95 * GB, 2765 * GB, 600 * GB, _V5E_DCN),
    "tpu v4": Chip("v4", 275e12, 32 * GIB, 1200 * GB, 300 * GB, _V5E_DCN),
    "h200": Chip("H200", 989e12, 141 * GB, 4800 * GB, 900 * GB, None),
    "h100": Chip("H100", 989e12, 80 * GB, 3350 * GB, 900 * GB, None),
    "a100": Chip("A100", 312e12, 80 * GB, 2039 * GB, 600 * GB, None),
}


def chip(device_kind: str) -> Chip | None:
    """The table row for a JAX device kind, or None (CPUs, unknown accelerators)."""
    kind = device_kind.lower()
    for key, row in CHIPS.items():
        if key in kind:
            return row
    return None
