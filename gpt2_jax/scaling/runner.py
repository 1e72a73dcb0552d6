"""Running a sweep: every point through `gpt2_jax.train.train` in its own workdir, resumable, packed.

Layout of a sweep directory OUT:
  OUT/sweep.json             the points (name, shape, N, D, FLOPs, config hash), written first;
  OUT/data/, OUT/vocab/      the bundled corpus tokenized once for all points (when the base
                             config has no data.path);
  OUT/points/NAME/           the point's workdir: checkpoints/, metrics.jsonl, train.log, and
                             result.json once it finished (written last, atomically).

Rerunning the same command skips points with a result.json (if its config hash still matches;
a changed point is an error rather than silently mixed results) and resumes the others from
their newest good checkpoint: the same fault tolerance as `gpt2-jax train`, so an interrupted
point ends with the parameters and metrics an uninterrupted one would have had.

Branches. A point with `branch_from=(parent, step)` (sweep.py: cooldown branches) starts from a
copy of the parent's checkpoint at that step in its own workdir, then trains like any point
(train.py resumes from it); long runs go before branches. Its config hash covers the parent's
hash and the step, so a changed parent invalidates its branches too.

Packing. With `devices_per_point = k` smaller than the local device count, the devices are cut
into disjoint groups of k (in device order) and points run side by side, one Python thread per
group, each on a mesh over its own group (`train(cfg, devices=group)`); a thread takes the next
point when its own finishes. Points start largest FLOPs first (longest-processing-time-first
scheduling keeps the groups busy until the end). JAX releases the GIL while a step runs, so
threads overlap device work; compilation of different shapes also overlaps. While points are
packed, checkpoint saves are synchronous and one at a time (checkpoint.serialized_saves:
Orbax's asynchronous commits from concurrent managers raced here). Points are packed
within one process: on a multi-host pod each host runs its own share of the points (`shard`,
see tpu_setup/sweep.sh) on its local devices, with no cross-host collectives.

References:
  Graham 1969, "Bounds on multiprocessing timing anomalies" (LPT scheduling).
  gpt2_jax/train.py (resume, checkpoints), gpt2_jax/checkpoint.py.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import hashlib
import json
import os
import pathlib
import queue
import shutil
import threading
import time
from typing import Callable

from gpt2_jax.scaling.errors import ScalingError
from gpt2_jax.scaling.sweep import Point, Sweep, config_hash, describe

RESULT = "result.json"


def write_json_atomic(path: pathlib.Path, data: dict) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}.{threading.get_ident()}")
    tmp.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")
    tmp.replace(path)


def shard_points(points: tuple[Point, ...], shard: tuple[int, int] | None) -> list[Point]:
    """The points host `index` of `count` runs (every count-th point, so sizes mix)."""
    if shard is None:
        return list(points)
    index, count = shard
    if not (count >= 1 and 0 <= index < count):
        raise ScalingError(f"--shard {index}/{count} is not valid; use I/N with 0 <= I < N")
    return list(points)[index::count]


def plan(sweep: Sweep, out: pathlib.Path) -> list[dict]:
    """One entry per point: name, config, and describe() numbers; nothing is written. A branch's
    hash covers its parent's hash and the branch step: it is a function of both."""
    rows = []
    hashes = {}
    for p in sorted(sweep.points, key=lambda p: p.branch_from is not None):  # parents first
        cfg = sweep.config(p, out / "points" / p.name)
        h = config_hash(cfg)
        branch = {"parent": None, "branch_step": None, "cooldown_tokens": None}
        if p.branch_from is not None:
            parent, step = p.branch_from
            h = hashlib.sha256(f"{h}:{hashes[parent]}:{step}".encode()).hexdigest()[:16]
            branch = {"parent": parent, "branch_step": step,
                      "cooldown_tokens": (p.steps - step) * cfg.batch_size * cfg.seq_len}
        hashes[p.name] = h
        rows.append({"name": p.name, "cfg": cfg, "hash": h, "n_layer": p.model.n_layer,
                     "n_embd": p.model.n_embd, "n_head": p.model.n_head, "steps": p.steps, "lr": cfg.optim.lr,
                     "schedule": cfg.optim.schedule, "seed": cfg.seed, **branch, **describe(cfg)})
    order = {p.name: i for i, p in enumerate(sweep.points)}
    return sorted(rows, key=lambda r: order[r["name"]])


