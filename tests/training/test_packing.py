"""Packing: bins within capacity, and per-example losses identical packed or alone, token by token."""

from __future__ import annotations

import random

import pytest
import torch

from recgpt.data.render import render_prompt
from recgpt.training.collator import PromptResponse, RecGPTCollator
from recgpt.training.packing import pack_lengths

TINY = {
    "d_model": 32,
    "n_heads": 2,
    "n_layers": 2,
    "expansion_ratio": 2,
    "max_seq_len": 256,
    "no_bias": True,
    "learned_pos_emb": False,
}
HEAD = "Predict the next item.\nGiven the interaction history of a user with books as follows:\n\n"
ROWS = [
    PromptResponse(render_prompt(HEAD + "Title: The Ember Oath; Author: Lena Harrowgate"), "Title: A Quiet Poison"),
    PromptResponse(render_prompt(HEAD + "Title: A Quiet Poison\nTitle: Rust Belt Starship"), "Title: The Ember Oath"),
    PromptResponse(render_prompt("Predict rating for the last item.\nGiven ...:\n\nTitle: A; Rating:"), "5.0/5.0"),
]


def test_bins_hold_every_item_once_within_capacity():
    rng = random.Random(5)
    for _ in range(50):
        lengths = [rng.randint(1, 64) for _ in range(rng.randint(1, 200))]
        bins = pack_lengths(lengths, 64)
        assert sorted(i for b in bins for i in b) == list(range(len(lengths)))
        assert all(sum(lengths[i] for i in b) <= 64 for b in bins)
        assert bins == pack_lengths(lengths, 64)
        assert len(bins) <= 2 * sum(lengths) // 64 + 1  # best fit never wastes more than half on average
    with pytest.raises(ValueError, match="exceeds the capacity"):
        pack_lengths([65], 64)


def per_token_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Cross entropy of each position's next-token prediction (labels aligned with inputs, HF convention)."""
    return torch.nn.functional.cross_entropy(logits[:-1], labels[1:], ignore_index=-100, reduction="none")


def losses(model, collator: RecGPTCollator, rows: list) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    tokens = [collator.encode(row) for row in rows]
    packed = collator([tokens])
    assert packed["sequence_id"][0].tolist() == [i for i, t in enumerate(tokens) for _ in range(len(t))]
    with torch.no_grad():
        logits = model(
            input_ids=packed["input_ids"], attention_mask=packed["attention_mask"], sequence_id=packed["sequence_id"]
        ).logits[0]
        alone, together, start = [], [], 0
        for t in tokens:
            batch = collator([t])
            single = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[0]
            alone.append(per_token_loss(single, batch["labels"][0]))
            stop = start + len(t)
            together.append(per_token_loss(logits[start:stop], packed["labels"][0, start:stop]))
            start = stop
    return alone, together


def tiny_mpt(vocab_size: int, uses_sequence_id: bool):
    from llmfoundry.models.mpt import MPTConfig, MPTForCausalLM

    torch.manual_seed(0)
    attention = {"attn_impl": "torch", "alibi": True, "attn_uses_sequence_id": uses_sequence_id}
    return MPTForCausalLM(MPTConfig(vocab_size=vocab_size, attn_config=attention, **TINY)).eval()


def test_packed_losses_equal_unpacked_token_by_token(tokenizer):
    collator = RecGPTCollator(tokenizer, max_seq_len=256)
    alone, together = losses(tiny_mpt(len(tokenizer), uses_sequence_id=True), collator, ROWS)
    for single, packed in zip(alone, together, strict=True):
        assert single.shape == packed.shape
        torch.testing.assert_close(packed, single, atol=1e-5, rtol=1e-5)


def test_without_sequence_ids_examples_would_see_each_other(tokenizer):
    collator = RecGPTCollator(tokenizer, max_seq_len=256)
    alone, together = losses(tiny_mpt(len(tokenizer), uses_sequence_id=False), collator, ROWS)
    torch.testing.assert_close(together[0], alone[0], atol=1e-5, rtol=1e-5)  # the first sees nothing before it
    assert not torch.allclose(together[1], alone[1], atol=1e-4)
