"""Benchmark of evaluation speed on CPU: recgpt's batched decoding on a shared prompt cache against naive loops.

Two measurements, each against its baseline in the same process, on the same model, prompts and catalogue:

1. Next item, RecGPT's protocol (10 beams, each grounded to the catalogue): ``recgpt.evaluation.next_item.
   beam_grounded``, both as a batched beam search on a key/value cache per beam and with each prompt's beams
   grown as a token tree (``recgpt.inference.tree_beams``, what it runs on MPT on CPU), against a loop calling
   Hugging Face ``model.generate(num_beams=10)`` one user at a time, then grounding. Reported in users per
   second, with the share of users whose ranked lists agree (seen items are excluded after the search here, as
   ``model.generate`` cannot bar them).
2. Likelihood ranking of 1,000 candidate items: ``recgpt.inference.decoding.score_candidates`` (the prompt's
   cache copied to every candidate) against scoring each candidate from scratch (prompt + candidate, in batches
   of the same size). Reported in candidates per second, with the largest score difference.
3. Full-catalogue likelihood ranking, the method ``likelihood`` of ``recgpt evaluate``: the exact top-10 search
   over the catalogue's token tree (``recgpt.inference.tree.top_k_tree``, each user's seen items excluded)
   against ranking ``score_candidates``' scores of every item (what ``likelihood`` did before the tree). Reported
   in users per second, with the share of users whose top-10 lists are identical and the largest difference
   between the two sides' scores of the listed items.

The model is the demo's architecture (d_model 128, 4 layers, ALiBi): the trained demo model when ``--model`` names
it, else a seeded random initialisation (its beams rarely end early, the slowest case for both sides). Usage::

    python bench/eval.py                                     # prepares 200 users of MovieLens-100K
    python bench/eval.py --model artifacts/demo/fine-tuning/hf/huggingface/final --data artifacts/demo/data
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


def prepare(folder: Path, users: int) -> Path:
    """The demo's data config for ``users`` users: returns the prepared folder."""
    from recgpt.config import load_config
    from recgpt.data.prepare import prepare
    from recgpt.data.prepare_config import PrepareConfig

    prepare(
        load_config(
            PrepareConfig, ROOT / "configs" / "data" / "movielens-100k.yaml", [f"output={folder}", f"max_users={users}"]
        )
    )
    return folder


def load(model_dir: Path | None, data: Path) -> tuple[Any, Any]:
    """The trained model of ``model_dir``, or the demo architecture initialised with seed 0, and its tokenizer."""
    from transformers import AutoTokenizer

    if model_dir is not None:
        from recgpt.inference.generate import load_model

        return load_model(model_dir)
    from llmfoundry.models.mpt import MPTConfig, MPTForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(str(data / "tokenizer"))
    tokenizer.padding_side = "left"
    torch.manual_seed(0)
    config = MPTConfig(
        d_model=128,
        n_heads=4,
        n_layers=4,
        expansion_ratio=4,
        max_seq_len=256,
        vocab_size=len(tokenizer),
        no_bias=True,
        learned_pos_emb=False,
        attn_config={"attn_impl": "torch", "alibi": True},
    )
    return MPTForCausalLM(config).eval(), tokenizer


def naive_beam_grounded(
    model: Any,
    tokenizer: Any,
    rows: list[dict[str, Any]],
    index: Any,
    excluded: list[set[str]],
    num_beams: int,
    max_new_tokens: int,
) -> list[list[str]]:
    """One ``model.generate`` call per user, then grounding: the loop the batched method replaces."""
    from recgpt.encoding import fit_prompt
    from recgpt.inference.generate import context_length

    rankings = []
    for row, exclude in zip(rows, excluded, strict=True):
        ids = fit_prompt(tokenizer, row["prompt"], context_length(model) - max_new_tokens)[0]
        with torch.no_grad():
            output = model.generate(
                input_ids=torch.tensor([ids]),
                attention_mask=torch.ones((1, len(ids)), dtype=torch.long),
                num_beams=num_beams,
                num_return_sequences=num_beams,
                max_new_tokens=max_new_tokens,
                early_stopping=True,
                do_sample=False,
                eos_token_id=tokenizer.eos_token_id,
                pad_token_id=tokenizer.pad_token_id,
                use_cache=True,
            )
        texts = [t.strip() for t in tokenizer.batch_decode(output[:, len(ids) :], skip_special_tokens=True)]
        rankings.append(list(dict.fromkeys(item for item, _ in index.ground(texts, exclude=exclude))))
    return rankings


