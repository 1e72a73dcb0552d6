"""The training input pipeline: windows of T+1 tokens, in a global order that is a pure function
of (seed, step), each host reading only its rows of every global batch, through tf.data or threads.

Windows. Shard s of a split holds n_s tokens and (n_s - 1) // T windows; window k starts at
token k*T and spans T+1 tokens (inputs and shifted targets; neighbours share one token). The
split's W windows are numbered shard after shard.

Order. Global example g = step * B + row (B = global batch) is window perm_e(g mod W) of epoch
e = g // W, where perm_e is a keyed permutation of [0, W): a 6-round Feistel network on
ceil(log2 W) (rounded up to even) bits with splitmix64 round functions keyed by (seed, e),
cycle-walked back into [0, W). Every epoch visits every window exactly once, windows of all
shards mix freely, and any example is computed from (seed, step, row) alone: resuming at step k
costs O(1) (no replay, no iterator state in checkpoints), and the global batch does not depend
on the number of hosts.

Hosts. `host_batches` yields this host's contiguous share of rows (process_index of
process_count); `global_batches` reads exactly the rows that this process's devices hold under
the given sharding and assembles global jax.Arrays with `jax.make_array_from_process_local_data`,
so 1 host or N hosts see the same global batches.

Pipelines. `pipeline="tf"`: tf.data runs the reads (a numpy gather from memory-mapped shards,
`tf.numpy_function`) in a private pool of `threads` threads and prefetches `prefetch` batches;
TensorFlow is imported on first use, with accelerators hidden and its own thread pools bounded
(`tf_runtime`). `pipeline="numpy"`: the same reads in `threads` plain threads with the same
look-ahead (prefetch.py), no TensorFlow at all (GPU images rarely carry it). Both yield the very
same batches, since each is the pure function `batch(step)`; `"auto"` (the default) takes tf.data
when TensorFlow is installed and the numpy pipeline when it is not. The reads
are random access by design (that is what makes the order a function of the step), which
tf.data's file datasets (sequential records, resumable only through iterator checkpoints) do not
offer; a batch of 64 x 1025 tokens is 64 small memcpys, far below a train step's cost.

Evaluation uses `eval_batches`: n fixed windows evenly spaced over the split, the same in every
run, so evaluation losses compare across steps and runs.

References:
  Luby and Rackoff 1988 (Feistel permutations); Black and Rogaway 2002 (cycle walking).
  google/grain (index-based, stateless data loading); big_vision input pipeline (tf.data on
  TPU hosts, TF kept off accelerators).
"""

from __future__ import annotations

import importlib.util
import os
import pathlib
from typing import Iterator

import numpy as np

from gpt2_jax.data.errors import ShardError
from gpt2_jax.data.ngrams import mix64, mix64_int
from gpt2_jax.data.shards import read_manifest, read_shard, shard_sha256
from gpt2_jax.data.prefetch import Prefetcher
from gpt2_jax.data.tf_runtime import DEFAULT_THREADS

PIPELINES = ("auto", "tf", "numpy")


def resolve_pipeline(pipeline: str) -> str:
    """"tf" or "numpy": what `pipeline` means here ("auto": tf.data if TensorFlow is installed)."""
    if pipeline not in PIPELINES:
        raise ShardError(f"input pipeline {pipeline!r} is not one of {PIPELINES}")
    if pipeline == "auto":
        return "tf" if importlib.util.find_spec("tensorflow") is not None else "numpy"
    return pipeline

FEISTEL_ROUNDS = 6
_GOLDEN = 0x9E3779B97F4A7C15


VERIFY_BYTES = 1 << 30  # sha256 runs at ~1 GB/s: about a second per loader


def _shards_to_verify(shard_dir: pathlib.Path, names: list[str], files: dict, seed: int) -> list[str]:
    """Shards whose sha256 (from the manifest) is checked when a loader opens: all of them up to
    VERIFY_BYTES, beyond that a sample of about that size, drawn anew per seed so that repeated
    runs cover different shards. (`gpt2-jax data stats --verify` checks every shard.)"""
    names = [n for n in names if "sha256" in files.get(n, {})]
    sizes = {n: (shard_dir / n).stat().st_size if (shard_dir / n).is_file() else 0 for n in names}
    if sum(sizes.values()) <= VERIFY_BYTES:
        return names
    order = np.random.default_rng(seed).permutation(len(names))
    chosen, total = [], 0
    for i in order:
        if total + sizes[names[i]] > VERIFY_BYTES and chosen:
            break
        chosen.append(names[i])
        total += sizes[names[i]]
    return chosen


