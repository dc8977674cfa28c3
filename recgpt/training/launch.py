"""The training entry point behind ``scripts/train.py``: llm-foundry's ``train_from_yaml`` with recgpt registered."""

from __future__ import annotations

import sys
from collections.abc import Sequence


def main(argv: Sequence[str] | None = None) -> None:
    """Train from a YAML recipe with ``key=value`` overrides: ``train.py RECIPE.yaml [key=value ...]``.

    recgpt's components reach llm-foundry through entry points (``recgpt_*`` keys), so nothing is registered
    here by hand; llm-foundry resolves ``train_loader.name: recgpt_finetuning`` on its own.
    """
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in {"-h", "--help"}:
        raise SystemExit("usage: composer -n N scripts/train.py RECIPE.yaml [key=value ...]")
    import logging

    from llmfoundry.command_utils import train_from_yaml

    logging.getLogger("recgpt").setLevel(logging.INFO)  # llm-foundry configures the handlers
    train_from_yaml(args[0], args[1:])
