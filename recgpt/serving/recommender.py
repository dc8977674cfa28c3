"""The Python API: ``Recommender.from_pretrained(model_dir, catalog=...)``, ``recommend`` and ``predict_rating``.

A history is a list of events in the data pipeline's structure (``recgpt.data.records.Interaction``): each event
names a catalogue item and may carry the user's rating and review. Prompts are rendered by the pipeline's own
functions (``recgpt.data.render``), so a served prompt is byte-identical to the benchmark's for the same
history. Next items are the catalogue items whose lines the model finds most probable after the prompt, found by
the exact top-K search over the catalogue's token tree (``recgpt.inference.tree``; constrained beam search,
``recgpt.inference.trie``, for models the tree cannot run): every recommendation is a real catalogue item, and items
the user has seen are never recommended. Ratings are the
expected value under the model's probabilities of the rating strings, so they always parse. A prompt longer than
the model's context is shortened as in training (``recgpt.encoding.fit_prompt``: the oldest history events are left
out); a request whose last line alone cannot fit (a rated item's review, say) is a ``RequestError`` naming it.

Example::

    from recgpt.serving import Recommender

    recommender = Recommender.from_pretrained("artifacts/demo/fine-tuning/hf/huggingface/final",
                                              catalog="artifacts/demo/data")
    history = [{"item_id": "50", "rating": 5.0}, {"item_id": "181", "rating": 4.0}, "172"]
    top = recommender.recommend(history, k=5)   # Recommendation(item_id, title, text, score, probability), best first
    rating = recommender.predict_rating(history, "174").rating
"""

from __future__ import annotations

import json
import math
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from recgpt.data.records import Domain, Interaction, Item
from recgpt.data.render import format_rating, next_item_row, rating_row, render_event, render_item
from recgpt.encoding import ExampleTooLongError, encode_response, fit_prompt
from recgpt.evaluation.next_item import Catalogue
from recgpt.evaluation.rating import expectation
from recgpt.inference.decoding import beam_search, score_continuations
from recgpt.inference.generate import context_length, load_model
from recgpt.inference.tree import CandidateTree, top_k_tree, tree_supported
from recgpt.inference.trie import Exclusion

# A history event as callers give it: an item id, or a mapping with item_id and optional rating and review.
HistoryEvent = str | Mapping[str, Any]


class RequestError(ValueError):
    """A history or item a caller must fix; the message names the offending field (``history[3].item_id``)."""


@dataclass(frozen=True)
class Catalog:
    """The items a recommender may return, and how their histories are worded.

    Attributes:
        domain: The source's wording (noun, rating scale, identifying fields), from the data manifest.
        items: Every item by id, in catalogue order.
    """

    domain: Domain
    items: dict[str, Item]

    @classmethod
    def load(cls, path: str | Path, benchmark: str | None = None) -> Catalog:
        """A catalogue written by ``recgpt data prepare``: its data folder, or a benchmark's ``items.jsonl``.

        The domain is read from the folder's ``manifest.json`` (for ``items.jsonl``, the one two folders up).

        Raises:
            FileNotFoundError: If neither a data folder nor an ``items.jsonl`` with its manifest is found.
            ValueError: Naming the file and line of a malformed item, or the benchmarks to choose from.
        """
        path = Path(path)
        if path.is_dir():
            manifest_path = path / "manifest.json"
            if not manifest_path.is_file():
                raise FileNotFoundError(f"catalog: {path} has no manifest.json; write it with `recgpt data prepare`")
            manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
            names = [s["name"] for s in manifest["config"]["sources"] if s.get("benchmark")]
            if benchmark is None and len(names) == 1:
                benchmark = names[0]
            if benchmark is None or benchmark not in names:
                raise ValueError(f"catalog: choose a benchmark of {path}: one of {names}, got {benchmark!r}")
            items_path = path / "benchmark" / benchmark / "items.jsonl"
        else:
            items_path = path
            manifest_path = path.parent.parent.parent / "manifest.json"
            benchmark = path.parent.name
            if not manifest_path.is_file():
                raise FileNotFoundError(f"catalog: {path}: no manifest.json at {manifest_path} to read the domain")
            manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        try:
            domain_fields = manifest["sources"][benchmark]["domain"]
        except KeyError as error:
            raise ValueError(f"catalog: {manifest_path} has no domain for source {benchmark!r}") from error
        domain = Domain(
            name=domain_fields["name"],
            noun=domain_fields["noun"],
            rating_scale=float(domain_fields["rating_scale"]),
            identifying=tuple(domain_fields["identifying"]),
        )
        return cls(domain, read_items(items_path))

    def text(self, item_id: str) -> str:
        """The item's identifying line, as a next-item response writes it."""
        return render_item(self.items[item_id], self.domain)


