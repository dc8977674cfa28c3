"""Translation of llm-foundry recipes written for the 2024 releases (0.4-0.8, RecGPT's) to the pinned 0.22 stack.

``recgpt recipe upgrade OLD.yaml [NEW.yaml]`` reads such a recipe, applies the rules below, prints every change
with its reason, refuses keys it cannot translate (naming each and what to do), validates the result through
llm-foundry 0.22's own config path (``make_dataclass_and_log_config`` with ``TrainConfig``, as
``train_from_yaml`` does) and writes it. ``scripts/train.py`` uses :func:`legacy_keys` to say, before the
engine's first error, that a recipe is legacy and which command upgrades it.

The sections llm-foundry validates only when it builds them (model, optimizer, loaders, FSDP, callbacks) are
checked against the engine's own registries and signatures (``recgpt.training.engine_schema``).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from recgpt.training.engine_schema import EngineSchema, check_mpt_config, engine_schema

UPGRADE_COMMAND = "recgpt recipe upgrade"
LION_OPTIMIZERS = {"decoupled_lionw", "clip_lion", "adalr_lion"}
RENAMED_CALLBACKS = {"mono_ckpt_saver": "mono_checkpoint_saver", "fdiff": "fdiff_metrics"}
RENAMED_TOP_LEVEL = {"model_gauntlet": "eval_gauntlet"}
KEPT_DATASET_KEYS = {"hf_name", "split", "max_seq_len", "shuffle", "shuffle_seed"}
RECGPT_LOADER = (
    "recgpt's loader: RecGPT's prompt template, loss on the response + EOS only, shuffle_seed honoured, and an "
    "example longer than max_seq_len loses its oldest history lines to fit (0.22's finetuning loader drops an "
    "example whose prompt is longer)"
)
UNKNOWN_TOP_LEVEL = (
    "0.22 rejects unknown top-level keys and no ${...} refers to it: remove it (or move it under variables:)"
)
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


@dataclass(frozen=True)
class Change:
    """One edit of the recipe.

    Attributes:
        key: The dotted key of the old recipe.
        action: What was done, e.g. ``attn_impl: triton -> flash``.
        reason: Why, citing the 0.22 behaviour.
        rejected: The old form is an error on 0.22 (rather than accepted with another behaviour).
    """

    key: str
    action: str
    reason: str
    rejected: bool = True

    def line(self) -> str:
        """The printed form: ``key: action (reason)``."""
        return f"{self.key}: {self.action} ({self.reason})"


@dataclass
class Upgrade:
    """The upgraded recipe (interpolations kept), its changes and the keys that could not be translated."""

    config: dict[str, Any]
    changes: list[Change] = field(default_factory=list)
    untranslatable: list[tuple[str, str]] = field(default_factory=list)

    def change(self, key: str, action: str, reason: str, rejected: bool = True) -> None:
        """Record a change."""
        self.changes.append(Change(key, action, reason, rejected))

    def refuse(self, key: str, reason: str) -> None:
        """Record a key that cannot be translated, with what to do instead."""
        self.untranslatable.append((key, reason))


class UntranslatableRecipeError(ValueError):
    """A legacy recipe with keys the upgrader cannot translate; the message lists each with what to do."""


def load_recipe(path: Path) -> dict[str, Any]:
    """A YAML recipe as plain containers, ``${...}`` interpolations kept as written.

    Raises:
        ValueError: If the file is not a YAML mapping (naming the file).
    """
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such recipe file")
    try:
        loaded = OmegaConf.load(path)
    except Exception as error:  # yaml's and omegaconf's parse errors
        raise ValueError(f"{path}: not a readable YAML recipe: {error}") from error
    config = OmegaConf.to_container(loaded, resolve=False)
    if not isinstance(config, dict):
        raise ValueError(f"{path}: a recipe is a YAML mapping of keys, got {type(config).__name__}")
    return {str(key): value for key, value in config.items()}


def upgrade_recipe(old: dict[str, Any], anchors: frozenset[str] = frozenset()) -> Upgrade:
    """Translate a 2024 recipe to llm-foundry 0.22, recording every change and every untranslatable key.

    ``anchors`` names the top-level keys that hold a YAML anchor (``dataset: &hf_dataset``) merged elsewhere:
    scratch values like those referred to by ``${...}``.

    Example:
        >>> result = upgrade_recipe({"global_seed": 1, "seed": "${global_seed}", "max_seq_len": 8})
        >>> result.config["seed"], result.config["variables"]
        ('${variables.global_seed}', {'global_seed': 1})
    """
    import copy

    result = Upgrade(copy.deepcopy(old))
    schema = engine_schema()
    _upgrade_top_level(result, schema, anchors)
    model = result.config.get("model")
    if isinstance(model, dict):
        _upgrade_model(model, result, schema)
    for where, loader in _loaders(result.config):
        _upgrade_loader(loader, where, result, schema)
    _upgrade_optimizer(result, schema)
    _upgrade_registered(result, schema)
    fsdp = result.config.get("fsdp_config")
    if isinstance(fsdp, dict):
        for key in sorted(set(fsdp) - schema.fsdp_keys):
            result.refuse(f"fsdp_config.{key}", _unknown_fsdp_reason(key))
    return result


def legacy_keys(config: dict[str, Any]) -> list[str]:
    """The keys of a recipe that llm-foundry 0.22 rejects and :func:`upgrade_recipe` translates (none: [])."""
    return [change.key for change in upgrade_recipe(config).changes if change.rejected]


def _upgrade_top_level(result: Upgrade, schema: EngineSchema, anchors: frozenset[str]) -> None:
    """``global_seed`` and other scratch keys -> ``variables:``; renamed keys; unknown keys refused."""
    config = result.config
    references = set(_referenced_roots(config))
    for old, new in RENAMED_TOP_LEVEL.items():
        if old in config and new not in config:
            config[new] = config.pop(old)
            result.change(old, f"renamed {new}", f"llm-foundry renamed {old} to {new}")
    if "global_seed" in config and "seed" not in config:
        config["seed"] = config.pop("global_seed")
        _rewrite_references(config, "global_seed", "seed")
        result.change("global_seed", "renamed seed", "0.22's TrainConfig has seed and rejects global_seed")
    for key in [key for key in config if key not in schema.top_level]:
        if key not in references and key not in anchors:
            result.refuse(key, UNKNOWN_TOP_LEVEL)
            continue
        variables = config.setdefault("variables", {})
        if key in variables:
            result.refuse(key, f"variables.{key} exists too: rename one of them")
            continue
        variables[key] = config.pop(key)
        if key in references:
            _rewrite_references(config, key, f"variables.{key}")
            reason = "0.22 rejects unknown top-level keys; scratch values referred to as ${...} go under variables:"
            result.change(key, f"moved to variables.{key}, ${{{key}}} -> ${{variables.{key}}}", reason)
        else:
            reason = "0.22 rejects unknown top-level keys; the YAML anchor it holds is merged where it is used"
            result.change(key, f"moved to variables.{key}", reason)


def _upgrade_model(model: dict[str, Any], result: Upgrade, schema: EngineSchema) -> None:
    """Attention options, removed MPT keys, and hub MPT folders whose code predates the pinned transformers."""
    name = model.get("name")
    if name == "hf_causal_lm":
        for key in sorted(set(model) - schema.hf_model_keys):
            result.refuse(f"model.{key}", "0.22's hf_causal_lm (ComposerHFCausalLM) has no such argument: remove it")
        _upgrade_hub_mpt(model, result)
        overrides = model.get("config_overrides")
        if isinstance(overrides, dict):
            _upgrade_attn_config(overrides, "model.config_overrides", result, schema)
    elif name == "mpt_causal_lm":
        if "verbose" in model:
            del model["verbose"]
            reason = "the old MPTConfig's verbosity level; 0.22's has none and would keep it unused"
            result.change("model.verbose", "removed", reason, rejected=False)
        _upgrade_attn_config(model, "model", result, schema)
    elif name == "hf_prefix_lm":
        result.refuse("model.name", "0.22 removed hf_prefix_lm (prefix-LM training): use hf_causal_lm")


def _upgrade_attn_config(holder: dict[str, Any], where: str, result: Upgrade, schema: EngineSchema) -> None:
    """``prefix_lm`` removed, ``attn_impl: triton`` -> ``flash``, unknown attention keys refused."""
    attn = holder.get("attn_config")
    if not isinstance(attn, dict):
        return
    where = f"{where}.attn_config"
    if "prefix_lm" in attn:
        if attn["prefix_lm"]:
            result.refuse(f"{where}.prefix_lm", "0.22 has no prefix-LM attention: train causally (prefix_lm: false)")
        else:
            del attn["prefix_lm"]
            result.change(f"{where}.prefix_lm", "removed", "0.22 has no prefix-LM attention; false was its default")
    impl = attn.get("attn_impl")
    if impl == "triton":
        attn["attn_impl"] = "flash"
        reason = (
            f"0.22 removed the triton kernel; its choices are {', '.join(schema.attn_impls)}; flash is the GPU "
            f"kernel (pip install 'recgpt[gpu]'); on CPU override {where}.attn_impl=torch"
        )
        result.change(f"{where}.attn_impl", "triton -> flash", reason)
    elif isinstance(impl, str) and "${" not in impl and impl not in schema.attn_impls:
        result.refuse(f"{where}.attn_impl", f"{impl!r} is not one of 0.22's choices {list(schema.attn_impls)}")
    for key in sorted(set(attn) - schema.attn_keys - {"prefix_lm"}):
        result.refuse(f"{where}.{key}", f"0.22's MPT has no attention option {key}; known: {sorted(schema.attn_keys)}")


def _upgrade_hub_mpt(model: dict[str, Any], result: Upgrade) -> None:
    """A hub MPT model (e.g. vinai/RecGPT-7B) -> ``variables.model``, the folder ``checkpoint update-code`` writes."""
    source = model.get("pretrained_model_name_or_path")
    overrides = model.get("config_overrides") or {}
    is_mpt = (isinstance(overrides, dict) and "attn_config" in overrides) or "mpt" in str(source).lower()
    if not (isinstance(source, str) and _HUB_ID.match(source) and is_mpt and not Path(source).exists()):
        return
    variables = result.config.setdefault("variables", {})
    if "model" in variables:
        reason = _hub_mpt_reason(source, "FOLDER") + ", then set pretrained_model_name_or_path to FOLDER"
        result.refuse("model.pretrained_model_name_or_path", reason)
        return
    variables["model"] = f"checkpoints/{source.split('/')[-1].lower()}"
    model["pretrained_model_name_or_path"] = "${variables.model}"
    action = f"{source} -> ${{variables.model}} = {variables['model']}"
    result.change("model.pretrained_model_name_or_path", action, _hub_mpt_reason(source, variables["model"]), False)


def _hub_mpt_reason(source: str, folder: str) -> str:
    """Why a hub MPT folder is not loaded as is, and the command that makes the folder 0.22 loads."""
    return (
        "the hub folder's MPT code predates the pinned transformers 4.51; write the same weights with 0.22's MPT "
        f"code once (needs the hub): recgpt checkpoint update-code {source} {folder}"
    )


def _loaders(config: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    """Every loader section with its dotted key: ``train_loader``, ``eval_loader`` (one or a list)."""
    if isinstance(config.get("train_loader"), dict):
        yield "train_loader", config["train_loader"]
    evaluation = config.get("eval_loader")
    if isinstance(evaluation, dict):
        yield "eval_loader", evaluation
    elif isinstance(evaluation, list):
        for index, loader in enumerate(evaluation):
            if isinstance(loader, dict):
                yield f"eval_loader.{index}", loader


def _upgrade_loader(loader: dict[str, Any], where: str, result: Upgrade, schema: EngineSchema) -> None:
    """``name: finetuning`` -> ``recgpt_finetuning`` with its dataset keys translated."""
    if loader.get("name") != "finetuning":
        if str(loader.get("name")) not in schema.dataloaders:
            result.refuse(f"{where}.name", f"not a 0.22 loader; known: {sorted(schema.dataloaders)}")
        return
    loader["name"] = "recgpt_finetuning"
    result.change(f"{where}.name", "finetuning -> recgpt_finetuning", RECGPT_LOADER, rejected=False)
    for key in sorted(set(loader) - schema.loader_keys - {"dataset"}):
        result.refuse(
            f"{where}.{key}", f"recgpt_finetuning has no loader option {key}; known: {sorted(schema.loader_keys)}"
        )
    dataset = loader.get("dataset")
    if isinstance(dataset, dict):
        for key in sorted(set(dataset) - KEPT_DATASET_KEYS):
            _upgrade_dataset_key(dataset, key, f"{where}.dataset.{key}", result)


def _upgrade_dataset_key(dataset: dict[str, Any], key: str, where: str, result: Upgrade) -> None:
    """One ``finetuning`` dataset key that ``recgpt_finetuning`` reads differently (or not at all)."""
    value = dataset.pop(key)
    if key == "decoder_only_format" and value is True:
        result.change(where, "removed", "recgpt_finetuning is decoder-only, as true asked", rejected=False)
    elif key == "allow_pad_trimming":
        if value is False:
            dataset["pad_to_max_seq_len"] = True
            reason = (
                "with false the 2024 collator padded every batch to max_seq_len; same loss either way, "
                "pad_to_max_seq_len: false pads to the longest example and saves compute"
            )
            result.change(where, "false -> pad_to_max_seq_len: true", reason, rejected=False)
        else:
            result.change(where, "removed", "recgpt_finetuning pads to the longest example by default", False)
    elif key == "packing_ratio" and value in (None, 1, 1.0):
        result.change(where, "removed", f"packing_ratio {value} packs nothing, recgpt's default", rejected=False)
    elif key == "packing_ratio":
        dataset["packing"] = True
        reason = "recgpt packs as many examples as fit max_seq_len; needs attn_config.attn_uses_sequence_id: true"
        result.change(where, f"{value} -> packing: true", reason, rejected=False)
    elif key == "tokenizer_name":
        result.change(where, "removed", "the loader is given the recipe's tokenizer: section", rejected=False)
    elif (key, str(value).lower()) in {("target_prompts", "none"), ("target_responses", "last")}:
        result.change(where, "removed", "recgpt_finetuning computes the loss on the response + EOS only", False)
    else:
        dataset[key] = value
        result.refuse(where, _dataset_reason(key, value))


def _dataset_reason(key: str, value: Any) -> str:
    """Why a ``finetuning`` dataset key has no ``recgpt_finetuning`` equivalent, and what to do."""
    if key == "decoder_only_format":
        return "recgpt_finetuning is decoder-only: encoder-decoder formatting has no equivalent"
    if key in {"remote", "local", "streams", "hf_kwargs", "preprocessing_fn"}:
        return (
            f"recgpt_finetuning reads {{prompt, response}} JSON lines from hf_name (a folder, a .jsonl file or a hub "
            f"dataset id) as they are, with no {key}: write the data in that form and point hf_name at it"
        )
    if key in {"target_prompts", "target_responses"}:
        return f"{key}: {value} is not recgpt's loss (on the last response + EOS only): remove it to accept that"
    from recgpt.training.dataloader import FinetuningDatasetConfig

    known = [f.name for f in fields(FinetuningDatasetConfig)]
    return f"recgpt_finetuning has no dataset option {key}; known: {known}"


def _upgrade_optimizer(result: Upgrade, schema: EngineSchema) -> None:
    """``eps`` dropped from LION optimizers; other arguments checked against the optimizer's signature."""
    optimizer = result.config.get("optimizer")
    if not isinstance(optimizer, dict):
        return
    name = str(optimizer.get("name"))
    if name not in schema.optimizers:
        result.refuse("optimizer.name", f"{name!r} is not a 0.22 optimizer; known: {sorted(schema.optimizers)}")
        return
    if name in LION_OPTIMIZERS and "eps" in optimizer:
        value = optimizer.pop("eps")
        reason = f"{name} takes (lr, betas, weight_decay): LION steps by the sign of its update, no denominator"
        result.change("optimizer.eps", f"removed (was {value})", reason)
    for key in sorted(set(optimizer) - schema.optimizers[name] - {"name"}):
        result.refuse(f"optimizer.{key}", f"{name} has no argument {key}; known: {sorted(schema.optimizers[name])}")


