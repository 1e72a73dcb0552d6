"""Resuming a run: the compatibility of a checkpoint with the config, and the restore itself.

A checkpoint can be resumed by a config whose parameters and optimizer state have the same
shapes (architecture and optimizer structure); other settings may change and are reported.
The training data is identified by a fingerprint of its shards, so a resume on other data is
said out loud. A metrics log is cut back to the restored step, so that a resumed run's log
equals the uninterrupted run's.

References:
  checkpoint.py (restore_latest: damaged steps are skipped and moved aside).
"""

from __future__ import annotations

import hashlib
import json
import pathlib

import jax
import jax.numpy as jnp

from gpt2_jax import checkpoint
from gpt2_jax.config import ABLATION_SWITCHES, ConfigError, TrainConfig, to_dict
from gpt2_jax.model import init_params
from gpt2_jax.optim import make_optimizer


# Model fields that decide the parameters' shapes (or what they mean): a checkpoint with other
# values cannot be resumed. The remaining fields (dropout, dtype, remat, scan_layers, ...) may change.
_ARCHITECTURE = ("n_vocab", "n_ctx", "n_embd", "n_head", "n_layer", "vocab_multiple", "parametrization",
                 "mup_base_width") + ABLATION_SWITCHES
# Settings that never change what a run computes, and so are not reported when they change.
_BOOKKEEPING = ("workdir", "log_every", "eval_every", "eval_batches", "ckpt_every", "keep_checkpoints", "keep_best",
                "sample_prompt", "sample_tokens", "nan_skip_limit")


def _flat(tree: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[prefix + key] = value
    return out


def check_resumable(saved: TrainConfig, cfg: TrainConfig, where: str, step: int) -> dict:
    """Raises ConfigError if the checkpoint's state cannot be this config's state (architecture
    or optimizer-state structure); returns the other settings that differ, {key: (saved, now)}."""
    diff = {f"model.{name}": (getattr(saved.model, name), getattr(cfg.model, name))
            for name in _ARCHITECTURE if getattr(saved.model, name) != getattr(cfg.model, name)}
    if diff:
        raise ConfigError(f"{where} holds checkpoints of a different model (step {step}; saved vs now: {diff}); "
                          f"use a new workdir or the saved model settings")
    params = jax.eval_shape(lambda: init_params(cfg.model, jax.random.PRNGKey(0)))
    layouts = [jax.tree_util.tree_map(lambda a: (a.shape, a.dtype), jax.eval_shape(make_optimizer(c.optim, c.steps, c.model).init, params))
               for c in (saved, cfg)]
    changed = {k: (a, b) for k, a, b in _zip_flat(saved, cfg) if a != b}
    if jax.tree_util.tree_structure(layouts[0]) != jax.tree_util.tree_structure(layouts[1]) or \
            jax.tree_util.tree_leaves(layouts[0]) != jax.tree_util.tree_leaves(layouts[1]):
        optim = {k: v for k, v in changed.items() if k.startswith("optim.")}
        raise ConfigError(f"{where} holds an optimizer state of another structure (step {step}; saved vs now: {optim}); "
                          f"use a new workdir or the saved optim settings")
    return {k: v for k, v in changed.items() if k not in _BOOKKEEPING and not k.startswith("distributed.")}


def _zip_flat(a: TrainConfig, b: TrainConfig):
    fa, fb = _flat(to_dict(a)), _flat(to_dict(b))
    return [(k, fa.get(k), fb.get(k)) for k in sorted(set(fa) | set(fb))]


def data_fingerprint(manifest: dict) -> str:
    """Identifies the training split's tokens: shard names, sizes and sha256 (when recorded)."""
    split = manifest["splits"]["train"]
    files = {f["name"]: f for f in split.get("files", [])}
    shards = [[name, files.get(name, {}).get("tokens"), files.get(name, {}).get("sha256")] for name in split["shards"]]
    blob = json.dumps({"vocab": manifest.get("vocab_fingerprint", manifest.get("vocab")), "shards": shards}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:32]


def restore_or_init(trainer, mngr, data: dict, say) -> tuple:
    """The newest good checkpoint in `mngr`'s directory (damaged newer ones are reported and
    skipped), or a fresh state; with the checkpoint's meta ({} when fresh)."""
    cfg = trainer.cfg
    where = str(mngr.directory)

    def check(step: int, meta: dict, saved: TrainConfig) -> None:
        changed = check_resumable(saved, cfg, where, step)
        if changed:
            say("note: resuming with changed settings (saved -> now): "
                + ", ".join(f"{k} {a!r} -> {b!r}" for k, (a, b) in changed.items()))
        saved_data = meta.get("data", {}).get("fingerprint")
        if saved_data and saved_data != data["fingerprint"]:
            say(f"warning: the training data differs from the checkpoint's (fingerprint {saved_data} -> "
                f"{data['fingerprint']}); the run continues at the saved position in the new data")

    restored = checkpoint.restore_latest(mngr, params_target=trainer.abstract_state.params,
                                         opt_state_target=trainer.abstract_state.opt_state, check=check, say=say)
    if restored is None:
        return trainer.init_state(), {}
    skipped = f", {restored.meta['skipped_steps']} non-finite steps skipped so far" if restored.meta.get("skipped_steps") else ""
    say(f"resuming from {where} at step {restored.step}{skipped}")
    step = jax.device_put(jnp.asarray(restored.step, jnp.int32), trainer.state_shardings.step)
    return type(trainer.abstract_state)(step, restored.params, restored.opt_state), restored.meta


def truncate_metrics(path: pathlib.Path, step: int) -> None:
    """Drops records after `step` (written by a run that died before its next checkpoint), so
    the log of a resumed run is the log of the uninterrupted run. Atomic (rename)."""
    if not path.is_file():
        return
    lines = path.read_text().splitlines(keepends=True)
    keep = []
    for line in lines:
        try:
            if json.loads(line)["step"] <= step:
                keep.append(line if line.endswith("\n") else line + "\n")
        except (ValueError, KeyError, TypeError):
            continue  # a line cut short by a kill
    if len(keep) != len(lines):
        tmp = path.with_suffix(".jsonl.tmp")
        tmp.write_text("".join(keep))
        tmp.replace(path)
