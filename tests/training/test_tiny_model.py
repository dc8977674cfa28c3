"""Tier 3: a tiny MPT (ALiBi) trains on a collated batch, converts to a composer checkpoint and generates safely."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from recgpt.data.render import parse_rating, render_prompt
from recgpt.training.collator import PromptResponse, RecGPTCollator

TINY = {
    "d_model": 32,
    "n_heads": 2,
    "n_layers": 2,
    "expansion_ratio": 2,
    "max_seq_len": 128,
    "no_bias": True,
    "learned_pos_emb": False,
    "attn_config": {"attn_impl": "torch", "alibi": True},
}

ROWS = [
    PromptResponse(
        render_prompt(
            "Predict the next item.\nGiven the interaction history of a user with books as follows:"
            "\n\nTitle: The Ember Oath; Author: Lena Harrowgate"
        ),
        "Title: A Quiet Poison; Author: Tobias Wren",
    ),
    PromptResponse(
        render_prompt(
            "Predict rating for the last item.\nGiven the interaction history of a user with books "
            "as follows:\n\nTitle: A Quiet Poison; Author: Tobias Wren; Rating:"
        ),
        "5.0/5.0",
    ),
]


def tiny_mpt(vocab_size: int):
    from llmfoundry.models.mpt import MPTConfig, MPTForCausalLM

    torch.manual_seed(0)
    return MPTForCausalLM(MPTConfig(vocab_size=vocab_size, **TINY))


def test_one_step_changes_weights_and_loss_ignores_the_prompt(tokenizer):
    model = tiny_mpt(len(tokenizer))
    batch = RecGPTCollator(tokenizer, max_seq_len=128)(ROWS)
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    loss = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=batch["labels"]).loss
    loss.backward()
    optimizer.step()
    changed = [name for name, p in model.named_parameters() if not torch.equal(before[name], p)]
    assert len(changed) == len(before)
    # Changing a prompt token's label to "ignored" changes nothing: prompt positions carry no loss.
    with torch.no_grad():
        masked = batch["labels"].clone()
        reference = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=masked).loss
        assert masked[0, 0] == -100
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        shift_logits, shift_labels = logits[:, :-1].reshape(-1, logits.shape[-1]), masked[:, 1:].reshape(-1)
        assert torch.allclose(
            reference, torch.nn.functional.cross_entropy(shift_logits, shift_labels, ignore_index=-100)
        )


def test_generation_from_an_untrained_model_parses_garbage_safely(tokenizer):
    from recgpt.inference.generate import generate

    model = tiny_mpt(len(tokenizer)).eval()
    tokenizer.padding_side = "left"
    outputs = generate(
        model, tokenizer, [r.prompt for r in ROWS], max_new_tokens=6, num_beams=3, num_return_sequences=3, batch_size=2
    )
    assert [len(candidates) for candidates in outputs] == [3, 3]
    assert outputs[0][0].score >= outputs[0][-1].score  # best beam first
    sampled = generate(model, tokenizer, [ROWS[1].prompt], max_new_tokens=6, do_sample=True, top_p=0.9, seed=1)
    again = generate(model, tokenizer, [ROWS[1].prompt], max_new_tokens=6, do_sample=True, top_p=0.9, seed=1)
    assert sampled == again  # seeded sampling repeats
    value = parse_rating(sampled[0][0].text, 5.0)
    assert value is None or 0.0 <= value <= 5.0


def test_hf_weights_convert_to_a_composer_checkpoint(tmp_path: Path, tokenizer):
    from llmfoundry.models.mpt import ComposerMPTCausalLM
    from safetensors.torch import save_file

    from recgpt.training.checkpoints import hf_to_composer

    source = tiny_mpt(len(tokenizer))
    save_file({k: v.contiguous() for k, v in source.state_dict().items()}, str(tmp_path / "model.safetensors"))
    result = hf_to_composer(str(tmp_path), tmp_path / "out" / "tiny.pt")
    checkpoint = torch.load(tmp_path / "out" / "tiny.pt", weights_only=True)
    target = ComposerMPTCausalLM(tokenizer=tokenizer, vocab_size=len(tokenizer), loss_fn="torch_crossentropy", **TINY)
    target.load_state_dict(checkpoint["state"]["model"], strict=True)
    assert result["parameters"] == sum(p.numel() for p in source.parameters())
    for name, tensor in source.state_dict().items():
        assert torch.equal(target.model.state_dict()[name], tensor)


def test_non_mpt_weights_are_refused(tmp_path: Path):
    from safetensors.torch import save_file

    from recgpt.training.checkpoints import hf_to_composer

    save_file({"bert.embeddings.weight": torch.zeros(2, 2)}, str(tmp_path / "model.safetensors"))
    with pytest.raises(ValueError, match="not MPT weights"):
        hf_to_composer(str(tmp_path), tmp_path / "x.pt")
