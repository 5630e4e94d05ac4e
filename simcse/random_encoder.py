"""Small BERT/RoBERTa encoders with random weights and a WordPiece tokenizer trained on your sentences.

For work without the Hugging Face Hub: tests, the offline demo, smoke runs. The folder written is an
ordinary transformers checkpoint, loaded like ``klue/bert-base`` is.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
from transformers import AutoModel, BertConfig, PreTrainedTokenizerFast, RobertaConfig

# Special-token order of BERT checkpoints ([PAD] = 0) and of klue/roberta-base ([PAD] = 1), whose
# tokenizer is also WordPiece; RoBERTa's position ids depend on the pad id.
SPECIAL_TOKENS = {
    "bert": ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"],
    "roberta": ["[CLS]", "[PAD]", "[SEP]", "[UNK]", "[MASK]"],
}


def train_wordpiece_tokenizer(
    sentences: Iterable[str], vocab_size: int = 2000, model_type: str = "bert"
) -> PreTrainedTokenizerFast:
    """A cased WordPiece tokenizer (Hangul kept as syllables) trained on ``sentences``."""
    special = SPECIAL_TOKENS[model_type]
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
    """Write a randomly initialised encoder and its tokenizer into ``output_dir``; returns the folder."""
    if model_type not in SPECIAL_TOKENS:
        raise ValueError(f"model_type must be one of {', '.join(SPECIAL_TOKENS)}, got {model_type!r}")
    tokenizer = train_wordpiece_tokenizer(sentences, vocab_size, model_type)
    shape = dict(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        num_hidden_layers=num_hidden_layers,
        num_attention_heads=num_attention_heads,
        intermediate_size=intermediate_size,
        pad_token_id=tokenizer.pad_token_id,
    )
    if model_type == "bert":
        config = BertConfig(**shape, max_position_embeddings=max_length)
    else:
        # RoBERTa numbers positions from pad_token_id + 1.
        config = RobertaConfig(
            **shape,
            max_position_embeddings=max_length + tokenizer.pad_token_id + 1,
            type_vocab_size=1,
            bos_token_id=tokenizer.cls_token_id,
            eos_token_id=tokenizer.sep_token_id,
        )
    torch.manual_seed(seed)
    model = AutoModel.from_config(config)
    output_dir = Path(output_dir)
    model.save_pretrained(output_dir)
    tokenizer.model_max_length = max_length
    tokenizer.save_pretrained(output_dir)
    return output_dir
