"""The batched, sharded, jitted scoring loop that every likelihood task runs on.

`Scorer.score(spans)` takes a stream of `Span`s and yields one `Scored` per span: the sum of the
log-probabilities of its scored targets, whether each of them is the model's greedy choice, and
how many there are. Spans are packed into batches of fixed shape [batch, length], length from a
small set of buckets (powers of two up to n_ctx), padded and masked; so there is one compile per
bucket, whatever the documents. Parameters are placed with the training mesh and rules
(`sharding.make_mesh`, `param_shardings`; the checkpoint's mesh when it fits the devices, else
pure data parallelism) and batches are split over the batch axes like training batches.

Memory stays flat in the number of spans: at most one batch per bucket is buffered, and one
batch is kept in flight on the device while the next is packed. Progress shows scored tokens
per second.

References:
  gpt2_jax.train.Trainer (the same mesh, shardings and activation rules).
  EleutherAI lm-evaluation-harness, HFLM._loglikelihood_tokens (log-softmax in float32, greedy
  check over the whole continuation).
"""

from __future__ import annotations

import collections
import dataclasses
import functools
from typing import Any, Iterable, Iterator

import jax
import jax.numpy as jnp
import numpy as np

from gpt2_jax import sharding
from gpt2_jax.config import ConfigError, MeshConfig, ModelConfig
from gpt2_jax.evaluate.windows import Span
from gpt2_jax.model import GPT


FIRST_TOP_K = 32  # candidates kept at each span's first scored position (LAMBADA's stop-word filter)


@dataclasses.dataclass
class Scored:
    key: Any
    logprob: float  # sum over the scored targets, natural log
    greedy: bool  # every scored target is the argmax of its distribution
    n_scored: int
    rest_greedy: bool = True  # every scored target after the first is the argmax
    first_top: np.ndarray | None = None  # the FIRST_TOP_K most probable ids at the first scored position


def length_buckets(n_ctx: int, smallest: int = 32) -> list[int]:
    """Padded lengths: powers of two from `smallest`, and n_ctx itself."""
    out, size = [], smallest
    while size < n_ctx:
        out.append(size)
        size *= 2
    return out + [n_ctx]


def _score_batch(params, inputs, targets, mask, *, config: ModelConfig, mesh, rules: str):
    with sharding.activation_rules(mesh, rules):
        logits, _ = GPT(config).apply({"params": params}, inputs, deterministic=True)
    # log p(target) = logit[target] - logsumexp(logits): reductions over the vocabulary, without
    # materializing a second [B, T, V] array of log-probabilities.
    logits = logits.astype(jnp.float32)
    target_logp = jnp.take_along_axis(logits, targets[..., None], axis=-1)[..., 0] - jax.nn.logsumexp(logits, axis=-1)
    greedy = (jnp.argmax(logits, axis=-1) == targets) | ~mask
    first = jnp.argmax(mask, axis=-1)  # each row's first scored position
    is_first = jnp.arange(mask.shape[1])[None, :] == first[:, None]
    first_logits = jnp.take_along_axis(logits, first[:, None, None], axis=1)[:, 0]
    first_top = jax.lax.top_k(first_logits, FIRST_TOP_K)[1]
    return (jnp.sum(jnp.where(mask, target_logp, 0.0), axis=-1), jnp.all(greedy, axis=-1),
            jnp.all(greedy | is_first, axis=-1), first_top)


@functools.lru_cache(maxsize=16)
def _jitted_score(config: ModelConfig, mesh, rules: str):
    """One jitted scoring function per (model, mesh, rules), shared by every Scorer in a process, so
    a second evaluation of the same model compiles nothing. Inputs arrive already placed (params
    with their shardings, batches split over the batch axes) and jit follows those placements."""
    return jax.jit(functools.partial(_score_batch, config=config, mesh=mesh, rules=rules))


def eval_mesh(mesh_cfg: MeshConfig | None, devices: list | None = None) -> tuple[jax.sharding.Mesh, str]:
    """The checkpoint's training mesh when it fits these devices, else data parallelism over all."""
    devices = jax.devices() if devices is None else devices
    if mesh_cfg is not None:
        try:
            return sharding.make_mesh(mesh_cfg, devices), mesh_cfg.rules
        except ConfigError:
            pass
    fallback = MeshConfig(data=-1, fsdp=1, tensor=1, rules="dp")
    return sharding.make_mesh(fallback, devices), fallback.rules


