"""Tokenize once: chunking and MDS shards share one tokenization of each line, and outputs stay byte-identical.

``tests/fixtures/prepare/head_digests.json`` holds the SHA-256 of every output file that the code before this
change (tokenizing each document a second time for MDS) wrote for three shrunk configs; it holds digests and
counts only, nothing derived from MovieLens text. ``rejects.jsonl`` is compared with each row's ``file`` reduced
to its name, since it records where the inputs lie on the machine.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
from pathlib import Path

import pytest
from transformers import AutoTokenizer

from recgpt.data.prepare import prepare
from recgpt.data.tokenizer import ASCII_BYTE_LEVEL, LineTokens, lines_compose, train_bpe_tokenizer
from tests.conftest import ROOT, movielens_config
from tests.data.test_prepare import multi_source_config

HEAD = json.loads((ROOT / "tests" / "fixtures" / "prepare" / "head_digests.json").read_text())


def file_digests(root: Path) -> dict[str, str]:
    """Every output file's SHA-256 but the manifest's (its config names the output folder)."""
    digests = {}
    for path in sorted(p for p in root.rglob("*") if p.is_file() and p.name != "manifest.json"):
        relative = path.relative_to(root).as_posix()
        if relative == "rejects.jsonl":
            rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
            text = "".join(json.dumps({**r, "file": os.path.basename(r["file"])}, sort_keys=True) + "\n" for r in rows)
            digests[relative] = hashlib.sha256(text.encode()).hexdigest()
        else:
            digests[relative] = hashlib.sha256(path.read_bytes()).hexdigest()
    return digests


def check_against_head(root: Path, name: str) -> None:
    assert file_digests(root) == HEAD[name]["files"]
    manifest = json.loads((root / "manifest.json").read_text())
    for key, expected in HEAD[name]["manifest"].items():
        assert manifest[key] == expected, key


def test_demo_config_outputs_equal_the_old_code_path_byte_for_byte(tmp_path: Path):
    # The digests were taken before the demo config set next_item_cut_points; null gives the rows of that time.
    config = movielens_config(tmp_path / "data", next_item_cut_points="null")
    check_against_head(prepare(config).parent, "movielens-40")


def test_cut_point_rows_and_short_budgets_equal_the_old_code_path(tmp_path: Path):
    config = movielens_config(tmp_path / "data", max_users=25, max_seq_len=96, next_item_cut_points=3, workers=1)
    check_against_head(prepare(config).parent, "movielens-25-cuts")


def test_several_sources_weights_and_finetune_users_equal_the_old_code_path(tmp_path: Path):
    config = multi_source_config(tmp_path)
    config.workers = 1
    check_against_head(prepare(config).parent, "fixtures-multi-source")


AWKWARD_LINES = [
    ["Title: Heat (1995); Rating: 4.0/5.0", "Title: Fargo (1996)"],
    [" leading space", "trailing space ", "", "two  spaces", "\u3000ideographic space\u3000"],
    ["tab\tinside", "ends with newline\n", "\nstarts with newline", "Ünïcödé 漢字 🎬"],
    ["Title: A", "Title: A", "Title: A"],  # repeats come from the cache
]


@pytest.mark.parametrize("lines", AWKWARD_LINES)
def test_document_ids_equal_tokenizing_the_whole_document(tokenizer, lines: list[str]):
    header = "Given the interaction history of a user with movies/shows as follows:"
    tokens = LineTokens(tokenizer, verify_first=0)  # no safety net: the composition itself must be exact
    assert tokens.compose
    whole = tokenizer("\n".join([header, *lines]), add_special_tokens=False)["input_ids"]
    assert tokens.document(header, lines).tolist() == whole
    assert tokens(lines) == [len(tokenizer(line, add_special_tokens=False)["input_ids"]) for line in lines]


def prefix_space_tokenizer(tokenizer_dir: Path):
    """The same BPE with ``add_prefix_space``: each line alone would get a space the document does not have."""
    from tokenizers import pre_tokenizers

    tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    tokenizer.backend_tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)
    return tokenizer


def test_a_tokenizer_that_changes_lines_in_context_is_tokenized_whole(tokenizer_dir: Path):
    tokenizer = prefix_space_tokenizer(tokenizer_dir)
    assert not lines_compose(tokenizer)
    tokens = LineTokens(tokenizer)
    lines = ["Title: Heat (1995)", "Title: Fargo (1996)"]
    whole = tokenizer("\n".join(["Given:", *lines]), add_special_tokens=False)["input_ids"]
    assert tokens.document("Given:", lines).tolist() == whole
    joined = [i for ids in tokens.ids(["Given:", *lines]) for i in [*ids.tolist(), *tokenizer("\n")["input_ids"]]]
    assert joined[:-1] != whole  # joining line ids would have been wrong for this tokenizer


def test_a_wrong_composition_is_caught_by_the_check_of_the_first_documents(
    tokenizer_dir: Path, caplog: pytest.LogCaptureFixture
):
    tokenizer = prefix_space_tokenizer(tokenizer_dir)
    tokens = LineTokens(tokenizer)
    tokens.compose, tokens.verify_left = True, 16  # as if ``lines_compose`` had wrongly said yes
    tokens.newline = tokens.encode(["\n"])[0]
    lines = ["Title: Heat (1995)", "Title: Fargo (1996)"]
    whole = tokenizer("\n".join(["Given:", *lines]), add_special_tokens=False)["input_ids"]
    with caplog.at_level(logging.WARNING):
        assert tokens.document("Given:", lines).tolist() == whole
    assert not tokens.compose and "tokenizing whole documents" in caplog.text


# Characters where a Python reading of GPT-2's regex could part from the Rust one: contractions in both cases,
# every ASCII whitespace, the separators \x1c-\x1f (not whitespace to Rust, whitespace to str.isspace), controls,
# punctuation runs, digits against letters, and added tokens' text.
FUZZ_PIECES = [
    *"abcXYZ019 '\"sStrevmld.,;:!?()-_/\\\t\n\x0b\x0c\r\x1c\x1f\x00\x7f~@#$%^&*",
    *["'s", "'S", "'re", "'ll", "  ", " 's", "\n\n", " \n", "<|endoftext|>", "<|padding|>", "Title: ", "/5.0"],
]


def fuzz_texts(count: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    return ["".join(rng.choice(FUZZ_PIECES) for _ in range(rng.randint(0, 30))) for _ in range(count)]


def test_ascii_words_give_the_rust_tokenizers_ids_for_any_text(tmp_path: Path):
    train_bpe_tokenizer(iter(fuzz_texts(3000, seed=1)), 600, tmp_path, 64)  # merges across every fuzz piece
    tokenizer = AutoTokenizer.from_pretrained(str(tmp_path))
    tokens = LineTokens(tokenizer, verify_first=0)
    assert tokens.words is not None
    texts = fuzz_texts(5000, seed=2) + ["é " + text for text in fuzz_texts(200, seed=3)]
    routed = [tokens.words.handles(text) for text in texts]
    assert 0.3 < sum(routed) / len(texts) < 0.9  # both routes taken
    assert not any(r for t, r in zip(texts, routed, strict=True) if "<|" in t or not t.isascii())
    split = tokenizer.backend_tokenizer.pre_tokenizer.pre_tokenize_str
    for text in (t for t, r in zip(texts, routed, strict=True) if r):  # the pieces themselves, whatever the merges
        pieces, end = [], 0
        for piece in ASCII_BYTE_LEVEL.findall(text):
            pieces.append((end, end + len(piece)))
            end += len(piece)
        assert pieces == [span for _, span in split(text)], repr(text)
    want = [e.ids for e in tokenizer.backend_tokenizer.encode_batch(texts, add_special_tokens=False)]
    assert [ids.tolist() for ids in tokens.encode(texts)] == want
    assert [ids.tolist() for ids in tokens.encode(texts)] == want  # again, every piece from the cache


def test_ascii_words_stay_bounded_and_exact_when_the_cache_fills(tokenizer):
    tokens = LineTokens(tokenizer, verify_first=0)
    assert tokens.words is not None
    tokens.words.max_words = 50
    texts = fuzz_texts(400, seed=4)
    want = [e.ids for e in tokenizer.backend_tokenizer.encode_batch(texts, add_special_tokens=False)]
    got = [tokens.encode([text])[0].tolist() for text in texts]
    assert got == want
    assert len(tokens.words.words) <= 50 + max(len(text) for text in texts)


def test_an_added_token_text_goes_to_the_rust_tokenizer(tokenizer):
    tokenizer.add_tokens(["  ", "Fargo"])  # GPT-NeoX adds runs of spaces; the Rust tokenizer splits these out first
    tokens = LineTokens(tokenizer, verify_first=0)
    assert tokens.words is not None
    texts = ["Title: Fargo (1996)", "two  spaces", "Title: Heat (1995)"]
    assert [tokens.words.handles(t) for t in texts] == [False, False, True]
    want = [e.ids for e in tokenizer.backend_tokenizer.encode_batch(texts, add_special_tokens=False)]
    assert [ids.tolist() for ids in tokens.encode(texts)] == want
