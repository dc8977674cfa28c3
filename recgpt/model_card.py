"""Model cards: the ``README.md`` written into every export (Hugging Face format), and its evaluation results.

A card is YAML front matter (license, library_name, tags, datasets, base_model and, once ``recgpt evaluate`` has
run, a ``model-index``) and a body: the training data (from the data folder's manifest.json), the recipe's key
settings, the prompt template with one example per task (rendered by ``recgpt.data.render``, never written here
by hand), the evaluation protocol and table, and the license terms of the data and of the base weights.
Everything here is a pure function of the resolved recipe, the manifest and ``report.json``, except
``hub_base_model`` (it reads a local base folder's card) and ``update_card`` (it replaces a card file).
"""

from __future__ import annotations

import json
import logging
import math
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, cast

import yaml
from huggingface_hub import EvalResult, ModelCard, ModelCardData

from recgpt.data.records import Domain, Interaction, Item
from recgpt.data.render import PROMPT_TEMPLATE, next_item_example, rating_example
from recgpt.files import write_text_atomic

log = logging.getLogger(__name__)

EVALUATION_START = "<!-- recgpt:evaluation:start -->"
EVALUATION_END = "<!-- recgpt:evaluation:end -->"
RECGPT_WEIGHTS = re.compile(r"(^|/)vinai/recgpt", re.IGNORECASE)
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
TASKS = {"next_item": "Next-item recommendation", "rating": "Rating prediction"}
STAGES = {"pre-training": "continued pre-training", "instruction-tuning": "instruction fine-tuning"}
RECIPE_KEYS = (
    "run_name",
    "max_seq_len",
    "max_duration",
    "global_train_batch_size",
    "device_train_microbatch_size",
    "precision",
    "seed",
    "optimizer",
    "scheduler",
)


def find_manifest(path: str | Path | None, levels: int = 3) -> Path | None:
    """The manifest.json of the ``recgpt data prepare`` folder holding ``path`` (itself or up to ``levels`` parents).

    Example: a recipe's ``train_loader.dataset.local: artifacts/demo/data/pretraining/mds`` finds
    ``artifacts/demo/data/manifest.json``.
    """
    if path is None or "://" in str(path):
        return None
    folder = Path(path)
    for candidate in [folder, *folder.parents][: levels + 1]:
        manifest = candidate / "manifest.json"
        if manifest.is_file():
            return manifest
    return None


def training_data_path(train_config: Mapping[str, Any]) -> str | None:
    """The train loader's data path: ``dataset.local`` (llm-foundry ``text``) or ``dataset.hf_name``."""
    dataset = dict((train_config.get("train_loader") or {}).get("dataset") or {})
    return dataset.get("local") or dataset.get("hf_name") or dataset.get("remote")


def base_model_of(train_config: Mapping[str, Any], base_model: str | None = None) -> str | None:
    """The base model: ``base_model`` if given, else an ``hf_causal_lm`` start (a hub id, or a local folder)."""
    if base_model:
        return base_model
    model = dict(train_config.get("model") or {})
    return model.get("pretrained_model_name_or_path") if model.get("name") == "hf_causal_lm" else None


def hub_base_model(base: str | None) -> str | None:
    """``base`` when it is a hub id (``owner/name``, not an existing local folder); a local folder's own card's
    ``base_model`` otherwise, so a chain of local exports keeps naming the hub model it started from."""
    if base is None:
        return None
    if Path(base).is_dir():
        readme = Path(base) / "README.md"
        found = getattr(ModelCard.load(readme).data, "base_model", None) if readme.is_file() else None
        return found if isinstance(found, str) else None
    return base if HUB_ID.match(base) else None


def weights_license(base: str | None, license: str | None) -> str:
    """The card's license: the recipe's choice, else RecGPT's CC BY-NC 4.0 for its derivatives, else ``other``.

    Example:
        >>> weights_license("vinai/RecGPT-7B-Instruct", None), weights_license(None, "apache-2.0")
        ('cc-by-nc-4.0', 'apache-2.0')
    """
    if base and RECGPT_WEIGHTS.search(base):
        return "cc-by-nc-4.0"
    return license or "other"


