"""Setting aside checkpoints that a killed save left behind (the resume e2e test runs it for real)."""

from __future__ import annotations

import os
from pathlib import Path

from recgpt.training.checkpoints import set_aside_interrupted_saves


def test_only_checkpoints_newer_than_latest_are_moved(tmp_path: Path):
    for name in ("ep0-ba3-rank0.pt", "ep0-ba6-rank0.pt", "ep0-ba9-rank0.pt", "notes.txt"):
        (tmp_path / name).write_text(name)
    os.symlink("ep0-ba6-rank0.pt", tmp_path / "latest-rank0.pt")
    moved = set_aside_interrupted_saves(tmp_path)
    assert [p.name for p in moved] == ["ep0-ba9-rank0.pt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "ep0-ba3-rank0.pt",
        "ep0-ba6-rank0.pt",
        "interrupted",
        "latest-rank0.pt",
        "notes.txt",
    ]


def test_a_first_save_cut_off_leaves_nothing_to_resume_from(tmp_path: Path):
    (tmp_path / "ep0-ba3-rank0.pt").write_text("half")
    assert [p.name for p in set_aside_interrupted_saves(tmp_path)] == ["ep0-ba3-rank0.pt"]
    assert set_aside_interrupted_saves(tmp_path / "missing") == []
