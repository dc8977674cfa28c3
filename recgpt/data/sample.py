"""The sample instruction dataset: RecGPT's release format, made from a small bookshop catalogue written for recgpt.

Every title, author and review below was written for this project (no real catalogue or review is copied), so the
dataset may be redistributed under the project's license. Users are simulated: each prefers one genre, reads
mostly from it, and rates books of that genre higher. ``scripts/make_sample_dataset.py`` writes it.
"""

from __future__ import annotations

import random
from pathlib import Path

from recgpt.data.corpus import write_jsonl
from recgpt.data.records import Domain, Interaction, Item
from recgpt.data.render import next_item_example, rating_example

BOOKS = Domain(name="sample-books", noun="books", rating_scale=5.0, identifying=("Author",))

# (title, author, genre): an invented bookshop.
CATALOGUE = [
    ("The Lantern Keeper's Daughter", "Mira Okafor", "mystery"),
    ("Nine Clocks at Harrow Lane", "Mira Okafor", "mystery"),
    ("A Quiet Poison", "Tobias Wren", "mystery"),
    ("The Fogbound Inquiry", "Tobias Wren", "mystery"),
    ("Salt on the Windowsill", "Elena Varga", "mystery"),
    ("The Last Ferry to Marrow Island", "Elena Varga", "mystery"),
    ("Cinders of the Glass Court", "Idris Fenwick", "fantasy"),
    ("The Cartographer of Storms", "Idris Fenwick", "fantasy"),
    ("Songs for a Sleeping Dragon", "Lena Harrowgate", "fantasy"),
    ("The Ember Oath", "Lena Harrowgate", "fantasy"),
    ("A Crown of Moth Wings", "Soren Albright", "fantasy"),
    ("The Wandering Citadel", "Soren Albright", "fantasy"),
    ("Orbit of Small Hours", "Kenji Marlow", "science fiction"),
    ("The Hydroponic Heart", "Kenji Marlow", "science fiction"),
    ("Signal from the Ninth Moon", "Ada Quillon", "science fiction"),
    ("Rust Belt Starship", "Ada Quillon", "science fiction"),
    ("The Archive at Zero Kelvin", "Nadia Prescott", "science fiction"),
    ("Children of the Slow Light", "Nadia Prescott", "science fiction"),
    ("Bread and Stubbornness", "Ruth Calloway", "cooking"),
    ("One Pot, Four Seasons", "Ruth Calloway", "cooking"),
    ("The Patient Pantry", "Marco Bellandi", "cooking"),
    ("Fire, Smoke and Flatbreads", "Marco Bellandi", "cooking"),
    ("Soups for Rainy Tuesdays", "Hana Kowalski", "cooking"),
    ("The Weeknight Baker", "Hana Kowalski", "cooking"),
    ("Walking the Old Salt Roads", "Owen Tallis", "travel"),
    ("A Year of Night Trains", "Owen Tallis", "travel"),
    ("Islands Without Names", "Priya Desmond", "travel"),
    ("The Borrowed Bicycle Atlas", "Priya Desmond", "travel"),
    ("Letters from a Mountain Hut", "Felix Arden", "travel"),
    ("Postcards from the Edge of the Map", "Felix Arden", "travel"),
]

REVIEWS = {
    5: ["Could not put it down.", "An instant favourite; already reading it again.", "Wonderful from the first page."],
    4: ["Very good, with a slow middle.", "Enjoyed it a lot.", "Strong writing and a satisfying ending."],
    3: ["Fine, but it did not stay with me.", "Some good ideas, uneven pacing.", "An average read."],
    2: ["Hard to finish.", "Not for me; the plot wandered.", "Disappointing after a good start."],
    1: ["Gave up halfway.", "Could not connect with it at all.", "Not worth the time."],
}


def catalogue_items() -> list[Item]:
    """The catalogue as records: ids ``b01``..., with the author as the identifying attribute."""
    return [
        Item(f"b{index:02d}", title, (("Author", author),))
        for index, (title, author, _) in enumerate(CATALOGUE, start=1)
    ]


def simulate_history(user: str, rng: random.Random) -> list[Interaction]:
    """One simulated user's reading history, oldest first (5 to 12 distinct books).

    The user prefers one genre: 75% of picks come from it and score 4-5; other picks score 1-4.
    """
    genres = sorted({genre for _, _, genre in CATALOGUE})
    favourite = rng.choice(genres)
    by_genre = {g: [i for i, (_, _, genre) in enumerate(CATALOGUE, start=1) if genre == g] for g in genres}
    length = rng.randint(5, 12)
    chosen: list[int] = []
    while len(chosen) < length:
        pool = by_genre[favourite] if rng.random() < 0.75 else [i for i in range(1, len(CATALOGUE) + 1)]
        pick = rng.choice(pool)
        if pick not in chosen:
            chosen.append(pick)
    events = []
    for step, index in enumerate(chosen):
        liked = CATALOGUE[index - 1][2] == favourite
        rating = rng.choice([4, 5, 5]) if liked else rng.choice([1, 2, 3, 3, 4])
        review = rng.choice(REVIEWS[rating])
        events.append(Interaction(user, f"b{index:02d}", float(step), float(rating), review, order=step))
    return events


def build_sample_dataset(output: Path, users: int = 60, seed: int = 2024) -> int:
    """Write ``train.jsonl`` of prompt/response rows, one next-item and one rating row per simulated user.

    Returns:
        The number of rows written.
    """
    rng = random.Random(seed)
    items = {item.item_id: item for item in catalogue_items()}
    rows = []
    for number in range(1, users + 1):
        history = simulate_history(f"u{number:03d}", rng)
        shown = history[:-1]
        rows.append(next_item_example(BOOKS, [items[e.item_id] for e in shown], items[history[-1].item_id]))
        rows.append(rating_example(BOOKS, [(items[e.item_id], e) for e in shown]))
    return write_jsonl(rows, output / "train.jsonl")