def card_data(
    train_config: Mapping[str, Any],
    manifest: Mapping[str, Any] | None,
    adapter: bool,
    base_model: str | None = None,
    license: str | None = None,
) -> ModelCardData:
    """The front matter of a freshly trained export (no evaluation results yet)."""
    base = hub_base_model(base_model_of(train_config, base_model))
    stage = "lora" if adapter else stage_of(train_config)
    tags = ["recgpt", "recommendation", "llm-foundry", "composer", "mpt", stage, *(["peft"] if adapter else [])]
    return ModelCardData(
        license=weights_license(base, license),
        library_name="peft" if adapter else "transformers",
        pipeline_tag="text-generation",
        tags=tags,
        datasets=sorted((manifest or {}).get("sources", {})) or None,
        base_model=base,
        model_name=str(train_config.get("run_name") or "recgpt-model"),
    )


def stage_of(train_config: Mapping[str, Any]) -> str:
    """``pre-training`` for llm-foundry's ``text`` loader (raw documents), ``instruction-tuning`` otherwise."""
    return "pre-training" if (train_config.get("train_loader") or {}).get("name") == "text" else "instruction-tuning"


def data_section(manifest: Mapping[str, Any] | None, data_path: str | None) -> list[str]:
    """Sources and counts from a ``recgpt data prepare`` manifest, one table row per source."""
    lines = ["## Training data", ""]
    if manifest is None:
        return [
            *lines,
            f"Trained on `{data_path}`; it has no manifest.json from `recgpt data prepare`, so its "
            "sources and counts are not recorded here.",
            "",
        ]
    lines += [
        f"Prepared by `recgpt data prepare` (content sha256 `{str(manifest.get('content_sha256', ''))[:16]}`); "
        f"the train loader read `{data_path}`.",
        "",
        "| source | format | domain | users | items | interactions kept | of read | instruction rows |",
        "|---|---|---|---|---|---|---|---|",
    ]
    formats = {s["name"]: s.get("format", "") for s in manifest.get("config", {}).get("sources", [])}
    for name, counts in manifest.get("sources", {}).items():
        domain = counts.get("domain", {})
        lines.append(
            f"| {name} | {formats.get(name, '')} | {domain.get('noun', '')} | {counts.get('users', '')} | "
            f"{counts.get('items', '')} | {counts.get('interactions_out', '')} | "
            f"{counts.get('interactions_read', '')} | {counts.get('instruction_rows', '')} |"
        )
    pretraining = manifest.get("pretraining", {})
    lines += [
        "",
        f"Pre-training corpus: {pretraining.get('documents', 0)} documents, {pretraining.get('tokens', 0)} tokens; "
        f"instruction data: {manifest.get('instruct', {}).get('train', 0)} training rows (both tasks).",
        "",
    ]
    return lines


def recipe_section(train_config: Mapping[str, Any], adapter: bool) -> list[str]:
    """The recipe's key settings as a table, then the whole resolved recipe (loggers left out) in a fold."""
    model = dict(train_config.get("model") or {})
    loader = dict(train_config.get("train_loader") or {})
    settings = {
        "model": _model_summary(model),
        "train_loader": f"{loader.get('name')} on {training_data_path(train_config)}",
    }
    settings.update({key: train_config[key] for key in RECIPE_KEYS if key in train_config})
    if adapter and model.get("peft_config"):
        settings["peft_config"] = model["peft_config"]
    lines = ["## Recipe", "", "| setting | value |", "|---|---|"]
    lines += [f"| {key} | `{_inline(value)}` |" for key, value in settings.items()]
    shown = {key: value for key, value in train_config.items() if key != "loggers"}  # tracking URIs may hold secrets
    dump = yaml.safe_dump(json.loads(json.dumps(shown, default=str)), sort_keys=False, width=100)
    return [
        *lines,
        "",
        "<details><summary>The resolved recipe</summary>",
        "",
        "```yaml",
        dump.rstrip(),
        "```",
        "",
        "</details>",
        "",
    ]


