"""Token ids for prompts and training examples: where label masking and length fitting are decided, once.

Training (the collator), evaluation and serving all encode through these functions, so the model sees the
same token boundaries in every stage: the prompt and the response are tokenized separately (the response has
no leading space), the prompt gets the tokenizer's special tokens (a BOS, where it has one), the response gets
none and ends in EOS.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Protocol

from recgpt.data.render import PROMPT_SUFFIX, Instruction, parse_prompt, render_prompt

IGNORE_INDEX = -100


class Tokenizer(Protocol):
    """The part of a Hugging Face tokenizer these functions use."""

    eos_token_id: int | None

    def __call__(self, text: str, add_special_tokens: bool = True) -> dict[str, list[int]]: ...


class ExampleTooLongError(ValueError):
    """An example does not fit the sequence length even with a single history line left."""


@dataclass(frozen=True)
class EncodedExample:
    """A training example as token ids.

    Attributes:
        input_ids: Prompt ids followed by response ids and EOS.
        labels: ``IGNORE_INDEX`` over the prompt (but its item lines with ``loss_on_history``), the ids themselves
            over the response and EOS.
        dropped_lines: How many of the oldest history lines were removed to fit.
    """

    input_ids: list[int]
    labels: list[int]
    dropped_lines: int
    prompt_length: int  # how many leading tokens are prompt (masked out of the loss but for history lines)


def encode_response(tokenizer: Tokenizer, response: str) -> list[int]:
    """Response ids, no special tokens, then EOS."""
    if tokenizer.eos_token_id is None:
        raise ValueError("the tokenizer has no eos_token; set one (e.g. tokenizer.kwargs.eos_token in the recipe)")
    return [*tokenizer(response, add_special_tokens=False)["input_ids"], tokenizer.eos_token_id]


def fit_prompt(tokenizer: Tokenizer, prompt: str, budget: int) -> tuple[list[int], int]:
    """Prompt ids of at most ``budget`` tokens, removing whole history lines, oldest first, until they fit.

    The task line, the header, the most recent items (the rating task's target line is the last one) and the
    template are always kept. A prompt that is not in RecGPT's template cannot be shortened.

    Returns:
        The ids and the number of history lines removed.

    Raises:
        ExampleTooLongError: If even one history line (or an untemplated prompt) does not fit.
    """
    ids, _, dropped = fit_prompt_text(tokenizer, prompt, budget)
    return ids, dropped


def fit_prompt_text(tokenizer: Tokenizer, prompt: str, budget: int) -> tuple[list[int], str, int]:
    """``fit_prompt``, also returning the fitted prompt's text: ``(ids, text, lines_removed)``."""
    ids = tokenizer(prompt)["input_ids"]
    if len(ids) <= budget:
        return ids, prompt, 0
    instruction = parse_prompt(prompt)
    parsed = Instruction.parse(instruction) if instruction is not None else None
    if parsed is None or len(parsed.lines) < 2:
        raise ExampleTooLongError(f"prompt of {len(ids)} tokens exceeds {budget} and has no history lines to remove")

    def shortened(keep: int) -> str:
        return render_prompt(parsed.keep_last(keep).text)

    # The largest number of most recent lines that fits. The search keeps [low, high] around the answer; its
    # first probes walk from the proportional estimate (lines are of similar length, so two or three
    # tokenizations usually settle it), later ones bisect.
    low, high, best = 1, len(parsed.lines) - 1, None
    probe = len(parsed.lines) * budget // len(ids)
    for step in itertools.count():
        probe = min(max(probe, low), high)
        candidate = tokenizer(shortened(probe))["input_ids"]
        fits = len(candidate) <= budget
        if fits:
            best, low = (probe, candidate), probe + 1
        else:
            high = probe - 1
        if low > high:
            break
        probe = (probe + (1 if fits else -1)) if step < 3 else (low + high) // 2
    if best is None:
        length = len(tokenizer(shortened(1))["input_ids"])
        raise ExampleTooLongError(
            f"prompt does not fit {budget} tokens even with only its last history line ({length})"
        )
    return best[1], shortened(best[0]), len(parsed.lines) - best[0]


def encode_example(
    tokenizer: Tokenizer, prompt: str, response: str, max_seq_len: int, loss_on_history: bool = False
) -> EncodedExample:
    """Encode a prompt/response pair for training, with loss on the response tokens and EOS only.

    Example (ids from a toy tokenizer, EOS = 0)::

        prompt ids   [5, 6, 7]       response ids [8, 9]
        input_ids    [5, 6, 7, 8, 9, 0]
        labels       [-100, -100, -100, 8, 9, 0]

    The full response is always kept; if the pair is longer than ``max_seq_len``, the oldest history lines of
    the prompt are removed (``fit_prompt``). With ``loss_on_history`` the prompt's item lines are targets too
    (``history_span``): each line of a next-item prompt is itself a next item in the response's format, so one
    prompt trains every position of its history, the way SASRec trains, instead of only its last.
    """
    response_ids = encode_response(tokenizer, response)
    budget = max_seq_len - len(response_ids)
    if budget <= 0:
        raise ExampleTooLongError(f"response of {len(response_ids)} tokens (EOS included) exceeds {max_seq_len}")
    prompt_ids, text, dropped = fit_prompt_text(tokenizer, prompt, budget)
    labels = [IGNORE_INDEX] * len(prompt_ids) + response_ids
    if loss_on_history:
        start, stop = history_span(tokenizer, text)
        labels[start:stop] = prompt_ids[start:stop]
    return EncodedExample([*prompt_ids, *response_ids], labels, dropped, len(prompt_ids))


def history_span(tokenizer: Tokenizer, prompt: str) -> tuple[int, int]:
    """The token range ``[start, stop)`` of a templated prompt's item lines (empty for an untemplated prompt).

    A token counts when its characters lie inside the lines, from the first line's start up to the blank line
    before ``### Response:``; the newlines between lines are inside. Needs a fast tokenizer (character offsets).

    Example (one token per character)::

        "### Instruction:\nT\nH:\n\nA\nB\n\n### Response:"   ->  the tokens of "A\nB"
    """
    instruction = parse_prompt(prompt)
    if instruction is None:
        return 0, 0
    parsed = Instruction.parse(instruction)
    if not parsed.lines:
        return 0, 0
    first = len(prompt) - len(PROMPT_SUFFIX) - len("\n".join(parsed.lines))
    last = len(prompt) - len(PROMPT_SUFFIX)
    encoded = tokenizer(prompt, return_offsets_mapping=True)  # type: ignore[call-arg]
    inside = [i for i, (a, b) in enumerate(encoded["offset_mapping"]) if a >= first and b <= last and b > a]
    return (inside[0], inside[-1] + 1) if inside else (0, 0)
