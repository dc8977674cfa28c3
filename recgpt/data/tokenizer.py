"""A small byte-level BPE tokenizer trained on a corpus, for tiny recipes that cannot reach the GPT-NeoX one."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

EOS_TOKEN = "<|endoftext|>"
PAD_TOKEN = "<|padding|>"


def train_bpe_tokenizer(texts: Iterable[str], vocab_size: int, output_dir: Path, model_max_length: int) -> int:
    """Train a byte-level BPE tokenizer (GPT-NeoX's kind, much smaller) and save it for ``AutoTokenizer``.

    The vocabulary holds ``vocab_size`` entries including the EOS token ``<|endoftext|>`` and the pad token
    ``<|padding|>`` (GPT-NeoX's names). No BOS is added, as with GPT-NeoX.

    Args:
        texts: The training texts (documents, prompts and responses).
        vocab_size: Total vocabulary size; the model's ``vocab_size`` must be at least this.
        output_dir: Where ``tokenizer.json`` and its configs are written.
        model_max_length: The tokenizer's advertised maximum length (the recipe's ``max_seq_len``).

    Returns:
        The vocabulary size actually reached (smaller when the corpus has fewer distinct merges).
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[EOS_TOKEN, PAD_TOKEN],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer=trainer)
    wrapped = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        eos_token=EOS_TOKEN,
        pad_token=PAD_TOKEN,
        unk_token=EOS_TOKEN,
        model_max_length=model_max_length,
        clean_up_tokenization_spaces=False,
    )
    output_dir.mkdir(parents=True, exist_ok=True)
    wrapped.save_pretrained(str(output_dir))
    return tokenizer.get_vocab_size()
