"""Sweep definitions as code: points over model shape and token budget, the shape rule, isoFLOP points.

A sweep file (`experiments/*.py`) has a `get_sweep()` returning a `Sweep`: a base `TrainConfig`
(data, batch, schedule; everything the points share) and a list of `Point`s, each a model shape,
a number of optimizer steps (tokens D = steps * batch_size * seq_len) and optionally its own
learning rate. Helpers build the usual designs:

  grid(shapes, steps)          every shape at every step budget (Kaplan et al.'s L(N, D) grid);
  isoflop(budgets, shapes)     for each compute budget C, every shape trained for the steps that
                               make its training FLOPs hit C (Hoffmann et al.'s approach 2);
  shape_for_params(N)          the shape rule: a target non-embedding parameter count N -> layers
                               and width at a fixed aspect ratio d_model / n_layer and head size.

FLOPs. Training FLOPs of a point are D * flops_per_token, with flops_per_token = 6 * N + 6 * V * d
+ 12 * L * T * d (mfu.flops_per_token: the non-embedding parameters N, the tied output projection,
and attention's QK^T and AV over T keys, forward + backward). Kaplan's C = 6 * N * D (N
non-embedding, no attention) is reported next to it. isoFLOP points use the full formula, so the
attention and logit FLOPs, which dominate tiny models, are counted.

Cooldown branches (Hagele et al. 2024). A WSD long run (optim.schedule='wsd') holds the learning
rate constant until its own cooldown; `wsd_branches(parent, at_steps, f)` makes, for each step S,
a point that starts from the parent's checkpoint at S (`branch_from=(parent, S)`) and runs the
length T whose cooldown (the last round(f T) steps) starts exactly at S. Its steps before S are
the parent's steps (same lr at every one of them, same data order: batches are a pure function
of seed and step), so the branch is the run a separate WSD run of T steps would have been, for
the cost of its cooldown only. The sweep checks this (check_branch) and makes the parent
checkpoint, and keep, every branch step.

References:
  Kaplan et al. 2020, sections 2.1 (N, C = 6ND) and 3.1 (loss depends weakly on the aspect ratio).
  Hoffmann et al. 2022, section 3.2 (isoFLOP profiles).
  Chowdhery et al. 2022 (PaLM), appendix B (attention FLOPs).
  Hagele et al. 2024, "Scaling Laws and Compute-Optimal Training Beyond Fixed Training Durations",
  arXiv:2405.18392, section 4 (cooldown branches of one constant-lr run).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import pathlib
import re
from typing import Callable, Iterable

from gpt2_jax.config import ConfigError, ModelConfig, TrainConfig, call_in_file, preset, to_dict
from gpt2_jax.scaling.errors import ScalingError

_NAME = re.compile(r"^[A-Za-z0-9_.+-]+$")


@dataclasses.dataclass(frozen=True)
class Point:
    """One training run of a sweep. `name` is its workdir under OUT/points/."""

    name: str
    model: ModelConfig
    steps: int
    lr: float | None = None  # None = the base config's optim.lr
    # optim fields that differ from the base config's, e.g. {"schedule": "cosine"}
    optim: tuple[tuple[str, object], ...] = ()
    # (parent point name, step): start from the parent's checkpoint at that step (a cooldown branch)
    branch_from: tuple[str, int] | None = None
    seed: int | None = None  # None = the base config's seed; repeats of a point differ only here

    def __post_init__(self):
        if not _NAME.match(self.name):
            raise ScalingError(f"point name {self.name!r} must use only letters, digits and _.+- (it names a directory)")
        if self.steps < 1:
            raise ScalingError(f"point {self.name!r}: steps={self.steps} must be >= 1")
        if isinstance(self.optim, dict):
            object.__setattr__(self, "optim", tuple(sorted(self.optim.items())))
        if self.branch_from is not None and not (0 < self.branch_from[1] < self.steps):
            raise ScalingError(f"point {self.name!r}: branch step {self.branch_from[1]} must be in (0, steps={self.steps})")


@dataclasses.dataclass(frozen=True)
class Sweep:
    """A base config and the points trained on top of it."""

    base: TrainConfig
    points: tuple[Point, ...]
    devices_per_point: int = 0  # 0 = all devices (one point at a time); see runner.py for packing

    def __post_init__(self):
        names = [p.name for p in self.points]
        dup = sorted({n for n in names if names.count(n) > 1})
        if not self.points:
            raise ScalingError("the sweep has no points; get_sweep() must return at least one Point")
        if dup:
            raise ScalingError(f"the sweep has duplicate point names {dup}; every point needs its own name")
        by_name = {p.name: p for p in self.points}
        for p in self.points:
            if p.branch_from is not None:
                check_branch(self, p, by_name)

    def point(self, name: str) -> Point:
        return next(p for p in self.points if p.name == name)

    def branch_steps(self, parent: Point) -> list[int]:
        """The steps at which other points branch off `parent` (sorted, distinct)."""
        return sorted({p.branch_from[1] for p in self.points if p.branch_from and p.branch_from[0] == parent.name})

    def config(self, point: Point, workdir: str | pathlib.Path) -> TrainConfig:
        """The TrainConfig that trains `point` in `workdir` (validated like any config). A parent of
        branches checkpoints at every branch step and keeps those checkpoints."""
        try:
            optim = self.base.optim if point.lr is None else dataclasses.replace(self.base.optim, lr=point.lr)
            optim = dataclasses.replace(optim, **dict(point.optim))
            model = dataclasses.replace(point.model, n_vocab=self.base.model.n_vocab)
            extra = {}
            at = self.branch_steps(point)
            if at:
                every = math.gcd(*at, *([self.base.ckpt_every] if self.base.ckpt_every else []))
                extra = {"ckpt_every": every, "keep_checkpoints": point.steps // every + 1}
            if point.seed is not None:
                extra["seed"] = point.seed
            return dataclasses.replace(self.base, model=model, optim=optim, steps=point.steps, workdir=str(workdir),
                                       **extra)
        except (ConfigError, TypeError) as e:
            raise ScalingError(f"point {point.name!r}: {e}") from None


def check_branch(sweep: Sweep, point: Point, by_name: dict[str, Point]) -> None:
    """A branch must be the parent's run continued: same model, the parent's steps before the
    branch step must have the learning rates the branch's schedule gives them (WSD: the parent's
    cooldown starts at or after the branch step, the branch's exactly at it)."""
    from gpt2_jax.optim import cooldown_start

    parent_name, step = point.branch_from
    parent = by_name.get(parent_name)
    where = f"point {point.name!r} branches from {parent_name!r} at step {step}"
    if parent is None:
        raise ScalingError(f"{where}, but the sweep has no point {parent_name!r}")
    if parent.branch_from is not None:
        raise ScalingError(f"{where}, which is itself a branch; branch from the long run instead")
    if step >= parent.steps:
        raise ScalingError(f"{where}, but the parent runs only {parent.steps} steps; use a step below {parent.steps}")
    mine, theirs = (sweep.config(p, "unused") for p in (point, parent))
    if mine.model != theirs.model:
        raise ScalingError(f"{where}, but the models differ; a branch continues its parent's model")
    if mine.seed != theirs.seed:
        raise ScalingError(f"{where}, but its seed is {mine.seed} and the parent's {theirs.seed}; a branch continues "
                           f"its parent's run (give it seed={theirs.seed})")
    same = ("lr", "warmup_steps", "min_lr_ratio", "schedule", "weight_decay", "beta1", "beta2", "eps", "grad_clip")
    diff = [k for k in same if getattr(mine.optim, k) != getattr(theirs.optim, k)]
    if diff or mine.optim.schedule != "wsd":
        raise ScalingError(f"{where}: both must use optim.schedule='wsd' with the same {', '.join(diff or ['schedule'])}")
    if cooldown_start(mine.optim, mine.steps) != step:
        raise ScalingError(f"{where}, but its cooldown starts at step {cooldown_start(mine.optim, mine.steps)}; "
                           f"use steps=cooldown_branch_steps({step}, fraction) so the cooldown starts at the branch")
    if cooldown_start(theirs.optim, theirs.steps) < step:
        raise ScalingError(f"{where}, after the parent's own cooldown began (step "
                           f"{cooldown_start(theirs.optim, theirs.steps)}); branch before it")


