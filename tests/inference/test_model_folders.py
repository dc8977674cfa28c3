"""Model folders that do not load say why and which ``recgpt checkpoint`` command fixes them.

The folders are built the way a 2024 hub release looks to the pinned transformers: a tiny MPT saved with its
remote code, then that code replaced by code importing a name transformers 4.51 no longer has; or weights saved
as a pickle holding more than tensors, which torch's weights-only loader refuses.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from recgpt.training.checkpoints import ModelFolderError, _current_mpt_code, convert_to_safetensors, update_mpt_code
from tests.conftest import ROOT

BAD_IMPORT = "from transformers.models.llama.modeling_llama import LlamaDynamicNTKScalingRotaryEmbedding\n"


def tiny_folder(parent: Path, name: str, tokenizer_dir: Path, safe: bool = True) -> tuple[Path, dict]:
    """A tiny MPT folder (config, weights, remote code, tokenizer) named ``name``, and its weights."""
    from llmfoundry.models.mpt import MPTConfig, MPTForCausalLM
    from transformers import AutoTokenizer

    from tests.training.test_tiny_model import TINY

    folder = _current_mpt_code(parent / name)
    tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    torch.manual_seed(0)
    model = MPTForCausalLM(MPTConfig(vocab_size=len(tokenizer), **TINY))
    if not safe:
        for path in folder.glob("*.safetensors"):
            path.unlink()
    model.save_pretrained(str(folder), safe_serialization=safe)
    tokenizer.save_pretrained(str(folder))
    return folder, {k: v.clone() for k, v in model.state_dict().items()}


def outdated_code(folder: Path) -> Path:
    """Make the folder's remote code import what 2024's MPT code imported from transformers."""
    modeling = folder / "modeling_mpt.py"
    modeling.write_text(modeling.read_text(encoding="utf-8") + "\n" + BAD_IMPORT, encoding="utf-8")
    return folder


def refused_pickle(folder: Path) -> Path:
    """Re-save ``pytorch_model.bin`` with the training arguments beside the tensors, as old checkpoints did."""
    weights = folder / "pytorch_model.bin"
    state = torch.load(weights, weights_only=True)
    torch.save({**state, "args": argparse.Namespace(lr=1e-5)}, weights)
    return folder


def test_a_2024_mpt_folder_names_update_code_and_the_command_works(tmp_path: Path, tokenizer_dir: Path):
    from recgpt.inference.generate import load_model

    folder, weights = tiny_folder(tmp_path, "recgpt-2024-inprocess", tokenizer_dir)
    outdated_code(folder)
    with pytest.raises(ModelFolderError) as raised:
        load_model(folder, device="cpu")
    message = str(raised.value)
    updated = tmp_path / "recgpt-2024-inprocess-updated"
    assert message.startswith(f"{folder}: the folder's own model code (modeling_mpt.py line ")
    assert "cannot import name 'LlamaDynamicNTKScalingRotaryEmbedding'" in message
    assert f"  recgpt checkpoint update-code {folder} {updated}\nthen load {updated}" in message
    assert isinstance(raised.value.__cause__, ImportError)
    update_mpt_code(str(folder), updated)  # the command the message gives
    model, _ = load_model(updated, device="cpu")
    for name, tensor in weights.items():
        torch.testing.assert_close(model.state_dict()[name], tensor)


def test_remote_code_of_other_models_is_named_without_update_code(tmp_path: Path, tokenizer_dir: Path):
    from recgpt.inference.generate import load_model

    folder, _ = tiny_folder(tmp_path, "custom-model", tokenizer_dir)
    outdated_code(folder)
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "model_type": "custom"}))
    with pytest.raises(ModelFolderError, match=r"rewrites MPT folders only; this one is 'custom'"):
        load_model(folder, device="cpu")


def test_plain_pickled_weights_load_with_the_weights_only_loader(tmp_path: Path, tokenizer_dir: Path):
    from recgpt.inference.generate import load_model

    folder, weights = tiny_folder(tmp_path, "plain-bin", tokenizer_dir, safe=False)
    assert not list(folder.glob("*.safetensors")) and (folder / "pytorch_model.bin").is_file()
    model, _ = load_model(folder, device="cpu")
    torch.testing.assert_close(model.state_dict()["transformer.wte.weight"], weights["transformer.wte.weight"])


def test_a_refused_pickle_says_so_and_to_safetensors_converts_it(tmp_path: Path, tokenizer_dir: Path, caplog):
    from recgpt.inference.generate import load_model

    folder, weights = tiny_folder(tmp_path, "refused-bin", tokenizer_dir, safe=False)
    refused_pickle(folder)
    with pytest.raises(ModelFolderError) as raised:
        load_model(folder, device="cpu")
    message = str(raised.value)
    converted = tmp_path / "refused-bin-safetensors"
    assert message.startswith(f"{folder}: its weights (pytorch_model.bin) are a pickle that torch's weights-only")
    assert "(it holds argparse.Namespace, which is not a tensor)" in message
    assert f"  recgpt checkpoint to-safetensors {folder} {converted} --unpickle\nthen load {converted}" in message
    with pytest.raises(ValueError, match=r"pytorch_model.bin: torch's weights-only loader refused it .*--unpickle"):
        convert_to_safetensors(str(folder), converted)
    assert not converted.exists()
    convert_to_safetensors(str(folder), converted, unpickle=True)
    assert "dropping 1 entries that are not tensors: ['args']" in caplog.text
    assert not list(converted.glob("*.bin")) and (converted / "model.safetensors").is_file()
    model, _ = load_model(converted, device="cpu")
    for name, tensor in weights.items():
        torch.testing.assert_close(model.state_dict()[name], tensor)


def test_a_truncated_pickle_is_called_truncated_not_tf(tmp_path: Path, tokenizer_dir: Path):
    from recgpt.inference.generate import load_model

    folder, _ = tiny_folder(tmp_path, "cut-bin", tokenizer_dir, safe=False)
    weights = folder / "pytorch_model.bin"
    weights.write_bytes(weights.read_bytes()[:1000])
    with pytest.raises(ModelFolderError, match=r"torch could not read pytorch_model.bin .*truncated, corrupt") as e:
        load_model(folder, device="cpu")
    assert "TF 2.0" not in str(e.value)


def test_conversions_never_replace_an_unrelated_folder(tmp_path: Path, tokenizer_dir: Path):
    folder, _ = tiny_folder(tmp_path, "keep-out", tokenizer_dir, safe=False)
    unrelated = tmp_path / "notes"
    unrelated.mkdir()
    (unrelated / "todo.txt").write_text("mine")
    with pytest.raises(ValueError, match=rf"output {unrelated}: the folder exists and is not empty"):
        update_mpt_code(str(folder), unrelated)
    with pytest.raises(ValueError, match=rf"output {unrelated}: the folder exists and is not empty"):
        convert_to_safetensors(str(folder), unrelated)
    assert (unrelated / "todo.txt").read_text() == "mine"


def recgpt(*args: str, modules: Path) -> subprocess.CompletedProcess:
    """The ``recgpt`` console script, offline, with its own module cache for remote code."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_MODULES_CACHE": str(modules)}
    command = [str(Path(sys.executable).parent / "recgpt"), *args]
    return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)