def read_items(path: Path) -> dict[str, Item]:
    """Items of a prepared ``items.jsonl`` (``item_id``, ``title``, ``attributes``), by id, in file order."""
    items: dict[str, Item] = {}
    with path.open(encoding="utf-8") as handle:
        for line_number, line in enumerate(handle, start=1):
            try:
                row = json.loads(line)
                item = Item(str(row["item_id"]), str(row["title"]), tuple(dict(row.get("attributes") or {}).items()))
            except (json.JSONDecodeError, KeyError, TypeError, ValueError) as error:
                message = f"{path}:{line_number}: an item needs item_id, title and attributes ({error})"
                raise ValueError(message) from error
            items[item.item_id] = item
    if not items:
        raise ValueError(f"{path}: the catalogue is empty")
    return items


@dataclass(frozen=True)
class Recommendation:
    """A recommended catalogue item.

    Attributes:
        item_id: The catalogue id.
        title: Its title.
        text: Its identifying line, as the model wrote it.
        score: The summed log-probability of that line and its EOS after the prompt: the ranking score (higher is
            better), the same one ``recgpt evaluate``'s ``likelihood`` ranks by.
        probability: ``exp(score)``, the model's probability of the whole line: the two never disagree in order.
    """

    item_id: str
    title: str
    text: str
    score: float
    probability: float


@dataclass(frozen=True)
class RatingEstimate:
    """A predicted rating: the expectation over the rating strings, and the distribution it came from."""

    item_id: str
    rating: float
    distribution: dict[str, float]


