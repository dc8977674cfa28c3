"""The instruction-tuning collator: RecGPT's template, loss on the response and EOS only, whole-line fitting."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from recgpt.data.render import render_prompt
from recgpt.encoding import IGNORE_INDEX, ExampleTooLongError, encode_example

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PromptResponse:
    """One instruction example, with where it came from for error messages.

    Attributes:
        prompt: The full templated prompt, ending in ``### Response:``.
        response: The target text, no leading space.
        source: ``file:line`` of the row.
    """

    prompt: str
    response: str
    source: str = "<memory>"


def to_example(row: Mapping[str, Any], source: str) -> PromptResponse:
    """Accept a row as RecGPT released them (``prompt``/``response``) or untemplated (``instruction``/``response``).

    An ``instruction`` row gets the template ``### Instruction:\\n{instruction}\\n\\n### Response:``; a ``prompt`` row
    is used byte for byte.

    Raises:
        ValueError: Naming ``source`` and the key when the row has neither form or a value is not a string.
    """
    keys = set(row)
    if "response" not in keys or len(keys & {"prompt", "instruction"}) != 1:
        raise ValueError(
            f"{source}: a row needs 'response' and exactly one of 'prompt' or 'instruction'; it has {sorted(keys)}"
        )
    text_key = "prompt" if "prompt" in keys else "instruction"
    for key in (text_key, "response"):
        if not isinstance(row[key], str):
            raise ValueError(f"{source}: '{key}' must be a string, got {type(row[key]).__name__}")
    prompt = row["prompt"] if text_key == "prompt" else render_prompt(row["instruction"])
    return PromptResponse(prompt, row["response"], source)


class RecGPTCollator:
    """Turn examples into a right-padded batch for a causal LM.

    For each example the prompt is masked out of the loss and the response plus EOS are the targets. An example
    longer than ``max_seq_len`` loses its oldest history lines, whole items at a time, never its task line,
    header, most recent items or response (``recgpt.encoding.encode_example``); one that cannot fit is an error.

    Example (toy ids, EOS = 0, PAD = 1, ``max_seq_len`` 8)::

        prompt [5, 6, 7] + response [8]     -> input_ids [5, 6, 7, 8, 0]       labels [-100, -100, -100, 8, 0]
        prompt [5, 6]    + response [9, 9]  -> input_ids [5, 6, 9, 9, 0]       labels [-100, -100, 9, 9, 0]
        batch attention_mask marks real tokens; padding positions get PAD ids and label -100.

    Args:
        tokenizer: A Hugging Face tokenizer with an EOS token (its PAD token, or EOS, pads).
        max_seq_len: The longest sequence the model trains on.
        pad_to_max_seq_len: Pad every batch to ``max_seq_len`` instead of to its longest example.
    """

    def __init__(self, tokenizer: Any, max_seq_len: int, pad_to_max_seq_len: bool = False) -> None:
        self.tokenizer = tokenizer
        self.max_seq_len = max_seq_len
        self.pad_to_max_seq_len = pad_to_max_seq_len
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        if pad is None:
            raise ValueError("the tokenizer has neither a pad nor an eos token")
        self.pad_token_id: int = pad
        self.examples_seen = 0
        self.examples_shortened = 0

    def __call__(self, examples: Sequence[PromptResponse | Mapping[str, Any]]) -> dict[str, torch.Tensor]:
        """Collate examples (``PromptResponse`` or raw rows) into ``input_ids``, ``attention_mask``, ``labels``."""
        encoded = []
        for example in examples:
            if not isinstance(example, PromptResponse):
                example = to_example(example, "<batch>")
            try:
                item = encode_example(self.tokenizer, example.prompt, example.response, self.max_seq_len)
            except ExampleTooLongError as error:
                raise ExampleTooLongError(f"{example.source}: {error}; raise max_seq_len") from error
            self.examples_seen += 1
            if item.dropped_lines:
                self.examples_shortened += 1
                log.debug("%s: removed %d oldest history lines to fit", example.source, item.dropped_lines)
            encoded.append(item)
        width = self.max_seq_len if self.pad_to_max_seq_len else max(len(item.input_ids) for item in encoded)
        input_ids = torch.full((len(encoded), width), self.pad_token_id, dtype=torch.long)
        labels = torch.full((len(encoded), width), IGNORE_INDEX, dtype=torch.long)
        attention_mask = torch.zeros((len(encoded), width), dtype=torch.long)
        for row, item in enumerate(encoded):
            length = len(item.input_ids)
            input_ids[row, :length] = torch.tensor(item.input_ids)
            labels[row, :length] = torch.tensor(item.labels)
            attention_mask[row, :length] = 1
        return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}