def test_recgpt_recommend_on_a_2024_hub_folder_gives_the_update_command(prepared: Path, tmp_path: Path):
    folder = outdated_code(tiny_folder(tmp_path, "RecGPT-7B-Instruct", prepared / "tokenizer")[0])
    history = tmp_path / "history.json"
    from recgpt.evaluation.runner import find_benchmark, read_rows

    first = read_rows(find_benchmark(prepared, None).folder / "items.jsonl")[0]
    history.write_text(json.dumps([first["item_id"]]))
    result = recgpt(
        "recommend",
        "--model",
        str(folder),
        "--catalog",
        str(prepared),
        "--history",
        str(history),
        modules=tmp_path / "modules",
    )
    assert result.returncode == 2, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    updated = shlex.quote(str(tmp_path / "RecGPT-7B-Instruct-updated"))
    assert f"  recgpt checkpoint update-code {folder} {updated}" in result.stderr
    assert "LlamaDynamicNTKScalingRotaryEmbedding" in result.stderr


def test_recgpt_evaluate_on_a_refused_pickle_explains_and_to_safetensors_fixes_it(prepared: Path, tmp_path: Path):
    folder = refused_pickle(tiny_folder(tmp_path, "old-bin", prepared / "tokenizer", safe=False)[0])
    overrides = [f"model={folder}", f"data={prepared}", f"output={tmp_path / 'eval'}", "max_users=2"]
    result = recgpt("evaluate", "configs/eval/demo.yaml", *overrides, modules=tmp_path / "modules")
    assert result.returncode == 2, result.stderr[-3000:]
    assert "Traceback" not in result.stderr and "set from_tf=True" not in result.stderr
    assert "are a pickle that torch's weights-only loader refused (it holds argparse.Namespace" in result.stderr
    converted = tmp_path / "old-bin-safetensors"
    assert f"recgpt checkpoint to-safetensors {folder} {converted} --unpickle" in result.stderr
    refused = recgpt("checkpoint", "to-safetensors", str(folder), str(converted), modules=tmp_path / "modules")
    assert refused.returncode == 2 and "add --unpickle" in refused.stderr and not converted.exists()
    done = recgpt("checkpoint", "to-safetensors", str(folder), str(converted), "--unpickle", modules=tmp_path / "m")
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip() == str(converted) and (converted / "model.safetensors").is_file()


def test_recgpt_serve_on_a_2024_hub_folder_exits_before_listening(prepared: Path, tmp_path: Path):
    folder = outdated_code(tiny_folder(tmp_path, "mpt-7b", prepared / "tokenizer")[0])
    overrides = [f"model={folder}", f"catalog={prepared}", "port=0"]
    result = recgpt("serve", "configs/serve/demo.yaml", *overrides, modules=tmp_path / "modules")
    assert result.returncode == 2, result.stderr[-3000:]
    assert "Traceback" not in result.stderr and "serving on" not in result.stderr
    assert f"recgpt checkpoint update-code {folder} {tmp_path / 'mpt-7b-updated'}" in result.stderr