class Recommender:
    """A fine-tuned model and its catalogue, answering next-item and rating questions for any history.

    Model calls are serialised by a lock, so one recommender may be shared by threads (the HTTP service batches
    concurrent requests into one call instead).

    Args:
        model: A causal LM in eval mode.
        tokenizer: Its tokenizer.
        catalog: The items it may recommend.
        num_beams: Beams of the constrained search (at least ``k`` are used).
        max_history: The most events a history may hold.
        rating_values: The ratings whose strings are scored (default: whole numbers from 1 to the scale).
    """

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        catalog: Catalog,
        *,
        num_beams: int = 10,
        max_history: int = 200,
        rating_values: Sequence[float] | None = None,
    ) -> None:
        self.model, self.tokenizer, self.catalog = model, tokenizer, catalog
        self.num_beams, self.max_history = num_beams, max_history
        scale = catalog.domain.rating_scale
        self.rating_values = list(rating_values or [float(v) for v in range(1, int(scale) + 1)])
        self.rating_strings = [format_rating(value, scale) for value in self.rating_values]
        self.rating_tokens = [encode_response(tokenizer, text) for text in self.rating_strings]
        lines = Catalogue.build(list(catalog.items), [catalog.text(i) for i in catalog.items], tokenizer)
        self.trie = lines.trie(tokenizer.eos_token_id)
        self.item_ids = list(lines.item_ids)
        # The exact top-K search over the catalogue's token tree where the model allows it (MPT, float32 on CPU);
        # constrained beam search otherwise, re-ranked by the same score.
        self.tree = (
            CandidateTree.build(lines.with_eos(tokenizer.eos_token_id)) if tree_supported(model) is None else None
        )
        self.max_item_tokens = self.trie.depth + 1  # the longest item line, then EOS
        self.context = context_length(model)
        # What a prompt may hold: the context less the longest answer (an item line, or a rating string).
        self.next_item_budget = self.context - self.max_item_tokens
        self.rating_budget = self.context - max(len(tokens) for tokens in self.rating_tokens)
        if self.next_item_budget <= 0:
            raise ValueError(
                f"catalog: the longest item line is {self.trie.depth} tokens, which leaves no room for a prompt in "
                f"the model's context of {self.context} tokens; shorten the catalogue's titles or use a longer model"
            )
        self.lock = threading.Lock()

    @classmethod
    def from_pretrained(
        cls, model_dir: str | Path, catalog: str | Path | Catalog, *, benchmark: str | None = None, **options: Any
    ) -> Recommender:
        """Load a Hugging Face model folder (ours, a LoRA export, or RecGPT-7B-Instruct) and a catalogue.

        Args:
            model_dir: The model folder.
            catalog: A ``Catalog``, or a path ``Catalog.load`` reads (a prepared data folder or ``items.jsonl``).
            benchmark: The data folder's benchmark, when it has several.
            options: ``num_beams``, ``max_history``, ``rating_values``.
        """
        loaded = catalog if isinstance(catalog, Catalog) else Catalog.load(catalog, benchmark)
        model, tokenizer = load_model(model_dir)
        return cls(model, tokenizer, loaded, **options)

    # -- requests ---------------------------------------------------------------------------------------------

    def parse_history(self, history: Sequence[HistoryEvent], field: str = "history") -> list[Interaction]:
        """Validate a history into pipeline events, oldest first.

        Raises:
            RequestError: Naming the first bad event, e.g. ``history[2].item_id: unknown item '9999'``.
        """
        if isinstance(history, str | bytes) or not isinstance(history, Sequence):
            raise RequestError(f"{field}: expected a list of events, got {type(history).__name__}")
        if not history:
            raise RequestError(f"{field}: empty; give at least one item the user interacted with")
        if len(history) > self.max_history:
            raise RequestError(f"{field}: {len(history)} events; at most {self.max_history} (send the most recent)")
        scale = self.catalog.domain.rating_scale
        events = []
        for position, event in enumerate(history):
            where = f"{field}[{position}]"
            fields = {"item_id": event} if isinstance(event, str) else event
            if not isinstance(fields, Mapping):
                raise RequestError(f"{where}: expected an item id or an object with item_id, got {event!r}")
            unknown = set(fields) - {"item_id", "rating", "review", "timestamp"}
            if unknown:
                raise RequestError(f"{where}: unknown fields {sorted(unknown)}; use item_id, rating, review")
            item_id, rating, review = fields.get("item_id"), fields.get("rating"), fields.get("review")
            if not isinstance(item_id, str) or not item_id:
                raise RequestError(f"{where}.item_id: expected a catalogue item id (a string), got {item_id!r}")
            if item_id not in self.catalog.items:
                raise RequestError(f"{where}.item_id: unknown item {item_id!r}; it is not in the catalogue")
            if rating is not None and (
                isinstance(rating, bool) or not isinstance(rating, int | float) or not 0 <= rating <= scale
            ):
                raise RequestError(f"{where}.rating: expected a number from 0 to {scale}, got {rating!r}")
            if review is not None and not isinstance(review, str):
                raise RequestError(f"{where}.review: expected text, got {type(review).__name__}")
            events.append(
                Interaction("request", item_id, None, None if rating is None else float(rating), review, position)
            )
        return events

    def _events(self, history: Sequence[HistoryEvent] | Sequence[Interaction]) -> list[Interaction]:
        if history and all(isinstance(event, Interaction) for event in history):
            return list(history)  # type: ignore[arg-type]
        return self.parse_history(history)  # type: ignore[arg-type]

    def next_item_prompt(self, history: Sequence[HistoryEvent] | Sequence[Interaction]) -> str:
        """The pipeline's next-item prompt for a history (identifying lines, oldest first)."""
        domain = self.catalog.domain
        lines = [render_item(self.catalog.items[e.item_id], domain) for e in self._events(history)]
        return next_item_row(domain, lines, "")["prompt"]

    def rating_prompt(self, history: Sequence[HistoryEvent], item_id: str, review: str | None = None) -> str:
        """The pipeline's rating prompt: the history's full lines, then ``item_id``'s line ending in ``Rating:``."""
        return self._rating_prompt(self.parse_history(history), item_id, review)

    def _rating_prompt(self, events: Sequence[Interaction], item_id: str, review: str | None) -> str:
        if not isinstance(item_id, str) or item_id not in self.catalog.items:
            raise RequestError(f"item_id: unknown item {item_id!r}; it is not in the catalogue")
        if review is not None and not isinstance(review, str):
            raise RequestError(f"review: expected text, got {type(review).__name__}")
        domain, items = self.catalog.domain, self.catalog.items
        lines = [render_event(items[e.item_id], e, domain.rating_scale) for e in events]
        target = Interaction("request", item_id, None, None, review)
        hidden = render_event(items[item_id], target, domain.rating_scale, hide_rating=True)
        return rating_row(domain, lines, hidden, 0.0)["prompt"]

    # -- fitting the model's context ----------------------------------------------------------------------------

    def next_item_ids(self, history: Sequence[HistoryEvent] | Sequence[Interaction]) -> list[int]:
        """The next-item prompt's token ids, fitted to the model's context as training fits it.

        The oldest history events are dropped until the prompt and the longest item line fit
        (``recgpt.encoding.fit_prompt``); the most recent event is always kept.

        Raises:
            RequestError: For a bad history, or naming the last event when its line alone does not fit.
        """
        events = self._events(history)
        try:
            return fit_prompt(self.tokenizer, self.next_item_prompt(events), self.next_item_budget)[0]
        except ExampleTooLongError:
            last = events[-1]
            alone = len(self.tokenizer(self.next_item_prompt([last]))["input_ids"])
            raise RequestError(
                f"history[{len(events) - 1}].item_id: a prompt holding only item {last.item_id!r} is {alone} tokens, "
                f"over the {self.next_item_budget} that the model's context of {self.context} tokens leaves after "
                "the longest item line; end the history with another item"
            ) from None

    def rating_ids(self, history: Sequence[HistoryEvent], item_id: str, review: str | None = None) -> list[int]:
        """The rating prompt's token ids, fitted to the model's context as training fits it.

        The oldest history events are dropped until the prompt and the longest rating string fit; the rated
        item's line (with its review) is always kept, so it alone must fit.

        Raises:
            RequestError: For a bad history or item, or naming ``review`` (or ``item_id``) and the limit when the
                rated item's line alone does not fit.
        """
        events = self.parse_history(history)
        try:
            return fit_prompt(self.tokenizer, self._rating_prompt(events, item_id, review), self.rating_budget)[0]
        except ExampleTooLongError:
            alone = len(self.tokenizer(self._rating_prompt([], item_id, review))["input_ids"])
            bare = len(self.tokenizer(self._rating_prompt([], item_id, None))["input_ids"])
            limit = f"the {self.rating_budget} tokens the model's context of {self.context} tokens leaves"
            if review and bare <= self.rating_budget:
                room = self.rating_budget - bare
                raise RequestError(
                    f"review: {alone - bare} tokens ({len(review)} characters); with the rated item's line the "
                    f"prompt is {alone} tokens, over {limit}; shorten the review to at most {room} tokens "
                    f"(about {room * len(review) // (alone - bare)} characters)"
                ) from None
            raise RequestError(f"item_id: the line of item {item_id!r} alone is {bare} tokens, over {limit}") from None

    # -- answers ----------------------------------------------------------------------------------------------

    def recommend(
        self,
        history: Sequence[HistoryEvent],
        k: int = 10,
        exclude_seen: bool = True,
        exclude: Sequence[str] = (),
    ) -> list[Recommendation]:
        """The ``k`` best catalogue items to follow ``history``, best first (fewer only if the catalogue runs out).

        Args:
            history: The user's events, oldest first.
            k: How many items.
            exclude_seen: Never recommend an item of ``history``.
            exclude: More items never to recommend (e.g. everything the user saw before the history window).

        Raises:
            RequestError: For a bad history, ``k`` or excluded item.
        """
        return self.recommend_batch([history], k=k, exclude_seen=exclude_seen, exclude=[exclude])[0]

    def check_exclude(self, exclude: Sequence[str], field: str = "exclude") -> set[str]:
        """Validate a list of item ids never to recommend.

        Raises:
            RequestError: Naming the first id that is not a catalogue item.
        """
        if isinstance(exclude, str | bytes) or not isinstance(exclude, Sequence):
            raise RequestError(f"{field}: expected a list of item ids, got {type(exclude).__name__}")
        for position, item_id in enumerate(exclude):
            if not isinstance(item_id, str) or item_id not in self.catalog.items:
                raise RequestError(f"{field}[{position}]: unknown item {item_id!r}; it is not in the catalogue")
        return set(exclude)

    def recommend_batch(
        self,
        histories: Sequence[Sequence[HistoryEvent]],
        k: int = 10,
        exclude_seen: bool | Sequence[bool] = True,
        exclude: Sequence[Sequence[str]] | None = None,
    ) -> list[list[Recommendation]]:
        """``recommend`` for several histories in one model call (what the HTTP service's batches run)."""
        if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= len(self.catalog.items):
            raise RequestError(f"k: expected a whole number from 1 to {len(self.catalog.items)}, got {k!r}")
        seen_flags = [exclude_seen] * len(histories) if isinstance(exclude_seen, bool) else list(exclude_seen)
        extras = list(exclude) if exclude is not None else [()] * len(histories)
        prompts, exclusions = [], []
        for history, flag, extra in zip(histories, seen_flags, extras, strict=True):
            events = self.parse_history(history)
            prompts.append(self.next_item_ids(events))
            blocked = self.check_exclude(extra)
            if flag:
                blocked |= {e.item_id for e in events}
            exclusions.append(self.trie.exclude(blocked))
        if self.tree is not None:
            return [self._top_k_tree(prompt, blocked, k) for prompt, blocked in zip(prompts, exclusions, strict=True)]
        with self.lock, torch.no_grad():
            found = beam_search(
                self.model,
                prompts,
                num_beams=max(k, self.num_beams),
                max_new_tokens=self.max_item_tokens,
                eos_id=self.tokenizer.eos_token_id,
                pad_id=self.tokenizer.pad_token_id,
                allowed=lambda row, prefix: self.trie.allowed(prefix, exclusions[row]),
            )
        results = []
        for beams in found:
            ranked: list[Recommendation] = []
            seen_items: set[str] = set()
            for beam in beams:
                item_id = self.trie.item(beam.tokens)
                if item_id is None or item_id in seen_items:
                    continue  # a constrained beam cut off before its item ended; never an invented item
                seen_items.add(item_id)
                item = self.catalog.items[item_id]
                text = self.catalog.text(item_id)
                ranked.append(Recommendation(item_id, item.title, text, beam.logprob, math.exp(beam.logprob)))
            results.append(sorted(ranked, key=lambda r: -r.score)[:k])
        return results

    def _top_k_tree(self, prompt: list[int], blocked: Exclusion, k: int) -> list[Recommendation]:
        assert self.tree is not None
        allowed = torch.tensor([item_id not in blocked.items for item_id in self.item_ids])
        with self.lock:
            found = top_k_tree(self.model, prompt, self.tree, k, allowed)
        ranked = []
        for index, score in found:
            item_id = self.item_ids[index]
            item = self.catalog.items[item_id]
            ranked.append(Recommendation(item_id, item.title, self.catalog.text(item_id), score, math.exp(score)))
        return ranked

    def predict_rating(
        self, history: Sequence[HistoryEvent], item_id: str, review: str | None = None
    ) -> RatingEstimate:
        """The rating the user would give ``item_id`` after ``history`` (optionally having written ``review``).

        Raises:
            RequestError: For a bad history or an unknown item.
        """
        return self.predict_rating_batch([(history, item_id, review)])[0]

    def predict_rating_batch(
        self, requests: Sequence[tuple[Sequence[HistoryEvent], str, str | None]]
    ) -> list[RatingEstimate]:
        """``predict_rating`` for several ``(history, item_id, review)`` in one model call."""
        prompts = [self.rating_ids(history, item_id, review) for history, item_id, review in requests]
        with self.lock:
            scores = score_continuations(self.model, prompts, self.rating_tokens, pad_id=self.tokenizer.pad_token_id)
        estimates = []
        for (_, item_id, _), row in zip(requests, scores, strict=True):
            value, probabilities = expectation(row, self.rating_values)
            distribution = dict(zip(self.rating_strings, probabilities, strict=True))
            estimates.append(RatingEstimate(item_id, value, distribution))
        return estimates
