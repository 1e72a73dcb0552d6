"""`train --compile-only`: compile the real train step for a target and say whether it fits.

The target is this machine's devices or, with `--topology v5e:16x16 [--slices N]`, a TPU slice
described by libtpu on any host (gpt2_jax/topology.py). The step is the one `train` would run:
`Trainer.build` on those devices decides every platform setting from them (gpt2_jax/target.py),
so a step compiled for a TPU from a CPU host holds the Mosaic attention kernels. The state is
never allocated: the step is lowered from abstract arrays and compiled, which gives XLA's
memory and cost analyses and the optimized HLO.

The report: devices, chip, mesh; per-device arguments / temporaries / outputs / peak against the
chip's HBM and whether it fits; XLA FLOPs and HBM bytes per step; counts of each collective and
of Pallas kernel calls in the compiled HLO; compile seconds; a roofline estimate of step time
and MFU. A config that cannot fit ends with ConfigError naming the need, the HBM and the levers;
when a first-order estimate (parameters, optimizer state and activations, Korthikanti et al.)
already exceeds HBM by ESTIMATE_MARGIN, it says so before compiling.

Roofline (an estimate, stated as one, and a bound: it assumes perfect overlap and peak rates):
step time >= max(compute, HBM, ICI, DCN). Compute = the model FLOPs (6N + 12LTD per token,
mfu.py), or XLA's FLOPs per device when larger, over the chip's peak bf16 FLOP/s. HBM = XLA's
bytes accessed over the chip's HBM bandwidth, only for unrolled layers: XLA's cost analysis counts
a loop body once, so for scanned layers (the TPU default) neither its FLOPs nor its bytes stand
for the step, and there is no HBM term. ICI =
FSDP traffic (all-gather of parameters for forward and backward, reduce-scatter of gradients:
3 x parameter bytes x (f-1)/f) plus the data-parallel gradient all-reduce within a slice
(2 x sharded gradient bytes x (d-1)/d), over the chip's ICI bandwidth. DCN = the all-reduce of
the sharded gradients across slices (2 x bytes x (s-1)/s) over the per-chip DCN bandwidth.
Tensor-parallel activation traffic is not modeled (reported as counts only).

References:
  MaxText, MaxText/train_compile.py (ahead-of-time compilation for a topology).
  Korthikanti et al. 2022, "Reducing Activation Recomputation in Large Transformer Models",
  section 4.1 (activation bytes per layer: s b h (34 + 5 a s / h) at 16 bits).
  Austin et al. 2025, "How to Scale Your Model" (rooflines; collective costs on TPU meshes).
"""

from __future__ import annotations

import re
import time
from typing import Callable

import jax
import numpy as np

from gpt2_jax import distributed, mfu, sharding
from gpt2_jax.chips import chip
from gpt2_jax.config import ConfigError, TrainConfig

GIB = 2**30


class DoesNotFit(ConfigError):
    """The step needs more memory per device than the chip has; `report` is the compile report
    (None when the estimate refused before compiling)."""

    def __init__(self, message: str, report: dict | None = None):
        super().__init__(message)
        self.report = report

ESTIMATE_MARGIN = 2.0  # refuse before compiling only when the estimate is this far over HBM
COLLECTIVES = ("all-gather", "reduce-scatter", "all-reduce", "all-to-all", "collective-permute")
KERNEL_CALLS = ("tpu_custom_call", "__gpu$xla.gpu.triton")


