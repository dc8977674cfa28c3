"""The ``recgpt_finetuning`` dataloader, registered with llm-foundry through an entry point.

llm-foundry's built-in ``finetuning`` loader always uses its own collator, so recgpt's collator is reached
through this loader's name (DESIGN.md). A recipe uses it as::

    train_loader:
      name: recgpt_finetuning
      dataset:
        hf_name: sample_instruction_following_dataset   # a folder, a .jsonl file, or a hub dataset id
        split: train
        max_seq_len: 2048
        shuffle: true
      drop_last: true
      num_workers: 0
"""

from __future__ import annotations

import json
import logging
from dataclasses import MISSING, dataclass, fields
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader

from recgpt.training.collator import PromptResponse, RecGPTCollator, to_example
from recgpt.training.packing import pack_lengths, packing_efficiency

log = logging.getLogger(__name__)

_SPLIT_NAMES = {"train", "validation", "valid", "val", "dev", "test"}


@dataclass(frozen=True)
class FinetuningDatasetConfig:
    """The ``dataset:`` section of a ``recgpt_finetuning`` loader.

    Attributes:
        hf_name: A local folder (``{split}.jsonl`` inside, or one file for ``train``), a ``.jsonl`` file, or a
            Hugging Face dataset id (needs the hub).
        split: The split to read.
        max_seq_len: Longest example in tokens; longer ones lose their oldest history lines.
        shuffle: Shuffle every epoch.
        shuffle_seed: Seed of the shuffle.
        pad_to_max_seq_len: Pad every batch to ``max_seq_len`` rather than its longest example.
        packing: Pack several examples into each sequence (``recgpt.training.packing``); the batch size then
            counts packed sequences, and the model needs ``attn_config.attn_uses_sequence_id: true``.
    """

    hf_name: str
    split: str
    max_seq_len: int
    shuffle: bool = True
    shuffle_seed: int = 0
    pad_to_max_seq_len: bool = False
    packing: bool = False


def read_jsonl_examples(path: Path) -> list[PromptResponse]:
    """Read prompt/response (or instruction/response) rows from a JSON-lines file.

    Raises:
        ValueError: Naming ``file:line`` for invalid JSON or a row without the needed string fields.
    """
    examples = []
    with path.open(encoding="utf-8") as handle:
        for line_number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            source = f"{path}:{line_number}"
            try:
                row = json.loads(line)
            except json.JSONDecodeError as error:
                raise ValueError(f"{source}: not valid JSON ({error.msg})") from error
            if not isinstance(row, dict):
                raise ValueError(f"{source}: each line must be a JSON object")
            examples.append(to_example(row, source))
    return examples


def split_files(folder: Path, split: str) -> list[Path]:
    """The data files of ``split`` in a folder, following the ``datasets`` convention.

    Files whose name starts with the split name (``train.jsonl``, ``train-00001.jsonl``) belong to it; a folder
    whose files name no split at all (like RecGPT's ``sample_prompt_response_pairs.jsonl``) is all ``train``.
    """
    files = sorted(p for p in folder.iterdir() if p.suffix in {".jsonl", ".json"} and p.is_file())
    matching = [p for p in files if p.stem == split or p.stem.startswith((f"{split}-", f"{split}_", f"{split}."))]
    if matching:
        return matching
    if split == "train" and files and not any(p.stem.split("-")[0].split("_")[0] in _SPLIT_NAMES for p in files):
        return files
    raise FileNotFoundError(f"{folder}: no data file for split '{split}' (found {[p.name for p in files]})")


def load_examples(hf_name: str, split: str) -> list[PromptResponse]:
    """All examples of a split, from a local folder or file, or from the hub through ``datasets``."""
    path = Path(hf_name)
    if path.is_file():
        return read_jsonl_examples(path)
    if path.is_dir():
        return [example for file in split_files(path, split) for example in read_jsonl_examples(file)]
    import datasets

    log.info("%s is not a local path; loading it with datasets.load_dataset", hf_name)
    rows = datasets.load_dataset(hf_name, split=split)
    return [to_example(dict(row), f"{hf_name}[{split}][{index}]") for index, row in enumerate(rows)]


