"""Hugging Face MPT weights -> a composer checkpoint that ``mpt_causal_lm`` loads with ``load_path``.

llm-foundry 0.22 refuses ``mosaicml/mpt-*`` in ``hf_causal_lm`` and hub MPT repositories carry 2023 remote code,
so recgpt's 7B recipes build llm-foundry's own ``mpt_causal_lm`` and load the weights of MPT-7B, RecGPT-7B or
any MPT export from a converted checkpoint (``load_path`` + ``load_weights_only: true``). The parameter names
of an MPT Hugging Face export and of llm-foundry's MPT are the same; composer keeps them under ``model.``.
"""

from __future__ import annotations

import json
import logging
import os
import re
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
    patterns = ["*.json", "*.safetensors", "pytorch_model*.bin", "*.txt", "*.model"]
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


def update_mpt_code(source: str, output: Path) -> Path:
    """Rewrite an MPT Hugging Face folder with llm-foundry 0.22's MPT code, so ``hf_causal_lm`` can load it.

    Hub MPT folders (``mosaicml/mpt-7b``, ``vinai/RecGPT-7B-Instruct``) carry the remote code of their day, which
    the pinned transformers cannot run. The weights keep their names across versions, so they and the tokenizer
    are copied unchanged; the Python files are today's (as ``hf_checkpointer`` writes them), and the config keeps
    its values, minus attention options llm-foundry no longer has (``attn_impl: triton`` becomes ``torch``; a
    recipe's ``config_overrides`` pick flash attention on GPUs). The folder is written atomically.

    Raises:
        ValueError: If the source is not an MPT model.
    """
    import shutil
    import tempfile

    from recgpt.files import atomic_directory

    folder = resolve_model_folder(source)
    config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    if config.get("model_type") != "mpt":
        raise ValueError(f"{source}: model_type is {config.get('model_type')!r}, not 'mpt'")
    with tempfile.TemporaryDirectory() as scratch, atomic_directory(output) as staging:
        code = _current_mpt_code(Path(scratch))
        for path in folder.iterdir():
            if path.is_file() and path.suffix != ".py" and path.name != "config.json":
                shutil.copy2(path, staging / path.name)
        for path in code.glob("*.py"):
            shutil.copy2(path, staging / path.name)
        fresh = json.loads((code / "config.json").read_text(encoding="utf-8"))
        (staging / "config.json").write_text(json.dumps(_updated_config(config, fresh), indent=2) + "\n")
    return output


def _current_mpt_code(scratch: Path) -> Path:
    """Save a tiny llm-foundry MPT the way ``hf_checkpointer`` does and return the folder (code and config)."""
    from llmfoundry.models.mpt import MPTConfig, MPTForCausalLM
    from llmfoundry.utils.huggingface_hub_utils import edit_files_for_hf_compatibility

    tiny = MPTForCausalLM(
        MPTConfig(d_model=8, n_heads=1, n_layers=1, vocab_size=8, max_seq_len=8, attn_config={"attn_impl": "torch"})
    )
    MPTConfig.register_for_auto_class()
    MPTForCausalLM.register_for_auto_class("AutoModelForCausalLM")
    tiny.save_pretrained(str(scratch))
    edit_files_for_hf_compatibility(str(scratch), ("llmfoundry",))
    return scratch


def _updated_config(config: dict[str, Any], fresh: dict[str, Any]) -> dict[str, Any]:
    """The source config with today's ``auto_map`` and only the attention options llm-foundry 0.22 knows."""
    from llmfoundry.models.utils.config_defaults import attn_config_defaults

    attention = {k: v for k, v in dict(config.get("attn_config") or {}).items() if k in attn_config_defaults}
    dropped = sorted(set(config.get("attn_config") or {}) - set(attention))
    if dropped:
        log.info("dropping attention options llm-foundry 0.22 does not have: %s", dropped)
    if attention.get("attn_impl") not in {"torch", "flash"}:
        attention["attn_impl"] = "torch"
    return {**config, "attn_config": attention, "auto_map": fresh["auto_map"], "architectures": ["MPTForCausalLM"]}


_CHECKPOINT = re.compile(r"^ep\d+-ba(\d+)-rank(\d+)(\.pt)?$")


def set_aside_interrupted_saves(save_folder: Path) -> list[Path]:
    """Move checkpoints that a killed run left half written out of the way of an autoresume.

    Composer writes a checkpoint under its final name, then points ``latest-rank{r}.pt`` at it. A kill during
    the write leaves a partial ``ep*-ba{N}-rank{r}.pt`` newer than ``latest``: resume correctly ignores it, but
    composer then refuses to start ("may conflict with a future checkpoint"). Any checkpoint of a rank newer
    than its ``latest`` (or any checkpoint when no ``latest`` exists yet) is such a leftover; it is moved to
    ``<save_folder>/interrupted/``, never deleted.

    Returns:
        The paths moved.
    """
    if not save_folder.is_dir():
        return []
    latest: dict[str, int] = {}
    for link in save_folder.glob("latest-rank*"):
        match = _CHECKPOINT.match(Path(os.readlink(link)).name) if link.is_symlink() else None
        if match:
            latest[match.group(2)] = int(match.group(1))
    moved = []
    for path in sorted(save_folder.iterdir()):
        match = _CHECKPOINT.match(path.name)
        if match and int(match.group(1)) > latest.get(match.group(2), -1):
            target = save_folder / "interrupted" / path.name
            target.parent.mkdir(exist_ok=True)
            os.replace(path, target)
            moved.append(target)
            log.warning("%s was left half written by an interrupted save; moved to %s", path, target)
    return moved
