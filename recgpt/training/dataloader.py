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
        loss_on_history: Train on each prompt's item lines as well as its response (``RecGPTCollator``): every
            line of a next-item prompt is a next item in the response's format. Off in RecGPT's recipe.
    """

    hf_name: str
    split: str
    max_seq_len: int
    shuffle: bool = True
    shuffle_seed: int = 0
    pad_to_max_seq_len: bool = False
    packing: bool = False
    loss_on_history: bool = False


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


DROP_WARNING_SHARE = 0.05  # drop_last discarding more than this share of an epoch's sequences is logged


@dataclass(frozen=True)
class EpochShape:
    """How composer's ``DistributedSampler`` and the ``DataLoader`` split one epoch across ranks.

    Attributes:
        sequences: Items of the dataset (packed sequences, or examples without packing).
        batch_size: Sequences per batch on one rank (``device_batch_size``).
        world_size: Ranks (processes) the sampler splits the data over.
        drop_last: The loader's ``drop_last``: the sampler and the loader drop the remainder.
    """

    sequences: int
    batch_size: int
    world_size: int
    drop_last: bool

    @property
    def per_rank(self) -> int:
        """Sequences each rank gets: the remainder dropped, or padded with repeats without ``drop_last``."""
        whole, remainder = divmod(self.sequences, self.world_size)
        return whole if self.drop_last or not remainder else whole + 1

    @property
    def batches(self) -> int:
        """Batches per epoch on each rank (the same on all).

        Example:
            >>> EpochShape(sequences=12, batch_size=16, world_size=1, drop_last=True).batches
            0
            >>> EpochShape(sequences=37, batch_size=8, world_size=2, drop_last=True).batches  # 18 per rank
            2
        """
        whole, remainder = divmod(self.per_rank, self.batch_size)
        return whole if self.drop_last or not remainder else whole + 1

    @property
    def dropped(self) -> int:
        """Sequences no rank sees in an epoch (0 without ``drop_last``)."""
        return self.sequences - self.batches * self.batch_size * self.world_size if self.drop_last else 0


def check_epoch(shape: EpochShape, where: str, examples: int, packing: bool) -> None:
    """Refuse a loader whose epoch has no batch; warn when ``drop_last`` discards more than 5% of the data.

    A loader with zero batches makes composer loop over epochs forever doing nothing (nothing trained, nothing
    evaluated), so it is an error at build time naming the numbers and the keys that change them.

    Raises:
        ValueError: If each rank gets no batch, with the sequences, batch sizes, world size and keys to change.
    """
    what = f"{shape.sequences} packed sequences (from {examples} examples)" if packing else f"{examples} examples"
    ranks = f"{shape.world_size} rank{'s' if shape.world_size != 1 else ''}"
    if shape.batches == 0:
        raise ValueError(_no_batch_message(shape, where, what, ranks, examples, packing))
    if shape.dropped > DROP_WARNING_SHARE * shape.sequences:
        log.warning(
            "%s: drop_last: true discards %d of %s (%.0f%%) every epoch: %d batches of %d per rank x %s use %d; "
            "set drop_last: false, or a batch size that divides the data more evenly",
            where,
            shape.dropped,
            what,
            100 * shape.dropped / shape.sequences,
            shape.batches,
            shape.batch_size,
            ranks,
            shape.sequences - shape.dropped,
        )


def _no_batch_message(shape: EpochShape, where: str, what: str, ranks: str, examples: int, packing: bool) -> str:
    """The error for an epoch without a batch: the arithmetic, then every key that fixes it."""
    global_batch = shape.batch_size * shape.world_size
    fixes = []
    if shape.per_rank:
        fixes.append(
            f"a batch size of at most {shape.per_rank} per rank (global_train_batch_size <= "
            f"{shape.per_rank * shape.world_size} for a train_loader, device_eval_batch_size <= {shape.per_rank} "
            "for an eval_loader)"
        )
    else:
        fixes.append(f"fewer processes than {shape.world_size} (composer -n)")
    fixes.append("drop_last: false in this loader (the last, smaller batch is then used)")
    if packing and examples // shape.world_size >= shape.batch_size:
        fixes.append(f"dataset.packing: false in this loader ({examples} sequences, one example each)")
    fixes.append(f"more data (at least {global_batch} sequences)")
    return (
        f"{where}: {what} make no batch: with drop_last: true and {ranks}, each rank gets {shape.per_rank} "
        f"sequences, fewer than its batch of {shape.batch_size} (a global batch of {global_batch} = "
        f"{shape.batch_size} per rank x {ranks}), so every epoch would run zero batches (a train_loader loops "
        f"over epochs forever training nothing; an eval_loader measures nothing). Change one of: {'; '.join(fixes)}"
    )


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
        ValueError: For an unknown or missing ``dataset`` key (named), a non-integer batch size, or data too
            small for one batch per rank (``check_epoch``).
    """
    from composer import DataSpec
    from composer.utils import dist

    if not float(device_batch_size).is_integer() or device_batch_size < 1:
        raise ValueError(
            f"device batch size must be a positive integer, got {device_batch_size} (global_train_batch_size or "
            "device_eval_batch_size divided by the number of ranks)"
        )
    config = parse_dataset_config(dataset)
    examples = load_examples(config.hf_name, config.split)
    if not examples:
        raise ValueError(f"train_loader.dataset.hf_name: {config.hf_name} [{config.split}] holds no examples")
    log.info("recgpt_finetuning: %d examples from %s [%s]", len(examples), config.hf_name, config.split)
    collator = RecGPTCollator(tokenizer, config.max_seq_len, config.pad_to_max_seq_len, config.loss_on_history)
    items = tokenize_examples(examples, collator, config.packing)
    shape = EpochShape(len(items), int(device_batch_size), dist.get_world_size(), drop_last)
    where = f"recgpt_finetuning {config.hf_name} [{config.split}]"
    check_epoch(shape, where, len(examples), config.packing)
    sampler = dist.get_sampler(
        items,  # type: ignore[arg-type]  # a list is a map-style dataset
        drop_last=drop_last,
        shuffle=config.shuffle,
        seed=config.shuffle_seed,
    )
    loader = DataLoader(
        items,  # type: ignore[arg-type]  # a list is a map-style dataset
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