def _upgrade_registered(result: Upgrade, schema: EngineSchema) -> None:
    """Callbacks, algorithms, loggers and the scheduler: renamed entries translated, unknown ones refused."""
    config = result.config
    sections = [
        ("callbacks", schema.callbacks, RENAMED_CALLBACKS),
        ("algorithms", schema.algorithms, {}),
        ("loggers", schema.loggers, {}),
    ]
    for section, known, renamed in sections:
        entries = config.get(section)
        if not isinstance(entries, dict):
            continue
        for name in list(entries):
            new = renamed.get(name, name)
            if new != name and new not in entries:
                config[section] = entries = {(new if key == name else key): v for key, v in entries.items()}
                result.change(f"{section}.{name}", f"renamed {new}", f"0.22 registers it as {new}")
            if new not in known:
                result.refuse(f"{section}.{name}", f"not registered in 0.22; known: {sorted(known)}")
            elif isinstance(entries[new], dict) and known[new] is not None:
                for key in sorted(set(entries[new]) - known[new]):  # type: ignore[operator]
                    result.refuse(
                        f"{section}.{name}.{key}", f"0.22's {new} has no argument {key}: {sorted(known[new] or ())}"
                    )
    scheduler = config.get("scheduler")
    if isinstance(scheduler, dict):
        name = str(scheduler.get("name"))
        if name not in schema.schedulers:
            result.refuse("scheduler.name", f"{name!r} is not a 0.22 scheduler; known: {sorted(schema.schedulers)}")
            return
        for key in sorted(set(scheduler) - schema.schedulers[name] - {"name"}):
            result.refuse(f"scheduler.{key}", f"{name} has no argument {key}: {sorted(schema.schedulers[name])}")