def scratch_scores(
    model: Any, prompt: list[int], candidates: list[list[int]], pad_id: int, batch_size: int
) -> list[float]:
    """Each candidate's summed log-probability from a full forward pass over prompt + candidate."""
    scores = []
    with torch.no_grad():
        for start in range(0, len(candidates), batch_size):
            chunk = candidates[start : start + batch_size]
            width = len(prompt) + max(len(c) for c in chunk)
            ids = torch.full((len(chunk), width), pad_id, dtype=torch.long)
            mask = torch.zeros((len(chunk), width), dtype=torch.long)
            for row, candidate in enumerate(chunk):
                sequence = prompt + candidate
                ids[row, : len(sequence)] = torch.tensor(sequence)
                mask[row, : len(sequence)] = 1
            logprobs = torch.log_softmax(model(input_ids=ids, attention_mask=mask).logits.float(), dim=-1)
            for row, candidate in enumerate(chunk):
                positions = torch.arange(len(prompt) - 1, len(prompt) - 1 + len(candidate))
                scores.append(float(logprobs[row, positions, torch.tensor(candidate)].sum()))
    return scores


def rank_catalogue(
    model: Any, tokenizer: Any, catalogue: Any, rows: list[dict[str, Any]], excluded: list[set[str]]
) -> tuple[int, float, float, float, float]:
    """Top 10 of the full catalogue per user, both ways: ``(users, flat s, tree s, share identical, max diff)``."""
    from recgpt.encoding import fit_prompt
    from recgpt.inference.decoding import score_candidates
    from recgpt.inference.generate import context_length
    from recgpt.inference.tree import CandidateTree, top_k_tree

    lines = catalogue.with_eos(tokenizer.eos_token_id)
    budget = context_length(model) - max(len(line) for line in lines)
    tree = CandidateTree.build(lines)
    flat_seconds = tree_seconds = difference = 0.0
    same = 0
    for row, exclude in zip(rows, excluded, strict=True):
        prompt = fit_prompt(tokenizer, row["prompt"], budget)[0]
        allowed = torch.tensor([item not in exclude for item in catalogue.item_ids])
        started = time.perf_counter()
        scores = score_candidates(model, prompt, lines, pad_id=tokenizer.pad_token_id)
        flat = [i for i in sorted(range(len(lines)), key=lambda i: -scores[i]) if allowed[i]][:10]
        flat_seconds += time.perf_counter() - started
        started = time.perf_counter()
        found = top_k_tree(model, prompt, tree, 10, allowed)
        tree_seconds += time.perf_counter() - started
        same += [i for i, _ in found] == flat
        difference = max(difference, *(abs(score - scores[i]) for i, score in found))
    return len(rows), flat_seconds, tree_seconds, same / len(rows), difference


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=32, help="test users decoded by both next-item loops")
    parser.add_argument("--candidates", type=int, default=1000)
    parser.add_argument("--prompts", type=int, default=3, help="prompts whose candidates are scored both ways")
    parser.add_argument("--rank-users", type=int, default=10, help="users ranked over the full catalogue both ways")
    parser.add_argument("--batch-size", type=int, default=16, help="prompts per call of the batched beam search")
    parser.add_argument("--model", type=Path, default=None, help="a trained model folder (default: random init)")
    parser.add_argument("--data", type=Path, default=None, help="a prepared folder (default: prepare 200 users)")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    torch.set_num_threads(max(1, torch.get_num_threads()))
    from recgpt.encoding import fit_prompt
    from recgpt.evaluation.grounding import CatalogIndex, TextEmbedder, load_catalog
    from recgpt.evaluation.next_item import Catalogue, beam_grounded
    from recgpt.evaluation.runner import find_benchmark, read_rows
    from recgpt.inference.decoding import score_candidates
    from recgpt.inference.generate import context_length

    with tempfile.TemporaryDirectory(prefix="recgpt-bench-eval-") as scratch:
        data = args.data or prepare(Path(scratch) / "data", 200)
        model, tokenizer = load(args.model, data)
        folder = find_benchmark(data, None).folder
        rows = [r for r in read_rows(folder / "test.jsonl") if r["task"] == "next_item"][: args.users]
        excluded = [set(r["history_item_ids"]) for r in rows]
        item_ids, texts = load_catalog(folder / "items.jsonl")
        index = CatalogIndex(item_ids, texts, TextEmbedder())

        beam_grounded(
            model, tokenizer, rows[:2], index, excluded[:2], num_beams=10, max_new_tokens=32, batch_size=2
        )  # warm-up
        started = time.perf_counter()
        naive = naive_beam_grounded(model, tokenizer, rows, index, excluded, 10, 32)
        naive_seconds = time.perf_counter() - started
        beam_seconds, beam_agree = {}, {}
        for use_tree in (False, True):
            started = time.perf_counter()
            ours = beam_grounded(
                model,
                tokenizer,
                rows,
                index,
                excluded,
                num_beams=10,
                max_new_tokens=32,
                batch_size=args.batch_size,
                use_tree=use_tree,
            )
            beam_seconds[use_tree] = time.perf_counter() - started
            beam_agree[use_tree] = sum(a == b.items for a, b in zip(naive, ours, strict=True)) / len(rows)

        catalogue = Catalogue.build(item_ids, texts, tokenizer)
        candidates = catalogue.with_eos(tokenizer.eos_token_id)[: args.candidates]
        budget = context_length(model) - max(len(c) for c in candidates)
        prompts = [fit_prompt(tokenizer, r["prompt"], budget)[0] for r in rows[: args.prompts]]
        shared_seconds = scratch_seconds = difference = 0.0
        for prompt in prompts:
            started = time.perf_counter()
            shared = score_candidates(model, prompt, candidates, pad_id=tokenizer.pad_token_id, batch_size=256)
            shared_seconds += time.perf_counter() - started
            started = time.perf_counter()
            full = scratch_scores(model, prompt, candidates, tokenizer.pad_token_id, batch_size=256)
            scratch_seconds += time.perf_counter() - started
            difference = max(difference, *(abs(a - b) for a, b in zip(shared, full, strict=True)))
        users, flat_seconds, tree_seconds, same, rank_difference = rank_catalogue(
            model, tokenizer, catalogue, rows[: args.rank_users], excluded[: args.rank_users]
        )
        tree_users_per_second = users / tree_seconds

    source = str(args.model) if args.model else "random init"
    tokens = sum(len(p) for p in prompts) / len(prompts)
    print(f"model: demo architecture ({source}); {len(rows)} users; 10 beams; {torch.get_num_threads()} threads")
    print(f"{'next item (beam + grounding)':<44}{'users/s':>10}{'seconds':>10}")
    print(f"{'naive: model.generate per user':<44}{len(rows) / naive_seconds:>10.2f}{naive_seconds:>10.1f}")
    for use_tree, name in (
        (False, "recgpt: batched beam search, shared cache"),
        (True, "recgpt: beams as a token tree"),
    ):
        print(f"{name:<44}{len(rows) / beam_seconds[use_tree]:>10.2f}{beam_seconds[use_tree]:>10.1f}")
    for use_tree, name in ((False, "batched cache"), (True, "token tree")):
        speedup = naive_seconds / beam_seconds[use_tree]
        print(
            f"{name}: speed-up {speedup:.2f}x (target >= 5x: {'holds' if speedup >= 5 else 'misses'}); "
            f"identical ranked lists for {beam_agree[use_tree]:.0%} of users"
        )
    print(f"{f'likelihood, {len(candidates)} candidates x {len(prompts)} prompts':<44}{'cand/s':>10}{'seconds':>10}")
    total = len(candidates) * len(prompts)
    print(
        f"{f'from scratch (prompt of ~{tokens:.0f} tokens each time)':<44}"
        f"{total / scratch_seconds:>10.0f}{scratch_seconds:>10.1f}"
    )
    print(f"{'recgpt: shared prompt cache':<44}{total / shared_seconds:>10.0f}{shared_seconds:>10.1f}")
    speedup = scratch_seconds / shared_seconds
    print(
        f"speed-up {speedup:.2f}x (target >= 10x: {'holds' if speedup >= 10 else 'misses'}); "
        f"largest score difference {difference:.2e}"
    )
    print(f"{f'full-catalogue ranking, {len(catalogue.tokens)} items, top 10':<44}{'users/s':>10}{'seconds':>10}")
    print(f"{'score_candidates on every item, then sort':<44}{users / flat_seconds:>10.2f}{flat_seconds:>10.1f}")
    print(f"{'recgpt: exact top-10 search over the tree':<44}{users / tree_seconds:>10.2f}{tree_seconds:>10.1f}")
    speedup = flat_seconds / tree_seconds
    print(
        f"speed-up {speedup:.2f}x; {tree_users_per_second:.2f} users/s (target >= 3: "
        f"{'holds' if tree_users_per_second >= 3 else 'misses'}); identical top-10 for {same:.0%} of users; "
        f"largest score difference {rank_difference:.2e}"
    )


if __name__ == "__main__":
    main()