def start_branch(row: dict, out: pathlib.Path) -> None:
    """Seeds a branch's workdir with its parent's checkpoint at the branch step (once: a branch
    that has checkpoints of its own resumes from those). Copied under a temporary name, then
    renamed, so an interrupted copy is never taken for a checkpoint."""
    from gpt2_jax.checkpoint import finalized_steps

    parent, step = row["parent"], row["branch_step"]
    mine = pathlib.Path(row["cfg"].workdir) / "checkpoints"
    if mine.is_dir() and finalized_steps(mine):
        return
    source = out / "points" / parent / "checkpoints"
    if step not in (finalized_steps(source) if source.is_dir() else []):
        raise ScalingError(f"point {row['name']!r} branches from {parent!r} at step {step}, but {str(source)!r} has no "
                           f"checkpoint {step}; run {parent!r} first (same --out, without --shard or on this host)")
    mine.mkdir(parents=True, exist_ok=True)
    tmp = mine / f".copy{step}.tmp{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    shutil.copytree(source / str(step), tmp)
    tmp.replace(mine / str(step))


def finished(workdir: pathlib.Path, expected_hash: str) -> dict | None:
    """The point's result.json if it finished with this config; an error if with another."""
    path = workdir / RESULT
    if not path.is_file():
        return None
    result = json.loads(path.read_text())
    if result.get("config_hash") != expected_hash:
        raise ScalingError(f"point {workdir.name!r} in {str(workdir.parent.parent)!r} finished with another config "
                           f"(hash {result.get('config_hash')} != {expected_hash}); use a new --out or remove {str(workdir)!r}")
    return result


def prepare_data(sweep: Sweep, out: pathlib.Path, say: Callable[[str], None]) -> Sweep:
    """Tokenizes the bundled corpus once under OUT (unless data.path is set); the returned sweep's
    points read those shards."""
    if sweep.base.data.path:
        return sweep
    from gpt2_jax.train import resolve_data

    shard_dir = resolve_data(dataclasses.replace(sweep.base, workdir=str(out)), say)
    base = dataclasses.replace(sweep.base, data=dataclasses.replace(sweep.base.data, path=str(shard_dir.resolve())))
    return dataclasses.replace(sweep, base=base)


def _summary(name: str, row: dict, result: dict) -> str:
    ev = result.get("eval_loss")
    tps = result.get("tokens_per_sec")
    return (f"{name}: N={row['params']:,} D={row['tokens']:,} C={row['flops']:.3g} | loss "
            f"{result['loss']:.4f} eval {'n/a' if ev is None else f'{ev:.4f}'} | "
            f"{'n/a' if not tps else f'{tps:,.0f}'} tok/s | {result['wall_s']:.1f} s"
            + (f" (resumed from step {result['resumed_from']})" if result.get("resumed_from") else ""))


