"""Label masking and whole-line fitting, with a toy tokenizer whose ids can be read by hand."""

from __future__ import annotations

import pytest

from recgpt.data.render import render_prompt
from recgpt.encoding import IGNORE_INDEX, ExampleTooLongError, encode_example, fit_prompt


class CharTokenizer:
    """One id per character (ord), EOS = 0: lengths and ids are easy to compute by hand."""

    eos_token_id = 0

    def __call__(self, text: str, add_special_tokens: bool = True) -> dict[str, list[int]]:
        return {"input_ids": [ord(c) for c in text]}


PROMPT = render_prompt("Predict the next item.\nGiven ...:\n\nTitle: A\nTitle: B\nTitle: C")


def test_loss_only_on_response_and_eos():
    example = encode_example(CharTokenizer(), "ab", "cd", max_seq_len=10)
    assert example.input_ids == [97, 98, 99, 100, 0]
    assert example.labels == [IGNORE_INDEX, IGNORE_INDEX, 99, 100, 0]
    assert example.dropped_lines == 0


def test_too_long_examples_lose_their_oldest_lines_only():
    full = len(PROMPT) + 2 + 1
    example = encode_example(CharTokenizer(), PROMPT, "ok", max_seq_len=full - 1)
    text = "".join(chr(i) for i in example.input_ids[:-1])
    assert example.dropped_lines == 1
    assert text == render_prompt("Predict the next item.\nGiven ...:\n\nTitle: B\nTitle: C") + "ok"
    assert example.labels[-3:] == [ord("o"), ord("k"), 0]
    assert len(example.input_ids) <= full - 1


def test_fit_prompt_keeps_the_most_recent_line_and_fails_past_it():
    ids, dropped = fit_prompt(CharTokenizer(), PROMPT, len(PROMPT) - 18)  # two "Title: X\n" lines
    assert dropped == 2
    assert "".join(map(chr, ids)).endswith("\n\nTitle: C\n\n### Response:")
    with pytest.raises(ExampleTooLongError, match="only its last history line"):
        fit_prompt(CharTokenizer(), PROMPT, 20)


def test_untemplated_prompts_cannot_be_shortened():
    with pytest.raises(ExampleTooLongError, match="no history lines"):
        fit_prompt(CharTokenizer(), "x" * 50, 10)


def test_the_response_is_never_truncated():
    with pytest.raises(ExampleTooLongError, match="response of 6 tokens"):
        encode_example(CharTokenizer(), "ab", "abcde", max_seq_len=6)


class OffsetCharTokenizer(CharTokenizer):
    """``CharTokenizer`` with a BOS (id 1, no characters) and the character offsets fast tokenizers return."""

    def __call__(self, text: str, add_special_tokens: bool = True, return_offsets_mapping: bool = False):
        ids = [1] * add_special_tokens + [ord(c) for c in text]
        encoded: dict = {"input_ids": ids}
        if return_offsets_mapping:
            encoded["offset_mapping"] = [(0, 0)] * add_special_tokens + [(i, i + 1) for i in range(len(text))]
        return encoded


def test_loss_on_history_targets_the_item_lines_and_the_response_only():
    example = encode_example(OffsetCharTokenizer(), PROMPT, "Title: D", max_seq_len=400, loss_on_history=True)
    targets = "".join(
        chr(i) if label != IGNORE_INDEX else "_" for i, label in zip(example.input_ids, example.labels, strict=True)
    )
    lines = "Title: A\nTitle: B\nTitle: C"
    head = "_" * (1 + len(PROMPT) - len("\n\n### Response:") - len(lines))  # BOS, template, task line, header
    assert targets == head + lines + "_" * len("\n\n### Response:") + "Title: D\x00"
    assert example.prompt_length == 1 + len(PROMPT)


def test_loss_on_history_follows_the_fitted_prompt_and_skips_untemplated_ones():
    fitted = encode_example(OffsetCharTokenizer(), PROMPT, "x", max_seq_len=len(PROMPT) - 6, loss_on_history=True)
    targets = "".join(chr(i) for i, label in zip(fitted.input_ids, fitted.labels, strict=True) if label != IGNORE_INDEX)
    assert fitted.dropped_lines == 1 and targets == "Title: B\nTitle: C" + "x\x00"
    plain = encode_example(OffsetCharTokenizer(), "ab", "cd", max_seq_len=10, loss_on_history=True)
    assert plain.labels == [IGNORE_INDEX] * 3 + [99, 100, 0]