def compile_report(cfg: TrainConfig, devices: list | None = None, *, topology: str | None = None,
                   say: Callable[[str], None] = print) -> dict:
    """Compiles the train step of `cfg` for `devices` (default: this machine's) and returns the
    report (module docstring); raises ConfigError when it cannot fit the chip's memory."""
    from gpt2_jax.train import Trainer  # train imports this module's callers, not the reverse

    if devices is None:  # this machine's devices: of every process of a multi-host job
        distributed.initialize(cfg.distributed)
    trainer = Trainer.build(cfg, devices)
    tgt, decisions = trainer.target, trainer.decisions
    row = chip(tgt.device_kind) if tgt.platform != "cpu" else None
    estimate = estimate_bytes_per_device(cfg, trainer)
    if row is not None and estimate["total"] > ESTIMATE_MARGIN * row.hbm_bytes:
        raise DoesNotFit(_no_fit(cfg, estimate["total"], row, "estimated before compiling"))

    t0 = time.perf_counter()
    try:  # the step traces under Trainer's building_for(its mesh's devices)
        compiled = trainer.train_step.lower(trainer.abstract_state, trainer.abstract_batch()).compile()
    except jax.errors.JaxRuntimeError as err:  # the TPU compiler itself refuses programs that overflow HBM
        need = _compiler_need(str(err))
        if row is None or need is None:
            raise
        raise DoesNotFit(_no_fit(cfg, need, row, "the compiler's count of temporaries alone")) from None
    seconds = time.perf_counter() - t0
    memory = compiled.memory_analysis()
    cost = compiled.cost_analysis()
    cost = (cost[0] if isinstance(cost, (list, tuple)) else cost) or {}
    hlo = compiled.as_text()

    n = trainer.mesh.size
    report = {
        "topology": topology,
        "slices": sharding.slice_count(list(trainer.mesh.devices.flat)),
        "devices": n,
        "platform": tgt.platform,
        "device_kind": tgt.device_kind,
        "chip": None if row is None else row.name,
        "mesh": dict(trainer.mesh.shape),
        "rules": cfg.mesh.rules,
        "decisions": {"attention": decisions.attention, "scan_layers": decisions.scan_layers,
                      "remat": decisions.remat, "why": decisions.why},
        "batch_size": cfg.batch_size,
        "seq_len": cfg.seq_len,
        "compile_seconds": seconds,
        "argument_bytes": int(memory.argument_size_in_bytes),
        "output_bytes": int(memory.output_size_in_bytes),
        "alias_bytes": int(memory.alias_size_in_bytes),
        "temp_bytes": int(memory.temp_size_in_bytes),
        "estimated_bytes": int(estimate["total"]),
        "xla_flops_per_device": float(cost.get("flops", float("nan"))),
        "xla_hbm_bytes_per_device": float(cost.get("bytes accessed", float("nan"))),
        "model_flops_per_step": mfu.flops_per_token(cfg.model, cfg.seq_len) * cfg.batch_size * cfg.seq_len,
        "collectives": collective_counts(hlo),
        "kernel_custom_calls": sum(hlo.count(f'custom_call_target="{name}"') for name in KERNEL_CALLS),
    }
    # Donated state aliases its outputs, so peak ~ arguments + temporaries + non-aliased outputs.
    report["peak_bytes"] = report["argument_bytes"] + report["temp_bytes"] + report["output_bytes"] - report["alias_bytes"]
    report["hbm_bytes"] = None if row is None else int(row.hbm_bytes)
    report["fits"] = None if row is None else report["peak_bytes"] <= row.hbm_bytes
    report["margin_bytes"] = None if row is None else int(row.hbm_bytes - report["peak_bytes"])
    report["roofline"] = None if row is None else roofline(cfg, trainer, report, row)
    _print(report, cfg, trainer, say)
    if report["fits"] is False:
        raise DoesNotFit(_no_fit(cfg, report["peak_bytes"], row, "compiled"), report)
    return report


def _compiler_need(message: str) -> float | None:
    """Bytes from XLA's "RESOURCE_EXHAUSTED: ... required for HLO temporaries (17.90G) exceeds
    available HBM (15.75G)", or None for any other error."""
    found = re.search(r"RESOURCE_EXHAUSTED.*?\(([\d.]+)([KMGT])\) exceeds available HBM", message, re.S)
    if not found:
        return None
    return float(found.group(1)) * 1024 ** "KMGT".index(found.group(2)) * 1024


def collective_counts(hlo: str) -> dict[str, int]:
    """Collective instructions in optimized HLO text; async pairs count once (their -start)."""
    counts = {}
    for name in COLLECTIVES:
        counts[name] = len(re.findall(rf"\s{name}(?:-start)?\(", hlo))
    return counts


def estimate_bytes_per_device(cfg: TrainConfig, trainer) -> dict[str, float]:
    """First-order HBM need per device: the state as sharded (exact) plus activations kept for
    the backward pass (Korthikanti et al. 2022, section 4.1) and the float32 logits."""
    state = sum(_shard_bytes(leaf) for leaf in jax.tree_util.tree_leaves(trainer.abstract_state))
    m, mesh = cfg.model, trainer.mesh.shape
    batch_shards = mesh["data"] * mesh["fsdp"]
    tokens = cfg.batch_size // cfg.grad_accum // batch_shards * cfg.seq_len  # per device per micro-batch
    half = np.dtype(m.dtype).itemsize / 2  # the formula counts 16-bit activations
    remat = trainer.decisions.remat
    per_token_layer = {"none": 34 * m.n_embd, "dots": 18 * m.n_embd, "full": 2 * m.n_embd}[remat] * half
    if remat == "none" and trainer.decisions.attention != "pallas":  # scores and probabilities materialized
        per_token_layer += 5 * m.n_head * cfg.seq_len * half
    activations = tokens * m.n_layer * per_token_layer / mesh["tensor"]
    logits = 2 * tokens * m.n_vocab_padded * 4 / mesh["tensor"]  # float32 logits and their gradient
    gradients = state / 3 if cfg.grad_accum > 1 else 0.0  # the accumulator (params-shaped)
    return {"state": state, "activations": activations, "logits": logits, "total": state + activations + logits + gradients}


def _shard_bytes(leaf) -> float:
    shape = leaf.sharding.shard_shape(leaf.shape) if getattr(leaf, "sharding", None) is not None else leaf.shape
    return float(np.prod(shape)) * np.dtype(leaf.dtype).itemsize


