"""Composer callbacks registered with llm-foundry through entry points (``recgpt_*`` keys)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from composer.core import Callback, State
from composer.loggers import Logger
from llmfoundry.interfaces import CallbackWithConfig

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
    load and merge it. The folder is replaced atomically, and only when it is an adapter export already (it holds
    ``adapter_config.json``): any other non-empty folder is refused, when training starts and again at the end.
    With ``recgpt_model_card`` in the recipe, the folder gets its model card. Use it instead of ``hf_checkpointer``::

        callbacks:
          recgpt_export_adapter: {save_folder: runs/lora/adapter}
    """

    def __init__(self, save_folder: str) -> None:
        self.save_folder = save_folder

    def check_replace(self, folder: Path) -> None:
        """``atomic_directory``'s check: only an earlier adapter export may be replaced.

        Raises:
            OutputFolderError: Naming the key and the folder.
        """
        from recgpt.files import OutputFolderError

        if not (folder / "adapter_config.json").is_file():
            raise OutputFolderError(
                f"recgpt_export_adapter.save_folder {folder}: the folder is not empty and is not a LoRA adapter "
                "export (no adapter_config.json), so it is left alone; choose a new or empty folder, or move it away"
            )

    def fit_start(self, state: State, logger: Logger) -> None:
        """Refuse a foreign ``save_folder`` before training, not after it."""
        del state, logger
        folder = Path(self.save_folder)
        if folder.is_dir() and any(folder.iterdir()):
            self.check_replace(folder)

    def fit_end(self, state: State, logger: Logger) -> None:
        """Write the adapter (and the card of ``recgpt_model_card``, if the recipe has it) from the global rank 0."""
        del logger
        from composer.utils import dist

        from recgpt.files import atomic_directory

        if dist.get_global_rank() != 0:
            return
        from peft import PeftModel

        model = next((m for m in state.model.modules() if isinstance(m, PeftModel)), None)
        if model is None:
            raise ValueError("recgpt_export_adapter: the model has no PEFT adapter (set model.peft_config)")
        tokenizer = getattr(composer_model(state), "tokenizer", None)
        card = next((c for c in state.callbacks if isinstance(c, ModelCardWriter)), None)
        with atomic_directory(Path(self.save_folder), check_replace=self.check_replace) as staging:
            model.save_pretrained(str(staging))
            if tokenizer is not None:
                tokenizer.save_pretrained(str(staging))
            if card is not None:  # replaces the generic README.md PEFT writes
                (staging / "README.md").write_text(card.card_text(adapter=True), encoding="utf-8")
        log.info("saved the LoRA adapter to %s", self.save_folder)


class ModelCardWriter(CallbackWithConfig):
    """Write a Hugging Face model card (``README.md``, ``recgpt.model_card``) into the run's exports at the end.

    It covers the ``hf_checkpointer`` export (local folders) and, through ``recgpt_export_adapter``, the LoRA
    adapter. The card states the training data (from the manifest.json of the prepared folder the train loader
    reads, or ``data``), the recipe, the prompt template, the license terms, and an empty evaluation section that
    ``recgpt evaluate`` fills. llm-foundry passes the resolved recipe as ``train_config``::

        callbacks:
          recgpt_model_card: {base_model: vinai/RecGPT-7B}   # every key optional

    Args:
        train_config: The resolved recipe (given by llm-foundry).
        base_model: The hub id the run started from, when the recipe does not show it (``mpt_causal_lm`` with
            converted weights); an ``hf_causal_lm`` start is found on its own.
        license: The weights' license id for the card (RecGPT derivatives are always ``cc-by-nc-4.0``).
        data: The prepared data folder, when it is not the one the train loader reads.
    """

    def __init__(
        self,
        train_config: Any,
        base_model: str | None = None,
        license: str | None = None,
        data: str | None = None,
    ) -> None:
        from omegaconf import DictConfig, OmegaConf

        plain = OmegaConf.to_container(train_config, resolve=True) if isinstance(train_config, DictConfig) else None
        source = plain if isinstance(plain, dict) else train_config
        self.train_config: dict[str, Any] = {str(key): value for key, value in source.items()}
        self.base_model, self.license, self.data = base_model, license, data

    def card_text(self, adapter: bool) -> str:
        """The card of this run's export, as ``README.md`` text."""
        import json

        from recgpt.model_card import find_manifest, training_card, training_data_path

        manifest_path = find_manifest(self.data or training_data_path(self.train_config))
        manifest = json.loads(manifest_path.read_text(encoding="utf-8")) if manifest_path else None
        return str(training_card(self.train_config, manifest, adapter, self.base_model, self.license).content)

    def fit_end(self, state: State, logger: Logger) -> None:
        """Write the card into every local ``hf_checkpointer`` export, from the global rank 0."""
        del logger
        from composer.utils import dist, format_name_with_dist_and_time
        from llmfoundry.callbacks import HuggingFaceCheckpointer

        from recgpt.files import write_text_atomic

        if dist.get_global_rank() != 0:
            return
        for callback in state.callbacks:
            if not isinstance(callback, HuggingFaceCheckpointer) or callback.remote_ud is not None:
                continue
            where = str(Path(callback.save_dir_format_str) / callback.huggingface_folder_name_fstr)
            folder = Path(format_name_with_dist_and_time(where, state.run_name, state.timestamp))
            if not folder.is_dir():
                log.warning("recgpt_model_card: no export at %s to write a card into", folder)
                continue
            write_text_atomic(folder / "README.md", self.card_text(adapter=False))
            log.info("wrote the model card %s", folder / "README.md")


