"""Tokenizers for `dist-train data prepare` and for the recipes that read its shards.

Three kinds, named in index.json's `tokenizer`:
- `byte`: token = UTF-8 byte (0..255), plus 256 = end of text; needs nothing, vocabulary 257.
- `bpe`: a byte-level BPE trained on the input with Hugging Face `tokenizers` (offline), saved as DIR/tokenizer.json;
  its `<|endoftext|>` special token ends each document.
- `file`: an existing tokenizer.json (copied into DIR so the folder is self-contained); `<|endoftext|>`, `</s>` or
  `<eos>`, the first one its vocabulary has, ends each document, else nothing does.
`tokenizers` is imported only for the last two.
"""

from __future__ import annotations

from pathlib import Path
from collections.abc import Iterable, Iterator

import numpy as np

from dist_train.errors import UsageError

EOS_NAMES = ("<|endoftext|>", "</s>", "<eos>")
BYTE_EOS = 256


def import_tokenizers():
    try:
        import tokenizers
    except ImportError:
        raise UsageError("--tokenizer: bpe and tokenizer.json need Hugging Face tokenizers: "
                         "pip install 'dist-train[text]' (or tokenizers); --tokenizer byte needs nothing") from None
    return tokenizers


class ByteTokenizer:
    kind = "byte"
    vocab_size = 257
    eos_id = BYTE_EOS

    def encode(self, text: str) -> np.ndarray:
        return np.frombuffer(text.encode("utf-8"), dtype=np.uint8).astype(np.int64)

    def encode_bytes(self, data: bytes) -> np.ndarray:
        return np.frombuffer(data, dtype=np.uint8)

    def decode(self, ids: Iterable[int]) -> str:
        return bytes(i for i in ids if 0 <= i < 256).decode("utf-8", errors="replace")


class HFTokenizer:
    """A Hugging Face `tokenizers.Tokenizer`, encoding whole chunks of text without offsets (encode_batch_fast)."""

    def __init__(self, tokenizer, kind: str):
        self.tokenizer, self.kind = tokenizer, kind
        self.vocab_size = tokenizer.get_vocab_size(with_added_tokens=True)
        self.eos_id = next((i for i in map(tokenizer.token_to_id, EOS_NAMES) if i is not None), None)

    @classmethod
    def from_file(cls, path: str | Path, kind: str = "file", key: str = "--tokenizer") -> HFTokenizer:
        tokenizers = import_tokenizers()
        try:
            return cls(tokenizers.Tokenizer.from_file(str(path)), kind)
        except Exception as e:  # the Rust side raises plain Exceptions for unreadable or malformed files
            raise UsageError(f"{key}: '{path}' is not a tokenizers JSON file ({str(e).splitlines()[0][:80]})") \
                from None

    def encode(self, text: str) -> np.ndarray:
        return np.array(self.tokenizer.encode(text, add_special_tokens=False).ids, dtype=np.int64)

    def encode_lines(self, text: str) -> np.ndarray:
        # One call per chunk, split at line ends: encode_batch_fast skips the offsets a single `encode` computes.
        lines = text.splitlines(keepends=True)
        encoded = self.tokenizer.encode_batch_fast(lines, add_special_tokens=False)
        return np.fromiter((i for e in encoded for i in e.ids), dtype=np.int64)

    def decode(self, ids: Iterable[int]) -> str:
        return self.tokenizer.decode(list(ids), skip_special_tokens=False)

    def save(self, path: Path) -> None:
        self.tokenizer.save(str(path))


def train_bpe(texts: Iterator[str], vocab_size: int, show_progress: bool) -> HFTokenizer:
    """Byte-level BPE (GPT-2 style pre-tokenisation, all 256 bytes in the alphabet, so any text encodes)."""
    tokenizers = import_tokenizers()
    from tokenizers import decoders, models, pre_tokenizers, trainers

    tok = tokenizers.Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[EOS_NAMES[0]], show_progress=show_progress,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(texts, trainer=trainer)
    return HFTokenizer(tok, "bpe")


def parse_spec(spec: str) -> tuple[str, int | Path | None]:
    """`byte` | `bpe:VOCAB` | a tokenizer.json path, as ("byte", None) | ("bpe", vocab) | ("file", path)."""
    if spec == "byte":
        return "byte", None
    if spec.startswith("bpe:"):
        vocab = spec[4:]
        if not vocab.isdigit() or not 258 <= int(vocab) <= 1 << 32:
            raise UsageError(f"--tokenizer: {spec!r}: VOCAB must be an integer in [258, 2^32] (256 bytes, the "
                             "end-of-text token and at least one merge), e.g. bpe:8192")
        return "bpe", int(vocab)
    path = Path(spec)
    if not path.is_file():
        raise UsageError(f"--tokenizer: {spec!r} is neither byte, bpe:VOCAB nor an existing tokenizer.json file")
    return "file", path


def load(index) -> ByteTokenizer | HFTokenizer:
    """The tokenizer a prepared folder was written with (dist_train.data.index.ShardIndex), for encode/decode."""
    if index.tokenizer["kind"] == "byte":
        return ByteTokenizer()
    return HFTokenizer.from_file(index.folder / index.tokenizer["file"], index.tokenizer["kind"], key="data.path")
