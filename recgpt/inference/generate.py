"""Batched generation from a causal LM folder: beam search for next items, sampling or greedy for ratings."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from recgpt.encoding import fit_prompt
from recgpt.inference.decoding import left_pad

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Candidate:
    """One generated response and its beam score (length-normalised log-probability; 0.0 when sampled)."""

    text: str
    score: float


def load_model(model_dir: str | Path, device: str | None = None) -> tuple[Any, Any]:
    """Load a Hugging Face causal LM folder and its tokenizer (offline-safe, ``trust_remote_code`` for MPT).

    The one place recgpt loads a model for inference (``recgpt evaluate``, ``recommend``, ``serve``,
    ``Recommender.from_pretrained``). The model goes to ``device`` (default: the first GPU when one is visible, in
    bfloat16; else the CPU, in float32). The tokenizer pads on the left, as batched generation needs.

    Raises:
        FileNotFoundError: If ``model_dir`` has no ``config.json``.
        ModelFolderError: A ``ValueError`` naming the folder and the ``recgpt checkpoint`` command to run, for
            remote code the pinned transformers cannot import (2024 MPT / RecGPT hub folders) and for pickled
            weights torch refuses to load (``recgpt.training.checkpoints.explain_load_errors``).
    """
    from transformers import AutoTokenizer

    from recgpt.training.checkpoints import explain_load_errors

    folder = Path(model_dir)
    adapter = folder / "adapter_config.json"
    if not (folder / "config.json").is_file() and not adapter.is_file():
        raise FileNotFoundError(f"--model {folder}: not a Hugging Face model folder (no config.json)")
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
    with explain_load_errors(folder):
        tokenizer = AutoTokenizer.from_pretrained(str(folder))
    tokenizer.padding_side = "left"
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    if adapter.is_file():  # a LoRA export (configs/fine-tuning-lora.yaml): its base model plus the adapter, merged
        from peft import PeftModel

        base_path = json.loads(adapter.read_text(encoding="utf-8"))["base_model_name_or_path"]
        base = _causal_lm(base_path, dtype)
        model = PeftModel.from_pretrained(base, str(folder)).merge_and_unload()
    else:
        model = _causal_lm(folder, dtype)
    model.to(device).eval()
    return model, tokenizer


def _causal_lm(folder: str | Path, dtype: torch.dtype) -> Any:
    """``AutoModelForCausalLM`` of a folder (or hub id) with its inference config; load errors explained."""
    from transformers import AutoModelForCausalLM

    from recgpt.training.checkpoints import explain_load_errors

    with explain_load_errors(Path(folder)):
        return AutoModelForCausalLM.from_pretrained(
            str(folder), config=inference_config(folder), trust_remote_code=True, torch_dtype=dtype
        )


def inference_config(folder: str | Path) -> Any:
    """A model folder's config, without MPT's sequence-id attention (packed training only; inference passes none).

    With ``attn_uses_sequence_id`` MPT's torch attention keeps a ``max_seq_len x max_seq_len`` bias and masks it
    for every row of every forward pass, which made batched decoding slower than one prompt at a time on CPU;
    without it the bias is one row per head. The weights and the outputs are the same.
    """
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(str(folder), trust_remote_code=True)
    attention = getattr(config, "attn_config", None)
    if isinstance(attention, dict) and attention.get("attn_uses_sequence_id"):
        config.attn_config = {**attention, "attn_uses_sequence_id": False}
    return config


def context_length(model: Any) -> int:
    """The longest sequence the model was trained on (MPT's ``max_seq_len``, else ``max_position_embeddings``)."""
    config = model.config
    return int(getattr(config, "max_seq_len", None) or getattr(config, "max_position_embeddings", 2048))


def _batches(prompt_ids: Sequence[list[int]], batch_size: int) -> Iterator[list[int]]:
    """Indices grouped into batches of similar prompt length (less padding), longest first."""
    order = sorted(range(len(prompt_ids)), key=lambda i: -len(prompt_ids[i]))
    for start in range(0, len(order), batch_size):
        yield order[start : start + batch_size]


def generate(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[str],
    *,
    max_new_tokens: int,
    num_beams: int = 1,
    num_return_sequences: int = 1,
    do_sample: bool = False,
    temperature: float = 1.0,
    top_p: float = 1.0,
    top_k: int = 50,
    batch_size: int = 8,
    seed: int = 0,
    progress: Any = None,
) -> list[list[Candidate]]:
    """Generate responses for prompts in batches; returns, per prompt, candidates best first.

    Each prompt is fitted to the model's context minus ``max_new_tokens`` by removing its oldest history lines
    (``recgpt.encoding.fit_prompt``), as in training. Beam candidates come ranked by beam score.

    Args:
        model: A causal LM in eval mode.
        tokenizer: Its tokenizer (left padding).
        prompts: Templated prompts ending in ``### Response:``.
        max_new_tokens: Longest response.
        num_beams: Beams per prompt (1 for greedy or sampling).
        num_return_sequences: Candidates kept per prompt (at most ``num_beams`` with beam search).
        do_sample: Sample instead of searching.
        temperature, top_p, top_k: Sampling settings.
        batch_size: Prompts per model call.
        seed: Seeds sampling, so a rerun draws the same samples.
        progress: Optional callable ``progress(done_prompts)``.
    """
    budget = context_length(model) - max_new_tokens
    prompt_ids = [fit_prompt(tokenizer, prompt, budget)[0] for prompt in prompts]
    results: list[list[Candidate]] = [[] for _ in prompts]
    generator_seed = torch.Generator().manual_seed(seed)
    done = 0
    for batch in _batches(prompt_ids, batch_size):
        input_ids, attention_mask = left_pad([prompt_ids[i] for i in batch], tokenizer.pad_token_id)
        if do_sample:
            torch.manual_seed(int(torch.randint(0, 2**31 - 1, (1,), generator=generator_seed)))
        with torch.no_grad():
            output = model.generate(
                input_ids=input_ids.to(model.device),
                attention_mask=attention_mask.to(model.device),
                max_new_tokens=max_new_tokens,
                num_beams=num_beams,
                num_return_sequences=num_return_sequences,
                do_sample=do_sample,
                temperature=temperature if do_sample else None,
                top_p=top_p if do_sample else None,
                top_k=top_k if do_sample else None,
                early_stopping=num_beams > 1,
                eos_token_id=tokenizer.eos_token_id,
                pad_token_id=tokenizer.pad_token_id,
                output_scores=num_beams > 1,
                return_dict_in_generate=True,
                use_cache=True,  # MPT exports say use_cache: false, which would recompute the prompt every step
            )
        new_tokens = output.sequences[:, input_ids.shape[1] :]
        texts = tokenizer.batch_decode(new_tokens, skip_special_tokens=True)
        scores = output.sequences_scores.tolist() if num_beams > 1 else [0.0] * len(texts)
        for position, index in enumerate(batch):
            start = position * num_return_sequences
            results[index] = [
                Candidate(texts[start + j].strip(), float(scores[start + j])) for j in range(num_return_sequences)
            ]
        done += len(batch)
        if progress is not None:
            progress(done)
    return results