def _model_summary(model: Mapping[str, Any]) -> str:
    if model.get("name") == "hf_causal_lm":
        return f"hf_causal_lm from {model.get('pretrained_model_name_or_path')}"
    shape = ", ".join(f"{k} {model[k]}" for k in ("d_model", "n_layers", "n_heads", "vocab_size") if k in model)
    alibi = (model.get("attn_config") or {}).get("alibi")
    return f"{model.get('name')} ({shape}{', ALiBi' if alibi else ''})"


def _inline(value: Any) -> str:
    return json.dumps(value, default=str) if isinstance(value, dict | list) else str(value)


def prompt_section(manifest: Mapping[str, Any] | None) -> list[str]:
    """RecGPT's template and one example per task, rendered by ``recgpt.data.render`` on invented items.

    The items are illustrative (never rows of the training data, which some sources forbid redistributing); the
    wording (task line, history header, fields, rating scale) is that of the first source's domain.
    """
    sources = (manifest or {}).get("sources", {})
    domain = Domain(**{**next(iter(sources.values()))["domain"], "identifying": ()}) if sources else None
    domain = domain or Domain("items", "items")
    fields = next(iter(sources.values()))["domain"].get("identifying", []) if sources else []
    items = [
        Item(str(i), f"Example Item {name}", tuple((f, f"Example {f}") for f in fields))
        for i, name in enumerate("ABC", start=1)
    ]
    domain = Domain(domain.name, domain.noun, domain.rating_scale, tuple(fields))
    next_item = next_item_example(domain, items[:2], items[2])
    events = [
        (item, Interaction("user", item.item_id, float(i), rating))
        for i, (item, rating) in enumerate(zip(items, (4.0, 3.0, 5.0), strict=True))
    ]
    rating = rating_example(domain, events)
    lines = ["## Prompt template", "", "Every prompt is RecGPT's template:", "", "```text", PROMPT_TEMPLATE, "```", ""]
    for task, row in (("next item", next_item), ("rating", rating)):
        lines += [
            f"Example ({task}; invented items, not training data): prompt, then the expected response.",
            "",
            "```text",
            row["prompt"],
            "```",
            "",
            "```text",
            row["response"],
            "```",
            "",
        ]
    return lines


def license_section(license: str, base: str | None, manifest: Mapping[str, Any] | None) -> list[str]:
    """The license of the weights and the terms of the data they were trained on."""
    choose = " (choose one with `recgpt_model_card: {license: ...}` in the recipe)" if license == "other" else ""
    lines = ["## License and data terms", "", f"- Weights: `{license}`{choose}."]
    if base and RECGPT_WEIGHTS.search(base):
        lines.append(
            f"- The base model `{base}` (RecGPT's weights) is licensed CC BY-NC 4.0: this derivative may not "
            "be used commercially and must credit RecGPT (Ngo and Nguyen, 2024)."
        )
    for name, counts in (manifest or {}).get("sources", {}).items():
        if counts.get("domain", {}).get("name") == "movielens" or "movielens" in name.lower():
            lines.append(
                f"- `{name}` is MovieLens data (GroupLens): it may not be redistributed without GroupLens' "
                "permission and is licensed for research; do not publish the data or text derived from it. "
                "This folder holds no MovieLens rows (the examples above are invented)."
            )
    lines += [
        "- Check the terms of every training source before sharing this model.",
        "- recgpt's code is Apache-2.0.",
        "",
    ]
    return lines


def evaluation_section(report: Mapping[str, Any] | None, folder_hint: str = "<this folder>") -> list[str]:
    """The evaluation table and protocol of ``report.json``, between markers ``update_card`` replaces."""
    from recgpt.evaluation.report import markdown_table

    lines = [EVALUATION_START, "## Evaluation", ""]
    if report is None:
        lines += [
            "Not evaluated yet. `recgpt evaluate configs/eval/demo.yaml model=" + folder_hint + "` fills this "
            "section and the card's model-index.",
            "",
        ]
    else:
        lines += [
            f"`recgpt evaluate` on {report['users']} users of the `{report['split']}` split of "
            f"`{report['benchmark']}`; mean over users with a 95% bootstrap interval.",
            "",
            *markdown_table(dict(report)),
            "",
            "Protocol:",
            "",
            *(f"- {part}: {text}" for part, text in report["protocol"].items()),
            "",
        ]
    return [*lines, EVALUATION_END]


