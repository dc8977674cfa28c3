"""Run a language model's configured next-item and rating methods on one split (``recgpt evaluate`` with a model).

The model and its tokenizer load once; the catalogue is embedded once (grounding), tokenized once (trie and
likelihood ranking); each method then runs on every row, timed, with progress logged.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from recgpt.evaluation import next_item as next_item_methods
from recgpt.evaluation import rating as rating_methods
from recgpt.evaluation.grounding import load_catalog

if TYPE_CHECKING:
    from recgpt.evaluation.next_item import Ranking
    from recgpt.evaluation.rating import RatingPrediction
    from recgpt.evaluation.runner import Benchmark, EvalConfig

log = logging.getLogger(__name__)


def next_item_name(method: str, candidates: int | None) -> str:
    """The report's name of a next-item method, e.g. ``model: beam_grounded`` or ``model: likelihood@100``."""
    if method == "likelihood" and candidates is not None:
        return f"model: likelihood@{candidates} sampled"
    return f"model: {method}"


def rating_name(method: str, prompt: str) -> str:
    """The report's name of a rating method on a prompt variant, e.g. ``model: sampled`` (RecGPT's prompt)."""
    return f"model: {method}" + (" (no review)" if prompt == "without_review" else "")


def check_methods(config: EvalConfig) -> None:
    """Fail before loading anything when a configured method or prompt variant does not exist."""
    for method in config.next_item.methods:
        if method not in next_item_methods.METHODS:
            raise ValueError(f"next_item.methods: unknown {method!r}; choose from {list(next_item_methods.METHODS)}")
    for method in config.rating.methods:
        if method not in rating_methods.METHODS:
            raise ValueError(f"rating.methods: unknown {method!r}; choose from {list(rating_methods.METHODS)}")
    for prompt in config.rating.prompts:
        if prompt not in rating_methods.PROMPTS:
            raise ValueError(f"rating.prompts: unknown {prompt!r}; choose from {list(rating_methods.PROMPTS)}")
    if config.next_item.candidates is not None and config.next_item.candidates < 2:
        raise ValueError(f"next_item.candidates: must be null or at least 2, got {config.next_item.candidates}")


def evaluate_model(
    config: EvalConfig,
    benchmark: Benchmark,
    next_rows: Sequence[dict[str, Any]],
    excluded: Sequence[set[str]],
    rating_rows: Sequence[dict[str, Any]],
    support: Sequence[float],
) -> tuple[dict[str, list[Ranking]], dict[str, list[RatingPrediction]], dict[str, float]]:
    """Every configured model method on the rows.

    Args:
        support: The rating values the training data takes (the strings ``expected`` scores).

    Returns:
        Rankings per next-item method, predictions per rating method (both keyed by report name), and the seconds
        each method took.
    """
    from recgpt.evaluation.runner import progress
    from recgpt.inference.generate import load_model

    check_methods(config)
    model, tokenizer = load_model(config.model)  # type: ignore[arg-type]
    item_ids, texts = load_catalog(benchmark.folder / "items.jsonl")
    settings = config.next_item
    rankings: dict[str, list[Ranking]] = {}
    ratings: dict[str, list[RatingPrediction]] = {}
    seconds: dict[str, float] = {}
    catalogue = None
    for method in settings.methods if next_rows else []:
        name = next_item_name(method, settings.candidates)
        started = time.perf_counter()
        log.info("%s for %d users", name, len(next_rows))
        report = progress(name, len(next_rows))
        catalogue = catalogue or next_item_methods.Catalogue.build(item_ids, texts, tokenizer)
        if method == "beam_grounded":
            from recgpt.evaluation.grounding import CatalogIndex, TextEmbedder

            index = CatalogIndex(item_ids, texts, TextEmbedder(settings.embedding_model))
            rankings[name] = next_item_methods.beam_grounded(
                model,
                tokenizer,
                next_rows,
                index,
                excluded,
                num_beams=settings.num_beams,
                max_new_tokens=settings.max_new_tokens,
                batch_size=config.batch_size,
                catalogue=catalogue,  # free beams never end as a seen item (under exclude_seen)
                progress=report,
            )
        else:
            if method == "constrained_beam":
                trie = catalogue.trie(tokenizer.eos_token_id)
                rankings[name] = next_item_methods.constrained_beam(
                    model,
                    tokenizer,
                    next_rows,
                    trie,
                    excluded,
                    num_beams=settings.num_beams,
                    max_new_tokens=settings.max_new_tokens,
                    batch_size=config.batch_size,
                    progress=report,
                )
            else:
                rankings[name] = next_item_methods.likelihood(
                    model,
                    tokenizer,
                    next_rows,
                    catalogue,
                    excluded,
                    candidates=settings.candidates,
                    depth=max(config.ks),
                    seed=config.seed,
                    progress=report,
                )
        seconds[name] = time.perf_counter() - started

    has_reviews = any(rating_methods.prompts_for([row], "without_review")[0] != row["prompt"] for row in rating_rows)
    variants = [p for p in config.rating.prompts if p == "with_review" or has_reviews]
    if "without_review" in config.rating.prompts and not has_reviews:
        log.info("rating: no target line shows a review, so the without_review prompts equal the with_review ones")
    for prompt in variants if rating_rows else []:
        prompts = rating_methods.prompts_for(rating_rows, prompt)
        for method in config.rating.methods:
            name = rating_name(method, prompt)
            started = time.perf_counter()
            log.info("%s for %d users", name, len(prompts))
            report = progress(name, len(prompts))
            if method == "expected":
                ratings[name] = rating_methods.expected(
                    model, tokenizer, prompts, benchmark.rating_scale, support, progress=report
                )
            else:
                rating = config.rating
                ratings[name] = rating_methods.decode(
                    model,
                    tokenizer,
                    prompts,
                    benchmark.rating_scale,
                    sample=method == "sampled",
                    temperature=rating.temperature,
                    top_p=rating.top_p,
                    top_k=rating.top_k,
                    max_new_tokens=rating.max_new_tokens,
                    batch_size=config.batch_size,
                    seed=config.seed,
                    progress=report,
                )
            seconds[name] = time.perf_counter() - started
    return rankings, ratings, seconds