class _LazyBar:
    """A tqdm bar of scored tokens (with tokens/s) created on the first update, so an input error
    found before any batch ran prints one clean line."""

    def __init__(self, desc: str):
        self.desc, self.bar = desc, None

    def update(self, n: int) -> None:
        if self.bar is None:
            from tqdm import tqdm

            self.bar = tqdm(desc=self.desc, unit="tok", unit_scale=True, dynamic_ncols=True, leave=False)
        self.bar.update(n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


class Scorer:
    """Scores spans with one model; see the module docstring."""

    def __init__(self, config: ModelConfig, params: Any, *, batch_size: int = 8, mesh_cfg: MeshConfig | None = None,
                 progress: bool = True, devices: list | None = None):
        self.config = config
        self.mesh, self.rules = eval_mesh(mesh_cfg, devices)
        try:
            shardings = sharding.param_shardings(params, config, self.mesh, self.rules)
        except ConfigError:  # the checkpoint's rules do not divide this model here: replicate
            self.mesh, self.rules = eval_mesh(None, devices)
            shardings = sharding.param_shardings(params, config, self.mesh, self.rules)
        self.params = jax.device_put(params, shardings)
        ways = self.mesh.shape["data"] * self.mesh.shape["fsdp"]
        self.batch_size = -(-max(1, batch_size) // ways) * ways  # a multiple of the batch split
        self.buckets = length_buckets(config.n_ctx)
        self.progress = progress
        self.tokens = 0  # scored tokens so far (all calls)
        self._batch_sharding = sharding.batch_sharding(self.mesh)
        self._fn = _jitted_score(config, self.mesh, self.rules)

    def _bucket(self, n: int) -> int:
        for size in self.buckets:
            if n <= size:
                return size
        raise ValueError(f"span of {n} inputs exceeds n_ctx={self.config.n_ctx}")

    def _launch(self, spans: list[Span], length: int):
        B = self.batch_size
        inputs = np.zeros((B, length), np.int32)
        targets = np.zeros((B, length), np.int32)
        mask = np.zeros((B, length), bool)
        for row, span in enumerate(spans):
            n = len(span.tokens) - 1
            inputs[row, :n] = span.tokens[:-1]
            targets[row, :n] = span.tokens[1:]
            mask[row, span.scored_from:n] = True
        put = lambda a: jax.device_put(a, self._batch_sharding)
        return spans, self._fn(self.params, put(inputs), put(targets), put(mask))

    def _collect(self, launched, bar) -> Iterator[Scored]:
        spans, (logprob, greedy, rest_greedy, first_top) = launched
        logprob, greedy, rest_greedy, first_top = map(np.asarray, (logprob, greedy, rest_greedy, first_top))
        n = sum(s.n_scored for s in spans)
        self.tokens += n
        if bar is not None:
            bar.update(n)
        for row, span in enumerate(spans):
            yield Scored(span.key, float(logprob[row]), bool(greedy[row]), span.n_scored, bool(rest_greedy[row]),
                         first_top[row])

    def score(self, spans: Iterable[Span], desc: str = "scoring") -> Iterator[Scored]:
        """One `Scored` per span, in no particular order (batches fill per length bucket)."""
        bar = _LazyBar(desc) if self.progress else None  # appears with the first batch, not before
        pending: dict[int, list[Span]] = collections.defaultdict(list)
        in_flight: collections.deque = collections.deque()
        try:
            for span in spans:
                if span.n_scored <= 0:
                    yield Scored(span.key, 0.0, True, 0)
                    continue
                length = self._bucket(len(span.tokens) - 1)
                pending[length].append(span)
                if len(pending[length]) == self.batch_size:
                    in_flight.append(self._launch(pending.pop(length), length))
                    if len(in_flight) > 1:  # keep one batch computing while the next is packed
                        yield from self._collect(in_flight.popleft(), bar)
            for length, rest in pending.items():
                in_flight.append(self._launch(rest, length))
            while in_flight:
                yield from self._collect(in_flight.popleft(), bar)
        finally:
            if bar is not None:
                bar.close()