def training_card(
    train_config: Mapping[str, Any],
    manifest: Mapping[str, Any] | None,
    adapter: bool = False,
    base_model: str | None = None,
    license: str | None = None,
) -> ModelCard:
    """The card of a new export: front matter and every section, the evaluation still empty."""
    data = card_data(train_config, manifest, adapter, base_model, license)
    base = base_model_of(train_config, base_model)
    kind = "LoRA adapter" if adapter else STAGES[stage_of(train_config)]
    start = base or train_config.get("load_path")
    load = (
        "recgpt evaluate / recgpt recommend load it onto its base and merge it"
        if adapter
        else "AutoModelForCausalLM.from_pretrained(folder, trust_remote_code=True) loads it (MPT code included)"
    )
    body = [
        f"# {data.model_name}",
        "",
        f"A RecGPT-style text recommender ({kind}) trained by recgpt on llm-foundry 0.22 / composer 0.32"
        + (f", starting from `{start}`." if start else ", from random weights."),
        f"{load}; `recgpt recommend --model <folder>` and `recgpt serve` return catalogue items.",
        "",
        *data_section(manifest, training_data_path(train_config)),
        *recipe_section(train_config, adapter),
        *prompt_section(manifest),
        *evaluation_section(None),
        "",
        *license_section(str(data.license), base, manifest),
    ]
    return ModelCard(f"---\n{data.to_yaml()}\n---\n\n" + "\n".join(body))


def eval_results(report: Mapping[str, Any]) -> list[EvalResult]:
    """One hub ``EvalResult`` per metric of each model method (baselines stay in the table), dataset = benchmark."""
    results = []
    for part, columns in (("next_item", _ranking_columns(report)), ("rating", ("RMSE", "MAE"))):
        for method, values in report[part].items():
            if not method.startswith("model: "):
                continue
            for metric in (c for c in columns if _finite(values.get(c))):
                low, high = values.get(f"{metric}_ci", (None, None))
                results.append(
                    EvalResult(
                        task_type="text-generation",
                        task_name=TASKS[part],
                        dataset_type=report["benchmark"],
                        dataset_name=report["benchmark"],
                        dataset_split=report["split"],
                        metric_type=metric.lower(),
                        metric_name=f"{metric} ({method.removeprefix('model: ')})",
                        metric_value=round(values[metric], 6),
                        metric_config=method.removeprefix("model: "),
                        metric_args={"ci95": [_rounded(low), _rounded(high)], "users": report["users"]},
                    )
                )
    return results


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and math.isfinite(value)


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(float(value), 6)


def _ranking_columns(report: Mapping[str, Any]) -> list[str]:
    return [f"{name}@{k}" for k in report["config"]["ks"] for name in ("HR", "NDCG")]


def update_card(folder: Path, report: Mapping[str, Any]) -> Path:
    """Put ``report``'s results into the card of the model folder it evaluated, atomically; the rest is kept.

    The model-index gets each metric of each model method on the report's benchmark and split (results for other
    benchmarks or splits stay), and the evaluation section is replaced (appended to a card that has none). A
    folder without a card gets a short one. The file is written to a temporary file beside it, then renamed.

    Returns:
        The card's path.
    """
    path = folder / "README.md"
    card = (
        ModelCard.load(path)
        if path.is_file()
        else ModelCard(
            f"---\n{ModelCardData(library_name='transformers', tags=['recgpt', 'recommendation']).to_yaml()}\n---\n\n"
            f"# {folder.name}\n"
        )
    )
    data = cast(ModelCardData, card.data)  # a model card's data
    kept = [
        r
        for r in data.eval_results or []
        if (r.dataset_type, r.dataset_split) != (report["benchmark"], report["split"])
    ]
    data.eval_results = [*kept, *eval_results(report)] or None
    data.model_name = data.model_name or folder.name
    section = "\n".join(evaluation_section(report))
    text = card.text
    start, end = text.find(EVALUATION_START), text.find(EVALUATION_END)
    if 0 <= start < end:
        text = text[:start] + section + text[end + len(EVALUATION_END) :]
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    body = text.lstrip("\n")
    write_text_atomic(path, f"---\n{data.to_yaml()}\n---\n\n{body}")
    return path
