"""SentencePiece BPE with byte fallback behind the same `Tokenizer` interface (vocabulary ablations).

Trained lossless: identity normalization, no dummy prefix, whitespace kept, byte fallback for
characters outside the learned pieces, so decode(encode(x)) == x as with byte-level BPE. One
change to the trained model: sentencepiece writes spaces as U+2581 inside pieces and turns every
U+2581 of the input into a space, which would make that character decode as a space. We switch
whitespace escaping off and write pieces with real spaces; segmentation of any text without
U+2581 is unchanged, and U+2581 itself then goes through byte fallback.

Sentences: sentencepiece trains on lines. Files are streamed line by line (empty lines dropped,
special-token strings removed); at most `max_sentences` lines are kept, a uniform sample when the
corpus has more (sentencepiece's reservoir), which bounds memory on large corpora.

Layout: <unk> is id 0 (never produced: byte fallback), the special tokens follow (`<|endoftext|>`
is id 1, a control symbol: text never produces it unless `allow_special=True`), then the 256 byte
pieces <0x00>..<0xFF>, then learned pieces. Files: spm.model + meta.json.

References:
  Kudo & Richardson 2018, SentencePiece; google/sentencepiece doc/options.md.
"""

from __future__ import annotations

import hashlib
import io
import os
import pathlib
from typing import Iterable, Iterator, Sequence

from gpt2_jax.tokenizer.errors import TokenizerError
from gpt2_jax.tokenizer.formats import ENDOFTEXT, MAX_VOCAB, vocab_dir, write_meta
from gpt2_jax.tokenizer.pretokenize import _specials_regex, check_files, default_processes, iter_file_blocks
from gpt2_jax.tokenizer.trainer import check_special_tokens
from gpt2_jax.tokenizer.vocab import SPM_MODEL, Tokenizer

SPACE_SYMBOL = "\u2581"


def _without_surrogates(text: str) -> str:
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")


class SentencePieceTokenizer(Tokenizer):
    kind = "sentencepiece"

    def __init__(self, name: str, model: bytes, fingerprint: str, source: str):
        import sentencepiece as spm
        from sentencepiece import sentencepiece_model_pb2

        proto = sentencepiece_model_pb2.ModelProto()
        try:
            proto.ParseFromString(model)
            self._sp = spm.SentencePieceProcessor(model_proto=model)
        except Exception as e:  # protobuf and sentencepiece raise assorted types
            raise TokenizerError(f"{name!r}: {SPM_MODEL} is not a sentencepiece model ({str(e).splitlines()[0][:120]})") from None
        norm = proto.normalizer_spec
        if norm.name != "identity" or norm.add_dummy_prefix or norm.remove_extra_whitespaces or not proto.trainer_spec.byte_fallback:
            raise TokenizerError(f"{name!r}: sentencepiece model is not lossless (normalization {norm.name!r}, dummy prefix "
                                 f"{norm.add_dummy_prefix}, byte fallback {proto.trainer_spec.byte_fallback}); "
                                 f"train one with `gpt2-jax tokenizer train --kind sentencepiece`")
        sp = self._sp
        n_vocab = sp.get_piece_size()
        eot = sp.piece_to_id(ENDOFTEXT)
        if sp.id_to_piece(eot) != ENDOFTEXT or not sp.is_control(eot):
            raise TokenizerError(f"{name!r}: sentencepiece model has no {ENDOFTEXT} control symbol (the document separator)")
        if n_vocab > MAX_VOCAB:
            raise TokenizerError(f"{name!r} has {n_vocab} pieces, above {MAX_VOCAB} (token shards store uint16 ids)")
        escaped = norm.escape_whitespaces
        table = []
        for i in range(n_vocab):
            piece = sp.id_to_piece(i)
            if sp.is_byte(i):
                table.append(bytes([int(piece[3:5], 16)]))
            elif sp.is_unknown(i):
                table.append("\ufffd".encode())
            elif sp.is_control(i):
                table.append(piece.encode())  # special tokens decode to their text, as in GPT-2
            else:
                table.append((piece.replace(SPACE_SYMBOL, " ") if escaped else piece).encode())
        self._bytes = table
        self.special_tokens = {sp.id_to_piece(i): i for i in range(n_vocab) if sp.is_control(i)}
        super().__init__(name, fingerprint, n_vocab, eot, source)

    def encode(self, text: str, *, allow_special: bool = False) -> list[int]:
        text = _without_surrogates(text)
        if not allow_special:
            return self._sp.encode(text)
        ids: list[int] = []
        specials = _specials_regex(tuple(self.special_tokens))
        last = 0
        for m in specials.finditer(text):
            ids += self._sp.encode(text[last:m.start()])
            ids.append(self.special_tokens[m.group()])
            last = m.end()
        return ids + self._sp.encode(text[last:])

    def encode_batch(self, texts: Sequence[str], *, num_threads: int = 8, allow_special: bool = False) -> list[list[int]]:
        if allow_special:
            return [self.encode(t, allow_special=True) for t in texts]
        return self._sp.encode([_without_surrogates(t) for t in texts], num_threads=num_threads)

    def decode_bytes(self, ids) -> bytes:
        table = self._bytes
        return b"".join([table[i] for i in self._check_ids(ids)])


