"""The in-training evaluation callback: registered, runs on its interval inside composer's trainer, logs metrics."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest

from tests.training.test_tiny_model import TINY


def test_rec_eval_is_registered():
    from llmfoundry import registry

    from recgpt.training.callbacks import RecEval

    assert registry.callbacks.get("recgpt_rec_eval") is RecEval


@pytest.mark.parametrize("method", ["constrained_beam", "likelihood"])
def test_rec_eval_logs_next_item_and_rating_metrics_on_its_interval(prepared: Path, tmp_path: Path, method: str):
    from composer import Trainer
    from composer.loggers import InMemoryLogger
    from llmfoundry.data.dataloader import build_dataloader
    from llmfoundry.models.mpt import ComposerMPTCausalLM
    from mlflow.utils.validation import _validate_metric_name
    from transformers import AutoTokenizer

    from recgpt.training.callbacks import RecEval

    tokenizer = AutoTokenizer.from_pretrained(str(prepared / "tokenizer"))
    model = ComposerMPTCausalLM(tokenizer=tokenizer, vocab_size=len(tokenizer), loss_fn="torch_crossentropy", **TINY)
    loader = build_dataloader(
        {
            "name": "recgpt_finetuning",
            "dataset": {"hf_name": str(prepared / "instruct"), "split": "train", "max_seq_len": 128, "shuffle": False},
        },
        tokenizer,
        4,
    )
    curve = tmp_path / "curve.jsonl"
    curve.write_text('{"batch": 9, "tokens": 1, "target_tokens": 1}\n')  # an earlier run's curve is replaced
    callback = RecEval(
        str(prepared), interval="2ba", max_users=6, num_beams=3, max_new_tokens=12, method=method, curve=str(curve)
    )
    memory = InMemoryLogger()
    trainer = Trainer(
        model=model,
        train_dataloader=loader,
        max_duration="3ba",
        callbacks=[callback],
        loggers=[memory],
        device="cpu",
        progress_bar=False,
        log_to_console=False,
        seed=3,
    )
    trainer.fit()
    hits = memory.data["metrics/rec_eval/HR_at_10"]
    rmse = memory.data["metrics/rec_eval/RMSE"]
    for name in (key for key in memory.data if key.startswith("metrics/rec_eval/")):
        _validate_metric_name(name)  # MLflow would refuse the whole batch of metrics (the loss too)
    # batch 2 and the end of training (batch 3)
    assert [int(timestamp.batch) for timestamp, _ in hits] == [2, 3]
    assert all(0.0 <= value <= 1.0 for _, value in hits)
    assert all(0.0 < value < 5.0 for _, value in rmse)  # expected ratings lie inside the 1..5 support
    assert model.model.training  # put back in training mode
    # the curve: one point per evaluation, tokens counted from the batches (4 sequences each, every real token)
    points = [json.loads(line) for line in curve.read_text().splitlines()]
    assert [p["batch"] for p in points] == [2, 3]
    assert [p["HR@10"] for p in points] == [value for _, value in hits]
    sizes = [int(batch["attention_mask"].sum()) for batch in itertools.islice(iter(loader.dataloader), 3)]
    assert [p["tokens"] for p in points] == [sum(sizes[:2]), sum(sizes)]
    assert 0 < points[-1]["target_tokens"] < points[-1]["tokens"]
    assert [value for _, value in memory.data["metrics/rec_eval/tokens"]] == [p["tokens"] for p in points]


def test_rec_eval_refuses_a_curve_path_holding_something_else(prepared: Path, tmp_path: Path):
    from recgpt.files import OutputFolderError
    from recgpt.training.callbacks import RecEval

    notes = tmp_path / "notes.jsonl"
    notes.write_text('{"text": "a user\'s file"}\n')
    with pytest.raises(OutputFolderError, match=r"recgpt_rec_eval\.curve .*notes\.jsonl"):
        RecEval(str(prepared), curve=str(notes))
    assert notes.read_text() == '{"text": "a user\'s file"}\n'
    with pytest.raises(ValueError, match=r"recgpt_rec_eval\.method"):
        RecEval(str(prepared), method="beam_grounded")


def test_rec_eval_rejects_an_empty_split(prepared: Path, tmp_path: Path):
    import shutil

    from recgpt.training.callbacks import RecEval

    copy = tmp_path / "data"
    shutil.copytree(prepared, copy)
    for path in (copy / "benchmark").glob("*/validation.jsonl"):
        path.write_text("")
    with pytest.raises(ValueError, match=r"validation\.jsonl has no rows"):
        RecEval(str(copy))