class RecEval(Callback):
    """Next-item HR@K / NDCG@K and rating RMSE / MAE on a validation sample, every ``interval``, logged like the loss.

    Next item uses catalogue-constrained beam search (every beam is a real item, so no grounding model is needed
    during training) or, with ``method: likelihood``, the exact top-K of the catalogue by likelihood (what
    ``recgpt evaluate`` reports as the model's best method); rating uses the expected rating over the rating
    strings (it always parses). Both run in eval mode under the run's precision, and the model is put back in
    training mode afterwards. Under FSDP every rank evaluates the same sample, so the sharded forward passes stay
    in step. Metrics are logged as ``metrics/rec_eval/HR_at_10``, ``metrics/rec_eval/RMSE``, ... (no ``@``:
    MLflow refuses it in names), with ``metrics/rec_eval/tokens``, the training tokens seen so far (composer's
    own token count stays 0 under llm-foundry's loaders). With ``curve``, every evaluation is also a line of a
    JSONL file (``{"batch", "tokens", "target_tokens", "HR@10", ...}``), rewritten atomically each time, that
    ``recgpt evaluate``'s ``training_curve`` plots in its report::

        callbacks:
          recgpt_rec_eval:
            data: artifacts/demo/data     # a folder written by `recgpt data prepare`
            interval: 500ba
            max_users: 64
            curve: artifacts/demo/fine-tuning/rec_eval.jsonl

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
        method: ``constrained_beam`` or ``likelihood``.
        curve: A JSONL file for the curve of metrics against training tokens; a file there must be an earlier
            curve (it is replaced), anything else is refused.
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
        method: str = "constrained_beam",
        curve: str | None = None,
    ) -> None:
        from composer.utils.misc import create_interval_scheduler

        from recgpt.evaluation.runner import find_benchmark, read_rows

        if method not in {"constrained_beam", "likelihood"}:
            raise ValueError(f"recgpt_rec_eval.method: 'constrained_beam' or 'likelihood', got {method!r}")
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
        self.method = method
        self.curve = Path(curve) if curve is not None else None
        if self.curve is not None:
            check_curve(self.curve)
        self.should_run = create_interval_scheduler(interval, checkpoint_events=False)
        self.catalogue: Any = None
        self.trie: Any = None
        self.last_batch = -1
        self.tokens = 0  # this process's training tokens (attention mask), and those that carried loss
        self.target_tokens = 0
        self.points: list[dict[str, float]] = []

    def state_dict(self) -> dict[str, Any]:
        """Token counts and the curve so far, so an autoresumed run continues them."""
        return {"tokens": self.tokens, "target_tokens": self.target_tokens, "points": self.points}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore ``state_dict``'s counts and curve."""
        self.tokens, self.target_tokens = int(state["tokens"]), int(state["target_tokens"])
        self.points = list(state["points"])

    def run_event(self, event: Any, state: State, logger: Logger) -> None:
        """Count each batch's tokens; evaluate when the interval says so (and at the end), once per batch count."""
        from composer.core import Event

        if event == Event.BATCH_END:
            self.count_tokens(state.batch)
        if self.should_run(state, event) and int(state.timestamp.batch) != self.last_batch:
            self.last_batch = int(state.timestamp.batch)
            logger.log_metrics(self.evaluate(state))

    def count_tokens(self, batch: Any) -> None:
        """Add a batch's real (unpadded) tokens and its loss-bearing ones (labels not -100)."""
        if not isinstance(batch, dict) or "input_ids" not in batch:
            return
        mask = batch.get("attention_mask")
        self.tokens += int(mask.sum()) if mask is not None else int(batch["input_ids"].numel())
        labels = batch.get("labels")
        if labels is not None:
            self.target_tokens += int((labels[:, 1:] != -100).sum())  # the first label never carries loss

    def evaluate(self, state: State) -> dict[str, float]:
        """The metrics of the current weights on the sample (every rank evaluates; the token counts are summed)."""
        import torch
        from composer.core import get_precision_context
        from composer.utils import dist
        from transformers import PreTrainedModel

        counts = torch.tensor([self.tokens, self.target_tokens], dtype=torch.float64)
        dist.all_reduce(counts, reduce_operation="SUM")
        model: Any = next(m for m in state.model.modules() if isinstance(m, PreTrainedModel))
        tokenizer: Any = composer_model(state).tokenizer
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token
        metrics: dict[str, float] = {}
        was_training = model.training
        model.eval()
        try:
            with torch.no_grad(), get_precision_context(state.precision):
                if self.next_rows:
                    metrics.update(self.next_item_metrics(model, tokenizer))
                if self.rating_rows:
                    metrics.update(self.rating_metrics(model, tokenizer))
        finally:
            model.train(was_training)
        tokens, targets = int(counts[0]), int(counts[1])
        log.info(
            "rec_eval at %s (%d tokens): %s",
            state.timestamp.batch,
            tokens,
            {k: round(v, 4) for k, v in metrics.items()},
        )
        self.record(int(state.timestamp.batch), tokens, targets, metrics)
        # MLflow refuses "@" in metric names (and drops the whole batch, the loss included): HR@10 -> HR_at_10
        logged = {f"metrics/rec_eval/{name.replace('@', '_at_')}": value for name, value in metrics.items()}
        return {**logged, "metrics/rec_eval/tokens": float(tokens)}

    def next_item_metrics(self, model: Any, tokenizer: Any) -> dict[str, float]:
        """HR@K / NDCG@K of the configured method on the sample."""
        from recgpt.evaluation import next_item
        from recgpt.evaluation.grounding import load_catalog
        from recgpt.evaluation.metrics import ranking_metrics

        if self.catalogue is None:
            self.catalogue = next_item.Catalogue.build(*load_catalog(self.benchmark.folder / "items.jsonl"), tokenizer)
            self.trie = self.catalogue.trie(tokenizer.eos_token_id)
        if self.method == "likelihood":
            ranked = next_item.likelihood(
                model,
                tokenizer,
                self.next_rows,
                self.catalogue,
                self.excluded,
                candidates=None,
                depth=max(self.ks),
                seed=0,
            )
        else:
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
        return ranking_metrics([r.items for r in ranked], targets, self.ks)

    def rating_metrics(self, model: Any, tokenizer: Any) -> dict[str, float]:
        """RMSE / MAE of the expected rating on the sample."""
        from recgpt.evaluation import rating
        from recgpt.evaluation.metrics import mae, rmse

        predicted = rating.expected(
            model, tokenizer, [row["prompt"] for row in self.rating_rows], self.benchmark.rating_scale, self.support
        )
        values = [float(p.value) for p in predicted]  # type: ignore[arg-type]  # expected always parses
        truth = [float(row["target_rating"]) for row in self.rating_rows]
        return {"RMSE": rmse(values, truth), "MAE": mae(values, truth)}

    def record(self, batch: int, tokens: int, targets: int, metrics: dict[str, float]) -> None:
        """Add a point to the curve and rewrite ``curve`` (from the global rank 0)."""
        import json

        from composer.utils import dist

        from recgpt.files import write_text_atomic

        self.points = [p for p in self.points if p["batch"] < batch]  # a resumed run re-evaluates from its checkpoint
        self.points.append({"batch": batch, "tokens": tokens, "target_tokens": targets, **metrics})
        if self.curve is not None and dist.get_global_rank() == 0:
            write_text_atomic(self.curve, "".join(json.dumps(point) + "\n" for point in self.points))


CURVE_KEYS = ("batch", "tokens", "target_tokens")


def check_curve(path: Path) -> None:
    """Refuse a ``curve`` path that holds anything but an earlier curve (which a new run replaces).

    Raises:
        OutputFolderError: Naming the key and the file.
    """
    import json

    from recgpt.files import OutputFolderError

    if not path.exists():
        return
    try:
        lines = path.read_text(encoding="utf-8").splitlines() if path.is_file() else ["not a file"]
        ours = all(set(CURVE_KEYS) <= set(json.loads(line)) for line in lines)
    except (UnicodeDecodeError, json.JSONDecodeError, TypeError):
        ours = False
    if not ours:
        raise OutputFolderError(
            f"recgpt_rec_eval.curve {path}: the path holds something other than a recgpt_rec_eval curve, so it is "
            "left alone; choose another path or move it away"
        )
