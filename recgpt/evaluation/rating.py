"""Rating prediction by a language model, three ways, on two prompt variants.

- ``sampled`` (RecGPT's protocol): temperature 1.0, top-p 0.9, top-k 50; the number is read by ``parse_rating``.
- ``greedy``: the most likely response, read the same way.
- ``expected``: the expectation of the rating under the model's probabilities of the rating strings
  (``1.0/5.0`` ... every value the training ratings take), scored on the prompt's shared cache; it always parses.

Prompt variants: ``with_review`` (RecGPT's: the target item's review is shown) and ``without_review`` (the
fair comparison with matrix factorisation, which never sees the review). A response with no valid rating is a
parse failure: it is counted and scored as the training global mean.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from recgpt.data.render import format_rating, parse_rating, without_target_review
from recgpt.encoding import encode_response, fit_prompt
from recgpt.inference.decoding import score_candidates
from recgpt.inference.generate import context_length, generate

METHODS = ("sampled", "greedy", "expected")
PROMPTS = ("with_review", "without_review")


@dataclass(frozen=True)
class RatingPrediction:
    """One prediction: the generated text (or the expectation, for ``expected``) and the value read from it."""

    text: str
    value: float | None


def prompts_for(rows: Sequence[dict[str, Any]], variant: str) -> list[str]:
    """The rows' prompts in a variant: ``with_review`` as written, ``without_review`` with the target's removed."""
    if variant not in PROMPTS:
        raise ValueError(f"rating.prompts: unknown variant {variant!r}; choose from {list(PROMPTS)}")
    return [row["prompt"] if variant == "with_review" else without_target_review(row["prompt"]) for row in rows]


def decode(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[str],
    scale: float,
    *,
    sample: bool,
    temperature: float,
    top_p: float,
    top_k: int,
    max_new_tokens: int,
    batch_size: int,
    seed: int,
    progress: Callable[[int], None] | None = None,
) -> list[RatingPrediction]:
    """Sampled or greedy responses, parsed into ratings (None where no rating can be read)."""
    outputs = generate(
        model,
        tokenizer,
        prompts,
        max_new_tokens=max_new_tokens,
        do_sample=sample,
        temperature=temperature,
        top_p=top_p,
        top_k=top_k,
        batch_size=batch_size,
        seed=seed,
        progress=progress,
    )
    return [RatingPrediction(out[0].text, parse_rating(out[0].text, scale)) for out in outputs]


def expectation(scores: Sequence[float], support: Sequence[float]) -> tuple[float, list[float]]:
    """The mean of ``support`` under the softmax of ``scores`` (log-probabilities), and those probabilities.

    Example:
        >>> value, probabilities = expectation([math.log(0.25), math.log(0.75)], [1.0, 5.0])
        >>> round(value, 6), [round(p, 6) for p in probabilities]
        (4.0, [0.25, 0.75])
    """
    top = max(scores)
    weights = [math.exp(score - top) for score in scores]
    total = sum(weights)
    probabilities = [w / total for w in weights]
    return sum(p * v for p, v in zip(probabilities, support, strict=True)), probabilities


def expected(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[str],
    scale: float,
    support: Sequence[float],
    progress: Callable[[int], None] | None = None,
) -> list[RatingPrediction]:
    """The probability-weighted mean over the rating strings of ``support`` (normalised over them)."""
    strings = [format_rating(value, scale) for value in support]
    candidates = [encode_response(tokenizer, text) for text in strings]
    budget = context_length(model) - max(len(c) for c in candidates)
    predictions = []
    for number, prompt in enumerate(prompts, start=1):
        ids = fit_prompt(tokenizer, prompt, budget)[0]
        scores = score_candidates(model, ids, candidates, pad_id=tokenizer.pad_token_id)
        value = expectation(scores, support)[0]
        predictions.append(RatingPrediction(f"{value:.4f}", value))
        if progress is not None:
            progress(number)
    return predictions
