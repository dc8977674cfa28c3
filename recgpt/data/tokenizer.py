"""The preparation's tokenizer: a small byte-level BPE trained on the corpus (tiny recipes cannot reach the
GPT-NeoX one), and ``LineTokens``, which tokenizes each rendered line once for chunking and MDS shards alike."""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterable, Sequence
from itertools import chain
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

EOS_TOKEN = "<|endoftext|>"
PAD_TOKEN = "<|padding|>"


def train_bpe_tokenizer(texts: Iterable[str], vocab_size: int, output_dir: Path, model_max_length: int) -> int:
    """Train a byte-level BPE tokenizer (GPT-NeoX's kind, much smaller) and save it for ``AutoTokenizer``.

    The vocabulary holds ``vocab_size`` entries including the EOS token ``<|endoftext|>`` and the pad token
    ``<|padding|>`` (GPT-NeoX's names). No BOS is added, as with GPT-NeoX.

    Args:
        texts: The training texts (documents, prompts and responses).
        vocab_size: Total vocabulary size; the model's ``vocab_size`` must be at least this.
        output_dir: Where ``tokenizer.json`` and its configs are written.
        model_max_length: The tokenizer's advertised maximum length (the recipe's ``max_seq_len``).

    Returns:
        The vocabulary size actually reached (smaller when the corpus has fewer distinct merges).
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[EOS_TOKEN, PAD_TOKEN],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer=trainer)
    wrapped = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        eos_token=EOS_TOKEN,
        pad_token=PAD_TOKEN,
        unk_token=EOS_TOKEN,
        model_max_length=model_max_length,
        clean_up_tokenization_spaces=False,
    )
    output_dir.mkdir(parents=True, exist_ok=True)
    wrapped.save_pretrained(str(output_dir))
    return tokenizer.get_vocab_size()


# Normalizers that act on each code point's canonical neighbourhood only; "\n" is a stable starter for all four,
# so normalising a document equals normalising its lines one by one.
_LINE_SAFE_NORMALIZERS = frozenset({"NFC", "NFD", "NFKC", "NFKD"})


def lines_compose(tokenizer: Any) -> bool:
    """Whether ``tokenizer`` gives a document's ids as its lines' ids joined by the id of ``"\\n"``.

    True for a Rust BPE tokenizer whose pre-tokenizer is GPT-2's byte-level regex without a prefix space
    (GPT-NeoX, GPT-2, the BPE trained here), optionally behind a Unicode normalizer, with no added token that
    holds a newline or strips whitespace. Its regex makes a lone ``"\\n"`` between two non-space characters a
    pre-token of its own, and BPE never merges across pre-tokens, so the ids of ``"a\\nb"`` are the ids of
    ``"a"``, ``"\\n"``, ``"b"`` whenever ``a`` and ``b`` neither start nor end with whitespace
    (``LineTokens.document`` checks that per line). Anything else (SentencePiece, Llama 3's regex, BPE dropout)
    is tokenized a document at a time.
    """
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        return False
    spec = json.loads(backend.to_str())
    normalizer, pre, model = spec.get("normalizer"), spec.get("pre_tokenizer") or {}, spec.get("model") or {}
    if normalizer is not None:
        parts = normalizer.get("normalizers", [normalizer]) if normalizer.get("type") == "Sequence" else [normalizer]
        if any(part.get("type") not in _LINE_SAFE_NORMALIZERS for part in parts):
            return False
    byte_level = pre.get("type") == "ByteLevel" and pre.get("use_regex", True) and not pre.get("add_prefix_space")
    bpe = model.get("type") == "BPE" and not model.get("dropout")
    added = spec.get("added_tokens") or []
    plain = all("\n" not in t["content"] and not t.get("lstrip") and not t.get("rstrip") for t in added)
    return bool(byte_level and bpe and plain)


# GPT-2's pre-tokenizer regex (`'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+`, what the
# Rust ByteLevel pre-tokenizer applies) restricted to ASCII text, where \p{L} is [A-Za-z], \p{N} is [0-9] and \s
# (Unicode White_Space) is tab, line feed, vertical tab, form feed, carriage return and space: \x1c-\x1f are not
# White_Space there, though Python's str.isspace says they are, hence the explicit classes.
_SPACE = "\t\n\x0b\x0c\r "
ASCII_BYTE_LEVEL = re.compile(
    rf"'s|'t|'re|'ve|'m|'ll|'d| ?[A-Za-z]+| ?[0-9]+| ?[^{_SPACE}A-Za-z0-9]+|[{_SPACE}]+(?![^{_SPACE}])|[{_SPACE}]+"
)


class AsciiWords:
    """Byte-level BPE ids of ASCII texts from a cache of each pre-token's ids, the Rust tokenizer doing only the
    pre-tokens it has not seen (``lines_compose`` tokenizers only).

    BPE never merges across pre-tokens, so a text's ids are its pre-tokens' ids joined, and a pre-token's ids do not
    depend on its neighbours. Splitting ASCII text with ``ASCII_BYTE_LEVEL`` in Python and looking each piece up
    is about 3x faster than the Rust ``encode_batch`` on corpus lines (it builds offsets, tokens and masks per
    text; ``bench/prep.py`` measures the whole prepare). Texts with other characters, or holding an added token's
    content (the Rust tokenizer splits those out first), are not for this class: ``handles`` says which.

    Example:
        With the demo's BPE, ``AsciiWords(backend).lookup(["Title: Heat (1995)"])`` equals the Rust tokenizer's
        ids of that line, piece by piece: ``Title``, ``:``, `` Heat``, `` (``, ``1995``, ``)``.
    """

    def __init__(self, backend: Any, max_words: int = 500_000) -> None:
        self.backend = backend
        self.words: dict[str, tuple[int, ...]] = {}
        self.max_words = max_words
        contents = sorted((t.content for t in backend.get_added_tokens_decoder().values()), key=len, reverse=True)
        self.added = re.compile("|".join(re.escape(c) for c in contents if c)) if any(contents) else None

    def handles(self, text: str) -> bool:
        """Whether ``text`` is ASCII and holds no added token (which the Rust tokenizer would split out first)."""
        return text.isascii() and (self.added is None or self.added.search(text) is None)

    def lookup(self, texts: Sequence[str]) -> list[np.ndarray]:
        """The ids of each text (``handles`` must hold for all), unseen pre-tokens encoded in one Rust batch."""
        split = ASCII_BYTE_LEVEL.findall
        pieces = [split(text) for text in texts]
        words = self.words
        unseen = list(dict.fromkeys(piece for text in pieces for piece in text if piece not in words))
        if unseen:
            if len(words) + len(unseen) > self.max_words:
                words.clear()  # bounded memory: start again (this batch's pieces are added below)
                unseen = list(dict.fromkeys(piece for text in pieces for piece in text))
            encoded = self.backend.encode_batch(unseen, add_special_tokens=False)
            words.update(zip(unseen, (tuple(e.ids) for e in encoded), strict=True))
        get = words.__getitem__
        return [np.fromiter(chain.from_iterable(map(get, text)), dtype=np.int32) for text in pieces]


class LineTokens:
    """One tokenization per rendered line, shared by chunking (counts) and the MDS shards (document ids).

    Lines are encoded in batches, ASCII ones through ``AsciiWords`` when ``lines_compose`` holds and the rest on
    the Rust tokenizer, and kept in a cache bounded in tokens and lines (histories repeat lines: the same movie
    rated the same way by many users). ``document`` joins the cached ids of a
    document's lines when ``lines_compose`` holds, else tokenizes the document text once; the first
    ``verify_first`` documents are also tokenized whole and compared, and a difference switches to whole-document
    tokenization for the rest of the run (with a warning), so the ids are always the document's own (the check
    tokenizes with the Rust tokenizer alone, so it covers ``AsciiWords`` too).

    Example:
        With the demo's BPE, ``document("Given ...:", ["Title: A", "Title: B"])`` equals
        ``tokenizer("Given ...:\\nTitle: A\\nTitle: B", add_special_tokens=False)["input_ids"]``.
    """

    def __init__(
        self, tokenizer: Any, cache_tokens: int = 4_000_000, cache_lines: int = 200_000, verify_first: int = 16
    ) -> None:
        self.tokenizer = tokenizer
        self.backend = getattr(tokenizer, "backend_tokenizer", None)
        self.compose = lines_compose(tokenizer)
        self.cache: dict[str, np.ndarray] = {}
        self.cached_tokens, self.cache_tokens, self.cache_lines = 0, cache_tokens, cache_lines
        self.verify_left = verify_first if self.compose else 0
        self.words = AsciiWords(self.backend) if self.compose else None
        self.newline = self.encode(["\n"])[0] if self.compose else np.zeros(0, dtype=np.int32)

    def encode(self, texts: list[str]) -> list[np.ndarray]:
        """The ids of each text (no special tokens); no line cache."""
        words = self.words
        if words is None:
            return self.encode_whole(texts)
        fast = [words.handles(text) for text in texts]
        if all(fast):
            return words.lookup(texts)
        quick = iter(words.lookup([t for t, f in zip(texts, fast, strict=True) if f]))
        rest = iter(self.encode_whole([t for t, f in zip(texts, fast, strict=True) if not f]))
        return [next(quick) if f else next(rest) for f in fast]

    def encode_whole(self, texts: list[str]) -> list[np.ndarray]:
        """The ids of each text (no special tokens), on the Rust tokenizer where there is one."""
        if self.backend is not None:
            encoded = [e.ids for e in self.backend.encode_batch(texts, add_special_tokens=False)]
        else:
            encoded = self.tokenizer(texts, add_special_tokens=False)["input_ids"]
        return [np.asarray(ids, dtype=np.int32) for ids in encoded]

    def ids(self, lines: Sequence[str]) -> list[np.ndarray]:
        """The token ids of each line (no special tokens), from the cache or one batched encode of the misses."""
        cache = self.cache
        missing = [line for line in dict.fromkeys(lines) if line not in cache]
        if not missing:
            return [cache[line] for line in lines]
        found = dict(zip(missing, self.encode(missing), strict=True))
        result = [found[line] if line in found else cache[line] for line in lines]
        size = sum(len(ids) for ids in found.values())
        if self.cached_tokens + size > self.cache_tokens or len(cache) + len(found) > self.cache_lines:
            cache.clear()
            self.cached_tokens = 0
        if size <= self.cache_tokens and len(found) <= self.cache_lines:  # else answered without being kept
            cache.update(found)
            self.cached_tokens += size
        return result

    def __call__(self, lines: list[str]) -> list[int]:
        """Token counts of lines (the ``TokenCounter`` of chunking and prompt windows)."""
        return [len(ids) for ids in self.ids(lines)]

    def document(self, header: str, lines: Sequence[str]) -> np.ndarray:
        """The ids of ``render_document``'s text ``header + "\\n" + "\\n".join(lines)``, tokenized once."""
        text_parts = [header, *lines]
        if not self.compose or any(not part or part[0].isspace() or part[-1].isspace() for part in text_parts):
            return self.encode(["\n".join(text_parts)])[0]
        pieces: list[np.ndarray] = []
        for ids in self.ids(text_parts):
            pieces.append(ids)
            pieces.append(self.newline)
        joined = np.concatenate(pieces[:-1])
        if self.verify_left:
            self.verify_left -= 1
            whole = self.encode_whole(["\n".join(text_parts)])[0]
            if not np.array_equal(whole, joined):
                log.warning("this tokenizer merges tokens across line ends; tokenizing whole documents instead")
                self.compose, self.verify_left, self.words = False, 0, None
                self.cache.clear()
                return whole
        return joined
