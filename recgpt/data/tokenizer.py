"""The preparation's tokenizer: a small byte-level BPE trained on the corpus (tiny recipes cannot reach the
GPT-NeoX one), and ``LineTokens``, which tokenizes each rendered line once for chunking and MDS shards alike."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Sequence
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


class LineTokens:
    """One tokenization per rendered line, shared by chunking (counts) and the MDS shards (document ids).

    Lines are encoded in batches on the Rust tokenizer and kept in a cache bounded in tokens and lines (histories
    repeat lines: the same movie rated the same way by many users). ``document`` joins the cached ids of a
    document's lines when ``lines_compose`` holds, else tokenizes the document text once; the first
    ``verify_first`` documents are also tokenized whole and compared, and a difference switches to whole-document
    tokenization for the rest of the run (with a warning), so the ids are always the document's own.

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
        self.newline = self.encode(["\n"])[0] if self.compose else np.zeros(0, dtype=np.int32)

    def encode(self, texts: list[str]) -> list[np.ndarray]:
        """The ids of each text (no special tokens), on the Rust tokenizer where there is one; no cache."""
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
            whole = self.encode(["\n".join(text_parts)])[0]
            if not np.array_equal(whole, joined):
                log.warning("this tokenizer merges tokens across line ends; tokenizing whole documents instead")
                self.compose, self.verify_left = False, 0
                return whole
        return joined