def run_point(row: dict, devices: list | None) -> dict | None:
    """Trains (or resumes) one point; its result dict, or None if a signal stopped it. A branch
    starts from its parent's checkpoint at the branch step (start_branch)."""
    from gpt2_jax import __version__
    from gpt2_jax.train import train

    cfg = row["cfg"]
    workdir = pathlib.Path(cfg.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    if row.get("parent"):
        start_branch(row, workdir.parent.parent)
    with open(workdir / "train.log", "a", encoding="utf-8") as log:
        def say(line: str) -> None:
            log.write(line + "\n")
            log.flush()

        t0 = time.perf_counter()
        result = train(cfg, say=say, progress=False, devices=devices)
        wall = time.perf_counter() - t0
    if result.stopped is not None:
        return None
    loss = result.loss
    if loss is None:  # resumed at the final checkpoint: the last logged train loss is in the log
        records = [json.loads(x) for x in (workdir / "metrics.jsonl").read_text().splitlines() if x.strip()]
        loss = next((r["loss"] for r in reversed(records) if "loss" in r), float("nan"))
    out = {"name": row["name"], "config_hash": row["hash"], "version": __version__, "loss": loss,
           "eval_loss": result.eval_loss, "tokens_per_sec": result.tokens_per_sec, "wall_s": wall,
           "resumed_from": result.resumed_from, "devices": len(devices) if devices else None,
           **{k: row[k] for k in ("params", "params_total", "tokens", "flops", "flops_6nd", "n_layer", "n_embd",
                                  "n_head", "steps", "lr", "schedule", "seed", "parent", "branch_step", "cooldown_tokens")}}
    write_json_atomic(workdir / RESULT, out)
    return out


def device_groups(devices_per_point: int, devices: list | None = None) -> list[list]:
    """Disjoint groups of `devices_per_point` local devices (0 = one group of all of them)."""
    import jax

    devices = list(devices if devices is not None else jax.local_devices())
    k = devices_per_point or len(devices)
    if k > len(devices) or len(devices) % k:
        raise ScalingError(f"devices_per_point={k} does not divide the {len(devices)} local devices; "
                           f"choose a divisor of {len(devices)} (0 = all devices, one point at a time)")
    return [devices[i:i + k] for i in range(0, len(devices), k)]


def run_sweep(sweep: Sweep, out: str | pathlib.Path, *, devices_per_point: int | None = None,
              shard: tuple[int, int] | None = None, progress: bool = True, devices: list | None = None,
              say: Callable[[str], None] = print) -> list[dict]:
    """Runs the sweep's points (those of `shard`) into `out`; returns the results of finished points.

    `devices_per_point` overrides the sweep's own (0 = all devices per point, one at a time);
    `devices` (default: this process's local devices) is what is shared out."""
    from tqdm import tqdm

    out = pathlib.Path(out)
    (out / "points").mkdir(parents=True, exist_ok=True)
    sweep = prepare_data(sweep, out, say)
    rows = plan(sweep, out)
    write_json_atomic(out / "sweep.json", {"points": [{k: v for k, v in r.items() if k != "cfg"} for r in rows]})
    mine = {p.name for p in shard_points(sweep.points, shard)}
    rows = [r for r in rows if r["name"] in mine]
    done = {r["name"]: res for r in rows if (res := finished(pathlib.Path(r["cfg"].workdir), r["hash"]))}
    # Largest first, but every long run before any branch (a branch needs its parent's checkpoint).
    todo = sorted((r for r in rows if r["name"] not in done), key=lambda r: (r["parent"] is not None, -r["flops"]))
    k = sweep.devices_per_point if devices_per_point is None else devices_per_point
    groups = device_groups(k, devices)
    say(f"sweep: {len(rows)} points, {len(done)} finished already, {len(todo)} to run; "
        f"{len(groups)} side by side on {len(groups[0])} device(s) each")
    bar = tqdm(total=len(rows), initial=len(done), desc="sweep", unit="point", disable=not progress, dynamic_ncols=True)
    results = dict(done)
    stopped = False
    try:
        if len(groups) == 1:  # one point at a time, in this thread (SIGTERM stops a point cleanly)
            for row in todo:
                res = run_point(row, groups[0])
                if res is None:
                    stopped = True
                    break
                results[row["name"]] = res
                bar.update(1)
                bar.write(_summary(row["name"], row, res))
        else:
            free: queue.Queue = queue.Queue()
            for g in groups:
                free.put(g)

            def packed(row):
                group = free.get()
                try:
                    return row, run_point(row, group)
                finally:
                    free.put(group)

            from gpt2_jax.checkpoint import serialized_saves

            # Orbax's async commits from managers in several threads race (checkpoint.serialized_saves).
            with serialized_saves(), concurrent.futures.ThreadPoolExecutor(len(groups), thread_name_prefix="sweep") as pool:
                for phase in (False, True):  # long runs, then branches (which read their checkpoints)
                    wave = [pool.submit(packed, r) for r in todo if (r["parent"] is not None) == phase]
                    for fut in concurrent.futures.as_completed(wave):
                        row, res = fut.result()
                        results[row["name"]] = res
                        bar.update(1)
                        bar.write(_summary(row["name"], row, res))
    finally:
        bar.close()
    if stopped:
        say(f"sweep stopped by a signal; {len(results)}/{len(rows)} points finished. Rerun the same command to resume.")
    return [results[r["name"]] for r in rows if r["name"] in results]
