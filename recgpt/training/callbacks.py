"""Composer callbacks registered with llm-foundry through entry points (``recgpt_*`` keys)."""

from __future__ import annotations

import logging
from typing import Any

from composer.core import Callback, State
from composer.loggers import Logger

log = logging.getLogger(__name__)


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
