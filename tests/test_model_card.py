"""Model cards (recgpt/model_card.py): written for the shipped recipes, parsed offline by huggingface_hub's own
``ModelCard.load``, and updated by an evaluation without losing the rest."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from huggingface_hub import ModelCard
from omegaconf import OmegaConf

from recgpt.data.records import Domain, Item
from recgpt.data.render import next_item_example
from recgpt.model_card import EVALUATION_START, hub_base_model, training_card, update_card
from tests.conftest import ROOT


def recipe(name: str, *overrides: str) -> dict:
    """A shipped recipe resolved as llm-foundry hands it to callbacks."""
    config = OmegaConf.merge(OmegaConf.load(ROOT / "configs" / name), OmegaConf.from_dotlist(list(overrides)))
    return OmegaConf.to_container(config, resolve=True)  # type: ignore[return-value]


def card_kwargs(config: dict) -> dict:
    return {k: v for k, v in (config["callbacks"]["recgpt_model_card"] or {}).items() if k in {"base_model", "license"}}


def report(split: str = "test", hr: float = 0.25) -> dict:
    """The parts of a ``report.json`` a card reads, with hand-set values."""
    return {
        "model": "m",
        "benchmark": "ml-100k",
        "split": split,
        "users": 4,
        "config": {"ks": [10]},
        "protocol": {"next_item": "full catalogue of 9 items", "rating": "sampled"},
        "next_item": {
            "model: beam_grounded": {"HR@10": hr, "HR@10_ci": [0.0, 0.5], "NDCG@10": 0.1, "NDCG@10_ci": [0.0, 0.2]},
            "most popular": {"HR@10": 0.5, "HR@10_ci": [0.25, 0.75], "NDCG@10": 0.3, "NDCG@10_ci": [0.1, 0.4]},
        },
        "rating": {"model: sampled": {"RMSE": 1.5, "RMSE_ci": [1.0, 2.0], "MAE": 1.25, "MAE_ci": [1.0, 1.5]}},
        "paired": {},
    }


def test_a_recgpt_fine_tune_is_cc_by_nc_and_parses_offline(tmp_path: Path):
    config = recipe("fine-tuning.yaml")
    card = training_card(config, None, **card_kwargs(config))
    (tmp_path / "README.md").write_text(str(card.content))
    loaded = ModelCard.load(tmp_path / "README.md")
    assert loaded.data.license == "cc-by-nc-4.0" and loaded.data.base_model == "vinai/RecGPT-7B"
    assert loaded.data.library_name == "transformers" and "instruction-tuning" in loaded.data.tags
    assert "licensed CC BY-NC 4.0: this derivative may not be used commercially" in loaded.text
    assert "no manifest.json from `recgpt data prepare`" in loaded.text  # the sample dataset has none
    assert "| optimizer | `" in loaded.text and '"lr": 1e-05' in loaded.text
    assert "| model | `mpt_causal_lm (d_model 4096, n_layers 32, n_heads 32, vocab_size 50432, ALiBi)` |" in loaded.text


def test_a_lora_adapter_card_names_peft(tmp_path: Path):
    config = recipe("fine-tuning-lora.yaml")
    card = training_card(config, None, adapter=True, **card_kwargs(config))
    assert card.data.library_name == "peft" and "lora" in card.data.tags and card.data.license == "cc-by-nc-4.0"
    assert "| peft_config | `" in card.text and "LoRA adapter" in card.text


def test_the_demo_card_states_the_manifest_counts_and_invents_its_examples(prepared: Path):
    config = recipe("demo/fine-tuning.yaml", f"variables.data_dir={prepared}")
    manifest = json.loads((prepared / "manifest.json").read_text())
    card = training_card(config, manifest, **card_kwargs(config))
    counts = manifest["sources"]["ml-100k"]
    assert card.data.datasets == ["ml-100k"] and card.data.license == "other"
    assert f"| ml-100k | recbole | movies/shows | {counts['users']} | {counts['items']} |" in card.text
    assert f"{manifest['pretraining']['tokens']} tokens" in card.text
    assert "MovieLens data (GroupLens): it may not be redistributed" in card.text
    history, target = [Item("1", "Example Item A"), Item("2", "Example Item B")], Item("3", "Example Item C")
    example = next_item_example(Domain("movielens", "movies/shows"), history, target)
    assert example["prompt"] in card.text and "Predict rating for the last item." in card.text
    titles = [json.loads(line)["title"] for line in (prepared / "benchmark" / "ml-100k" / "items.jsonl").open()]
    assert not [title for title in titles if title in card.text]  # no MovieLens text in the card
    assert EVALUATION_START in card.text and "Not evaluated yet" in card.text


def test_evaluate_results_replace_only_their_benchmark_split_and_keep_the_rest(tmp_path: Path):
    config = recipe("fine-tuning.yaml")
    card = training_card(config, None, **card_kwargs(config))
    path = tmp_path / "README.md"
    path.write_text(str(card.content) + "\n## Notes\n\nWritten by hand; keep me.\n")
    update_card(tmp_path, report("validation", hr=0.5))
    update_card(tmp_path, report("test", hr=0.25))
    update_card(tmp_path, report("test", hr=0.75))  # the same split again: replaced, not added
    loaded = ModelCard.load(path)
    results = {(r.dataset_split, r.metric_type, r.metric_config): r.metric_value for r in loaded.data.eval_results}
    assert results[("test", "hr@10", "beam_grounded")] == 0.75
    assert results[("validation", "hr@10", "beam_grounded")] == 0.5
    assert results[("test", "rmse", "sampled")] == 1.5
    assert len(results) == 2 * 4 and not any(method == "most_popular" for _, _, method in results)
    assert loaded.data.license == "cc-by-nc-4.0" and loaded.data.base_model == "vinai/RecGPT-7B"
    assert "Written by hand; keep me." in loaded.text and "Not evaluated yet" not in loaded.text
    assert loaded.text.count("## Evaluation") == 1 and "| most popular | 0.5000 [0.250, 0.750]" in loaded.text
    assert sorted(p.name for p in tmp_path.iterdir()) == ["README.md"]  # written through a temporary file


def test_a_folder_without_a_card_gets_one_and_a_failed_update_leaves_the_card(tmp_path: Path):
    update_card(tmp_path, report())
    loaded = ModelCard.load(tmp_path / "README.md")
    assert loaded.data.model_name == tmp_path.name and len(loaded.data.eval_results) == 4
    before = (tmp_path / "README.md").read_text()
    broken = report()
    del broken["protocol"]
    with pytest.raises(KeyError):
        update_card(tmp_path, broken)
    assert (tmp_path / "README.md").read_text() == before


def test_a_local_base_folder_passes_on_its_hub_base_model(tmp_path: Path):
    (tmp_path / "README.md").write_text("---\nbase_model: vinai/RecGPT-7B\n---\n# x\n")
    assert hub_base_model(str(tmp_path)) == "vinai/RecGPT-7B"
    assert hub_base_model("mosaicml/mpt-7b") == "mosaicml/mpt-7b"
    assert hub_base_model("checkpoints/missing-folder/final") is None
