"""An in-memory ``RecordSink`` for adapter tests."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from recgpt.data.records import Interaction, Item


@dataclass
class CollectSink:
    """Keeps everything an adapter delivers."""

    items: dict[str, Item] = field(default_factory=dict)
    events: list[Interaction] = field(default_factory=list)
    rejects: list[tuple[str, int, str, str]] = field(default_factory=list)

    def item(self, item: Item, file: Path | None = None, line: int = 0) -> None:
        self.items[item.item_id] = item

    def interaction(self, event: Interaction) -> None:
        self.events.append(event)

    def reject(self, file: Path, line: int, reason: str, field: str = "", excerpt: str = "") -> None:
        self.rejects.append((Path(file).name, line, reason, field))

    @property
    def reasons(self) -> Counter[str]:
        return Counter(reason for _, _, reason, _ in self.rejects)
