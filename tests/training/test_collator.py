"""The collator's label mask, token by token, with a real BPE tokenizer."""

from __future__ import annotations

import pytest

from recgpt.data.render import render_prompt
from recgpt.encoding import IGNORE_INDEX, ExampleTooLongError
from recgpt.training.collator import PromptResponse, RecGPTCollator, to_example

PROMPT = render_prompt(
    "Predict the next item.\nGiven the interaction history of a user with books as follows:\n\n"
    "Title: The Ember Oath; Author: Lena Harrowgate\nTitle: A Quiet Poison; Author: Tobias Wren"
)
RESPONSE = "Title: Rust Belt Starship; Author: Ada Quillon"


def test_mask_covers_prompt_and_padding_and_keeps_response_and_eos(tokenizer):
    collator = RecGPTCollator(tokenizer, max_seq_len=128)
    short = PromptResponse(render_prompt("Predict rating for the last item."), "4.0/5.0")
    batch = collator([PromptResponse(PROMPT, RESPONSE), short])
    prompt_ids = tokenizer(PROMPT)["input_ids"]
    response_ids = tokenizer(RESPONSE, add_special_tokens=False)["input_ids"]
    length = len(prompt_ids) + len(response_ids) + 1
    assert batch["input_ids"].shape == (2, length)
    assert batch["input_ids"][0].tolist() == [*prompt_ids, *response_ids, tokenizer.eos_token_id]
    assert batch["labels"][0].tolist() == [IGNORE_INDEX] * len(prompt_ids) + [*response_ids, tokenizer.eos_token_id]
    assert batch["attention_mask"][0].tolist() == [1] * length
    short_prompt = tokenizer(short.prompt)["input_ids"]
    short_response = [*tokenizer("4.0/5.0", add_special_tokens=False)["input_ids"], tokenizer.eos_token_id]
    real = len(short_prompt) + len(short_response)
    assert batch["labels"][1].tolist() == [IGNORE_INDEX] * len(short_prompt) + short_response + [IGNORE_INDEX] * (
        length - real
    )
    assert batch["input_ids"][1, real:].tolist() == [tokenizer.pad_token_id] * (length - real)
    assert batch["attention_mask"][1].tolist() == [1] * real + [0] * (length - real)


def test_released_rows_and_instruction_rows_give_the_same_tokens(tokenizer):
    collator = RecGPTCollator(tokenizer, max_seq_len=128)
    released = collator([{"prompt": PROMPT, "response": RESPONSE}])
    instruction = PROMPT[len("### Instruction:\n") : -len("\n\n### Response:")]
    templated = collator([{"instruction": instruction, "response": RESPONSE}])
    assert released["input_ids"].tolist() == templated["input_ids"].tolist()
    assert released["labels"].tolist() == templated["labels"].tolist()


def test_long_examples_lose_whole_oldest_lines(tokenizer):
    full = len(tokenizer(PROMPT)["input_ids"]) + len(tokenizer(RESPONSE, add_special_tokens=False)["input_ids"]) + 1
    collator = RecGPTCollator(tokenizer, max_seq_len=full - 1)
    batch = collator([PromptResponse(PROMPT, RESPONSE)])
    text = tokenizer.decode(batch["input_ids"][0])
    assert "The Ember Oath" not in text
    assert "Title: A Quiet Poison; Author: Tobias Wren\n\n### Response:" + RESPONSE in text
    assert collator.examples_shortened == 1


def test_an_example_that_cannot_fit_names_its_source(tokenizer):
    collator = RecGPTCollator(tokenizer, max_seq_len=12)
    with pytest.raises(ExampleTooLongError, match=r"data\.jsonl:7"):
        collator([PromptResponse(PROMPT, RESPONSE, "data.jsonl:7")])


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ({"prompt": "x"}, "needs 'response'"),
        ({"prompt": "x", "instruction": "y", "response": "z"}, "exactly one"),
        ({"prompt": 3, "response": "z"}, "'prompt' must be a string"),
    ],
)
def test_malformed_rows_are_clear_errors(row, message):
    with pytest.raises(ValueError, match=message):
        to_example(row, "f.jsonl:2")


def test_pad_to_max_seq_len(tokenizer):
    batch = RecGPTCollator(tokenizer, max_seq_len=100, pad_to_max_seq_len=True)([PromptResponse(PROMPT, RESPONSE)])
    assert batch["input_ids"].shape == (1, 100)


def test_loss_on_history_labels_the_item_lines_of_packed_rows_with_a_real_tokenizer(tokenizer):
    collator = RecGPTCollator(tokenizer, max_seq_len=256, loss_on_history=True)
    example = PromptResponse(PROMPT, RESPONSE)
    batch = collator([[example, example]])
    ids, labels = batch["input_ids"][0].tolist(), batch["labels"][0].tolist()
    half = len(ids) // 2
    for start in (0, half):
        targets = [
            i for i, label in zip(ids[start : start + half], labels[start : start + half], strict=True) if label != -100
        ]
        text = tokenizer.decode(targets)
        assert text.startswith("Title: The Ember Oath") and "Given the interaction" not in text
        assert "### Response" not in text and text.endswith(RESPONSE + tokenizer.eos_token)
    plain = RecGPTCollator(tokenizer, max_seq_len=256)([example])["labels"][0].tolist()
    assert sum(label != -100 for label in plain) < sum(label != -100 for label in labels[:half])
