"""`recgpt recipe upgrade`: 2024 llm-foundry recipes (RecGPT's kind) -> recipes that load on llm-foundry 0.22."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from recgpt.training.legacy_recipe import (
    UntranslatableRecipeError,
    default_output,
    legacy_keys,
    load_recipe,
    upgrade_file,
    upgrade_recipe,
)

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "fixtures" / "recipes"
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
RECGPT = str(Path(sys.executable).with_name("recgpt"))

SCRATCH = "0.22 rejects unknown top-level keys; scratch values referred to as ${...} go under variables:"
LOADER = (
    "recgpt's loader: RecGPT's prompt template, loss on the response + EOS only, shuffle_seed honoured, and an "
    "example longer than max_seq_len loses its oldest history lines to fit (0.22's finetuning loader drops an "
    "example whose prompt is longer)"
)
PAD = (
    "with false the 2024 collator padded every batch to max_seq_len; same loss either way, pad_to_max_seq_len: "
    "false pads to the longest example and saves compute"
)
LION = "decoupled_lionw takes (lr, betas, weight_decay): LION steps by the sign of its update, no denominator"
CHANGES_7B = [
    f"global_seed: moved to variables.global_seed, ${{global_seed}} -> ${{variables.global_seed}} ({SCRATCH})",
    "model.pretrained_model_name_or_path: vinai/RecGPT-7B -> ${variables.model} = checkpoints/recgpt-7b (the hub "
    "folder's MPT code predates the pinned transformers 4.51; write the same weights with 0.22's MPT code once "
    "(needs the hub): recgpt checkpoint update-code vinai/RecGPT-7B checkpoints/recgpt-7b)",
    "model.config_overrides.attn_config.prefix_lm: removed (0.22 has no prefix-LM attention; false was its default)",
    "model.config_overrides.attn_config.attn_impl: triton -> flash (0.22 removed the triton kernel; its choices are "
    "flash, torch; flash is the GPU kernel (pip install 'recgpt[gpu]'); on CPU override "
    "model.config_overrides.attn_config.attn_impl=torch)",
    f"train_loader.name: finetuning -> recgpt_finetuning ({LOADER})",
    f"train_loader.dataset.allow_pad_trimming: false -> pad_to_max_seq_len: true ({PAD})",
    "train_loader.dataset.decoder_only_format: removed (recgpt_finetuning is decoder-only, as true asked)",
    f"optimizer.eps: removed (was 1e-08) ({LION})",
    "callbacks.mono_ckpt_saver: renamed mono_checkpoint_saver (0.22 registers it as mono_checkpoint_saver)",
]


def fixture(name: str, folder: Path) -> Path:
    """A copy of a fixture recipe in ``folder`` (the upgrader writes beside it)."""
    return Path(shutil.copy(FIXTURES / name, folder / name))


def engine_config(path: Path):
    """The recipe through llm-foundry 0.22's own loading path (what `train_from_yaml` runs first)."""
    from llmfoundry.utils.config_utils import TRAIN_CONFIG_KEYS, TrainConfig, make_dataclass_and_log_config
    from omegaconf import OmegaConf

    return make_dataclass_and_log_config(OmegaConf.load(path), TrainConfig, TRAIN_CONFIG_KEYS, transforms="all")[1]


def test_7b_recipe_is_upgraded_with_every_change_and_loads_on_0_22(tmp_path: Path):
    old = fixture("recgpt-7b-2024.yaml", tmp_path)
    before = old.read_text()
    with pytest.raises(ValueError, match=r"Unused parameters \['global_seed'\]"):
        engine_config(old)  # the engine's first error on the old recipe
    new, result = upgrade_file(old)
    assert new == tmp_path / "recgpt-7b-2024.0.22.yaml" and old.read_text() == before
    assert [change.line() for change in result.changes] == CHANGES_7B
    config = engine_config(new)
    assert config.variables == {"global_seed": 2024, "model": "checkpoints/recgpt-7b"}
    assert config.seed == 2024 and config.max_seq_len == 2048
    assert config.model["pretrained_model_name_or_path"] == "checkpoints/recgpt-7b"
    assert config.model["config_overrides"]["attn_config"] == {
        "attn_impl": "flash",
        "alibi": True,
        "attn_uses_sequence_id": False,
    }
    assert config.optimizer == {"name": "decoupled_lionw", "lr": 2e-5, "betas": [0.9, 0.95], "weight_decay": 0.0}
    assert config.train_loader["name"] == "recgpt_finetuning"
    assert config.train_loader["dataset"] == {
        "hf_name": "data/instruct",
        "split": "train",
        "max_seq_len": 2048,
        "shuffle": True,
        "shuffle_seed": 2024,
        "pad_to_max_seq_len": True,
    }
    assert set(config.callbacks) == {"speed_monitor", "lr_monitor", "mono_checkpoint_saver"}
    assert config.fsdp_config["verbose"] is False  # composer 0.32's FSDPConfig still has verbose and cpu offload
    text = new.read_text()
    assert text.startswith("# Upgraded from recgpt-7b-2024.yaml") and all(f"#   {line}" in text for line in CHANGES_7B)
    assert upgrade_recipe(load_recipe(new)).changes == []  # a fixed point: nothing left to upgrade


