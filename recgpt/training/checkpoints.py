"""Checkpoint folders: conversions (HF MPT -> composer, old MPT code -> today's, pickles -> safetensors) and the
errors that say which conversion a folder needs when it does not load.

llm-foundry 0.22 refuses ``mosaicml/mpt-*`` in ``hf_causal_lm`` and hub MPT repositories carry 2023 remote code,
so recgpt's 7B recipes build llm-foundry's own ``mpt_causal_lm`` and load the weights of MPT-7B, RecGPT-7B or
any MPT export from a converted checkpoint (``load_path`` + ``load_weights_only: true``). The parameter names
of an MPT Hugging Face export and of llm-foundry's MPT are the same; composer keeps them under ``model.``.
"""

from __future__ import annotations

import json
import logging
import os
import pickle
import re
import shlex
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
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
        ValueError: If the source is not an MPT model, or ``output`` is an existing non-empty folder other than
            the source (``_replace_check``).
    """
    import shutil
    import tempfile

    from recgpt.files import atomic_directory

    folder = resolve_model_folder(source)
    config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    if config.get("model_type") != "mpt":
        raise ValueError(f"{source}: model_type is {config.get('model_type')!r}, not 'mpt'")
    with tempfile.TemporaryDirectory() as scratch, atomic_directory(output, _replace_check(folder)) as staging:
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


def _replace_check(source: Path) -> Any:
    """A ``check_replace`` for ``atomic_directory``: only the source folder itself may be replaced (in place)."""

    def check(final: Path) -> None:
        if final.resolve() != source.resolve():
            raise ValueError(
                f"output {final}: the folder exists and is not empty; choose a new folder (or the source folder "
                "itself, to replace it in place)"
            )

    return check


def pickled_weights(folder: Path) -> list[Path]:
    """The ``pytorch_model*.bin`` files of a folder that has no ``*.safetensors`` (what transformers would unpickle)."""
    return [] if any(folder.glob("*.safetensors")) else sorted(folder.glob("pytorch_model*.bin"))


def convert_to_safetensors(source: str, output: Path, unpickle: bool = False) -> Path:
    """Rewrite a folder whose weights are ``pytorch_model*.bin`` pickles with the same tensors as safetensors.

    Every other file (config, tokenizer, code) is copied unchanged; the folder is written atomically. Each pickle
    is first read with torch's weights-only loader; one it refuses (it holds Python objects beyond tensors) is
    unpickled fully only with ``unpickle=True``, which can run code stored in the file: use it only for files
    you trust. Entries that are not tensors (e.g. saved training arguments) are dropped and logged.

    Raises:
        ValueError: If the folder has no pickled weights, or a pickle is refused and ``unpickle`` is False.
    """
    import shutil

    from huggingface_hub import save_torch_state_dict

    from recgpt.files import atomic_directory

    folder = Path(source)
    shards = pickled_weights(folder) if folder.is_dir() else []
    if not shards:
        raise ValueError(f"{source}: no pytorch_model*.bin weights without safetensors beside them; nothing to convert")
    state: dict[str, torch.Tensor] = {}
    for shard in shards:
        state.update(_tensors_of(shard, _load_pickle(shard, unpickle)))
    with atomic_directory(output, _replace_check(folder)) as staging:
        for path in folder.iterdir():
            if path.is_file() and path not in shards and path.name != "pytorch_model.bin.index.json":
                shutil.copy2(path, staging / path.name)
        save_torch_state_dict(state, staging, metadata={"format": "pt"})
    log.info("%s: %d tensors from %d pickle(s) -> %s", source, len(state), len(shards), output)
    return output


def _load_pickle(shard: Path, unpickle: bool) -> Any:
    """``torch.load`` weights-only, or fully when allowed and the weights-only loader refused the file."""
    try:
        return torch.load(shard, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        if not unpickle:
            raise ValueError(
                f"{shard}: torch's weights-only loader refused it ({_refused_global(error)}); add --unpickle to "
                "load it with full unpickling, which can run code stored in the file: only for files you trust"
            ) from error
    log.warning("%s: unpickling fully (--unpickle); this runs whatever code the file holds", shard)
    return torch.load(shard, map_location="cpu", weights_only=False)


def _tensors_of(shard: Path, loaded: Any) -> dict[str, torch.Tensor]:
    """The tensors of a loaded state dict; other entries are dropped with a warning naming them."""
    if not isinstance(loaded, dict):
        raise ValueError(f"{shard}: holds a {type(loaded).__name__}, not a state dict of tensors")
    tensors = {name: value for name, value in loaded.items() if isinstance(value, torch.Tensor)}
    others = sorted(str(name) for name in loaded if name not in tensors)
    if others:
        log.warning("%s: dropping %d entries that are not tensors: %s", shard, len(others), others[:10])
    if not tensors:
        raise ValueError(f"{shard}: holds no tensors")
    return tensors


def _refused_global(error: BaseException) -> str:
    """What torch's weights-only unpickler refused, e.g. ``argparse.Namespace``, from its long message."""
    match = re.search(r"Unsupported global: GLOBAL (\S+)", str(error))
    return f"it holds {match.group(1)}, which is not a tensor" if match else str(error).splitlines()[0]


