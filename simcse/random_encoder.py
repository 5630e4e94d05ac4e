"""Small encoders with random weights (BERT, RoBERTa, XLM-RoBERTa, ELECTRA, DeBERTa-v2, ModernBERT) and a WordPiece
tokenizer trained on your sentences.

For work without the Hugging Face Hub: tests, the offline demo, smoke runs. The folder written is an
ordinary transformers checkpoint, loaded like ``klue/bert-base`` is.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
from transformers import AutoConfig, AutoModel, PreTrainedTokenizerFast

from simcse.model_loading import without_transformers_bars

# Special-token order of BERT checkpoints ([PAD] = 0) and of klue/roberta-base ([PAD] = 1), whose
# tokenizer is also WordPiece; RoBERTa's position ids depend on the pad id.
SPECIAL_TOKENS = {
    "bert": ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"],
    "roberta": ["[CLS]", "[PAD]", "[SEP]", "[UNK]", "[MASK]"],
}
# The architectures this module builds, each with its tokenizer's special-token order (RoBERTa-style models
# number positions from the pad id + 1) and what its config needs beyond the shared shape.
ARCHITECTURES = {
    "bert": ("bert", {}),
    "roberta": ("roberta", {"type_vocab_size": 1}),
    "xlm-roberta": ("roberta", {"type_vocab_size": 1}),
    "electra": ("bert", {}),
    "deberta-v2": (
        "bert",
        {"relative_attention": True, "pos_att_type": ["p2c", "c2p"], "position_biased_input": False},
    ),
    "modernbert": ("bert", {"global_attn_every_n_layers": 2, "local_attention": 16}),
}


def train_wordpiece_tokenizer(
    sentences: Iterable[str], vocab_size: int = 2000, special_tokens: str = "bert"
) -> PreTrainedTokenizerFast:
    """A cased WordPiece tokenizer (Hangul kept as syllables) trained on ``sentences``, with the special-token
    order of ``special_tokens`` (a key of ``SPECIAL_TOKENS``)."""
    special = SPECIAL_TOKENS[special_tokens]
    tokenizer = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=False, strip_accents=False)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.decoder = decoders.WordPiece()
    trainer = trainers.WordPieceTrainer(vocab_size=vocab_size, special_tokens=special)
    tokenizer.train_from_iterator(sentences, trainer)
    cls_id, sep_id = tokenizer.token_to_id("[CLS]"), tokenizer.token_to_id("[SEP]")
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)],
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
    )


def build_random_encoder(
    output_dir: str | os.PathLike,
    sentences: Iterable[str],
    *,
    model_type: str = "bert",
    vocab_size: int = 2000,
    hidden_size: int = 64,
    num_hidden_layers: int = 2,
    num_attention_heads: int = 2,
    intermediate_size: int = 128,
    max_length: int = 128,
    seed: int = 0,
) -> Path:
    """Write a randomly initialised encoder of ``model_type`` (see ``ARCHITECTURES``) and its tokenizer into
    ``output_dir``; returns the folder."""
    if model_type not in ARCHITECTURES:
        raise ValueError(f"model_type must be one of {', '.join(ARCHITECTURES)}, got {model_type!r}")
    tokens, extra = ARCHITECTURES[model_type]
    tokenizer = train_wordpiece_tokenizer(sentences, vocab_size, tokens)
    # RoBERTa-style models number positions from pad_token_id + 1.
    positions = max_length + (tokenizer.pad_token_id + 1 if tokens == "roberta" else 0)
    config = AutoConfig.for_model(
        model_type,
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        embedding_size=hidden_size,  # ELECTRA's; the others ignore it
        num_hidden_layers=num_hidden_layers,
        num_attention_heads=num_attention_heads,
        intermediate_size=intermediate_size,
        max_position_embeddings=positions,
        pad_token_id=tokenizer.pad_token_id,
        cls_token_id=tokenizer.cls_token_id,
        sep_token_id=tokenizer.sep_token_id,
        bos_token_id=tokenizer.cls_token_id,
        eos_token_id=tokenizer.sep_token_id,
        **extra,
    )
    torch.manual_seed(seed)
    model = AutoModel.from_config(config)
    output_dir = Path(output_dir)
    with without_transformers_bars():
        model.save_pretrained(output_dir)
    tokenizer.model_max_length = max_length
    tokenizer.save_pretrained(output_dir)
    return output_dir