def test_untranslatable_keys_are_listed_and_nothing_is_written(tmp_path: Path):
    old = fixture("untranslatable-2024.yaml", tmp_path)
    with pytest.raises(UntranslatableRecipeError) as raised:
        upgrade_file(old)
    assert str(raised.value) == (
        f"{old}: 3 key(s) cannot be translated to llm-foundry 0.22; nothing was written. Change them in "
        "untranslatable-2024.yaml and run recgpt recipe upgrade again:\n"
        "  data_remote: 0.22 rejects unknown top-level keys and no ${...} refers to it: remove it (or move it under "
        "variables:)\n"
        "  model.attn_config.prefix_lm: 0.22 has no prefix-LM attention: train causally (prefix_lm: false)\n"
        "  train_loader.dataset.preprocessing_fn: recgpt_finetuning reads {prompt, response} JSON lines from hf_name "
        "(a folder, a .jsonl file or a hub dataset id) as they are, with no preprocessing_fn: write the data in that "
        "form and point hf_name at it"
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["untranslatable-2024.yaml"]


@pytest.mark.parametrize(
    ("recipe", "expected"),
    [
        ({"data_local": "d", "run_name": "${data_local}-run"}, "data_local: moved to variables.data_local"),
        ({"model_gauntlet": "eval/gauntlet.yaml"}, "model_gauntlet: renamed eval_gauntlet"),
        ({"global_seed": 3}, "global_seed: renamed seed"),
        ({"model": {"name": "mpt_causal_lm", "attn_config": {"attn_impl": "triton"}}}, "triton -> flash"),
        ({"optimizer": {"name": "clip_lion", "lr": 1.0, "eps": 1e-8}}, "optimizer.eps: removed (was 1e-08)"),
        ({"callbacks": {"fdiff": {}}}, "callbacks.fdiff: renamed fdiff_metrics"),
        (
            {"train_loader": {"name": "finetuning", "dataset": {"tokenizer_name": "${tokenizer_name}"}}},
            "train_loader.dataset.tokenizer_name: removed (the loader is given the recipe's tokenizer: section)",
        ),
        ({"model": {"name": "mpt_causal_lm", "verbose": 0}}, "model.verbose: removed"),
    ],
)
def test_each_rule_rewrites_its_key(recipe: dict, expected: str):
    result = upgrade_recipe(recipe)
    assert [change.line() for change in result.changes if expected in change.line()], result.changes
    assert result.untranslatable == []


def test_yaml_anchor_holders_move_to_variables(tmp_path: Path):
    old = tmp_path / "anchored.yaml"
    recipe = (FIXTURES / "tiny-mpt-2024.yaml").read_text()
    anchored = recipe.replace("train_loader:\n", "shared: &shared\n  split: train\ntrain_loader:\n", 1)
    old.write_text(anchored.replace("    split: train\n", "    <<: *shared\n", 1))
    new, result = upgrade_file(old)
    assert (
        "shared: moved to variables.shared (0.22 rejects unknown top-level keys; the YAML anchor it holds is "
        "merged where it is used)" in [change.line() for change in result.changes]
    )
    assert engine_config(new).train_loader["dataset"]["split"] == "train"


def test_references_move_with_the_scratch_key():
    result = upgrade_recipe(
        {"data_local": "d", "train_loader": {"name": "text", "dataset": {"local": "${data_local}/x"}}}
    )
    assert result.config == {"train_loader": {"name": "text", "dataset": {"local": "${variables.data_local}/x"}},
                             "variables": {"data_local": "d"}}  # fmt: skip


@pytest.mark.parametrize(
    ("recipe", "key", "reason"),
    [
        ({"variables": {"s": 1}, "s": 2, "seed": "${s}"}, "s", "variables.s exists too: rename one of them"),
        ({"model": {"name": "mpt_causal_lm", "attn_config": {"attn_impl": "xformers"}}},
         "model.attn_config.attn_impl", "'xformers' is not one of 0.22's choices ['flash', 'torch']"),
        ({"model": {"name": "mpt_causal_lm", "attn_config": {"qk_layernorm": True}}},
         "model.attn_config.qk_layernorm", "0.22's MPT has no attention option qk_layernorm"),
        ({"model": {"name": "hf_causal_lm", "pretrained_model_name_or_path": "gpt2", "use_cache": True}},
         "model.use_cache", "0.22's hf_causal_lm (ComposerHFCausalLM) has no such argument: remove it"),
        ({"model": {"name": "hf_prefix_lm"}}, "model.name", "0.22 removed hf_prefix_lm"),
        ({"optimizer": {"name": "decoupled_lionw_8b", "lr": 1.0}}, "optimizer.name", "'decoupled_lionw_8b' is not"),
        ({"optimizer": {"name": "decoupled_adamw", "lr": 1.0, "momentum": 0.9}}, "optimizer.momentum",
         "decoupled_adamw has no argument momentum"),
        ({"scheduler": {"name": "cosine_with_warmup", "t_warmup": "1ba", "warmup": 3}}, "scheduler.warmup",
         "cosine_with_warmup has no argument warmup"),
        ({"callbacks": {"health_checker": {}}}, "callbacks.health_checker", "not registered in 0.22"),
        ({"callbacks": {"speed_monitor": {"window": 5}}}, "callbacks.speed_monitor.window",
         "0.22's speed_monitor has no argument window"),
        ({"loggers": {"wandb": {"project": "p", "log_every": 3}}}, "loggers.wandb.log_every", "has no argument"),
        ({"fsdp_config": {"sharding_strategy": "FULL_SHARD", "min_params": 1e8}}, "fsdp_config.min_params",
         "composer 0.32's FSDPConfig has no such option (it would be ignored silently): remove it"),
        ({"fsdp_config": {"device_mesh": [8]}}, "fsdp_config.device_mesh", "data_parallel_shard_degree"),
        ({"train_loader": {"name": "finetuning", "dataset": {"decoder_only_format": False}}},
         "train_loader.dataset.decoder_only_format", "encoder-decoder formatting has no equivalent"),
        ({"train_loader": {"name": "finetuning", "dataset": {"remote": "s3://b/x"}}}, "train_loader.dataset.remote",
         "reads {prompt, response} JSON lines from hf_name"),
        ({"train_loader": {"name": "finetuning", "dataset": {"safe_load": True}}}, "train_loader.dataset.safe_load",
         "recgpt_finetuning has no dataset option safe_load; known: ['hf_name', 'split', 'max_seq_len', 'shuffle', "
         "'shuffle_seed', 'pad_to_max_seq_len', 'packing', 'loss_on_history']"),
        ({"train_loader": {"name": "finetuning", "dataset": {"hf_kwargs": {}}}}, "train_loader.dataset.hf_kwargs",
         "as they are, with no hf_kwargs: write the data in that form and point hf_name at it"),
        ({"train_loader": {"name": "finetuning", "dataset": {"target_responses": "all"}}},
         "train_loader.dataset.target_responses", "target_responses: all is not recgpt's loss"),
        ({"train_loader": {"name": "finetuning", "dataset": {}, "batch_size": 3}}, "train_loader.batch_size",
         "recgpt_finetuning has no loader option batch_size"),
        ({"eval_loader": [{"name": "finetune", "label": "x"}]}, "eval_loader.0.name", "not a 0.22 loader"),
    ],
)  # fmt: skip
def test_keys_without_a_translation_are_refused_with_what_to_do(recipe: dict, key: str, reason: str):
    refused = dict(upgrade_recipe(recipe).untranslatable)
    assert key in refused and reason in refused[key], refused


def test_packing_and_pad_trimming_translate_to_recgpt_options():
    dataset = {"hf_name": "d", "packing_ratio": "auto", "allow_pad_trimming": True, "target_prompts": "none"}
    result = upgrade_recipe({"train_loader": {"name": "finetuning", "dataset": dataset}})
    assert result.config["train_loader"]["dataset"] == {"hf_name": "d", "packing": True}
    assert result.untranslatable == []


def test_an_output_that_would_not_load_is_refused_and_not_written(tmp_path: Path):
    old = tmp_path / "no-duration.yaml"
    recipe = (FIXTURES / "tiny-mpt-2024.yaml").read_text()
    old.write_text(re.sub(r"(?m)^max_duration: .*\n", "", recipe))
    with pytest.raises(ValueError, match=r"no-duration.0.22.yaml: not written: .*does not load.*max_duration"):
        upgrade_file(old)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["no-duration.yaml"]


def test_existing_files_are_not_overwritten(tmp_path: Path):
    old = fixture("tiny-mpt-2024.yaml", tmp_path)
    taken = tmp_path / "taken.yaml"
    taken.write_text("keep: me\n")
    with pytest.raises(FileExistsError, match=r"taken.yaml: exists; give another NEW.yaml, or --force"):
        upgrade_file(old, taken)
    with pytest.raises(FileExistsError, match="is the recipe being upgraded"):
        upgrade_file(old, old, force=True)
    assert taken.read_text() == "keep: me\n"
    assert upgrade_file(old, taken, force=True)[0] == taken and "recgpt_finetuning" in taken.read_text()


def test_shipped_recipes_are_not_legacy():
    for path in sorted((ROOT / "configs").rglob("*.yaml")):
        if path.parent.name not in {"data", "eval", "serve"}:
            assert legacy_keys(load_recipe(path)) == [], path
            assert upgrade_recipe(load_recipe(path)).untranslatable == [], path


def test_cli_upgrade_prints_every_change(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    from recgpt.cli import main

    old = fixture("recgpt-7b-2024.yaml", tmp_path)
    new = tmp_path / "upgraded.yaml"
    main(["recipe", "upgrade", str(old), str(new)])
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"{old} -> {new}: 9 changes; it loads on llm-foundry 0.22 (TrainConfig checked)"
    assert lines[1:-1] == [f"  {line}" for line in CHANGES_7B]
    assert lines[-1] == f"Train it: composer --world_size N scripts/train.py {new} [key=value ...]"


def test_cli_upgrade_exits_2_on_refusals(tmp_path: Path):
    old = fixture("recgpt-7b-2024.yaml", tmp_path)
    taken = tmp_path / "taken.yaml"
    taken.write_text("keep: me\n")
    again = subprocess.run([RECGPT, "recipe", "upgrade", str(old), str(taken)], capture_output=True, text=True, env=ENV)
    assert again.returncode == 2 and again.stdout == "" and taken.read_text() == "keep: me\n"
    assert f"ERROR recgpt: {taken}: exists; give another NEW.yaml, or --force to overwrite it" in again.stderr
    bad = fixture("untranslatable-2024.yaml", tmp_path)
    refused = subprocess.run([RECGPT, "recipe", "upgrade", str(bad)], capture_output=True, text=True, env=ENV)
    assert refused.returncode == 2 and refused.stdout == ""
    assert f"ERROR recgpt: {bad}: 3 key(s) cannot be translated" in refused.stderr
    assert "\n  model.attn_config.prefix_lm: 0.22 has no prefix-LM attention" in refused.stderr
    assert not default_output(bad).exists()


def test_train_script_names_the_upgrade_command_before_the_engine_error():
    recipe = "tests/fixtures/recipes/recgpt-7b-2024.yaml"
    run = subprocess.run(
        [sys.executable, "scripts/train.py", recipe, "max_duration=1ba"], cwd=ROOT, capture_output=True, text=True,
        env=ENV,
    )  # fmt: skip
    assert run.returncode == 1 and run.stdout == ""
    expected = (
        f"{recipe} is a legacy recipe (2024 llm-foundry releases) that llm-foundry 0.22 rejects (global_seed, "
        "model.config_overrides.attn_config.prefix_lm, model.config_overrides.attn_config.attn_impl, optimizer.eps, "
        "callbacks.mono_ckpt_saver); upgrade it with: recgpt recipe upgrade tests/fixtures/recipes/recgpt-7b-2024.yaml "
        "tests/fixtures/recipes/recgpt-7b-2024.0.22.yaml; nothing was trained"
    )
    assert [line for line in run.stderr.splitlines() if "legacy recipe" in line] == [expected]
    assert "Unused parameters" not in run.stderr and "Traceback" not in run.stderr


@pytest.mark.e2e
def test_tiny_2024_recipe_trains_after_the_upgrade(tmp_path: Path, tokenizer_dir: Path):
    old = fixture("tiny-mpt-2024.yaml", tmp_path)
    new, result = upgrade_file(old)
    assert {change.key for change in result.changes} == {
        "global_seed",
        "tokenizer_name",
        "model.attn_config.prefix_lm",
        "train_loader.name",
        "train_loader.dataset.allow_pad_trimming",
        "train_loader.dataset.decoder_only_format",
        "optimizer.eps",
    }
    command = [str(Path(sys.executable).with_name("composer")), "-n", "1", "scripts/train.py", str(new)]
    run = subprocess.run(
        [*command, f"variables.tokenizer_name={tokenizer_dir}"],
        cwd=ROOT, capture_output=True, text=True, env=ENV, timeout=600,
    )  # fmt: skip
    output = run.stdout + run.stderr
    assert run.returncode == 0, output[-3000:]
    losses = [float(v) for v in re.findall(r"Train loss/train/total: ([0-9.]+)", output)]
    assert len(losses) == 3 and all(0 < loss < 20 for loss in losses)
    assert re.search(r"recgpt_finetuning: \d+ of 120 examples lost their oldest history lines", output)


def tiny_hf_mpt(folder: Path) -> Path:
    """A tiny MPT saved as a Hugging Face folder with 0.22's MPT code (what `checkpoint update-code` writes)."""
    from llmfoundry.models.mpt import MPTConfig, MPTForCausalLM
    from llmfoundry.utils.huggingface_hub_utils import edit_files_for_hf_compatibility

    attn = {"attn_impl": "torch", "alibi": True}
    config = MPTConfig(d_model=64, n_heads=4, n_layers=2, expansion_ratio=2, vocab_size=512, max_seq_len=256,
                       learned_pos_emb=False, attn_config=attn)  # fmt: skip
    MPTConfig.register_for_auto_class()
    MPTForCausalLM.register_for_auto_class("AutoModelForCausalLM")
    MPTForCausalLM(config).save_pretrained(str(folder))
    edit_files_for_hf_compatibility(str(folder), ("llmfoundry",))
    return folder


@pytest.mark.e2e
def test_upgraded_7b_recipe_shrunk_by_overrides_trains_on_cpu(tmp_path: Path, tokenizer_dir: Path):
    new, _ = upgrade_file(fixture("recgpt-7b-2024.yaml", tmp_path))
    shrink = {
        "variables.model": tiny_hf_mpt(tmp_path / "recgpt-7b-tiny"),
        "tokenizer.name": tokenizer_dir,
        "max_seq_len": 256,
        "model.config_overrides.attn_config.attn_impl": "torch",
        "precision": "fp32",
        "fsdp_config": "null",
        "global_train_batch_size": 2,
        "device_train_microbatch_size": 2,
        "device_eval_batch_size": 2,
        "max_duration": "2ba",
        "train_loader.dataset.hf_name": "sample_instruction_following_dataset",
        "train_loader.num_workers": 0,
        "train_loader.prefetch_factor": "null",
        "train_loader.persistent_workers": "false",
        "train_loader.pin_memory": "false",
        "callbacks": "null",
        "save_folder": tmp_path / "checkpoints",
    }
    command = [str(Path(sys.executable).with_name("composer")), "-n", "1", "scripts/train.py", str(new)]
    run = subprocess.run(
        [*command, *(f"{key}={value}" for key, value in shrink.items())],
        cwd=ROOT, capture_output=True, text=True, env=ENV, timeout=600,
    )  # fmt: skip
    output = run.stdout + run.stderr
    assert run.returncode == 0, output[-3000:]
    assert len(re.findall(r"Train loss/train/total: [0-9.]+", output)) == 2
