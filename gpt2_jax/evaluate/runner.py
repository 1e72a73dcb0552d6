"""`evaluate(...)`: load a checkpoint, check its vocabulary, run the requested tasks.

Any checkpoint `train`, `import-hf` or `export --format params` writes is accepted (loaded with
`checkpoint.resolve_dir/restore_meta/restore`); the vocabulary is the one named in the
checkpoint's metadata unless `vocab` overrides it, and must have exactly the model's n_vocab.
"""

from __future__ import annotations

import pathlib
import time

from gpt2_jax.evaluate import registry
from gpt2_jax.evaluate.context import PROTOCOLS, EvalContext
from gpt2_jax.evaluate.errors import EvalError
from gpt2_jax.evaluate.scorer import Scorer


def parse_tasks(spec: str) -> list[registry.Task]:
    names = [n.strip() for n in spec.split(",") if n.strip()]
    if not names:
        raise EvalError(f"--task {spec!r} names no task; known tasks: {', '.join(registry.TASKS)}")
    return [registry.get(n) for n in names]


def resolve_stride(protocol: str, stride: int | None, n_ctx: int) -> int:
    if protocol not in PROTOCOLS:
        raise EvalError(f"unknown protocol {protocol!r}; choose one of {', '.join(PROTOCOLS)}")
    if stride is None:
        return n_ctx if protocol == "lm-eval" else max(1, n_ctx // 2)
    if not 1 <= stride <= n_ctx:
        raise EvalError(f"--stride {stride} is outside 1..n_ctx={n_ctx} of this model; choose a stride of at most {n_ctx}")
    if protocol == "lm-eval" and stride != n_ctx:
        raise EvalError(f"--stride {stride} with --protocol lm-eval: lm-eval scores disjoint windows of n_ctx={n_ctx}; "
                        f"omit --stride or use --protocol paper")
    return stride


def load_model(ckpt_dir: str, vocab: str | None):
    from gpt2_jax import checkpoint
    from gpt2_jax.tokenizer import load_tokenizer

    directory = checkpoint.resolve_dir(ckpt_dir)
    step, meta, _ = checkpoint.restore_meta(directory)
    name = vocab or meta.get("vocab") or "gpt2"
    if name == "unknown":
        raise EvalError(f"checkpoint {ckpt_dir!r} does not record its vocabulary; pass --vocab gpt2 or --vocab DIR")
    tokenizer = load_tokenizer(name)
    _, cfg, params, _ = checkpoint.restore(directory, step=step)
    if tokenizer.n_vocab != cfg.model.n_vocab:
        raise EvalError(f"vocabulary {name!r} has {tokenizer.n_vocab} tokens but checkpoint {ckpt_dir!r} has "
                        f"n_vocab={cfg.model.n_vocab}; pass the --vocab the model was trained with")
    return step, cfg, params, tokenizer


def evaluate(ckpt_dir: str, task_spec: str, data: str, *, protocol: str = "paper", stride: int | None = None,
             batch_size: int = 8, limit: int | None = None, vocab: str | None = None, progress: bool = True,
             overlap: str | None = None) -> dict:
    """{"results": {task: metrics}, "meta": {...}} for one checkpoint."""
    tasks = parse_tasks(task_spec)
    if protocol not in PROTOCOLS:
        raise EvalError(f"unknown protocol {protocol!r}; choose one of {', '.join(PROTOCOLS)}")
    if batch_size < 1:
        raise EvalError(f"--batch-size {batch_size} must be at least 1")
    if limit is not None and limit < 1:
        raise EvalError(f"--limit {limit} must be at least 1")
    paths = registry.data_paths(tasks, data)
    step, cfg, params, tokenizer = load_model(ckpt_dir, vocab)
    stride = resolve_stride(protocol, stride, cfg.model.n_ctx)
    scorer = Scorer(cfg.model, params, batch_size=batch_size, mesh_cfg=cfg.mesh, progress=progress)
    ctx = EvalContext(scorer, tokenizer, protocol, stride, limit)
    if overlap is not None:
        from gpt2_jax.evaluate.contamination import load

        ctx.overlap = load(overlap, progress=progress)
    results, seconds = {}, {}
    for task, path in zip(tasks, paths):
        if ctx.overlap is not None:
            ctx.overlap.reset()
        start, tokens = time.perf_counter(), scorer.tokens
        results[task.name] = task.run(ctx, path, task.name)
        elapsed = time.perf_counter() - start
        seconds[task.name] = {"seconds": round(elapsed, 3),
                              "tokens_per_sec": round((scorer.tokens - tokens) / max(elapsed, 1e-9), 1)}
    meta = {"checkpoint": str(pathlib.Path(ckpt_dir)), "step": step, "vocab": tokenizer.name, "n_ctx": cfg.model.n_ctx,
            "batch_size": scorer.batch_size, "mesh": dict(scorer.mesh.shape), "rules": scorer.rules,
            "data": dict(zip([t.name for t in tasks], paths)), "timing": seconds}
    return {"results": results, "meta": meta}
