"""The PyTorch peer for GPU speed: a nanoGPT-style GPT-2 trained with the same shapes and work as ours.

Same work per step as `gpt2_jax.train` with a preset: GPT-2 blocks (pre-LN, tanh-GELU, tied
output projection over the vocabulary padded to a multiple of 128, as nanoGPT pads 50257 ->
50304), embedding/residual/attention dropout as given, mean next-token cross-entropy, backward,
global-norm clipping at 1.0, AdamW (betas 0.9/0.95, eps 1e-8, weight decay 0.1 on matrices).
As nanoGPT runs it on a GPU: flash SDPA (`F.scaled_dot_product_attention(is_causal=True)`),
fused AdamW, bf16 autocast over fp32 master weights, TF32 allowed; `--compile` wraps the model
in `torch.compile`. Random tokens, one fixed batch (no input pipeline on either side).

    python experiments/benchmarks/nanogpt_peer.py --preset gpt2 --batch 16 --seq 1024 [--compile]
    python experiments/benchmarks/nanogpt_peer.py --smoke          # tiny, on the CPU, float32

Prints one JSON line (tokens/s, MFU by gpt2_jax/mfu.py's formula: 6N + 12LTD FLOPs per token
over the device's peak dense bf16 FLOP/s), which gpu_speed.py reads.

References:
  karpathy/nanoGPT model.py and train.py (architecture, fused AdamW, autocast, torch.compile).
  Dao 2023, "FlashAttention-2" (the SDPA backend PyTorch picks on Hopper).
"""

from __future__ import annotations

import argparse
import json
import math
import pathlib
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

ROOT = pathlib.Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # the shapes and the FLOPs formula come from gpt2_jax (stdlib + jax only)
    sys.path.insert(0, str(ROOT))


class Block(nn.Module):
    def __init__(self, D: int, N: int, resid_pdrop: float, attn_pdrop: float):
        super().__init__()
        self.N, self.attn_pdrop = N, attn_pdrop
        self.ln_1, self.ln_2 = nn.LayerNorm(D, eps=1e-5), nn.LayerNorm(D, eps=1e-5)
        self.c_attn, self.attn_proj = nn.Linear(D, 3 * D), nn.Linear(D, D)
        self.c_fc, self.mlp_proj = nn.Linear(D, 4 * D), nn.Linear(4 * D, D)
        self.drop = nn.Dropout(resid_pdrop)

    def forward(self, x):
        B, T, D = x.shape
        q, k, v = self.c_attn(self.ln_1(x)).split(D, dim=2)
        q, k, v = (t.view(B, T, self.N, D // self.N).transpose(1, 2) for t in (q, k, v))  # [B, N, T, H]
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True, dropout_p=self.attn_pdrop if self.training else 0.0)
        x = x + self.drop(self.attn_proj(y.transpose(1, 2).reshape(B, T, D)))
        return x + self.drop(self.mlp_proj(F.gelu(self.c_fc(self.ln_2(x)), approximate="tanh")))


class GPT(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.wte = nn.Embedding(cfg.n_vocab_padded, cfg.n_embd)
        self.wpe = nn.Embedding(cfg.n_ctx, cfg.n_embd)
        self.drop = nn.Dropout(cfg.embd_pdrop)
        self.h = nn.ModuleList(Block(cfg.n_embd, cfg.n_head, cfg.resid_pdrop, cfg.attn_pdrop)
                               for _ in range(cfg.n_layer))
        self.ln_f = nn.LayerNorm(cfg.n_embd, eps=1e-5)
        for name, p in self.named_parameters():  # GPT-2's init: N(0, 0.02), residual projections scaled
            if name.endswith(("attn_proj.weight", "mlp_proj.weight")):
                nn.init.normal_(p, std=0.02 / math.sqrt(2 * cfg.n_layer))
            elif p.dim() == 2:
                nn.init.normal_(p, std=0.02)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.zeros_(m.bias)

    def forward(self, idx, targets):
        x = self.drop(self.wte(idx) + self.wpe(torch.arange(idx.shape[1], device=idx.device)))
        for block in self.h:
            x = block(x)
        logits = F.linear(self.ln_f(x), self.wte.weight)  # tied head
        return F.cross_entropy(logits.float().view(-1, logits.shape[-1]), targets.reshape(-1))


def run(preset: str, batch: int, seq: int, *, compile: bool, steps: int, warmup: int, embd_pdrop: float,
        resid_pdrop: float, attn_pdrop: float, device: str | None = None, compile_backend: str = "inductor") -> dict:
    import dataclasses

    from gpt2_jax import mfu
    from gpt2_jax.config import preset as model_preset

    cfg = dataclasses.replace(model_preset(preset), n_ctx=max(seq, model_preset(preset).n_ctx), embd_pdrop=embd_pdrop,
                              resid_pdrop=resid_pdrop, attn_pdrop=attn_pdrop)
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    cuda = device == "cuda"
    torch.manual_seed(0)
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    model = GPT(cfg).to(device).train()
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}],
                            lr=6e-4, betas=(0.9, 0.95), eps=1e-8, fused=cuda)
    forward = torch.compile(model, backend=compile_backend) if compile else model
    ids = torch.randint(0, cfg.n_vocab, (batch, seq + 1), generator=torch.Generator().manual_seed(0)).to(device)
    x, y = ids[:, :-1].contiguous(), ids[:, 1:].contiguous()
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if cuda else torch.autocast("cpu", enabled=False)

    def step() -> torch.Tensor:
        with autocast:
            loss = forward(x, y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss

    sync = torch.cuda.synchronize if cuda else (lambda: None)
    t0 = time.perf_counter()
    first_loss = step().item()
    first_s = time.perf_counter() - t0
    for _ in range(warmup):
        step()
    sync()
    t0 = time.perf_counter()
    for _ in range(steps):
        loss = step().detach()
    sync()
    sec = (time.perf_counter() - t0) / steps
    kind = torch.cuda.get_device_name() if cuda else "cpu"
    tps = batch * seq / sec
    return dict(impl="torch.compile" if compile else "torch eager", preset=preset, B=batch, T=seq, ms=1e3 * sec,
                tokens_per_s=tps, mfu=mfu.mfu(tps, cfg, seq, kind, 1), first_s=first_s, loss_first=first_loss,
                loss_last=float(loss), device=kind, torch=torch.__version__,
                params=sum(p.numel() for p in model.parameters()))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--preset", default="gpt2")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--seq", type=int, default=1024)
    ap.add_argument("--compile", action="store_true", help="torch.compile the model (default: eager)")
    ap.add_argument("--steps", type=int, default=10, help="timed steps")
    ap.add_argument("--warmup", type=int, default=3, help="untimed steps after the first")
    ap.add_argument("--embd-pdrop", type=float, default=0.1)
    ap.add_argument("--resid-pdrop", type=float, default=0.1)
    ap.add_argument("--attn-pdrop", type=float, default=0.0)
    ap.add_argument("--smoke", action="store_true", help="tiny preset, batch 2 x 64, 2 steps (CPU check)")
    args = ap.parse_args()
    if args.smoke:
        args.preset, args.batch, args.seq, args.steps, args.warmup = "tiny", 2, 64, 2, 1
    result = run(args.preset, args.batch, args.seq, compile=args.compile, steps=args.steps, warmup=args.warmup,
                 embd_pdrop=args.embd_pdrop, resid_pdrop=args.resid_pdrop, attn_pdrop=args.attn_pdrop)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