def load_sentencepiece(directory: pathlib.Path, meta: dict) -> SentencePieceTokenizer:
    model = (directory / SPM_MODEL).read_bytes()
    tok = SentencePieceTokenizer(directory.name, model, hashlib.sha256(model).hexdigest()[:16], str(directory.resolve()))
    if "special_tokens" in meta and meta["special_tokens"] != tok.special_tokens:
        raise TokenizerError(f"vocabulary directory {str(directory)!r} is inconsistent: meta.json lists special tokens "
                             f"{meta['special_tokens']} but {SPM_MODEL} has {tok.special_tokens}")
    return tok


def _sentences(files, documents, specials: tuple[str, ...]) -> Iterator[str]:
    split = _specials_regex(specials)
    texts: Iterable[str]
    if files is not None:
        texts = (text for p in check_files(files) for text, _ in iter_file_blocks(p))
    else:
        texts = documents
    for text in texts:
        for part in split.split(text):
            for line in part.split("\n"):
                if line:
                    yield line


def train_sentencepiece(vocab_size: int, *, files: Sequence[str | os.PathLike] | None = None,
                        documents: Iterable[str] | None = None, special_tokens: Sequence[str] = (ENDOFTEXT,),
                        processes: int | None = None, max_sentences: int = 5_000_000,
                        character_coverage: float = 0.9995) -> "SentencePieceVocab":
    """Trains a lossless sentencepiece BPE model with byte fallback of exactly `vocab_size` pieces."""
    import sentencepiece as spm
    from sentencepiece import sentencepiece_model_pb2

    specials = check_special_tokens(special_tokens)
    floor = 256 + 1 + len(specials)
    if isinstance(vocab_size, bool) or not isinstance(vocab_size, int) or not floor <= vocab_size <= MAX_VOCAB:
        raise TokenizerError(f"vocab size {vocab_size!r} must be an integer from {floor} (256 byte pieces + <unk> + "
                             f"{len(specials)} special token(s)) to {MAX_VOCAB}")
    if (files is None) == (documents is None):
        raise TokenizerError("pass either files or documents")
    if files is not None:
        check_files(files)
    sentences = _sentences(files, documents, specials)
    first = next(sentences, None)
    if first is None:
        raise TokenizerError("the corpus is empty: no text to train on; pass files with text")
    writer = io.BytesIO()
    try:
        spm.SentencePieceTrainer.train(
            sentence_iterator=_chain(first, sentences), model_writer=writer, vocab_size=vocab_size,
            model_type="bpe", byte_fallback=True, character_coverage=character_coverage,
            normalization_rule_name="identity", add_dummy_prefix=False, remove_extra_whitespaces=False,
            allow_whitespace_only_pieces=True, split_digits=False, max_sentence_length=16384,
            control_symbols=list(specials), unk_id=0, bos_id=-1, eos_id=-1, pad_id=-1,
            input_sentence_size=max_sentences, shuffle_input_sentence=True,
            num_threads=processes or default_processes(), minloglevel=2)
    except RuntimeError as e:
        message = str(e).split("]", 1)[-1].strip() or str(e)
        raise TokenizerError(f"sentencepiece cannot train vocab size {vocab_size} on this corpus: {message}") from None
    proto = sentencepiece_model_pb2.ModelProto()
    proto.ParseFromString(writer.getvalue())
    proto.normalizer_spec.escape_whitespaces = False
    for piece in proto.pieces:
        piece.piece = piece.piece.replace(SPACE_SYMBOL, " ")
    return SentencePieceVocab(proto.SerializeToString(), {s: 1 + i for i, s in enumerate(specials)})


def _chain(first: str, rest: Iterator[str]) -> Iterator[str]:
    yield first
    yield from rest


class SentencePieceVocab:
    """A trained sentencepiece model (serialized) ready to be saved as a vocabulary directory."""

    def __init__(self, model: bytes, special_tokens: dict[str, int]):
        self.model = model
        self.special_tokens = special_tokens

    def save(self, out_dir: str | os.PathLike) -> pathlib.Path:
        with vocab_dir(out_dir) as tmp:
            (tmp / SPM_MODEL).write_bytes(self.model)
            tok = SentencePieceTokenizer(pathlib.Path(out_dir).name, self.model, "", "")
            write_meta(tmp, {"kind": "sentencepiece", "n_vocab": tok.n_vocab, "special_tokens": self.special_tokens})
        return pathlib.Path(out_dir)
