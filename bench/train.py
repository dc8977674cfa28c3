"""Benchmark of instruction-tuning throughput: recgpt's packed loader against llm-foundry's stock ``finetuning`` loader.

Both train the same tiny MPT (the demo's: d_model 128, 4 layers, ALiBi) on the same MovieLens-100K instruction data
on CPU, in one process, for the same number of steps of the same batch size. Reported per loader: useful
(non-padding) tokens per second, padding share, examples per step, and the share of step time spent waiting
for the next batch. The stock loader runs with its defaults, as RecGPT's released YAML used it (batches padded to
``max_seq_len``; examples whose prompt is longer are dropped); recgpt's packs examples into sequences and
removes the oldest history lines of long ones. Usage::

    python bench/train.py                 # prepares 300 users of MovieLens-100K, 30 measured steps per loader
    python bench/train.py --steps 10 --users 100
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]


def prepare(folder: Path, users: int, max_seq_len: int) -> Path:
    """The demo's data config, shrunk: returns the prepared folder."""
    from recgpt.config import load_config
    from recgpt.data.prepare import prepare
    from recgpt.data.prepare_config import PrepareConfig

    overrides = [f"output={folder}", f"max_users={users}", f"max_seq_len={max_seq_len}"]
    prepare(load_config(PrepareConfig, ROOT / "configs" / "data" / "movielens-100k.yaml", overrides))
    return folder


def loader(name: str, data: Path, tokenizer: Any, batch_size: int, max_seq_len: int) -> Any:
    """A training dataloader built by llm-foundry from a config, as a recipe would."""
    from llmfoundry.data.dataloader import build_dataloader

    dataset: dict[str, Any] = {
        "hf_name": str(data / "instruct"),
        "split": "train",
        "max_seq_len": max_seq_len,
        "shuffle": True,
        "shuffle_seed": 17,
    }
    if name == "finetuning":
        dataset["decoder_only_format"] = True
    else:
        dataset["packing"] = True
    config = {
        "name": name,
        "dataset": dataset,
        "drop_last": True,
        "num_workers": 0,
        "pin_memory": False,
        "prefetch_factor": None,
        "persistent_workers": False,
    }
    return build_dataloader(config, tokenizer, batch_size).dataloader


def model(vocab_size: int, max_seq_len: int, packed: bool) -> Any:
    from llmfoundry.models.mpt import MPTConfig, MPTForCausalLM

    torch.manual_seed(0)
    attention = {"attn_impl": "torch", "alibi": True, "attn_uses_sequence_id": packed}
    return MPTForCausalLM(
        MPTConfig(
            d_model=128,
            n_heads=4,
            n_layers=4,
            expansion_ratio=4,
            max_seq_len=max_seq_len,
            vocab_size=vocab_size,
            no_bias=True,
            learned_pos_emb=False,
            attn_config=attention,
        )
    )


def measure(name: str, data: Path, tokenizer: Any, steps: int, batch_size: int, max_seq_len: int) -> dict[str, float]:
    """Train ``steps`` batches (after one warm-up batch); time data waits and whole steps."""
    batches = loader(name, data, tokenizer, batch_size, max_seq_len)
    network = model(len(tokenizer), max_seq_len, packed=name != "finetuning")
    optimizer = torch.optim.AdamW(network.parameters(), lr=1e-3)
    iterator = iter(batches)
    wait = total = useful = slots = examples = 0.0
    for step in range(steps + 1):
        started = time.perf_counter()
        try:
            batch = next(iterator)
        except StopIteration:
            iterator = iter(batches)
            batch = next(iterator)
        fetched = time.perf_counter()
        inputs = {k: batch[k] for k in ("input_ids", "attention_mask", "labels", "sequence_id") if k in batch}
        loss = network(**inputs).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        finished = time.perf_counter()
        if step == 0:
            continue  # warm-up
        wait += fetched - started
        total += finished - started
        useful += float(batch["attention_mask"].sum())
        slots += batch["attention_mask"].numel()
        examples += (
            float(batch["sequence_id"].max(dim=1).values.add(1).sum())
            if "sequence_id" in batch
            else len(batch["input_ids"])
        )
    return {
        "useful_tokens_per_s": useful / total,
        "padding": 1 - useful / slots,
        "examples_per_step": examples / steps,
        "data_wait": wait / total,
        "seconds": total,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=300)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--max-seq-len", type=int, default=512)
    parser.add_argument("--data", type=Path, default=None, help="an already prepared folder (skips preparation)")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers import AutoTokenizer

    with tempfile.TemporaryDirectory(prefix="recgpt-bench-train-") as scratch:
        data = args.data or prepare(Path(scratch) / "data", args.users, args.max_seq_len)
        tokenizer = AutoTokenizer.from_pretrained(str(data / "tokenizer"))
        results = {
            name: measure(name, data, tokenizer, args.steps, args.batch_size, args.max_seq_len)
            for name in ("finetuning", "recgpt_finetuning")
        }
    print(f"{'loader':<20}{'useful tok/s':>14}{'padding':>10}{'examples/step':>15}{'data wait':>11}{'seconds':>9}")
    for name, r in results.items():
        print(
            f"{name:<20}{r['useful_tokens_per_s']:>14,.0f}{r['padding']:>10.1%}{r['examples_per_step']:>15.1f}"
            f"{r['data_wait']:>11.2%}{r['seconds']:>9.1f}"
        )
    ratio = results["recgpt_finetuning"]["useful_tokens_per_s"] / results["finetuning"]["useful_tokens_per_s"]
    wait = results["recgpt_finetuning"]["data_wait"]
    print(f"useful tokens/s, recgpt packed / stock: {ratio:.2f}x (target >= 2x: {'holds' if ratio >= 2 else 'misses'})")
    print(f"recgpt data wait: {wait:.2%} of step time (target < 2%: {'holds' if wait < 0.02 else 'misses'})")


if __name__ == "__main__":
    main()