def parse_dataset_config(dataset: dict[str, Any]) -> FinetuningDatasetConfig:
    """Validate a loader's ``dataset:`` section strictly.

    Raises:
        ValueError: Naming every unknown or missing key.
    """
    known = [f.name for f in fields(FinetuningDatasetConfig)]
    unknown = sorted(set(dataset) - set(known))
    if unknown:
        raise ValueError(f"train_loader.dataset: unknown key(s) {unknown} for recgpt_finetuning; known: {known}")
    required = [f.name for f in fields(FinetuningDatasetConfig) if f.default is MISSING]
    missing = [name for name in required if name not in dataset]
    if missing:
        raise ValueError(f"train_loader.dataset: missing key(s) {missing} for recgpt_finetuning")
    return FinetuningDatasetConfig(**dataset)


def tokenize_examples(examples: list[PromptResponse], collator: RecGPTCollator, packing: bool) -> list[Any]:
    """Tokenize every example once, up front; with ``packing``, group them into bins of ``max_seq_len`` tokens.

    Returns:
        ``Tokens`` per example, or a list of ``Tokens`` per packed sequence.
    """
    tokens = [collator.encode(example) for example in examples]
    if collator.examples_shortened:
        log.info(
            "recgpt_finetuning: %d of %d examples lost their oldest history lines to fit max_seq_len %d",
            collator.examples_shortened,
            len(tokens),
            collator.max_seq_len,
        )
    if not packing:
        return tokens
    lengths = [len(t) for t in tokens]
    bins = pack_lengths(lengths, collator.max_seq_len)
    log.info(
        "recgpt_finetuning: packed %d examples into %d sequences (%.1f%% of tokens are real)",
        len(tokens),
        len(bins),
        100 * packing_efficiency(lengths, bins, collator.max_seq_len),
    )
    return [[tokens[index] for index in group] for group in bins]


def count_batch_tokens(batch: dict[str, torch.Tensor]) -> dict[str, int]:
    """Composer's token counter: real tokens (attention mask) and loss-generating tokens (labels)."""
    return {
        "total": int(batch["attention_mask"].sum()),
        "loss_generating": int((batch["labels"] != -100).sum()),
    }


def build_recgpt_finetuning_dataloader(
    tokenizer: Any,
    device_batch_size: int | float,
    dataset: dict[str, Any],
    num_workers: int = 0,
    drop_last: bool = False,
    pin_memory: bool = False,
    prefetch_factor: int | None = None,
    persistent_workers: bool = False,
    timeout: int = 0,
) -> Any:
    """Build the loader llm-foundry calls for ``name: recgpt_finetuning`` and return a composer ``DataSpec``.

    Raises:
        ValueError: For an unknown or missing ``dataset`` key (named), or a non-integer batch size.
    """
    from composer import DataSpec
    from composer.utils import dist

    if not float(device_batch_size).is_integer():
        raise ValueError(f"device batch size must be an integer, got {device_batch_size}")
    config = parse_dataset_config(dataset)
    examples = load_examples(config.hf_name, config.split)
    if not examples:
        raise ValueError(f"train_loader.dataset.hf_name: {config.hf_name} [{config.split}] holds no examples")
    log.info("recgpt_finetuning: %d examples from %s [%s]", len(examples), config.hf_name, config.split)
    collator = RecGPTCollator(tokenizer, config.max_seq_len, config.pad_to_max_seq_len)
    dataset = tokenize_examples(examples, collator, config.packing)
    sampler = dist.get_sampler(dataset, drop_last=drop_last, shuffle=config.shuffle, seed=config.shuffle_seed)
    loader = DataLoader(
        dataset,  # type: ignore[arg-type]  # a list is a map-style dataset
        batch_size=int(device_batch_size),
        sampler=sampler,
        collate_fn=collator,
        drop_last=drop_last,
        num_workers=num_workers,
        pin_memory=pin_memory,
        prefetch_factor=prefetch_factor,
        persistent_workers=persistent_workers,
        timeout=timeout,
    )
    return DataSpec(loader, get_num_tokens_in_batch=count_batch_tokens)
