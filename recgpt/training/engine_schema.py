"""What the pinned llm-foundry 0.22 / composer 0.32 accept, read from their own registries, dataclasses and signatures.

The engine validates the top level of a recipe when it loads it (``TrainConfig``) but most sections only when it
builds them, some leniently (``FSDPConfig`` and ``MPTConfig`` keep unknown keys and ignore them), so
``recgpt recipe upgrade`` checks those sections against this schema.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class EngineSchema:
    """What llm-foundry 0.22 / composer 0.32 accept, read from their registries, dataclasses and signatures."""

    top_level: frozenset[str]
    attn_keys: frozenset[str]
    attn_impls: tuple[str, ...]
    optimizers: dict[str, frozenset[str]]
    schedulers: dict[str, frozenset[str]]
    callbacks: dict[str, frozenset[str] | None]
    loggers: dict[str, frozenset[str] | None]
    algorithms: dict[str, frozenset[str] | None]
    dataloaders: frozenset[str]
    loader_keys: frozenset[str]
    fsdp_keys: frozenset[str]
    hf_model_keys: frozenset[str]


def _arguments(function: Any) -> frozenset[str] | None:
    """Like :func:`_parameters`, or None where the function also takes ``**kwargs`` (any key)."""
    target = function.__init__ if inspect.isclass(function) else function
    kinds = {p.kind for p in inspect.signature(target).parameters.values()}
    return None if inspect.Parameter.VAR_KEYWORD in kinds else _parameters(function)


def _parameters(function: Any) -> frozenset[str]:
    """Parameters of a class's ``__init__`` or a function, less those the engine fills (self, params, tokenizer)."""
    target = function.__init__ if inspect.isclass(function) else function
    names = [p.name for p in inspect.signature(target).parameters.values() if p.kind is not p.VAR_KEYWORD]
    return frozenset(name for name in names if name not in {"self", "params", "tokenizer"})


@lru_cache(maxsize=1)
def engine_schema() -> EngineSchema:
    """Gather the accepted keys and names from the installed engine (imports llm-foundry: ~20 s)."""
    import dataclasses

    from composer.utils.parallelism import FSDPConfig
    from llmfoundry import registry
    from llmfoundry.layers_registry import attention_implementations
    from llmfoundry.models.hf import ComposerHFCausalLM
    from llmfoundry.models.utils.config_defaults import attn_config_defaults
    from llmfoundry.utils.config_utils import TRAIN_CONFIG_KEYS

    from recgpt.training.dataloader import build_recgpt_finetuning_dataloader

    def functions(reg: Any) -> dict[str, frozenset[str]]:
        return {name: _parameters(reg.get(name)) for name in reg.get_all()}

    def classes(reg: Any) -> dict[str, frozenset[str] | None]:
        return {name: _arguments(reg.get(name)) for name in reg.get_all()}

    return EngineSchema(
        top_level=frozenset(TRAIN_CONFIG_KEYS),
        attn_keys=frozenset(attn_config_defaults) | _attention_arguments(),
        attn_impls=tuple(sorted(attention_implementations.get_all())),
        optimizers=functions(registry.optimizers),
        schedulers=functions(registry.schedulers),
        callbacks=classes(registry.callbacks) | dict.fromkeys(registry.callbacks_with_config.get_all()),
        loggers=classes(registry.loggers),
        algorithms=classes(registry.algorithms),
        dataloaders=frozenset(registry.dataloaders.get_all()),
        loader_keys=_parameters(build_recgpt_finetuning_dataloader) - {"device_batch_size"} | {"name"},
        fsdp_keys=frozenset(f.name for f in dataclasses.fields(FSDPConfig) if f.init),
        hf_model_keys=_parameters(ComposerHFCausalLM) | {"name"},
    )


def _attention_arguments() -> frozenset[str]:
    """The ``attn_config`` keys 0.22's attention classes take beyond the defaults (e.g. ``kv_n_heads``)."""
    from llmfoundry.layers_registry import attention_classes

    filled_by_the_block = {"d_model", "n_heads", "head_dim", "device", "norm_type", "norm_eps", "fc_type", "bias"}
    names = set().union(*(_parameters(attention_classes.get(name)) for name in attention_classes.get_all()))
    return frozenset(names - filled_by_the_block - {"attention_bias"})


def check_mpt_config(path: Path, model: dict[str, Any]) -> None:
    """Build the MPT config (0.22's own validation); flash attention is checked as torch where it is absent."""
    from llmfoundry.models.mpt import MPTConfig

    arguments = {k: v for k, v in model.items() if k not in {"name", "loss_fn", "use_train_metrics"}}
    attn = dict(arguments.get("attn_config") or {})
    if attn.get("attn_impl", "flash") == "flash" and not _flash_attn_installed():
        attn["attn_impl"] = "torch"
    arguments["attn_config"] = attn
    try:
        MPTConfig(**arguments)
    except (ValueError, NotImplementedError, TypeError) as error:
        raise ValueError(f"{path}: model: llm-foundry 0.22's MPTConfig refuses it: {error}") from error


def _flash_attn_installed() -> bool:
    """Whether the flash-attn package (the GPU extra) is importable."""
    import importlib.util

    return importlib.util.find_spec("flash_attn") is not None
