"""The HTTP API's request and response schemas (the OpenAPI schema is generated from these) and the one-line
messages naming each bad field of a refused request."""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

# Strict: a JSON value of the wrong type is refused, never coerced (``true`` is not the number 1, ``"5"`` not 5).


class Event(BaseModel):
    """One history event: a catalogue item, with the user's rating and review when known."""

    model_config = ConfigDict(extra="forbid", strict=True)
    item_id: str = Field(min_length=1, max_length=256, examples=["50"])
    rating: float | None = Field(default=None, examples=[5.0])
    review: str | None = Field(default=None, max_length=10_000)
    timestamp: float | None = None


History = list[str | Event]
HISTORY_DOC = (
    "Oldest first: item ids, or events with item_id and optional rating and review. When the prompt would not fit "
    "the model's context, the oldest events are left out, as in training."
)


class RecommendRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    history: History = Field(description=HISTORY_DOC, examples=[["50", {"item_id": "181", "rating": 4.0}]])
    k: int = Field(default=10, description="How many items to return")
    exclude_seen: bool = Field(default=True, description="Never recommend an item of the history")
    exclude: list[str] = Field(
        default_factory=list,
        max_length=100_000,
        description="More item ids never to recommend, e.g. everything the user saw before the history window",
    )


class Item(BaseModel):
    item_id: str
    title: str
    text: str = Field(description="The item's line as the model writes it")
    score: float = Field(description="Summed log-probability of the line (and EOS) after the prompt; the ranking score")
    probability: float = Field(description="exp(score): the model's probability of the whole line, same order")


class RecommendResponse(BaseModel):
    items: list[Item]


class RatingRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    history: History = Field(description=HISTORY_DOC)
    item_id: str = Field(min_length=1, max_length=256, description="The catalogue item to rate")
    review: str | None = Field(default=None, max_length=10_000, description="The user's review of it, if written")


class RatingResponse(BaseModel):
    item_id: str
    rating: float = Field(description="Expected rating under the model's probabilities of the rating strings")
    distribution: dict[str, float]


class CatalogItem(BaseModel):
    item_id: str
    title: str
    text: str


class Problem(BaseModel):
    error: str = Field(description="What is wrong and how to fix it")


ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": Problem} for code in (400, 401, 404, 405, 408, 413, 415, 422, 500, 503)
}


_EXPECTED = {
    "int_type": "expected a whole number",
    "int_parsing": "expected a whole number",
    "bool_type": "expected true or false",
    "string_type": "expected a string",
    "float_type": "expected a number",
    "list_type": "expected a list",
    "dict_type": "expected a JSON object",
    "model_type": "expected a JSON object",
    "model_attributes_type": "expected a JSON object",
}


def _where(location: tuple[Any, ...]) -> str:
    """``("body", "history", 2, "Event", "rating")`` -> ``history[2].rating``."""
    path = ""
    for part in location[1:] if location and location[0] == "body" else location:
        if isinstance(part, int):
            path += f"[{part}]"
        elif part in ("str", "Event") or "[" in str(part):  # pydantic's union-member labels
            continue
        else:
            path += f".{part}" if path else str(part)
    return path or "body"


def shown(value: Any) -> str:
    """A value as JSON, cut to 60 characters, for an error message."""
    text = json.dumps(value, ensure_ascii=False, default=str)
    return text if len(text) <= 60 else text[:57] + "..."


def validation_message(problems: list[dict[str, Any]]) -> str:
    """One message naming each bad field, e.g. ``k: expected a whole number, got true; histroy: unknown field``."""
    messages = []
    union_members = ("str", "Event")
    for p in problems:
        location = tuple(p.get("loc", ()))
        member = next((i for i, part in enumerate(location) if part in union_members), None)
        kind = p.get("type", "")
        message = p.get("msg", "invalid")
        if kind == "missing":
            message = "required"
        elif kind == "extra_forbidden":
            message = "unknown field; use item_id, rating, review" if member is not None else "unknown field"
        elif kind in _EXPECTED:
            message = f"{_EXPECTED[kind]}, got {shown(p.get('input'))}"
        if member is not None and member == len(location) - 1:
            # the value fits neither a string nor an event: say what it may be
            deeper = [q for q in problems if tuple(q.get("loc", ()))[:member] == location[:member]]
            if any(len(q.get("loc", ())) > member + 1 for q in deeper):
                continue  # it is an event object with a bad field; that field's message says more
            message = "expected an item id (a string) or an object with item_id and optional rating, review"
        messages.append(f"{_where(location)}: {message}")
    return "; ".join(list(dict.fromkeys(messages))[:5])