class ModelFolderError(ValueError):
    """A model folder that does not load, with what is wrong and the ``recgpt checkpoint`` command that fixes it."""


@contextmanager
def explain_load_errors(folder: Path) -> Iterator[None]:
    """Turn transformers' errors for folders recgpt knows how to fix into a ``ModelFolderError`` saying how.

    Wraps every inference-time load of a model folder (``recgpt.inference.generate.load_model``). Errors it does
    not recognise pass through unchanged.

    Raises:
        ModelFolderError: For outdated remote code (``recgpt checkpoint update-code``) or refused or unreadable
            pickled weights (``recgpt checkpoint to-safetensors``).
    """
    try:
        yield
    except Exception as error:
        explained = remote_code_failure(folder, error) or pickled_weights_failure(folder, error)
        if explained is None:
            raise
        raise ModelFolderError(explained) from error


def remote_code_failure(folder: Path, error: BaseException) -> str | None:
    """The message for a folder whose own ``*.py`` (its ``auto_map``) failed to import or run; else None.

    Hub MPT folders of 2023-2024 (``mosaicml/mpt-7b``, ``vinai/RecGPT-7B-Instruct``) import names the pinned
    transformers no longer has, such as ``LlamaDynamicNTKScalingRotaryEmbedding``.
    """
    import transformers

    config = _read_config(folder)
    if not config.get("auto_map"):
        return None
    where = _remote_code_location(folder, error)
    if where is None and not isinstance(error, ImportError):
        return None
    cause = f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"
    head = (
        f"{folder}: the folder's own model code{f' ({where})' if where else ''} cannot run with the pinned "
        f"transformers {transformers.__version__} ({cause})."
    )
    if config.get("model_type") != "mpt":
        kind = config.get("model_type")
        return f"{head} `recgpt checkpoint update-code` rewrites MPT folders only; this one is {kind!r}."
    updated = folder.parent / f"{folder.name}-updated"
    return (
        f"{head} It holds older MPT remote code (e.g. a 2024 RecGPT or MPT hub release); rewrite the folder with "
        f"llm-foundry 0.22's MPT code (same weights and tokenizer):\n"
        f"  recgpt checkpoint update-code {shlex.quote(str(folder))} {shlex.quote(str(updated))}\n"
        f"then load {updated}"
    )


def pickled_weights_failure(folder: Path, error: BaseException) -> str | None:
    """The message for a folder whose only weights are pickles that torch did not load; else None.

    transformers reports any ``torch.load`` failure of ``pytorch_model.bin`` as "If you tried to load a PyTorch
    model from a TF 2.0 checkpoint, please set from_tf=True", which is never the cause here.
    """
    shards = pickled_weights(folder)
    chain = list(_exception_chain(error))
    if not shards or not any(isinstance(e, OSError) and "pytorch checkpoint" in str(e) for e in chain):
        return None
    names = ", ".join(shard.name for shard in shards)
    converted = folder.parent / f"{folder.name}-safetensors"
    refused = next((e for e in chain if isinstance(e, pickle.UnpicklingError)), None)
    if refused is None:
        root = chain[-1]
        return (
            f"{folder}: torch could not read {names} ({type(root).__name__}: {str(root).splitlines()[0]}); the file "
            "is truncated, corrupt or not a PyTorch checkpoint: download or export the model again"
        )
    return (
        f"{folder}: its weights ({names}) are a pickle that torch's weights-only loader refused "
        f"({_refused_global(refused)}), which transformers reports as a 'TF 2.0 checkpoint'. recgpt does not "
        "unpickle model files beyond tensors, since unpickling can run code stored in the file. If you trust the "
        f"file, convert it to safetensors once (this unpickles it):\n"
        f"  recgpt checkpoint to-safetensors {shlex.quote(str(folder))} {shlex.quote(str(converted))} --unpickle\n"
        f"then load {converted}"
    )


def _read_config(folder: Path) -> dict[str, Any]:
    """A folder's ``config.json`` as a dict, or ``{}`` when it is missing or unreadable."""
    try:
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return config if isinstance(config, dict) else {}


def _exception_chain(error: BaseException) -> Iterator[BaseException]:
    """The error, then what it was raised from or while handling, outermost first."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def _remote_code_location(folder: Path, error: BaseException) -> str | None:
    """``file.py line N`` of the innermost frame inside the folder's code (transformers' module copy), or None."""
    names = {path.name for path in folder.glob("*.py")}
    where = None
    for link in _exception_chain(error):
        if isinstance(link, SyntaxError) and link.filename and Path(link.filename).name in names:
            return f"{Path(link.filename).name} line {link.lineno}"
        traceback = link.__traceback__
        while traceback is not None:
            filename = traceback.tb_frame.f_code.co_filename
            if "transformers_modules" in filename and Path(filename).name in names:
                where = f"{Path(filename).name} line {traceback.tb_lineno}"
            traceback = traceback.tb_next
        if where:
            return where
    return None


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
