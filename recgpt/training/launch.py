"""The training entry point behind ``scripts/train.py``: llm-foundry's ``train_from_yaml`` with recgpt registered."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path


def main(argv: Sequence[str] | None = None) -> None:
    """Train from a YAML recipe with ``key=value`` overrides: ``train.py RECIPE.yaml [key=value ...]``.

    recgpt's components reach llm-foundry through entry points (``recgpt_*`` keys), so nothing is registered
    here by hand; llm-foundry resolves ``train_loader.name: recgpt_finetuning`` on its own.
    """
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in {"-h", "--help"}:
        raise SystemExit("usage: composer -n N scripts/train.py RECIPE.yaml [key=value ...]")
    check_overrides(args[1:])
    refuse_legacy_recipe(args[0], args[1:])
    import logging

    from llmfoundry.command_utils import train_from_yaml

    logging.basicConfig(level=logging.INFO)
    logging.getLogger("recgpt").setLevel(logging.INFO)  # llm-foundry reconfigures the handlers later
    prepare_resume(args[0], args[1:])
    train_from_yaml(args[0], args[1:])


def check_overrides(overrides: Sequence[str]) -> None:
    """Refuse an override that is not ``key=value`` (llm-foundry would silently ignore it).

    Example:
        >>> check_overrides(["max_duration=20ba", "optimizer.lr=1e-5"])
        >>> check_overrides(["max_duration"])
        Traceback (most recent call last):
        ...
        SystemExit: override 'max_duration' is not key=value (e.g. max_duration=20ba); nothing was trained
    """
    for override in overrides:
        key, equals, _ = override.partition("=")
        if not equals or not key.strip():
            raise SystemExit(f"override {override!r} is not key=value (e.g. max_duration=20ba); nothing was trained")


def refuse_legacy_recipe(recipe: str, overrides: Sequence[str]) -> None:
    """Stop, in one line naming ``recgpt recipe upgrade``, on a 2024 recipe that llm-foundry 0.22 would reject.

    A recipe that cannot be read is left to llm-foundry, whose error then names the problem.
    """
    from omegaconf import OmegaConf

    from recgpt.training.legacy_recipe import UPGRADE_COMMAND, default_output, legacy_keys

    try:
        merged = OmegaConf.to_container(OmegaConf.merge(OmegaConf.load(recipe), OmegaConf.from_cli(list(overrides))))
    except Exception:  # unreadable YAML: llm-foundry reports it
        return
    keys = legacy_keys({str(key): value for key, value in merged.items()}) if isinstance(merged, dict) else []
    if keys:
        raise SystemExit(
            f"{recipe} is a legacy recipe (2024 llm-foundry releases) that llm-foundry 0.22 rejects "
            f"({', '.join(keys)}); upgrade it with: {UPGRADE_COMMAND} {recipe} {default_output(Path(recipe))}; "
            "nothing was trained"
        )


def prepare_resume(recipe: str, overrides: Sequence[str]) -> None:
    """Before an autoresuming run starts, set aside checkpoints that a killed save left half written.

    Only the local rank 0 of the node touches the folder; the other processes wait for it at composer's first
    barrier, which comes before any checkpoint is read.
    """
    import os
    from pathlib import Path

    from omegaconf import OmegaConf

    from recgpt.training.checkpoints import set_aside_interrupted_saves

    if os.environ.get("LOCAL_RANK", "0") != "0":
        return
    config = OmegaConf.merge(OmegaConf.load(recipe), OmegaConf.from_cli(list(overrides)))
    folder = OmegaConf.select(config, "save_folder")
    if OmegaConf.select(config, "autoresume") and folder and "://" not in str(folder):
        set_aside_interrupted_saves(Path(str(folder)))
