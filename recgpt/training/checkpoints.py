"""Hugging Face MPT weights -> a composer checkpoint that ``mpt_causal_lm`` loads with ``load_path``.

llm-foundry 0.22 refuses ``mosaicml/mpt-*`` in ``hf_causal_lm`` and hub MPT repositories carry 2023 remote code,
so recgpt's 7B recipes build llm-foundry's own ``mpt_causal_lm`` and load the weights of MPT-7B, RecGPT-7B or
any MPT export from a converted checkpoint (``load_path`` + ``load_weights_only: true``). The parameter names
of an MPT Hugging Face export and of llm-foundry's MPT are the same; composer keeps them under ``model.``.
"""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path
from typing import Any

import torch

log = logging.getLogger(__name__)


def read_hf_state_dict(folder: Path) -> dict[str, torch.Tensor]:
    """All tensors of a Hugging Face model folder (``*.safetensors`` preferred, else ``pytorch_model*.bin``).

    Raises:
        FileNotFoundError: If the folder has no weight files.
    """
    shards = sorted(folder.glob("*.safetensors"))
    if shards:
        from safetensors.torch import load_file

        return {name: tensor for shard in shards for name, tensor in load_file(str(shard)).items()}
    shards = sorted(folder.glob("pytorch_model*.bin"))
    if not shards:
        raise FileNotFoundError(f"{folder}: no *.safetensors or pytorch_model*.bin weight files")
    state: dict[str, torch.Tensor] = {}
    for shard in shards:
        state.update(torch.load(shard, map_location="cpu", weights_only=True))
    return state


def resolve_model_folder(source: str) -> Path:
    """A local folder as is; anything else is a hub id, downloaded (weights, config) with ``huggingface_hub``."""
    path = Path(source)
    if path.is_dir():
        return path
    from huggingface_hub import snapshot_download

    log.info("downloading %s from the Hugging Face Hub", source)
    patterns = ["*.json", "*.safetensors", "pytorch_model*.bin"]
    return Path(snapshot_download(source, allow_patterns=patterns))


def hf_to_composer(source: str, output: Path) -> dict[str, Any]:
    """Convert an MPT Hugging Face model (folder or hub id) to a composer checkpoint file, written atomically.

    Returns:
        ``{"tensors", "parameters", "output"}``.

    Raises:
        ValueError: If the weights are not an MPT model's (no ``transformer.wte.weight``).
    """
    state = read_hf_state_dict(resolve_model_folder(source))
    if "transformer.wte.weight" not in state:
        raise ValueError(f"{source}: not MPT weights (no transformer.wte.weight); found e.g. {sorted(state)[:3]}")
    model_state = {f"model.{name}": tensor for name, tensor in state.items()}
    output.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{output.name}.", dir=output.parent)
    os.close(handle)
    try:
        torch.save({"state": {"model": model_state}}, temporary)
        os.replace(temporary, output)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    parameters = sum(tensor.numel() for tensor in model_state.values())
    return {"tensors": len(model_state), "parameters": parameters, "output": str(output)}
