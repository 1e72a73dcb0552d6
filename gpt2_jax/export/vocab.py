"""The vocabulary that travels with exported weights, and the one an imported model brings.

Formats that carry a tokenizer (OpenAI's encoder.json + vocab.bpe, llm.c's token file, GGUF's
token list and merges) need the byte-level BPE the checkpoint was trained with: its tokens as
bytes in id order, its merges in rank order and its end-of-text id. `ExportVocab.load` finds them
from the checkpoint's `vocab` entry ("gpt2" or a vocabulary directory) through
`tokenizer.load_tokenizer`, and refuses what a format cannot hold (sentencepiece, a vocabulary
whose size differs from the model's, a checkpoint that records none).

On import, `imported_vocab` names a file's vocabulary: "gpt2" when it is exactly the official
one, otherwise a vocabulary the importer saves next to the weights.

References:
  openai/gpt-2 src/encoder.py; gpt2_jax.tokenizer.formats (file formats, id layout).
"""

from __future__ import annotations

import dataclasses
import pathlib

from gpt2_jax.export.names import ExportError


@dataclasses.dataclass(frozen=True)
class ExportVocab:
    """A byte-level BPE vocabulary in the shape exporters need."""

    name: str  # the checkpoint's `vocab` entry
    tokens: tuple[bytes, ...]  # id -> token bytes (special tokens as their UTF-8 text)
    merges: tuple[tuple[bytes, bytes], ...]  # rank order; merge i makes token 256 + i
    special_tokens: dict[str, int]
    eot_id: int

    @property
    def n_vocab(self) -> int:
        return len(self.tokens)

    @classmethod
    def load(cls, name: str | None, n_vocab: int, fmt: str) -> "ExportVocab":
        from gpt2_jax.tokenizer import BPETokenizer, TokenizerError, load_tokenizer

        if not name or name == "unknown":
            raise ExportError(f"the checkpoint records no vocabulary (vocab={name!r}) and format {fmt!r} carries one; "
                              f"pass --vocab gpt2 or --vocab VOCAB_DIR")
        try:
            tok = load_tokenizer(name)
        except TokenizerError as e:
            raise ExportError(f"vocabulary {name!r} cannot be loaded for export ({e})") from None
        if not isinstance(tok, BPETokenizer):
            raise ExportError(f"vocabulary {name!r} is a {tok.kind} model; format {fmt!r} carries only byte-level BPE "
                              f"vocabularies (use --format hf, safetensors or params)")
        if tok.n_vocab != n_vocab:
            raise ExportError(f"vocabulary {name!r} has {tok.n_vocab} tokens but the model has n_vocab={n_vocab}; "
                              f"pass the vocabulary it was trained with (--vocab)")
        tokens: list[bytes] = [b""] * tok.n_vocab
        for token, rank in tok.ranks.items():
            tokens[rank] = token
        for text, idx in tok.special_tokens.items():
            tokens[idx] = text.encode("utf-8")
        return cls(name, tuple(tokens), tuple(_merges_of(tok)), dict(tok.special_tokens), tok.eot_id)

    def write_gpt2_files(self, directory: pathlib.Path) -> None:
        """encoder.json + vocab.bpe (OpenAI's release layout, also Hugging Face's GPT2Tokenizer's)."""
        from gpt2_jax.tokenizer.formats import BPEVocab, write_gpt2_files

        write_gpt2_files(BPEVocab(list(self.merges), self.special_tokens), directory)


def _merges_of(tok) -> list[tuple[bytes, bytes]]:
    """Merges in rank order: read from vocab.bpe when the vocabulary has one, else recovered from
    the ranks (each token splits into the two parts that BPE with lower ranks leaves)."""
    from gpt2_jax.tokenizer.formats import read_gpt2_files

    directory = pathlib.Path(str(_source_dir(tok.source)))
    if (directory / "vocab.bpe").is_file():
        return read_gpt2_files(directory)[0]
    return merges_from_ranks(tok.ranks, tok.name)


def merges_from_ranks(ranks: dict[bytes, int], name: str) -> list[tuple[bytes, bytes]]:
    """Recovers the merge list from token ranks: each multi-byte token splits into the two parts
    that byte-pair encoding with only lower-ranked merges leaves (as tiktoken's rank engine does)."""
    merges = []
    for token, rank in sorted(ranks.items(), key=lambda kv: kv[1]):
        if len(token) < 2:
            continue
        parts = [bytes([b]) for b in token]
        while len(parts) > 2:
            best, i = min((ranks.get(parts[i] + parts[i + 1], 1 << 62), i) for i in range(len(parts) - 1))
            if best >= rank:
                break
            parts[i:i + 2] = [parts[i] + parts[i + 1]]
        if len(parts) != 2 or ranks.get(parts[0], rank) >= rank or ranks.get(parts[1], rank) >= rank:
            raise ExportError(f"vocabulary {name!r}: token {token!r} is not the merge of two earlier tokens; "
                              f"it cannot be written as a BPE merge list")
        merges.append((parts[0], parts[1]))
    return merges


def _source_dir(source: str) -> pathlib.Path:
    from gpt2_jax.tokenizer.vocab import BUNDLED, bundled_dir

    return bundled_dir(source) if source in BUNDLED else pathlib.Path(source)


def imported_vocab(merges: list[tuple[bytes, bytes]] | None, special_tokens: dict[str, int] | None):
    """The vocabulary of an imported file: "gpt2" if it is exactly the official one, "unknown"
    when the file has none, else a `tokenizer.BPEVocab` for the importer to save beside the weights."""
    if merges is None:
        return "unknown"
    from gpt2_jax.tokenizer.formats import BPEVocab, read_gpt2_files
    from gpt2_jax.tokenizer.vocab import bundled_dir

    official, _, official_specials = read_gpt2_files(bundled_dir("gpt2"))
    if list(merges) == official and special_tokens == official_specials:
        return "gpt2"
    return BPEVocab(list(merges), dict(special_tokens or {}))


def vocab_from_tokens(tokens: list[bytes], eot_id: int, n_vocab: int):
    """The vocabulary of a file that lists tokens by id (llm.c, GGUF): "gpt2" when they are GPT-2's
    tokens, else a `tokenizer.BPEVocab` rebuilt from them (merges recovered from the id order)."""
    from gpt2_jax.tokenizer.formats import BPEVocab

    if len(tokens) != n_vocab:
        raise ExportError(f"the tokenizer lists {len(tokens)} tokens but the model has n_vocab={n_vocab}; they do not belong together")
    if n_vocab == 50257 and tuple(tokens) == ExportVocab.load("gpt2", 50257, "").tokens and eot_id == 50256:
        return "gpt2"
    if eot_id != n_vocab - 1:
        raise ExportError(f"the tokenizer's end-of-text id is {eot_id}, not the last id {n_vocab - 1}; "
                          f"only GPT-2-style vocabularies (specials last) can be imported")
    ranks = {bytes(t): i for i, t in enumerate(tokens[:eot_id])}
    if len(ranks) != eot_id:
        raise ExportError("the tokenizer lists the same token twice; it is not a byte-level BPE vocabulary")
    return BPEVocab(merges_from_ranks(ranks, "imported"), {bytes(tokens[eot_id]).decode("utf-8", "replace"): eot_id})