def cooldown_branch_steps(at_step: int, cooldown_fraction: float) -> int:
    """The total steps T of a WSD run whose cooldown (the last round(f T) steps) starts at `at_step`."""
    t = max(at_step + 1, int(at_step / (1.0 - cooldown_fraction)) - 2)
    while t - round(cooldown_fraction * t) < at_step:
        t += 1
    if t - round(cooldown_fraction * t) != at_step:
        raise ScalingError(f"no run length puts a {cooldown_fraction:g} cooldown at step {at_step}")
    return t


def wsd_branches(parent: Point, at_steps: Iterable[int], cooldown_fraction: float) -> list[Point]:
    """Cooldown branches of a WSD long run: for each step S, a point named PARENT-cdS that resumes
    the parent's checkpoint at S and cools down over the next ~fraction/(1-fraction) * S steps."""
    return [Point(f"{parent.name}-cd{s}", parent.model, cooldown_branch_steps(s, cooldown_fraction), parent.lr,
                  tuple(sorted({**dict(parent.optim), "cooldown_fraction": cooldown_fraction}.items())), (parent.name, s),
                  seed=parent.seed)
            for s in at_steps]


def non_embedding_params(model: ModelConfig) -> int:
    from gpt2_jax.model import non_embedding_params as count

    return count(model)