def epoch_key(seed: int, epoch: int) -> int:
    return mix64_int(mix64_int(seed ^ 0x243F6A8885A308D3) + (epoch + 1) * _GOLDEN)


def permute(index: np.ndarray, n: int, key: int) -> np.ndarray:
    """A keyed bijection of [0, n), applied elementwise to `index` (values in [0, n))."""
    index = np.asarray(index, dtype=np.uint64)
    bits = max(2, (n - 1).bit_length())
    bits += bits % 2
    half, mask = np.uint64(bits // 2), np.uint64((1 << (bits // 2)) - 1)
    round_keys = [np.uint64(mix64_int(key + (r + 1) * _GOLDEN)) for r in range(FEISTEL_ROUNDS)]

    def encrypt(x):
        left, right = x >> half, x & mask
        for rk in round_keys:
            left, right = right, left ^ (mix64(right ^ rk) & mask)
        return (left << half) | right

    out = encrypt(index)
    outside = out >= n
    while outside.any():  # cycle walking: at most a few rounds, since 2^bits < 4n
        out[outside] = encrypt(out[outside])
        outside = out >= n
    return out


class TokenLoader:
    """Batches of windows [rows, seq_len + 1] (int32) from one split of a shard directory.

    Raises ShardError for a missing or incomplete directory, a vocabulary that does not fit
    (manifest n_vocab > n_vocab, or a fingerprint other than `vocab_fingerprint`), token ids
    >= n_vocab, or a split shorter than one window."""

    def __init__(self, shard_dir: str | os.PathLike, split: str, seq_len: int, global_batch_size: int, seed: int,
                 n_vocab: int, *, vocab_fingerprint: str | None = None, process_index: int | None = None,
                 process_count: int | None = None, prefetch: int = 2, threads: int = DEFAULT_THREADS,
                 pipeline: str = "auto"):
        shard_dir = pathlib.Path(shard_dir)
        manifest = read_manifest(shard_dir)
        where = str(shard_dir)
        if manifest["n_vocab"] > n_vocab:
            raise ShardError(f"shards in {where!r} use vocabulary {manifest['vocab']!r} with {manifest['n_vocab']} ids "
                             f"but model.n_vocab={n_vocab}; set model.n_vocab={manifest['n_vocab']} or use shards "
                             f"of the model's vocabulary")
        if vocab_fingerprint is not None and manifest.get("vocab_fingerprint") != vocab_fingerprint:
            raise ShardError(f"shards in {where!r} were made with vocabulary {manifest['vocab']!r} (fingerprint "
                             f"{manifest.get('vocab_fingerprint')}) but this run uses fingerprint {vocab_fingerprint}; "
                             f"prepare the data with the run's vocabulary")
        if split not in manifest["splits"]:
            raise ShardError(f"{where!r} has no {split!r} split (has {sorted(manifest['splits'])})")
        if seq_len < 1 or global_batch_size < 1:
            raise ShardError(f"seq_len={seq_len} and global_batch_size={global_batch_size} must be >= 1")
        if process_index is None or process_count is None:
            import jax

            process_index = jax.process_index() if process_index is None else process_index
            process_count = jax.process_count() if process_count is None else process_count
        if global_batch_size % process_count:
            raise ShardError(f"global_batch_size={global_batch_size} is not divisible by process_count={process_count}; "
                             f"use a multiple of {process_count}")
        if not 0 <= process_index < process_count:
            raise ShardError(f"process_index={process_index} is outside [0, process_count={process_count})")

        entry = manifest["splits"][split]
        files = {f["name"]: f for f in entry.get("files", [])}
        verify = set(_shards_to_verify(shard_dir, entry["shards"], files, seed))
        self.shards = []
        for name in entry["shards"]:
            tokens = read_shard(shard_dir / name)
            info = files.get(name)
            if name in verify and shard_sha256(shard_dir / name) != info["sha256"]:
                raise ShardError(f"shard {str(shard_dir / name)!r} does not match its sha256 in the manifest (changed or "
                                 f"damaged since it was written); re-create the shard directory with `gpt2-jax data prepare`")
            if info is not None and info["tokens"] != tokens.size:
                raise ShardError(f"shard {str(shard_dir / name)!r} holds {tokens.size} tokens but the manifest says "
                                 f"{info['tokens']}; re-create the shard directory")
            # New manifests record each shard's largest id; older or foreign ones are scanned once.
            top = info["max_id"] if info is not None and "max_id" in info else (int(tokens.max()) if tokens.size else -1)
            if top >= n_vocab:
                raise ShardError(f"shard {str(shard_dir / name)!r} holds token id {top} >= n_vocab={n_vocab}; "
                                 f"it was made with another vocabulary or is corrupt")
            self.shards.append(tokens)

        self.manifest, self.split, self.seq_len, self.n_vocab = manifest, split, seq_len, n_vocab
        self.global_batch_size, self.seed = global_batch_size, seed
        self.process_index, self.process_count = process_index, process_count
        self.prefetch, self.threads = prefetch, threads
        self.pipeline = resolve_pipeline(pipeline)
        windows = np.array([max(0, (s.size - 1) // seq_len) for s in self.shards], dtype=np.int64)
        self._first_window = np.concatenate([[0], np.cumsum(windows)])  # [S+1]
        self.n_windows = int(self._first_window[-1])
        if self.n_windows == 0:
            longest = max((s.size for s in self.shards), default=0)
            raise ShardError(f"the {split!r} split of {where!r} has no window of seq_len+1={seq_len + 1} tokens "
                             f"(its longest shard holds {longest}); use a shorter seq_len or more data")
        rows = global_batch_size // process_count
        self.host_rows = np.arange(process_index * rows, (process_index + 1) * rows)
        self._error: BaseException | None = None

    # ---- the pure function (seed, step, row) -> window ------------------------------------

    def window_ids(self, step: int, rows: np.ndarray | None = None) -> np.ndarray:
        """Window numbers of `rows` (default: all rows) of global batch `step`."""
        rows = np.arange(self.global_batch_size) if rows is None else np.asarray(rows)
        g = np.uint64(step) * np.uint64(self.global_batch_size) + rows.astype(np.uint64)
        epochs, positions = g // np.uint64(self.n_windows), g % np.uint64(self.n_windows)
        out = np.empty_like(g)
        for e in np.unique(epochs):
            sel = epochs == e
            out[sel] = permute(positions[sel], self.n_windows, epoch_key(self.seed, int(e)))
        return out.astype(np.int64)

    def locate(self, window_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(shard index, first token offset) of each window."""
        shard = np.searchsorted(self._first_window, window_ids, side="right") - 1
        return shard, (window_ids - self._first_window[shard]) * self.seq_len

    def read(self, window_ids: np.ndarray) -> np.ndarray:
        """int32[len(window_ids), seq_len + 1]: the windows' tokens."""
        width = self.seq_len + 1
        out = np.empty((len(window_ids), width), dtype=np.uint16)
        for i, (s, o) in enumerate(zip(*self.locate(np.asarray(window_ids)))):
            out[i] = self.shards[s][o:o + width]
        if out.size and out.max() >= self.n_vocab:
            raise ShardError(f"the {self.split!r} split holds token id {int(out.max())} >= n_vocab={self.n_vocab}; "
                             f"its shards are corrupt or from another vocabulary")
        return out.astype(np.int32)

    def batch(self, step: int, rows: np.ndarray | None = None) -> np.ndarray:
        """This host's rows (or `rows`) of global batch `step`, computed directly."""
        return self.read(self.window_ids(step, self.host_rows if rows is None else rows))

    # ---- iterators (tf.data or numpy threads) ------------------------------------------------

    def host_batches(self, start_step: int = 0) -> Iterator[np.ndarray]:
        """int32[global_batch / process_count, seq_len + 1] for steps start_step, start_step + 1, ..."""
        return self._iterate(start_step, self.host_rows)

    def global_batches(self, start_step: int, sharding) -> Iterator:
        """jax.Array[global_batch, seq_len + 1] with `sharding`, for steps start_step, ...; this
        process reads only the rows its addressable devices hold."""
        import jax

        shape = (self.global_batch_size, self.seq_len + 1)
        rows = self._sharding_rows(sharding, shape)
        for local in self._iterate(start_step, rows):
            yield jax.make_array_from_process_local_data(sharding, local, shape)

    def eval_batches(self, n_batches: int) -> list[np.ndarray]:
        """n_batches fixed global batches int32[global_batch, seq_len + 1]: windows evenly spaced
        over the split (first to last), identical in every run and on every host."""
        n = n_batches * self.global_batch_size
        ids = np.round(np.linspace(0, self.n_windows - 1, n)).astype(np.int64)
        windows = self.read(ids)
        return [windows[i * self.global_batch_size:(i + 1) * self.global_batch_size] for i in range(n_batches)]

    def eval_global_batches(self, n_batches: int, sharding) -> list:
        """`eval_batches` as global jax.Arrays with `sharding`."""
        import jax

        shape = (self.global_batch_size, self.seq_len + 1)
        rows = self._sharding_rows(sharding, shape)
        return [jax.make_array_from_process_local_data(sharding, b[rows], shape) for b in self.eval_batches(n_batches)]

    @staticmethod
    def _sharding_rows(sharding, shape) -> np.ndarray:
        rows = set()
        for index in sharding.addressable_devices_indices_map(shape).values():
            rows.update(range(*index[0].indices(shape[0])) if index else range(shape[0]))
        return np.array(sorted(rows), dtype=np.int64)

    def _dataset(self, start_step: int, rows: np.ndarray):
        from gpt2_jax.data.tf_runtime import tensorflow

        tf = tensorflow(self.threads)

        def read(step):
            try:
                return self.batch(int(step), rows)
            except BaseException as e:  # surfaces in _iterate with its own type and message
                self._error = e
                raise

        def load(step):
            batch = tf.numpy_function(read, [step], tf.int32, stateful=False)
            return tf.ensure_shape(batch, [len(rows), self.seq_len + 1])

        options = tf.data.Options()
        options.deterministic = True
        options.threading.private_threadpool_size = self.threads
        options.threading.max_intra_op_parallelism = 1
        ds = tf.data.Dataset.range(start_step, 2**62)
        ds = ds.map(load, num_parallel_calls=self.threads, deterministic=True)
        return ds.prefetch(self.prefetch).with_options(options)

    def _iterate(self, start_step: int, rows: np.ndarray) -> Iterator[np.ndarray]:
        if self.pipeline == "numpy":
            batches = Prefetcher(lambda step: self.batch(step, rows), start_step, threads=self.threads,
                                 depth=self.prefetch)
            try:
                yield from batches
            finally:
                batches.close()
            return
        from gpt2_jax.data.tf_runtime import tensorflow

        tf = tensorflow(self.threads)
        iterator = iter(self._dataset(start_step, rows))
        while True:
            try:
                batch = next(iterator)
            except tf.errors.OpError as e:
                error, self._error = self._error, None
                raise (error if isinstance(error, Exception) else ShardError(f"input pipeline failed: {e.message}")) from None
            yield batch.numpy()


class TokenWindows:
    """Compatibility adapter for the old numpy loader API, over TokenLoader (same data path).

    Kept only until gpt2_jax/train.py uses TokenLoader; then delete it."""

    def __init__(self, shard_dir: str | os.PathLike, split: str, seq_len: int, n_vocab: int):
        self._args = (shard_dir, split, seq_len)
        self.n_vocab = n_vocab
        self._loaders: dict = {}
        self.manifest = self._loader(1, 0).manifest

    def _loader(self, batch_size: int, seed: int) -> TokenLoader:
        if (batch_size, seed) not in self._loaders:
            shard_dir, split, seq_len = self._args
            self._loaders[batch_size, seed] = TokenLoader(shard_dir, split, seq_len, batch_size, seed, self.n_vocab,
                                                          process_index=0, process_count=1)
        return self._loaders[batch_size, seed]

    def random_batch(self, seed: int, step: int, batch_size: int) -> np.ndarray:
        return self._loader(batch_size, seed).batch(step)

    def fixed_batches(self, n_batches: int, batch_size: int) -> list[np.ndarray]:
        return self._loader(batch_size, 0).eval_batches(n_batches)
