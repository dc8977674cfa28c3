"""Composer callbacks registered with llm-foundry through entry points (``recgpt_*`` keys)."""

from __future__ import annotations

import logging
from typing import Any

from composer.core import Callback, State
from composer.loggers import Logger

log = logging.getLogger(__name__)


def composer_model(state: State) -> Any:
    """The trainer's ComposerModel (it holds the tokenizer), unwrapped from DistributedDataParallel when need be."""
    from torch.nn.parallel import DistributedDataParallel

    model: Any = state.model
    return model.module if isinstance(model, DistributedDataParallel) else model


class SaveRemoteCode(Callback):
    """Make Hugging Face exports of remote-code models (MPT) include their modeling code.

    With the pinned transformers 4.51.3, a model loaded with ``trust_remote_code`` from a local folder whose config
    class is already registered loses its ``_auto_class`` tag (fixed upstream after 4.51), so ``save_pretrained``
    copies ``configuration_mpt.py`` but not ``modeling_mpt.py``, and the export from ``hf_checkpointer`` cannot be
    loaded again. This callback tags the model class for ``AutoModelForCausalLM`` when training starts, before any
    export. Add it to every recipe whose model is ``hf_causal_lm`` with ``trust_remote_code``::

        callbacks:
          recgpt_save_remote_code: {}
    """

    def fit_start(self, state: State, logger: Logger) -> None:
        """Tag the Hugging Face model's class, if it is remote code without an auto class.

        The model is found among the modules, so wrappers (composer's, DDP's) do not hide it.
        """
        del logger
        from transformers import PreTrainedModel

        model: Any = next((m for m in state.model.modules() if isinstance(m, PreTrainedModel)), None)
        if model is None:
            return
        model_class = type(model)
        if model_class.__module__.startswith("transformers_modules") and getattr(model, "_auto_class", None) is None:
            model_class.register_for_auto_class("AutoModelForCausalLM")
            log.info("registered %s for AutoModelForCausalLM so exports include its code", model_class.__name__)


class ExportAdapter(Callback):
    """Save a LoRA run's adapter (and tokenizer) as a Hugging Face folder when training ends.

    llm-foundry's ``hf_checkpointer`` cannot export a PEFT adapter on MPT: after saving it, it edits the MPT code
    files and fails on the missing ``config.json``. This writes the adapter with PEFT's own ``save_pretrained``;
    its ``adapter_config.json`` names the base model, onto which ``recgpt evaluate`` and ``recgpt recommend``
    load and merge it. The folder is replaced atomically. Use it instead of ``hf_checkpointer``::

        callbacks:
          recgpt_export_adapter: {save_folder: runs/lora/adapter}
    """

    def __init__(self, save_folder: str) -> None:
        self.save_folder = save_folder

    def fit_end(self, state: State, logger: Logger) -> None:
        """Write the adapter from the global rank 0."""
        del logger
        from pathlib import Path

        from composer.utils import dist

        from recgpt.files import atomic_directory

        if dist.get_global_rank() != 0:
            return
        from peft import PeftModel

        model = next((m for m in state.model.modules() if isinstance(m, PeftModel)), None)
        if model is None:
            raise ValueError("recgpt_export_adapter: the model has no PEFT adapter (set model.peft_config)")
        tokenizer = getattr(composer_model(state), "tokenizer", None)
        with atomic_directory(Path(self.save_folder)) as staging:
            model.save_pretrained(str(staging))
            if tokenizer is not None:
                tokenizer.save_pretrained(str(staging))
        log.info("saved the LoRA adapter to %s", self.save_folder)