def roofline(cfg: TrainConfig, trainer, report: dict, row) -> dict:
    """Step time and MFU estimates (module docstring); every term is per device, in seconds."""
    n, mesh = report["devices"], trainer.mesh.shape
    slices = report["slices"]
    data_in_slice = mesh["data"] // slices
    model_flops = report["model_flops_per_step"] / n
    xla_flops, xla_bytes = report["xla_flops_per_device"], report["xla_hbm_bytes_per_device"]
    scanned = trainer.decisions.scan_layers
    compute = max(0.0 if scanned or not np.isfinite(xla_flops) else xla_flops, model_flops) / row.peak_bf16_flops
    params = sum(_shard_bytes(leaf) for leaf in jax.tree_util.tree_leaves(trainer.abstract_state.params))
    f = mesh["fsdp"]
    full_params = params * f  # a device's parameters gathered over fsdp (still split over tensor)
    ici_bytes = 3 * full_params * (f - 1) / f + 2 * params * (data_in_slice - 1) / max(data_in_slice, 1)
    dcn_bytes = 2 * params * (slices - 1) / slices
    ici = ici_bytes / row.ici_bandwidth
    dcn = dcn_bytes / row.dcn_bandwidth if row.dcn_bandwidth and slices > 1 else 0.0
    # XLA's cost analysis counts a loop body once, so with scanned layers its bytes say nothing
    # about the step's HBM traffic: no HBM term then (the estimate is compute and communication).
    memory = None if scanned or not np.isfinite(xla_bytes) else xla_bytes / row.hbm_bandwidth
    terms = {"compute": compute, "HBM": memory or 0.0, "ICI": ici, "DCN": dcn}
    step = max(terms.values())
    return {"compute_s": compute, "hbm_s": memory, "ici_s": ici, "dcn_s": dcn, "step_s": step,
            "bound": max(terms, key=terms.get),
            "mfu": model_flops / row.peak_bf16_flops / step if step else None,
            "tokens_per_sec": cfg.batch_size * cfg.seq_len / step if step else None}


def _no_fit(cfg: TrainConfig, need: float, row, when: str) -> str:
    return (f"model={_name(cfg)} batch_size={cfg.batch_size} needs ~{need / GIB:.1f} GiB per device ({when}) but a "
            f"{row.name} chip has {row.hbm_bytes / GIB:.1f} GiB; levers: model.remat=dots or full, a larger "
            f"mesh.fsdp (more chips), a smaller batch_size (or grad_accum), optim.mu_dtype=bfloat16")


def _name(cfg: TrainConfig) -> str:
    m = cfg.model
    return f"L{m.n_layer}-D{m.n_embd}"


def _print(report: dict, cfg: TrainConfig, trainer, say) -> None:
    gib = lambda b: f"{b / GIB:.2f} GiB"  # noqa: E731
    where = report["topology"] or "this machine"
    say(f"compile-only for {where}: {report['devices']} x {report['device_kind']}"
        f"{' in %d slices' % report['slices'] if report['slices'] > 1 else ''}; "
        f"{sharding.describe(trainer.mesh)}, rules {cfg.mesh.rules}; {trainer.decisions.describe(cfg.model)}; "
        f"batch {cfg.batch_size} x {cfg.seq_len}; compiled in {report['compile_seconds']:.1f} s")
    hbm = "" if report["hbm_bytes"] is None else (
        f" of {gib(report['hbm_bytes'])} HBM: {'fits' if report['fits'] else 'DOES NOT FIT'}, margin {gib(report['margin_bytes'])}")
    say(f"per-device memory: arguments {gib(report['argument_bytes'])}, temporaries {gib(report['temp_bytes'])}, "
        f"outputs {gib(report['output_bytes'])} (aliased {gib(report['alias_bytes'])}); peak ~ {gib(report['peak_bytes'])}{hbm}")
    scanned = " (a scanned layer body counted once)" if trainer.decisions.scan_layers else ""
    say(f"per step: XLA {report['xla_flops_per_device']:.4g} FLOPs and {report['xla_hbm_bytes_per_device']:.4g} HBM bytes "
        f"per device{scanned}; model (6N + 12LTD) {report['model_flops_per_step']:.4g} FLOPs in total")
    say(f"collectives in the compiled HLO{scanned}: " + ", ".join(f"{k} {v}" for k, v in report["collectives"].items())
        + f"; Pallas kernel calls: {report['kernel_custom_calls']}")
    r = report["roofline"]
    if r:
        hbm = "not estimated (scanned layers)" if r["hbm_s"] is None else f"{r['hbm_s'] * 1e3:.1f} ms"
        say(f"roofline ESTIMATE (perfect overlap, an upper bound on speed): compute {r['compute_s'] * 1e3:.1f} ms, "
            f"HBM {hbm}, ICI {r['ici_s'] * 1e3:.1f} ms, DCN {r['dcn_s'] * 1e3:.1f} ms -> step >= "
            f"{r['step_s'] * 1e3:.1f} ms ({r['bound']}-bound), MFU <= {100 * r['mfu']:.0f}%, "
            f"<= {r['tokens_per_sec']:,.0f} tokens/s")
