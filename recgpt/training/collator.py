"""The instruction-tuning collator: RecGPT's template, loss on the response and EOS only, whole-line fitting."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
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


@dataclass(frozen=True)
class Tokens:
    """A tokenized example, compact: its ids (int32) and how many leading ones are prompt.

    Labels are derived, never stored: ``IGNORE_INDEX`` over the prompt, the ids over the response and EOS, and
    over ``history`` (a ``[start, stop)`` range of prompt tokens, empty unless the collator trains on history).
    """

    ids: np.ndarray
    prompt_length: int
    history: tuple[int, int] = (0, 0)

    def __len__(self) -> int:
        return len(self.ids)


class RecGPTCollator:
    """Turn examples into a right-padded batch for a causal LM, one example per row or several packed per row.

    For each example the prompt is masked out of the loss and the response plus EOS are the targets. An example
    longer than ``max_seq_len`` loses its oldest history lines, whole items at a time, never its task line,
    header, most recent items or response (``recgpt.encoding.encode_example``); one that cannot fit is an error.

    Example (toy ids, EOS = 0, PAD = 1, ``max_seq_len`` 8)::

        prompt [5, 6, 7] + response [8]     -> input_ids [5, 6, 7, 8, 0]       labels [-100, -100, -100, 8, 0]
        prompt [5, 6]    + response [9, 9]  -> input_ids [5, 6, 9, 9, 0]       labels [-100, -100, 9, 9, 0]
        batch attention_mask marks real tokens; padding positions get PAD ids and label -100.

    A row that is a list of examples (a packed bin, ``recgpt.training.packing``) concatenates them and adds
    ``sequence_id``: 0, 1, ... per example, -1 over padding::

        [[5, 6, 7, 8, 0], [5, 6, 9, 9, 0]] -> input_ids   [5, 6, 7, 8, 0, 5, 6, 9, 9, 0]
                                             sequence_id [0, 0, 0, 0, 0, 1, 1, 1, 1, 1]

    Args:
        tokenizer: A Hugging Face tokenizer with an EOS token (its PAD token, or EOS, pads).
        max_seq_len: The longest sequence the model trains on.
        pad_to_max_seq_len: Pad every batch to ``max_seq_len`` instead of to its longest row.
        loss_on_history: Also train on the prompt's item lines (``recgpt.encoding.history_span``), not only on
            the response; not RecGPT's recipe (the paper is silent; llm-foundry's default is response-only).
    """

    def __init__(
        self, tokenizer: Any, max_seq_len: int, pad_to_max_seq_len: bool = False, loss_on_history: bool = False
    ) -> None:
        self.tokenizer = tokenizer
        self.max_seq_len = max_seq_len
        self.pad_to_max_seq_len = pad_to_max_seq_len
        self.loss_on_history = loss_on_history
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        if pad is None:
            raise ValueError("the tokenizer has neither a pad nor an eos token")
        self.pad_token_id: int = pad
        self.examples_seen = 0
        self.examples_shortened = 0

    def encode(self, example: PromptResponse | Mapping[str, Any]) -> Tokens:
        """Tokenize one example (fitting it to ``max_seq_len``), counting those that lost history lines."""
        if not isinstance(example, PromptResponse):
            example = to_example(example, "<batch>")
        try:
            item = encode_example(
                self.tokenizer, example.prompt, example.response, self.max_seq_len, self.loss_on_history
            )
        except ExampleTooLongError as error:
            raise ExampleTooLongError(f"{example.source}: {error}; raise max_seq_len") from error
        self.examples_seen += 1
        if item.dropped_lines:
            self.examples_shortened += 1
            log.debug("%s: removed %d oldest history lines to fit", example.source, item.dropped_lines)
        length = item.prompt_length
        targets = [i for i, label in enumerate(item.labels[:length]) if label != IGNORE_INDEX]
        history = (targets[0], targets[-1] + 1) if targets else (0, 0)
        return Tokens(np.asarray(item.input_ids, dtype=np.int32), length, history)

    def __call__(self, rows: Sequence[Any]) -> dict[str, torch.Tensor]:
        """Collate rows into ``input_ids``, ``attention_mask``, ``labels`` (and ``sequence_id`` when packed).

        A row is an example (``Tokens``, ``PromptResponse`` or a raw ``prompt``/``response`` row) or a list of
        examples to pack into one sequence.
        """
        packed = any(isinstance(row, list) for row in rows)
        groups = [[self._tokens(item) for item in (row if isinstance(row, list) else [row])] for row in rows]
        lengths = [sum(len(tokens) for tokens in group) for group in groups]
        if max(lengths) > self.max_seq_len:
            raise ValueError(f"a packed row of {max(lengths)} tokens exceeds max_seq_len {self.max_seq_len}")
        width = self.max_seq_len if self.pad_to_max_seq_len else max(lengths)
        input_ids = torch.full((len(groups), width), self.pad_token_id, dtype=torch.long)
        labels = torch.full((len(groups), width), IGNORE_INDEX, dtype=torch.long)
        attention_mask = torch.zeros((len(groups), width), dtype=torch.long)
        sequence_id = torch.full((len(groups), width), -1, dtype=torch.long)
        for row, group in enumerate(groups):
            start = 0
            for index, tokens in enumerate(group):
                stop = start + len(tokens)
                ids = torch.from_numpy(tokens.ids.astype(np.int64))
                input_ids[row, start:stop] = ids
                labels[row, start + tokens.prompt_length : stop] = ids[tokens.prompt_length :]
                first, last = tokens.history
                labels[row, start + first : start + last] = ids[first:last]
                attention_mask[row, start:stop] = 1
                sequence_id[row, start:stop] = index
                start = stop
        batch = {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}
        if packed:
            batch["sequence_id"] = sequence_id
        return batch

    def _tokens(self, item: Any) -> Tokens:
        return item if isinstance(item, Tokens) else self.encode(item)