def _unknown_fsdp_reason(key: str) -> str:
    """What to do with an ``fsdp_config`` key composer 0.32's FSDPConfig lacks (it would ignore it silently)."""
    if key == "device_mesh":
        return "composer 0.32 refuses it: set data_parallel_shard_degree and data_parallel_replicate_degree"
    return "composer 0.32's FSDPConfig has no such option (it would be ignored silently): remove it"


_REFERENCE = re.compile(r"\$\{\s*([A-Za-z_][\w-]*)")


def _strings(value: Any) -> Iterator[str]:
    """Every string inside nested dicts and lists."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from _strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)


def _referenced_roots(config: dict[str, Any]) -> Iterator[str]:
    """The top-level keys that ``${...}`` interpolations refer to (``${global_seed}`` -> ``global_seed``)."""
    for text in _strings(config):
        yield from _REFERENCE.findall(text)


def _rewrite_references(value: Any, old: str, new: str) -> Any:
    """Rewrite ``${old...}`` to ``${new...}`` in place throughout nested dicts and lists; return the value."""
    pattern = re.compile(r"\$\{(\s*)" + re.escape(old) + r"(?=[\s.}\[])")
    if isinstance(value, dict):
        for key, item in value.items():
            value[key] = _rewrite_references(item, old, new)
    elif isinstance(value, list):
        value[:] = [_rewrite_references(item, old, new) for item in value]
    elif isinstance(value, str):
        return pattern.sub(lambda match: "${" + match.group(1) + new, value)
    return value


def validate_recipe(path: Path) -> None:
    """Load a recipe the way ``train_from_yaml`` does and check the sections llm-foundry builds later.

    Raises:
        ValueError: Naming the file and what 0.22 refuses.
    """
    from llmfoundry.utils.config_utils import TRAIN_CONFIG_KEYS, TrainConfig, make_dataclass_and_log_config

    from recgpt.training.dataloader import parse_dataset_config

    recipe = load_recipe(path)
    try:
        _, train = make_dataclass_and_log_config(OmegaConf.create(recipe), TrainConfig, TRAIN_CONFIG_KEYS, "all")
    except Exception as error:  # the engine's own errors: ValueError, omegaconf's, TypeError
        raise ValueError(f"{path}: llm-foundry 0.22 does not load it: {error}") from error
    again = upgrade_recipe(recipe)
    problems = [change.line() for change in again.changes] + [f"{k}: {why}" for k, why in again.untranslatable]
    if problems:
        raise ValueError(f"{path}: still not a 0.22 recipe: {'; '.join(problems)}")
    for where, loader in _loaders(
        {"train_loader": train.train_loader, "eval_loader": train.eval_loader or train.eval_loaders}
    ):
        if loader.get("name") == "recgpt_finetuning":
            try:
                parse_dataset_config(loader.get("dataset") or {})
            except ValueError as error:
                raise ValueError(f"{path}: {where}: {error}") from error
    if train.model.get("name") == "mpt_causal_lm":
        check_mpt_config(path, train.model)


def yaml_anchors(text: str) -> frozenset[str]:
    r"""The top-level keys of a YAML text that define an anchor.

    Example:
        >>> sorted(yaml_anchors("dataset: &hf\n  hf_name: x\ntrain_loader:\n  dataset:\n    <<: *hf\n"))
        ['dataset']
    """
    return frozenset(re.findall(r"(?m)^([A-Za-z_][\w-]*):\s*&", text))


def default_output(old: Path) -> Path:
    """Where ``upgrade`` writes without NEW.yaml: ``fine-tuning.yaml`` -> ``fine-tuning.0.22.yaml``."""
    return old.with_name(f"{old.stem}.0.22{old.suffix or '.yaml'}")


def upgrade_file(old: Path, new: Path | None = None, force: bool = False) -> tuple[Path, Upgrade]:
    """Upgrade ``old`` into ``new`` (validated before it is put in place); return the path and the upgrade.

    Raises:
        FileExistsError: If ``new`` exists and not ``force``, or is ``old`` itself (never overwritten).
        UntranslatableRecipeError: Listing every key that cannot be translated; nothing is written.
        ValueError: If the upgraded recipe would not load on 0.22 (nothing is written).
    """
    new = new or default_output(old)
    if new.resolve() == old.resolve():
        raise FileExistsError(f"{new}: is the recipe being upgraded; give another NEW.yaml (it is never overwritten)")
    if new.exists() and not force:
        raise FileExistsError(f"{new}: exists; give another NEW.yaml, or --force to overwrite it")
    result = upgrade_recipe(load_recipe(old), yaml_anchors(old.read_text(encoding="utf-8")))
    if result.untranslatable:
        lines = "\n".join(f"  {key}: {reason}" for key, reason in result.untranslatable)
        raise UntranslatableRecipeError(
            f"{old}: {len(result.untranslatable)} key(s) cannot be translated to llm-foundry 0.22; nothing was "
            f"written. Change them in {old.name} and run {UPGRADE_COMMAND} again:\n{lines}"
        )
    scratch = new.with_name(f".{new.name}.partial")
    scratch.write_text(render_recipe(old, new, result), encoding="utf-8")
    try:
        validate_recipe(scratch)
    except ValueError as error:
        scratch.unlink()
        raise ValueError(f"{new}: not written: {str(error).replace(str(scratch), 'the upgraded recipe')}") from error
    os.replace(scratch, new)
    return new, result


def render_recipe(old: Path, new: Path, result: Upgrade) -> str:
    """The upgraded YAML: a header naming the source, the launch command and every change, then the recipe."""
    header = [
        f"# Upgraded from {old.name}, a recipe for the 2024 llm-foundry releases, to llm-foundry 0.22 by",
        f"# `{UPGRADE_COMMAND} {old.name} {new.name}`.",
        f"# Launch: composer --world_size N scripts/train.py {new.name} [key=value ...]",
        "# Changes:",
        *(f"#   {change.line()}" for change in result.changes),
        "",
    ]
    config = dict(result.config)
    ordered = {"variables": config.pop("variables")} if "variables" in config else {}
    return "\n".join(header) + OmegaConf.to_yaml(OmegaConf.create({**ordered, **config}))
