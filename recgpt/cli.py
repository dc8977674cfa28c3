"""The ``recgpt`` command line: ``data``, ``evaluate``, ``recommend``, ``serve``, ``checkpoint`` and ``recipe``."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path


def _prepare(args: argparse.Namespace) -> None:
    from recgpt.data.prepare import prepare
    from recgpt.data.prepare_config import load_prepare_config

    manifest = prepare(load_prepare_config(args.config, args.overrides))
    sys.stdout.write(f"{manifest}\n")


def _download(args: argparse.Namespace) -> None:
    from recgpt.data.download import download

    for path in download(args.name, Path(args.dest), base_url=args.base_url, progress=not args.quiet):
        sys.stdout.write(f"{path}\n")


def _evaluate(args: argparse.Namespace) -> None:
    from recgpt.config import load_config
    from recgpt.evaluation.report import format_table
    from recgpt.evaluation.runner import EvalConfig, evaluate

    report = evaluate(load_config(EvalConfig, args.config, args.overrides))
    sys.stdout.write(format_table(json.loads(report.read_text(encoding="utf-8"))) + f"\n{report}\n")


def _read_history(source: str) -> list[object]:
    """A history from a file or stdin (``-``): a JSON list of events, or JSON lines with one event per line."""
    text = sys.stdin.read() if source == "-" else Path(source).read_text(encoding="utf-8")
    where = "stdin" if source == "-" else source
    stripped = text.strip()
    if stripped.startswith("["):
        try:
            return json.loads(stripped)
        except json.JSONDecodeError as error:
            raise ValueError(f"--history {where}: not valid JSON ({error.msg}, line {error.lineno})") from error
    events = []
    for number, line in enumerate(text.splitlines(), start=1):
        if line.strip():
            try:
                events.append(json.loads(line))
            except json.JSONDecodeError as error:
                raise ValueError(f"--history {where}:{number}: not valid JSON ({error.msg})") from error
    return events


def _recommend(args: argparse.Namespace) -> None:
    from recgpt.evaluation.runner import find_benchmark, read_rows
    from recgpt.serving import Recommender

    catalog = args.catalog or args.data
    if catalog is None:
        raise ValueError("--catalog: give the prepared data folder (or items.jsonl) whose items may be recommended")
    held_out = None
    if args.user is not None:
        if args.data is None or args.history is not None:
            raise ValueError("--user needs --data (a prepared folder) and no --history")
        split = find_benchmark(Path(args.data), args.benchmark).folder / f"{args.split}.jsonl"
        rows = [r for r in read_rows(split) if r["user_id"] == args.user and r["task"] == "next_item"]
        if not rows:
            raise ValueError(f"--user {args.user}: no next-item row in {split}")
        history: list[object] = list(rows[0]["history_item_ids"])
        held_out = rows[0]["target_item_id"]
    elif args.history is not None:
        history = _read_history(args.history)
    else:
        raise ValueError("give --history FILE (or - for stdin), or --user with --data")
    recommender = Recommender.from_pretrained(args.model, catalog, benchmark=args.benchmark)
    found = recommender.recommend(history, k=args.k, exclude_seen=not args.include_seen)  # type: ignore[arg-type]
    if args.json:
        result = {"items": [vars(item) for item in found], "history_length": len(history)}
        if held_out is not None:
            result["held_out_item_id"] = held_out
        sys.stdout.write(json.dumps(result, indent=2, ensure_ascii=False) + "\n")
        return
    who = f"user {args.user}" if args.user is not None else "the history"
    sys.stdout.write(f"Top-{args.k} for {who} ({len(history)} items in history):\n")
    for rank, item in enumerate(found, start=1):
        mark = "  <- the user's held-out next item" if item.item_id == held_out else ""
        sys.stdout.write(f"{rank:>3}. {item.title}  [{item.item_id}]  (score {item.score:.3f}){mark}\n")
    if held_out is not None:
        sys.stdout.write(f"Held-out next item: {recommender.catalog.items[held_out].title}\n")


def _serve(args: argparse.Namespace) -> None:
    from recgpt.config import load_config
    from recgpt.serving.server import ServeConfig, serve

    serve(load_config(ServeConfig, args.config, args.overrides))


def _checkpoint_from_hf(args: argparse.Namespace) -> None:
    from recgpt.training.checkpoints import hf_to_composer

    result = hf_to_composer(args.source, Path(args.output))
    sys.stdout.write(f"{result['tensors']} tensors, {result['parameters']:,} parameters -> {result['output']}\n")


def _checkpoint_update_code(args: argparse.Namespace) -> None:
    from recgpt.training.checkpoints import update_mpt_code

    sys.stdout.write(f"{update_mpt_code(args.source, Path(args.output))}\n")


def _merge(args: argparse.Namespace) -> None:
    from recgpt.data.merge import merge_prepared

    sys.stdout.write(f"{merge_prepared(args.output, args.parts)}\n")


def _checkpoint_to_safetensors(args: argparse.Namespace) -> None:
    from recgpt.training.checkpoints import convert_to_safetensors

    sys.stdout.write(f"{convert_to_safetensors(args.source, Path(args.output), unpickle=args.unpickle)}\n")


def _recipe_upgrade(args: argparse.Namespace) -> None:
    from recgpt.training.legacy_recipe import upgrade_file

    old = Path(args.old)
    new, result = upgrade_file(old, Path(args.new) if args.new else None, force=args.force)
    lines = [f"{old} -> {new}: {len(result.changes)} changes; it loads on llm-foundry 0.22 (TrainConfig checked)"]
    lines += [f"  {change.line()}" for change in result.changes]
    lines.append(f"Train it: composer --world_size N scripts/train.py {new} [key=value ...]")
    sys.stdout.write("\n".join(lines) + "\n")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every subcommand."""
    parser = argparse.ArgumentParser(prog="recgpt", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    data = commands.add_parser("data", help="data preparation").add_subparsers(dest="data_command", required=True)
    prepare = data.add_parser("prepare", help="logs -> corpus, instruction data, benchmark splits")
    prepare.add_argument("config", help="a data YAML, e.g. configs/data/movielens-100k.yaml")
    prepare.add_argument("overrides", nargs="*", help="key=value overrides, e.g. max_users=50")
    prepare.set_defaults(handler=_prepare)
    merge = data.add_parser("merge", help="join partition outputs (partition=K/N) into one dataset")
    merge.add_argument("output", help="the merged output folder (replaced atomically)")
    merge.add_argument("parts", nargs="+", help="the partition outputs, in any order")
    merge.set_defaults(handler=_merge)
    download = data.add_parser("download", help="fetch a public dump (resumable, checksummed)")
    download.add_argument("name", help="e.g. movielens-1m, amazon2014:Beauty, amazon2023:All_Beauty, goodreads:poetry")
    download.add_argument("--dest", default="data/raw", help="parent folder; files go to <dest>/<name>")
    download.add_argument("--base-url", default=None, help="a mirror replacing the publisher's host")
    download.add_argument("--quiet", action="store_true", help="no progress bar")
    download.set_defaults(handler=_download)

    evaluate = commands.add_parser("evaluate", help="next-item and rating metrics beside baselines")
    evaluate.add_argument("config", help="an evaluation YAML, e.g. configs/eval/demo.yaml")
    evaluate.add_argument("overrides", nargs="*", help="key=value overrides, e.g. model=path/to/hf max_users=100")
    evaluate.set_defaults(handler=_evaluate)

    recommend = commands.add_parser("recommend", help="top-k catalogue items after a history")
    recommend.add_argument("--model", required=True, help="a Hugging Face model folder")
    recommend.add_argument("--catalog", default=None, help="a prepared data folder or items.jsonl (default: --data)")
    recommend.add_argument("--history", default=None, help="a JSON list or JSON-lines file of events, or - (stdin)")
    recommend.add_argument("--data", default=None, help="with --user: a folder written by `recgpt data prepare`")
    recommend.add_argument("--user", default=None, help="with --data: take the history of this user of the split")
    recommend.add_argument("--split", default="test", choices=["test", "validation"])
    recommend.add_argument("--benchmark", default=None, help="the benchmark source (default: the only one)")
    recommend.add_argument("--k", type=int, default=10)
    recommend.add_argument("--include-seen", action="store_true", help="allow items of the history")
    recommend.add_argument("--json", action="store_true", help="print JSON instead of a table")
    recommend.set_defaults(handler=_recommend)

    serve = commands.add_parser("serve", help="the HTTP service: /v1/recommend, /v1/rating, web page, metrics")
    serve.add_argument("config", help="a serving YAML, e.g. configs/serve/demo.yaml")
    serve.add_argument("overrides", nargs="*", help="key=value overrides, e.g. port=8080 model=path/to/hf")
    serve.set_defaults(handler=_serve)

    checkpoint = commands.add_parser("checkpoint", help="checkpoint conversion").add_subparsers(
        dest="checkpoint_command", required=True
    )
    from_hf = checkpoint.add_parser("from-hf", help="MPT Hugging Face weights -> composer checkpoint for load_path")
    from_hf.add_argument("source", help="a local model folder or a hub id (e.g. mosaicml/mpt-7b, vinai/RecGPT-7B)")
    from_hf.add_argument("output", help="the .pt file to write, e.g. checkpoints/mpt-7b.composer.pt")
    from_hf.set_defaults(handler=_checkpoint_from_hf)
    update = checkpoint.add_parser("update-code", help="MPT HF folder -> the same weights with llm-foundry 0.22's code")
    update.add_argument("source", help="a local model folder or a hub id (e.g. vinai/RecGPT-7B-Instruct)")
    update.add_argument("output", help="the folder to write, e.g. checkpoints/recgpt-7b-instruct")
    update.set_defaults(handler=_checkpoint_update_code)
    to_safetensors = checkpoint.add_parser("to-safetensors", help="pytorch_model*.bin pickles -> model.safetensors")
    to_safetensors.add_argument("source", help="a local model folder whose weights are pytorch_model*.bin")
    to_safetensors.add_argument("output", help="the folder to write: the same files, weights as safetensors")
    to_safetensors.add_argument(
        "--unpickle",
        action="store_true",
        help="unpickle fully a file torch's weights-only loader refuses; this can run code: trusted files only",
    )
    to_safetensors.set_defaults(handler=_checkpoint_to_safetensors)

    recipe = commands.add_parser("recipe", help="training recipes").add_subparsers(dest="recipe_command", required=True)
    upgrade = recipe.add_parser("upgrade", help="a 2024 llm-foundry recipe (RecGPT's) -> one that loads on 0.22")
    upgrade.add_argument("old", help="the recipe to upgrade, e.g. RecGPT's fine-tuning.yaml (never overwritten)")
    upgrade.add_argument("new", nargs="?", default=None, help="the recipe to write (default: OLD.0.22.yaml)")
    upgrade.add_argument("--force", action="store_true", help="overwrite NEW.yaml if it exists")
    upgrade.set_defaults(handler=_recipe_upgrade)
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of the ``recgpt`` console script."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        args.handler(args)
    except (ValueError, OSError, RecursionError) as error:
        _fail(error)
    except RuntimeError as error:  # recgpt's own (LeakageError, DownloadError); others are bugs: a traceback
        if not type(error).__module__.startswith("recgpt."):
            raise
        _fail(error)


def _fail(error: BaseException) -> None:
    """Log what went wrong in one line (``ERROR recgpt: <message>``) and exit with status 2."""
    message = str(error) or type(error).__name__
    if isinstance(error, RecursionError):
        message = f"input nested too deeply to read ({message})"
    logging.getLogger("recgpt").error("%s", message)
    raise SystemExit(2) from error


if __name__ == "__main__":
    main()
