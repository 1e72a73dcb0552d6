"""Batches of token windows from a shard directory, as a pure function of (seed, step).

Training batch `step` draws `batch_size` random windows of T+1 tokens with a generator seeded
by (seed, step): resuming at step k costs nothing, and every run with the same seed sees the
same data. Evaluation uses fixed, evenly spaced windows of the validation split, so eval losses
are comparable across steps and runs.

References:
  karpathy/nanoGPT train.py get_batch (random windows of a memory-mapped token file).
"""

from __future__ import annotations

import json
import pathlib

import numpy as np

from gpt2_jax.data.prepare import MANIFEST, SHARD_FORMAT
from gpt2_jax.data.shards import ShardError, read_shard


class TokenWindows:
    """Windows of `seq_len + 1` tokens (inputs and shifted targets) from one split."""

    def __init__(self, shard_dir: str | pathlib.Path, split: str, seq_len: int, n_vocab: int):
        shard_dir = pathlib.Path(shard_dir)
        manifest_path = shard_dir / MANIFEST
        if not manifest_path.is_file():
            raise ShardError(f"{str(shard_dir)!r} has no {MANIFEST}; create it with `gpt2-jax data prepare` (or an interrupted run left it incomplete)")
        manifest = json.loads(manifest_path.read_text())
        if manifest.get("format") != SHARD_FORMAT:
            raise ShardError(f"{str(manifest_path)!r} has format {manifest.get('format')!r}, expected {SHARD_FORMAT!r}")
        if manifest["n_vocab"] > n_vocab:
            raise ShardError(
                f"shards in {str(shard_dir)!r} use vocabulary {manifest['vocab']!r} with {manifest['n_vocab']} ids "
                f"but model.n_vocab={n_vocab}; set model.n_vocab={manifest['n_vocab']} or use shards of the model's vocabulary"
            )
        if split not in manifest["splits"]:
            raise ShardError(f"{str(shard_dir)!r} has no {split!r} split (has {sorted(manifest['splits'])})")
        shards = [read_shard(shard_dir / name) for name in manifest["splits"][split]["shards"]]
        self.tokens = np.concatenate(shards) if len(shards) > 1 else shards[0]
        self.manifest = manifest
        self.seq_len = seq_len
        if len(self.tokens) < seq_len + 1:
            raise ShardError(f"the {split!r} split of {str(shard_dir)!r} has {len(self.tokens)} tokens, fewer than one window of seq_len+1={seq_len + 1}")
        top = int(self.tokens.max())
        if top >= n_vocab:
            raise ShardError(f"{split!r} shards of {str(shard_dir)!r} contain token id {top} >= model.n_vocab={n_vocab}")

    def _windows(self, starts: np.ndarray) -> np.ndarray:
        idx = starts[:, None] + np.arange(self.seq_len + 1)[None, :]
        return self.tokens[idx].astype(np.int32)  # [B, T+1]

    def random_batch(self, seed: int, step: int, batch_size: int) -> np.ndarray:
        rng = np.random.default_rng([seed, step])
        starts = rng.integers(0, len(self.tokens) - self.seq_len, size=batch_size)
        return self._windows(starts)

    def fixed_batches(self, n_batches: int, batch_size: int) -> list[np.ndarray]:
        n = n_batches * batch_size
        starts = np.linspace(0, len(self.tokens) - self.seq_len - 1, n).astype(np.int64)
        return [self._windows(starts[i * batch_size:(i + 1) * batch_size]) for i in range(n_batches)]
