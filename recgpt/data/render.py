"""RecGPT's text formats: item lines, history documents, instructions, prompts and ratings, written once.

Every stage (data preparation, the training collator, evaluation and serving) renders and parses text through
this module, so a prompt seen in training is byte-identical to the one seen at inference, and both are
byte-identical to the format of RecGPT's released instruction data (RECGPT.md sections 2 and 3).

Text normalisation (``clean_text``, the one rule, applied to every key and value of every line written, and at
ingest to every title, attribute and review, so what is stored is already what is written):

1. Unicode NFC;
2. every line or paragraph separator, whitespace and control character (``str.isspace`` characters such as
   ``\\n \\r \\t \\v \\f``, U+0085, U+00A0, U+2028, U+2029, U+3000, and every other category ``Cc`` character)
   becomes a space; format characters (category ``Cf``: zero-width space, soft hyphen, bidi controls, BOM) are
   removed, except the zero-width joiner and non-joiner (emoji sequences, Indic scripts); lone surrogates
   become U+FFFD;
3. runs of spaces become one space, and the value is stripped;
4. the field separator ``"; "`` inside a value becomes ``", "`` (so splitting a line at ``"; "`` gives exactly
   its fields, and a value can never fake a ``; Brand:`` or ``; Rating:`` field);
5. a run of three or more ``#`` becomes one ``#`` (so no value holds a template marker such as
   ``### Response:``).

JSON lines are written by ``json_line``, which also escapes U+0085, U+2028 and U+2029, so a ``str.splitlines``
reader sees one line per row.
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from recgpt.data.records import Domain, Interaction, Item

PROMPT_TEMPLATE = "### Instruction:\n{instruction}\n\n### Response:"
PROMPT_PREFIX, PROMPT_SUFFIX = PROMPT_TEMPLATE.split("{instruction}")
NEXT_ITEM_TASK = "Predict the next item."
RATING_TASK = "Predict rating for the last item."
HISTORY_HEADER = "Given the interaction history of a user with {noun} as follows:"
FIELD_SEPARATOR = "; "

_RATING = re.compile(r"(-?\d+(?:\.\d+)?)(?:\s*/\s*(\d+(?:\.\d+)?))?")
# Whitespace and control characters (``str.isspace`` or category Cc), and format characters (category Cf) but the
# zero-width non-joiner and joiner, as of Unicode 14 (Python 3.11's ``unicodedata``), listed as ranges so that no
# table is built at import time; a test checks them against ``unicodedata``.
_SPACE = re.compile("[\u0000-\u0020\u007f-\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]+")
_FORMAT = re.compile(
    "[\u00ad\u0600-\u0605\u061c\u06dd\u070f\u0890\u0891\u08e2\u180e\u200b\u200e\u200f\u202a-\u202e"
    "\u2060-\u2064\u2066-\u206f\ufeff\ufff9-\ufffb\U000110bd\U000110cd\U00013430-\U00013438"
    "\U0001bca0-\U0001bca3\U0001d173-\U0001d17a\U000e0001\U000e0020-\U000e007f]+"
)
_SURROGATE = re.compile("[\ud800-\udfff]")
_MARKER = re.compile("#{3,}")
# Characters ``str.splitlines`` breaks at that ``json.dumps`` leaves raw.
_JSON_LINE_BREAKS = {"\x85": "\\u0085", "\u2028": "\\u2028", "\u2029": "\\u2029"}


def clean_text(value: str) -> str:
    """The one text normalisation of every written field (the module docstring states the rule).

    Idempotent: ``clean_text(clean_text(s)) == clean_text(s)``.

    Example:
        >>> clean_text("  Great\\n\\tbook ")
        'Great book'
        >>> clean_text("Heat\\u2028(1995); Brand: Fake ### Response:")
        'Heat (1995), Brand: Fake # Response:'
    """
    text = unicodedata.normalize("NFC", value)
    if not text.isascii():
        removed = _SURROGATE.sub("\ufffd", _FORMAT.sub("", text))
        if removed != text:  # removing a format character can bring a base and a combining mark together
            text = unicodedata.normalize("NFC", removed)
    if "  " in text or not text.isprintable():  # printable text holds no whitespace but single spaces
        text = _SPACE.sub(" ", text)
    text = text.strip(" ")
    if "; " in text:
        text = text.replace("; ", ", ")
    if "###" in text:
        text = _MARKER.sub("#", text)
    return text


def json_line(row: Any) -> str:
    """A JSON line (UTF-8 text kept as is) that ``str.splitlines`` reads as one line, newline included.

    Example:
        >>> json_line({"title": "a\\u2028b"})
        '{"title": "a\\\\u2028b"}\\n'
    """
    text = json.dumps(row, ensure_ascii=False)
    if not text.isascii():
        for raw, escaped in _JSON_LINE_BREAKS.items():
            text = text.replace(raw, escaped)
    return text + "\n"


def format_rating(value: float, scale: float) -> str:
    """Write a rating the way RecGPT prints it.

    Example:
        >>> format_rating(4, 5.0), format_rating(3.5, 5.0), format_rating(8, 10.0)
        ('4.0/5.0', '3.5/5.0', '8.0/10.0')
    """
    return f"{float(value):.1f}/{float(scale):.1f}"


def parse_rating(text: str, scale: float) -> float | None:
    """Read a rating back from generated text; None when no valid rating is there.

    The rule: the first number in the text is the rating. If it is followed by ``/S`` with ``S`` other than
    ``scale``, it is rescaled to ``scale``. A value outside ``[0, scale]`` is not a rating.

    Example:
        >>> parse_rating("4.0/5.0", 5.0), parse_rating(" 3", 5.0), parse_rating("8.0/10.0", 5.0)
        (4.0, 3.0, 4.0)
        >>> parse_rating("Title: Heat", 5.0) is None, parse_rating("7.0/5.0", 5.0) is None
        (True, True)
    """
    match = _RATING.search(text)
    if match is None:
        return None
    value = float(match.group(1))
    if match.group(2) is not None:
        written_scale = float(match.group(2))
        if written_scale <= 0:
            return None
        value = value * scale / written_scale
    return value if 0.0 <= value <= scale else None


def render_fields(fields: Sequence[tuple[str, str]]) -> str:
    """Join ``(key, value)`` pairs as ``Key: value; Key: value``, skipping empty values.

    Example:
        >>> render_fields([("Title", "Heat"), ("Brand", ""), ("Genres", "Action, Crime")])
        'Title: Heat; Genres: Action, Crime'
    """
    cleaned = ((clean_text(key), clean_text(value)) for key, value in fields)
    return FIELD_SEPARATOR.join(f"{key}: {value}" for key, value in cleaned if value)


def render_item(item: Item, domain: Domain) -> str:
    """An item's identifying line (the next-item format): the title and the domain's identifying attributes.

    Example:
        >>> toys = Domain("amazon", "products", identifying=("Brand",))
        >>> render_item(Item("1", "Jumbo Puzzle", (("Brand", "Melissa & Doug"), ("Color", "red"))), toys)
        'Title: Jumbo Puzzle; Brand: Melissa & Doug'
        >>> render_item(Item("2", "Heat (1995)", (("Genres", "Action"),)), Domain("movielens", "movies/shows"))
        'Title: Heat (1995)'
    """
    return render_fields([("Title", item.title), *((k, v) for k, v in item.attributes if k in domain.identifying)])


def render_event(item: Item, event: Interaction, scale: float, *, hide_rating: bool = False) -> str:
    """An interaction's full line: title and every attribute, then review, then rating.

    With ``hide_rating`` the line ends in ``Rating:`` with the value removed (the rating task's target line).
    An event without a rating has no Rating field unless ``hide_rating`` asks for the empty slot.

    Example:
        >>> item = Item("1", "Heat (1995)", (("Genres", "Action"),))
        >>> render_event(item, Interaction("u", "1", 0.0, 4.0), 5.0)
        'Title: Heat (1995); Genres: Action; Rating: 4.0/5.0'
        >>> render_event(item, Interaction("u", "1", 0.0, 4.0, "Tense"), 5.0, hide_rating=True)
        'Title: Heat (1995); Genres: Action; Review: Tense; Rating:'
    """
    line = render_fields([("Title", item.title), *item.attributes, ("Review", event.review or "")])
    if hide_rating:
        return f"{line}{FIELD_SEPARATOR}Rating:"
    if event.rating is None:
        return line
    return f"{line}{FIELD_SEPARATOR}Rating: {format_rating(event.rating, scale)}"


def hide_rating(line: str, rated: bool) -> str:
    """An event's full line turned into the rating task's target line (``render_event(..., hide_rating=True)``).

    The rating is the last field of a full line, so its value is cut after the last ``; Rating:``; an unrated
    line gets the empty slot appended.

    Example:
        >>> hide_rating("Title: Heat (1995); Review: Tense; Rating: 4.0/5.0", rated=True)
        'Title: Heat (1995); Review: Tense; Rating:'
        >>> hide_rating("Title: Heat (1995)", rated=False)
        'Title: Heat (1995); Rating:'
    """
    slot = f"{FIELD_SEPARATOR}Rating:"
    return line[: line.rindex(f"{slot} ")] + slot if rated else line + slot


def without_target_review(prompt: str) -> str:
    """A rating prompt whose target line (the last one) no longer shows its review.

    RecGPT's rating prompt shows the target item's review, which a model can read the rating off; without it the
    task is the one matrix factorisation solves. A prompt whose target line has no review is returned unchanged.

    Example:
        >>> p = render_prompt("Predict rating for the last item.\\nGiven ...:\\n\\nTitle: A; Review: Loved it; Rating:")
        >>> without_target_review(p).split("\\n")[-3]
        'Title: A; Rating:'
    """
    instruction = parse_prompt(prompt)
    if instruction is None:
        return prompt
    parsed = Instruction.parse(instruction)
    if not parsed.lines:
        return prompt
    target = parsed.lines[-1]
    marker = f"{FIELD_SEPARATOR}Review: "
    if marker not in target:
        return prompt
    shortened = target[: target.index(marker)] + f"{FIELD_SEPARATOR}Rating:"
    return render_prompt(Instruction(parsed.head, (*parsed.lines[:-1], shortened)).text)


def render_item_prefix(item: Item) -> str:
    """The part of an item's full line that does not depend on the interaction: title and every attribute.

    ``render_event`` is this prefix, then the review and rating fields; the DuckDB engine stores the prefix per
    item and appends the rest in SQL (``sql_event_line``).

    Example:
        >>> render_item_prefix(Item("6", "Heat (1995)", (("Genres", "Action"),)))
        'Title: Heat (1995); Genres: Action'
    """
    return render_fields([("Title", item.title), *item.attributes])


def sql_event_line(prefix: str, cleaned_review: str, rating: str, scale: float) -> str:
    """A DuckDB SQL expression writing ``render_event``'s line from column expressions, byte for byte.

    Args:
        prefix: SQL of the item prefix (``render_item_prefix``).
        cleaned_review: SQL of the review, already normalised by ``clean_text`` at ingest (may be NULL).
        rating: SQL of the rating (may be NULL).
        scale: The domain's rating scale.

    Stored text is normalised at ingest (``clean_text``), so the expression only joins fields; a test compares it
    with ``render_event`` on the raw values of hostile rows, byte for byte.
    """
    cleaned = cleaned_review
    review_part = (
        f"CASE WHEN {cleaned} IS NULL OR {cleaned} = '' THEN '' ELSE '{FIELD_SEPARATOR}Review: ' || {cleaned} END"
    )
    rating_part = (
        f"CASE WHEN {rating} IS NULL THEN '' ELSE "
        f"'{FIELD_SEPARATOR}Rating: ' || printf('%.1f/%.1f', {rating}, {float(scale)}) END"
    )
    return f"({prefix} || {review_part} || {rating_part})"


def render_document(domain: Domain, lines: Sequence[str]) -> str:
    """A pre-training document: the history header, then one line per item, oldest first.

    Example:
        >>> render_document(Domain("movielens", "movies/shows"), ["Title: A", "Title: B"])
        'Given the interaction history of a user with movies/shows as follows:\\nTitle: A\\nTitle: B'
    """
    return "\n".join([HISTORY_HEADER.format(noun=domain.noun), *lines])


@dataclass(frozen=True)
class Instruction:
    """An instruction split into its fixed head (task line and header) and its item lines.

    ``text`` rebuilds the exact string, so ``Instruction.parse(s).text == s`` for every well-formed ``s``.
    """

    head: str
    lines: tuple[str, ...]

    @property
    def text(self) -> str:
        """The instruction string: ``head``, a blank line, then the item lines."""
        return f"{self.head}\n\n" + "\n".join(self.lines) if self.lines else self.head

    @classmethod
    def parse(cls, text: str) -> Instruction:
        """Split an instruction at its first blank line; text with no blank line is all head.

        Example:
            >>> Instruction.parse("Predict the next item.\\nGiven ...:\\n\\nTitle: A\\nTitle: B").lines
            ('Title: A', 'Title: B')
        """
        head, sep, body = text.partition("\n\n")
        return cls(head, tuple(body.split("\n")) if sep else ())

    def keep_last(self, count: int) -> Instruction:
        """The same instruction with only its ``count`` most recent item lines."""
        return Instruction(self.head, self.lines[len(self.lines) - count :] if count > 0 else ())


def render_instruction(task: str, domain: Domain, lines: Sequence[str]) -> str:
    """An instruction body: task line, header, a blank line, then the item lines.

    Example:
        >>> text = render_instruction(NEXT_ITEM_TASK, Domain("food", "food recipes"), ["Title: a", "Title: b"])
        >>> text.split("\\n")[1:]
        ['Given the interaction history of a user with food recipes as follows:', '', 'Title: a', 'Title: b']
    """
    head = f"{task}\n{HISTORY_HEADER.format(noun=domain.noun)}"
    return Instruction(head, tuple(lines)).text


def render_prompt(instruction: str) -> str:
    """Wrap an instruction in RecGPT's template ``### Instruction:\\n{instruction}\\n\\n### Response:``."""
    return PROMPT_TEMPLATE.format(instruction=instruction)


def parse_prompt(prompt: str) -> str | None:
    """The instruction inside a templated prompt, or None when ``prompt`` does not follow the template.

    Example:
        >>> parse_prompt("### Instruction:\\nPredict the next item.\\n\\n### Response:")
        'Predict the next item.'
    """
    if not (prompt.startswith(PROMPT_PREFIX) and prompt.endswith(PROMPT_SUFFIX)):
        return None
    if len(prompt) < len(PROMPT_PREFIX) + len(PROMPT_SUFFIX):
        return None
    return prompt[len(PROMPT_PREFIX) : len(prompt) - len(PROMPT_SUFFIX)]


def next_item_example(domain: Domain, history: Sequence[Item], target: Item) -> dict[str, str]:
    """A next-item row in RecGPT's released format: identifying fields only, the target item as response.

    Example:
        >>> food = Domain("food", "food recipes")
        >>> row = next_item_example(food, [Item("1", "a"), Item("2", "b")], Item("3", "c"))
        >>> row["prompt"].splitlines()[-3:], row["response"]
        (['Title: b', '', '### Response:'], 'Title: c')
    """
    return next_item_row(domain, [render_item(item, domain) for item in history], render_item(target, domain))


def next_item_row(domain: Domain, lines: Sequence[str], response: str) -> dict[str, str]:
    """A next-item row from already rendered item lines (``render_item``) and the target's line."""
    return {"prompt": render_prompt(render_instruction(NEXT_ITEM_TASK, domain, lines)), "response": response}


def rating_row(domain: Domain, lines: Sequence[str], hidden: str, rating: float) -> dict[str, str]:
    """A rating row from rendered full lines, the target's line ending in ``Rating:``, and its rating."""
    prompt = render_prompt(render_instruction(RATING_TASK, domain, [*lines, hidden]))
    return {"prompt": prompt, "response": format_rating(rating, domain.rating_scale)}


def rating_example(domain: Domain, history: Sequence[tuple[Item, Interaction]]) -> dict[str, str]:
    """A rating row in RecGPT's released format: full lines, the last one's rating removed and used as response.

    Example:
        >>> ml = Domain("movielens", "movies/shows")
        >>> events = [(Item("1", "A"), Interaction("u", "1", 1.0, 5.0)),
        ...           (Item("2", "B"), Interaction("u", "2", 2.0, 3.0))]
        >>> row = rating_example(ml, events)
        >>> row["prompt"].splitlines()[-4:-2], row["response"]
        (['Title: A; Rating: 5.0/5.0', 'Title: B; Rating:'], '3.0/5.0')
    """
    *shown, (target_item, target_event) = history
    if target_event.rating is None:
        raise ValueError(f"user {target_event.user_id}, item {target_event.item_id}: the rating target has no rating")
    lines = [render_event(item, event, domain.rating_scale) for item, event in shown]
    hidden = render_event(target_item, target_event, domain.rating_scale, hide_rating=True)
    return rating_row(domain, lines, hidden, target_event.rating)
