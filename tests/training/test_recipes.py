"""Every YAML under configs/ loads strictly; the 7B recipes build MPT-7B (RECGPT.md section 1) on the meta device."""

from __future__ import annotations

from pathlib import Path

import pytest
from omegaconf import OmegaConf

from recgpt.config import ConfigError, load_config
from recgpt.data.prepare_config import PrepareConfig
from recgpt.evaluation.runner import EvalConfig
from recgpt.serving.server import ServeConfig
from recgpt.training.dataloader import parse_dataset_config

ROOT = Path(__file__).resolve().parents[2]
RECIPES = sorted(p for p in (ROOT / "configs").rglob("*.yaml") if p.parent.name not in {"data", "eval", "serve"})
OWN_CONFIGS = {"data": PrepareConfig, "eval": EvalConfig, "serve": ServeConfig}


def llmfoundry_config(path: Path):
    """Resolve and validate a recipe the way `scripts/train.py` does before training."""
    from llmfoundry.command_utils.train import TRAIN_CONFIG_KEYS, TrainConfig
    from llmfoundry.utils.config_utils import make_dataclass_and_log_config

    _, config = make_dataclass_and_log_config(OmegaConf.load(path), TrainConfig, TRAIN_CONFIG_KEYS, transforms="all")
    return config


def test_every_shipped_config_is_checked():
    names = {p.relative_to(ROOT / "configs").as_posix() for p in (ROOT / "configs").rglob("*.yaml")}
    assert {
        "pre-training.yaml",
        "fine-tuning.yaml",
        "fine-tuning-lora.yaml",
        "demo/pre-training.yaml",
        "demo/fine-tuning.yaml",
        "data/movielens-100k.yaml",
        "eval/demo.yaml",
        "eval/full.yaml",
        "data/amazon-beauty-2014.yaml",
        "serve/demo.yaml",
    } <= names


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_training_recipe_loads_strictly(path: Path):
    from llmfoundry import registry

    config = llmfoundry_config(path)
    assert "launch" in path.read_text().lower() or "composer" in path.read_text()  # the header states the command
    assert config.optimizer["name"] in registry.optimizers
    assert config.scheduler["name"] in registry.schedulers
    for name in config.callbacks or {}:
        assert name in registry.callbacks or name in registry.callbacks_with_config, name
    loaders = [config.train_loader, *([config.eval_loader] if isinstance(config.eval_loader, dict) else [])]
    for loader in loaders:
        assert loader["name"] in registry.dataloaders
        if loader["name"] == "recgpt_finetuning":
            parse_dataset_config(loader["dataset"])
    assert config.global_train_batch_size % config.device_train_microbatch_size == 0
    model = config.model.get("config_overrides") or config.model
    packing = any(loader["dataset"].get("packing") for loader in loaders if loader["name"] == "recgpt_finetuning")
    if packing:  # packed examples must not attend to each other
        assert model["attn_config"]["attn_uses_sequence_id"] is True
    if config.autoresume:
        assert not config.save_overwrite and config.save_folder and config.run_name


@pytest.mark.parametrize("name", ["pre-training.yaml", "fine-tuning.yaml"])
def test_7b_recipes_build_mpt_7b(name: str):
    import torch
    from llmfoundry.models.mpt import MPTConfig, MPTForCausalLM

    config = llmfoundry_config(ROOT / "configs" / name)
    model_cfg = {k: v for k, v in config.model.items() if k not in {"name", "loss_fn"}}
    assert model_cfg["init_device"] == "meta"
    assert model_cfg["attn_config"]["attn_impl"] == "flash"  # flash-attn is GPU-only: build with the torch kernel
    model_cfg["attn_config"] = {**model_cfg["attn_config"], "attn_impl": "torch"}
    assert config.precision == "amp_bf16"
    assert config.fsdp_config["sharding_strategy"] == "FULL_SHARD"
    assert config.optimizer["name"] == "decoupled_lionw"
    assert config.max_duration == "2ep" and config.global_train_batch_size == 128
    assert config.autoresume is True
    with torch.device("meta"):  # 6.7B parameters: shapes only, no memory
        model = MPTForCausalLM(MPTConfig(**model_cfg))
    parameters = sum(p.numel() for p in model.parameters())
    assert 6.6e9 < parameters < 6.8e9  # MPT-7B: 6.65B
    mpt = model.config
    assert (mpt.n_layers, mpt.n_heads, mpt.d_model, mpt.max_seq_len, mpt.vocab_size) == (32, 32, 4096, 2048, 50432)
    assert mpt.attn_config["alibi"]
    assert not mpt.learned_pos_emb and mpt.no_bias


def test_pre_training_hyperparameters_match_the_paper():
    config = llmfoundry_config(ROOT / "configs" / "pre-training.yaml")
    assert config.optimizer["lr"] == 2.5e-5
    assert config.scheduler["t_warmup"] == "2000ba"
    assert config.max_seq_len == 2048


def test_fine_tuning_hyperparameters_match_the_released_yaml():
    config = llmfoundry_config(ROOT / "configs" / "fine-tuning.yaml")
    assert config.optimizer == {"name": "decoupled_lionw", "lr": 1e-5, "betas": [0.9, 0.98], "weight_decay": 1e-7}
    assert config.scheduler == {"name": "cosine_with_warmup", "t_warmup": "200ba", "alpha_f": 0.1}
    assert config.train_loader["name"] == "recgpt_finetuning"


def test_demo_recipes_are_cpu_safe():
    for name in ("demo/pre-training.yaml", "demo/fine-tuning.yaml"):
        config = llmfoundry_config(ROOT / "configs" / name)
        assert config.precision == "fp32" and config.fsdp_config is None
        assert config.train_loader["num_workers"] == 0
        attn = config.model.get("attn_config") or config.model["config_overrides"]["attn_config"]
        assert attn["attn_impl"] == "torch" and attn["alibi"]


@pytest.mark.parametrize(
    "path",
    [p for folder in OWN_CONFIGS for p in sorted((ROOT / "configs" / folder).glob("*.yaml"))],
    ids=lambda p: p.relative_to(ROOT).as_posix(),
)
def test_recgpt_configs_load_strictly(path: Path):
    load_config(OWN_CONFIGS[path.parent.name], path)


def test_unknown_keys_and_bad_types_name_the_file_and_key(tmp_path: Path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("output: x\nmax_user: 3\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: key 'max_user'"):
        load_config(PrepareConfig, bad)
    with pytest.raises(ConfigError, match=r"key 'min_user_interactions'"):
        load_config(PrepareConfig, None, ["min_user_interactions=many"])
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(PrepareConfig, tmp_path / "missing.yaml")


def test_variables_interpolate_and_overrides_apply(tmp_path: Path):
    path = tmp_path / "c.yaml"
    path.write_text("variables:\n  root: /tmp/x\noutput: ${variables.root}/data\nseed: 3\n")
    config = load_config(PrepareConfig, path, ["seed=4", "tokenizer.name=gpt2"])
    assert (config.output, config.seed, config.tokenizer.name) == ("/tmp/x/data", 4, "gpt2")


def test_lora_recipe_adapts_mpt_projections_on_one_gpu():
    from peft import LoraConfig

    config = llmfoundry_config(ROOT / "configs" / "fine-tuning-lora.yaml")
    assert config.model["name"] == "hf_causal_lm" and config.fsdp_config is None
    lora = dict(config.model["peft_config"])
    assert lora.pop("peft_type") == "LORA"
    adapter = LoraConfig(**lora)
    assert set(adapter.target_modules) == {"Wqkv", "out_proj", "up_proj", "down_proj"}