def total_params(model: ModelConfig) -> int:
    """All parameters, the embeddings (padded vocabulary) included."""
    return non_embedding_params(model) + model.n_vocab_padded * model.n_embd + model.n_ctx * model.n_embd


def flops_per_token(model: ModelConfig, seq_len: int) -> float:
    from gpt2_jax.mfu import flops_per_token as per_token

    return per_token(model, seq_len)


def tokens(cfg: TrainConfig) -> int:
    return cfg.steps * cfg.batch_size * cfg.seq_len


def describe(cfg: TrainConfig) -> dict:
    """N (non-embedding and total), D, and both FLOPs conventions of one point's config."""
    n = non_embedding_params(cfg.model)
    d = tokens(cfg)
    return {"params": n, "params_total": total_params(cfg.model), "tokens": d,
            "flops": flops_per_token(cfg.model, cfg.seq_len) * d, "flops_6nd": 6.0 * n * d}


def config_hash(cfg: TrainConfig) -> str:
    """Identifies what a point trains: the whole config except where it lives (workdir, data.path)."""
    tree = to_dict(cfg)
    tree.pop("workdir")
    tree["data"].pop("path")
    if tree["optim"]["schedule"] == "cosine":  # as before WSD existed: hashes of older sweeps still match
        for key in ("schedule", "cooldown_fraction", "cooldown_shape"):
            tree["optim"].pop(key)
    return hashlib.sha256(json.dumps(tree, sort_keys=True).encode()).hexdigest()[:16]


def shape_for_params(n_params: float, *, aspect_ratio: float = 32.0, head_dim: int = 16,
                     base: ModelConfig | None = None) -> ModelConfig:
    """The shape rule: the model with about `n_params` non-embedding parameters (N ~ 12 L d^2)
    and d_model / n_layer ~ `aspect_ratio`, d_model a multiple of `head_dim`. Kaplan et al. found
    the loss within a few percent over aspect ratios 20-200 at fixed N, so one fixed ratio keeps
    N the only variable."""
    if not n_params > 0:
        raise ScalingError(f"target parameter count {n_params} must be > 0")
    n_layer = max(1, round((n_params / (12.0 * aspect_ratio**2)) ** (1.0 / 3.0)))
    n_embd = max(head_dim, round((n_params / (12.0 * n_layer)) ** 0.5 / head_dim) * head_dim)
    base = base or preset("tiny")
    return dataclasses.replace(base, n_layer=n_layer, n_embd=n_embd, n_head=n_embd // head_dim)


def shape_name(model: ModelConfig) -> str:
    return f"L{model.n_layer}-d{model.n_embd}"


def grid(base: TrainConfig, shapes: Iterable[ModelConfig], steps: Iterable[int],
         lr: Callable[[ModelConfig], float] | None = None) -> list[Point]:
    """Every shape at every step budget; `lr(model)` sets a learning rate per size."""
    return [Point(f"{shape_name(m)}-s{s}", m, s, None if lr is None else lr(m)) for m in shapes for s in steps]


def isoflop(base: TrainConfig, budgets: Iterable[float], shapes: Iterable[ModelConfig], *, min_steps: int = 10,
            lr: Callable[[ModelConfig], float] | None = None) -> list[Point]:
    """For each FLOPs budget C, each shape trained for round(C / (flops_per_token * tokens per
    step)) steps (shapes that would get fewer than `min_steps` steps are left out of that budget).
    Points are named `C{budget:.0e}-L..-d..`; their realised FLOPs differ from C by the rounding."""
    points = []
    for c in budgets:
        for m in shapes:
            model = dataclasses.replace(m, n_vocab=base.model.n_vocab)
            steps = round(c / (flops_per_token(model, base.seq_len) * base.batch_size * base.seq_len))
            if steps >= min_steps:
                points.append(Point(f"C{c:.0e}-{shape_name(m)}".replace("+", ""), m, steps,
                                    None if lr is None else lr(m)))
    return points


def load_sweep(path: str | pathlib.Path) -> Sweep:
    """Runs a sweep file and returns its `get_sweep()`."""
    return call_in_file(path, "get_sweep", Sweep, kind="sweep", type_name="gpt2_jax.scaling.sweep.Sweep",
                        error=ScalingError)