class RecEval(Callback):
    """Next-item HR@K / NDCG@K and rating RMSE / MAE on a validation sample, every ``interval``, logged like the loss.

    Next item uses catalogue-constrained beam search (every beam is a real item, so no grounding model is needed
    during training); rating uses the expected rating over the rating strings (it always parses). Both run on the
    shared prompt cache (``recgpt.inference.decoding``), in eval mode under the run's precision, and the model is
    put back in training mode afterwards. Under FSDP every rank evaluates the same sample, so the sharded forward
    passes stay in step. Metrics are logged as ``metrics/rec_eval/HR@10``, ``metrics/rec_eval/RMSE``, ...::

        callbacks:
          recgpt_rec_eval:
            data: artifacts/demo/data     # a folder written by `recgpt data prepare`
            interval: 500ba
            max_users: 64

    Args:
        data: A prepared data folder; its benchmark's ``validation.jsonl`` (or ``split``) is the sample.
        interval: How often to evaluate (a composer time string such as ``500ba`` or ``1ep``), and at the end.
        max_users: The first N users of the split.
        benchmark: The benchmark source; None picks the only one.
        split: ``validation`` (default) or ``test``.
        ks: Cut-offs of HR@K and NDCG@K.
        num_beams: Beams of the constrained search.
        max_new_tokens: Longest item line.
        batch_size: Prompts per beam-search call.
        exclude_seen: Never complete an item from the user's history.
    """

    def __init__(
        self,
        data: str,
        interval: str = "500ba",
        max_users: int = 64,
        benchmark: str | None = None,
        split: str = "validation",
        ks: tuple[int, ...] | list[int] = (10,),
        num_beams: int = 10,
        max_new_tokens: int = 32,
        batch_size: int = 16,
        exclude_seen: bool = True,
    ) -> None:
        from pathlib import Path

        from composer.utils.misc import create_interval_scheduler

        from recgpt.evaluation.runner import find_benchmark, read_rows

        self.benchmark = find_benchmark(Path(data), benchmark)
        rows = read_rows(self.benchmark.folder / f"{split}.jsonl")
        users = set(list(dict.fromkeys(row["user_id"] for row in rows))[:max_users])
        self.next_rows = [r for r in rows if r["task"] == "next_item" and r["user_id"] in users]
        self.rating_rows = [r for r in rows if r["task"] == "rating" and r["user_id"] in users]
        if not self.next_rows and not self.rating_rows:
            raise ValueError(f"recgpt_rec_eval: {self.benchmark.folder / split}.jsonl has no rows")
        train = read_rows(self.benchmark.folder / "train.jsonl")
        self.support = sorted({r for row in train for r in row["ratings"] if r is not None})
        self.excluded = [set(row["history_item_ids"]) if exclude_seen else set() for row in self.next_rows]
        self.ks = list(ks)
        self.num_beams, self.max_new_tokens, self.batch_size = num_beams, max_new_tokens, batch_size
        self.should_run = create_interval_scheduler(interval, checkpoint_events=False)
        self.trie: Any = None
        self.last_batch = -1

    def run_event(self, event: Any, state: State, logger: Logger) -> None:
        """Evaluate when the interval says so (and at the end of training), once per batch count."""
        if self.should_run(state, event) and int(state.timestamp.batch) != self.last_batch:
            self.last_batch = int(state.timestamp.batch)
            logger.log_metrics(self.evaluate(state))

    def evaluate(self, state: State) -> dict[str, float]:
        """The metrics of the current weights on the sample."""
        import torch
        from composer.core import get_precision_context
        from transformers import PreTrainedModel

        from recgpt.evaluation import next_item, rating
        from recgpt.evaluation.grounding import load_catalog
        from recgpt.evaluation.metrics import mae, ranking_metrics, rmse

        model: Any = next(m for m in state.model.modules() if isinstance(m, PreTrainedModel))
        tokenizer: Any = composer_model(state).tokenizer
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token
        if self.trie is None:
            catalogue = next_item.Catalogue.build(*load_catalog(self.benchmark.folder / "items.jsonl"), tokenizer)
            self.trie = catalogue.trie(tokenizer.eos_token_id)
        metrics: dict[str, float] = {}
        was_training = model.training
        model.eval()
        try:
            with torch.no_grad(), get_precision_context(state.precision):
                if self.next_rows:
                    ranked = next_item.constrained_beam(
                        model,
                        tokenizer,
                        self.next_rows,
                        self.trie,
                        self.excluded,
                        num_beams=self.num_beams,
                        max_new_tokens=self.max_new_tokens,
                        batch_size=self.batch_size,
                    )
                    targets = [row["target_item_id"] for row in self.next_rows]
                    metrics.update(ranking_metrics([r.items for r in ranked], targets, self.ks))
                if self.rating_rows:
                    predicted = rating.expected(
                        model,
                        tokenizer,
                        [row["prompt"] for row in self.rating_rows],
                        self.benchmark.rating_scale,
                        self.support,
                    )
                    values = [float(p.value) for p in predicted]  # type: ignore[arg-type]  # expected always parses
                    truth = [float(row["target_rating"]) for row in self.rating_rows]
                    metrics.update(RMSE=rmse(values, truth), MAE=mae(values, truth))
        finally:
            model.train(was_training)
        log.info("rec_eval at %s: %s", state.timestamp.batch, {k: round(v, 4) for k, v in metrics.items()})
        return {f"metrics/rec_eval/{name}": value for name, value in metrics.items()}
