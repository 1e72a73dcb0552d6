"""A synthetic corpus whose entropy rate is known exactly: a random order-k Markov chain over bytes.

Why: on natural text the irreducible loss E of a Chinchilla fit has no true value to check
against. A stationary order-k Markov source has entropy rate
    H = sum_c pi(c) * H(P(. | c))            (bits per symbol; Cover & Thomas 2006, thm 4.2.4)
over its contexts c (the last k symbols), pi the stationary distribution of the contexts. The
symbols are printable ASCII bytes, one UTF-8 byte each, so bits per symbol = bits per byte and
a byte-vocabulary model's `eval_bits_per_byte` is directly comparable to H.

The chain: an alphabet of the first `alphabet` characters of ALPHABET (letters and digits, no
whitespace, so the data pipeline's normalisation leaves the text unchanged) and a transition
table of alphabet**order rows, each with `support` possible next symbols, drawn from a
hierarchical Dirichlet prior (`markov_source`): shorter contexts already predict something, so a
model can learn the table one order at a time, as in natural text, and the whole table is what
makes loss fall with both parameters and tokens. Limited support keeps the entropy rate well
below log2(alphabet). Contexts outside the chain's one closed class are transient (pi = 0) and
never appear in a stationary sample; `Source.recurrent_contexts` counts the others. A chain with
more than one closed class (the entropy rate would depend on the start) is refused; pi comes
from power iteration of the lazy chain (P + I) / 2 (same pi, aperiodic, so it converges), refused
if it has not converged.

A model trained and evaluated on windows (inputs x_0..x_{T-1}, targets x_1..x_T) predicts its
first targets from fewer than k symbols, so its best possible mean loss is not H but
    F_T = (H_1 + ... + H_{k-1} + (T - k + 1) * H) / T,   H_j = H(X_t | the j previous symbols)
(`Source.window_floor(T)`, from `Source.conditional_entropies()`): the value a fitted E should
approach for models evaluated on windows of T tokens.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from gpt2_jax.data.errors import DataError

ALPHABET = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
MAX_CONTEXTS = 2**22  # the transition table is contexts x alphabet float64s; this bounds it to ~2 GB at 62 symbols


@dataclasses.dataclass(frozen=True)
class Source:
    """An order-k Markov chain over `symbols`. `transition[c]` is the next-symbol distribution
    after context c (the last `order` symbols as base-`len(symbols)` digits, oldest first)."""

    symbols: str
    order: int
    transition: np.ndarray  # (contexts, alphabet), rows sum to 1
    stationary: np.ndarray  # (contexts,), pi of the context chain

    @property
    def alphabet(self) -> int:
        return len(self.symbols)

    @property
    def entropy_rate(self) -> float:
        """H in bits per symbol (= per byte)."""
        return float(self.stationary @ _row_entropies(self.transition))

    @property
    def recurrent_contexts(self) -> int:
        return int(np.count_nonzero(self.stationary > 0))

    def conditional_entropies(self) -> list[float]:
        """H(X_t | the j previous symbols) for j = 0..order, in bits: how much each extra symbol of
        context is worth (the last one is the entropy rate)."""
        a = self.alphabet
        joint = self.stationary[:, None] * self.transition  # P(context, next)
        out = []
        for j in range(self.order + 1):
            p = np.zeros((a**j, a))
            np.add.at(p, np.arange(len(joint)) % a**j, joint)
            rows = p.sum(axis=1)
            keep = rows > 0
            out.append(float(rows[keep] @ _row_entropies(p[keep] / rows[keep, None])))
        return out

    def block_entropy(self) -> float:
        """H(X_1..X_k) in bits: the entropy of a stationary context."""
        p = self.stationary[self.stationary > 0]
        return float(-(p * np.log2(p)).sum())

    def window_floor(self, seq_len: int) -> float:
        """The lowest mean loss (bits per symbol) over the `seq_len` targets of a window (inputs
        x_0..x_{T-1}, targets x_1..x_T): target j is predicted from j symbols, the full context
        only from target `order` on."""
        if seq_len < 1:
            raise DataError(f"seq_len {seq_len} must be >= 1")
        ladder = self.conditional_entropies()
        return sum(ladder[min(j, self.order)] for j in range(1, seq_len + 1)) / seq_len

    def sample(self, length: int, seed: int) -> np.ndarray:
        """`length` symbol indices of a stationary run: the first context is drawn from pi."""
        rng = np.random.default_rng(seed)
        a, k = self.alphabet, self.order
        out = np.empty(length + k, dtype=np.int64)
        context = int(rng.choice(len(self.stationary), p=self.stationary))
        for i in range(k):  # the context's digits, oldest first
            out[i] = context // a ** (k - 1 - i) % a
        cumulative = np.cumsum(self.transition, axis=1)
        cumulative[:, -1] = 1.0  # no rounding gap above the last symbol
        uniforms = rng.random(length)
        high = a ** (k - 1) if k else 1
        for i in range(length):  # a Python loop: ~1 us per symbol, 2M symbols in seconds
            symbol = int(np.searchsorted(cumulative[context], uniforms[i], side="right"))
            out[k + i] = symbol
            context = (context % high) * a + symbol if k else 0
        return out[k:]

    def text(self, indices: np.ndarray) -> str:
        """The symbols as a string (ASCII, one byte each)."""
        return np.frombuffer(self.symbols.encode("ascii"), dtype=np.uint8)[indices].tobytes().decode("ascii")

    def log2_likelihood(self, indices: np.ndarray) -> float:
        """Total -log2 P(indices[k:] | indices[:k]) under this chain, in bits (the first `order`
        symbols only set the context)."""
        a, k = self.alphabet, self.order
        contexts = np.zeros(len(indices) - k, dtype=np.int64)
        for i in range(k):
            contexts = contexts * a + indices[i: len(indices) - k + i]
        p = self.transition[contexts, indices[k:]]
        return float(-np.log2(p).sum())

    def describe(self) -> dict:
        return {"alphabet": self.alphabet, "symbols": self.symbols, "order": self.order,
                "contexts": len(self.stationary), "recurrent_contexts": self.recurrent_contexts,
                "entropy_rate_bits_per_byte": self.entropy_rate,
                "entropy_given_j_previous_bits": self.conditional_entropies(), "block_entropy_bits": self.block_entropy()}


def markov_source(alphabet: int, order: int, support: int, seed: int, concentration: float = 1.0) -> Source:
    """A random order-`order` chain over the first `alphabet` symbols of ALPHABET, each context
    with `support` possible next symbols (Dirichlet(`concentration`) probabilities), from `seed`."""
    _check(2 <= alphabet <= len(ALPHABET), f"alphabet {alphabet} must be in 2..{len(ALPHABET)} (printable letters and digits)")
    _check(order >= 0, f"order {order} must be >= 0")
    _check(2 <= support <= alphabet, f"support {support} must be in 2..alphabet ({alphabet}): every context needs "
                                     f"two or more next symbols")
    _check(concentration > 0 and math.isfinite(concentration), f"concentration {concentration} must be a positive number")
    _check(seed >= 0, f"seed {seed} must be >= 0")
    contexts = alphabet**order
    _check(contexts <= MAX_CONTEXTS, f"alphabet**order = {contexts:,} contexts is more than {MAX_CONTEXTS:,}; "
                                     f"use a smaller alphabet or order")
    rng = np.random.default_rng(seed)
    # A hierarchical Dirichlet prior (cf. Teh 2006), so that shorter contexts already predict
    # something and the table can be learnt one order at a time, as in natural text: level j has
    # a row per context of the last j symbols; level 0 is uniform; a row at level 1..order-1 is a
    # Dirichlet draw over the whole alphabet centred on its parent's row (the context one symbol
    # shorter), total concentration `concentration * alphabet`. The last level is the chain:
    # each row has `support` next symbols chosen uniformly (so every context stays in use) and
    # probabilities from a Dirichlet centred on the parent's probabilities of those symbols.
    rows = np.full((1, alphabet), 1.0 / alphabet)
    for level in range(1, order + 1):
        parent = rows[np.arange(alphabet**level) % alphabet ** (level - 1)]
        rows = np.zeros_like(parent)
        for c in range(len(rows)):
            if level < order:
                rows[c] = rng.dirichlet(concentration * alphabet * parent[c])
            else:
                on = rng.choice(alphabet, size=support, replace=False)
                rows[c, on] = rng.dirichlet(concentration * support * parent[c, on] / parent[c, on].sum())
            rows[c] = np.maximum(rows[c], 1e-12 if level < order else 0.0)  # a draw can underflow to 0
            rows[c, rows[c] > 0] = np.maximum(rows[c, rows[c] > 0], 1e-9)  # no support symbol at 0
            rows[c] /= rows[c].sum()
    if order == 0:  # i.i.d.: `support` symbols of the alphabet
        rows = np.zeros((1, alphabet))
        rows[0, rng.choice(alphabet, size=support, replace=False)] = rng.dirichlet(np.full(support, concentration))
    return Source(ALPHABET[:alphabet], order, rows, _stationary(rows, alphabet, order))


def _stationary(transition: np.ndarray, alphabet: int, order: int, tol: float = 1e-12, max_iter: int = 200_000) -> np.ndarray:
    """pi of the context chain (c -> (c * a + s) mod a**k with probability transition[c, s]):
    checked to have one closed class, then by power iteration, refused if it does not converge."""
    contexts = transition.shape[0]
    if order == 0:
        return np.ones(1)
    nxt = (np.arange(contexts)[:, None] * alphabet + np.arange(alphabet)[None, :]) % contexts
    closed = _closed_class(transition, nxt)
    pi = np.where(closed, 1.0, 0.0) / closed.sum()  # pi lives on the closed class; start there
    for _ in range(max_iter):
        step = np.bincount(nxt.ravel(), weights=(pi[:, None] * transition).ravel(), minlength=contexts)
        new = 0.5 * (pi + step)  # the lazy chain: same pi, and no period to oscillate with
        change = np.abs(new - pi).sum()
        pi = new
        if change < tol:
            return pi / pi.sum()
    raise DataError(f"power iteration for the stationary distribution did not converge in {max_iter} steps "
                    f"(last change {change:.2e}); try another seed or a larger support")


def _closed_class(transition: np.ndarray, nxt: np.ndarray) -> np.ndarray:
    """The contexts of the chain's one closed communicating class (a boolean mask); more than
    one closed class is refused, since pi (and the entropy rate) would depend on the start."""
    from scipy.sparse import csr_matrix
    from scipy.sparse.csgraph import connected_components

    contexts = transition.shape[0]
    rows, cols = np.nonzero(transition)
    graph = csr_matrix((np.ones(len(rows)), (rows, nxt[rows, cols])), shape=(contexts, contexts))
    count, label = connected_components(graph, directed=True, connection="strong")
    closed = np.ones(count, dtype=bool)  # a class is closed if no edge leaves it
    closed[np.unique(label[rows][label[rows] != label[nxt[rows, cols]]])] = False
    if closed.sum() != 1:
        raise DataError(f"this chain has {int(closed.sum())} closed classes, so its entropy rate depends on where it "
                        f"starts; try another seed or a larger support")
    return label == np.flatnonzero(closed)[0]


def _row_entropies(transition: np.ndarray) -> np.ndarray:
    p = np.where(transition > 0, transition, 1.0)
    return -(transition * np.log2(p)).sum(axis=1)


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise DataError(message)
