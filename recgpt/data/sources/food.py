"""Food.com Recipes and Interactions (Kaggle, Majumder et al. 2019): ``RAW_recipes.csv`` + ``RAW_interactions.csv``.

Recipes: ``name, id, minutes, contributor_id, submitted, tags, nutrition, n_steps, steps, description,
ingredients, n_ingredients`` (quoted multi-line fields). Interactions: ``user_id, recipe_id, date (YYYY-MM-DD),
rating, review``, where rating 0 marks a review without a rating. RecGPT writes ``Title, Review, Rating``.
"""

from __future__ import annotations

from recgpt.data.records import Domain
from recgpt.data.sources.readers import (
    Limits,
    Options,
    Paths,
    RecordSink,
    csv_records,
    make_interaction,
    make_item,
    parse_time,
)

FOOD = Domain("food", "food recipes", 5.0)


def read_food(paths: Paths, sink: RecordSink, options: Options, limits: Limits) -> Domain:
    """Food.com: ``paths`` has ``recipes`` and ``interactions``."""
    del options
    for line, row in csv_records(paths["recipes"], sink, required=("name", "id")):
        make_item(sink, paths["recipes"], line, row["id"], row["name"], [], limits)
    for line, row in csv_records(paths["interactions"], sink, required=("user_id", "recipe_id", "date", "rating")):
        rating = None if row["rating"].strip() == "0" else row["rating"]
        make_interaction(
            sink,
            paths["interactions"],
            line,
            FOOD,
            user_id=row["user_id"],
            item_id=row["recipe_id"],
            timestamp=parse_time(row["date"]),
            rating=rating,
            review=row.get("review"),
            limits=limits,
        )
    return FOOD
