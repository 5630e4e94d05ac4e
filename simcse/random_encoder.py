"""Small models with random weights, of every family the package trains (encoders: BERT, RoBERTa, XLM-RoBERTa,
ELECTRA, DeBERTa-v2, ModernBERT; decoders: Qwen3, Qwen2, Llama, Gemma-3, Mistral), and a WordPiece tokenizer
trained on your sentences with the special tokens of the family.

For work without the Hugging Face Hub: tests, the offline demo, smoke runs. The folder written is an
ordinary transformers checkpoint, loaded like ``klue/bert-base`` is.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
from transformers import AutoConfig, AutoModel, PreTrainedTokenizerFast

from simcse.model_loading import without_transformers_bars


@dataclass(frozen=True)
class TokenStyle:
    """A family's special tokens (in id order), what its tokenizer puts around a text, and their roles."""

    tokens: list[str]
    single: str | None  # the templates of one text and of a pair (None: the texts alone)
    pair: str | None
    roles: dict[str, str]  # transformers' names (unk_token, pad_token, ...) -> token
    byte_level: bool = False  # a byte-level BPE, as the decoders' are (else WordPiece)


BERT_PAIR = "[CLS] $A [SEP] $B:1 [SEP]:1"
BERT_ROLES = {
    "unk_token": "[UNK]",
    "pad_token": "[PAD]",
    "cls_token": "[CLS]",
    "sep_token": "[SEP]",
    "mask_token": "[MASK]",
}
TOKEN_STYLES = {
    # BERT checkpoints ([PAD] = 0) and klue/roberta-base ([PAD] = 1), whose tokenizer is also WordPiece; RoBERTa's
    # position ids depend on the pad id.
    "bert": TokenStyle(
        ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"],
        "[CLS] $A [SEP]",
        BERT_PAIR,
        BERT_ROLES,
    ),
    "roberta": TokenStyle(
        ["[CLS]", "[PAD]", "[SEP]", "[UNK]", "[MASK]"],
        "[CLS] $A [SEP]",
        BERT_PAIR,
        BERT_ROLES,
    ),
    # Qwen: no BOS, <|endoftext|> pads and ends (appended by the package, as Qwen3-Embedding's tokenizer does).
    "qwen": TokenStyle(
        ["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
        None,
        None,
        {"pad_token": "<|endoftext|>", "eos_token": "<|endoftext|>"},
        byte_level=True,
    ),
    # Llama and Mistral: BOS first, no pad token (the package pads with the EOS token).
    "llama": TokenStyle(
        ["<unk>", "<s>", "</s>"],
        "<s> $A",
        "<s> $A <s>:1 $B:1",
        {"bos_token": "<s>", "eos_token": "</s>"},
        byte_level=True,
    ),
    "gemma": TokenStyle(
        ["<pad>", "<eos>", "<bos>", "<unk>"],
        "<bos> $A",
        "<bos> $A <bos>:1 $B:1",
        {"pad_token": "<pad>", "bos_token": "<bos>", "eos_token": "<eos>"},
        byte_level=True,
    ),
}
# The architectures this module builds, each with its tokenizer's style (RoBERTa-style models number positions from
# the pad id + 1) and what its config needs beyond the shared shape.
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
# Decoders: grouped-query attention (one key/value head) as the real ones have; Gemma-3 with a sliding window.
DECODER_ARCHITECTURES = {
    "qwen3": ("qwen", {}),
    "qwen2": ("qwen", {}),
    "llama": ("llama", {}),
    "gemma3_text": ("gemma", {"sliding_window": 8}),
    "mistral": ("llama", {}),
}


def train_wordpiece_tokenizer(
    sentences: Iterable[str], vocab_size: int = 2000, special_tokens: str = "bert"
) -> PreTrainedTokenizerFast:
    """A tokenizer trained on ``sentences`` with the special tokens of ``special_tokens`` (a key of
    ``TOKEN_STYLES``): a cased WordPiece (Hangul kept as syllables), or for the decoders' styles a byte-level BPE."""
    style = TOKEN_STYLES[special_tokens]
    if style.byte_level:
        tokenizer = Tokenizer(models.BPE())
        tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tokenizer.decoder = decoders.ByteLevel()
        alphabet = pre_tokenizers.ByteLevel.alphabet()
        trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=style.tokens, initial_alphabet=alphabet)
    else:
        tokenizer = Tokenizer(models.WordPiece(unk_token=style.roles["unk_token"]))
        tokenizer.normalizer = normalizers.BertNormalizer(lowercase=False, strip_accents=False)
        tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        tokenizer.decoder = decoders.WordPiece()
        trainer = trainers.WordPieceTrainer(vocab_size=vocab_size, special_tokens=style.tokens)
    tokenizer.train_from_iterator(sentences, trainer)
    if style.single:
        around = [token for token in style.tokens if token in style.single.split()]
        tokenizer.post_processor = processors.TemplateProcessing(
            single=style.single,
            pair=style.pair,
            special_tokens=[(token, tokenizer.token_to_id(token)) for token in around],
        )
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, **style.roles)


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
    """Write a randomly initialised model of ``model_type`` (see ``ARCHITECTURES`` and ``DECODER_ARCHITECTURES``)
    and its tokenizer into ``output_dir``; returns the folder."""
    families = ARCHITECTURES | DECODER_ARCHITECTURES
    if model_type not in families:
        raise ValueError(f"model_type must be one of {', '.join(families)}, got {model_type!r}")
    style, extra = families[model_type]
    tokenizer = train_wordpiece_tokenizer(sentences, vocab_size, style)
    shape = dict(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        num_hidden_layers=num_hidden_layers,
        num_attention_heads=num_attention_heads,
        intermediate_size=intermediate_size,
        pad_token_id=tokenizer.pad_token_id,
    )
    if model_type in DECODER_ARCHITECTURES:
        special = dict(bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id)
        shape |= dict(
            max_position_embeddings=max_length, num_key_value_heads=1, head_dim=hidden_size // num_attention_heads
        )
    else:
        special = dict(
            cls_token_id=tokenizer.cls_token_id,
            sep_token_id=tokenizer.sep_token_id,
            bos_token_id=tokenizer.cls_token_id,
            eos_token_id=tokenizer.sep_token_id,
        )
        # RoBERTa-style models number positions from pad_token_id + 1.
        positions = max_length + (tokenizer.pad_token_id + 1 if style == "roberta" else 0)
        shape |= dict(max_position_embeddings=positions, embedding_size=hidden_size)  # ELECTRA's; others ignore it
    config = AutoConfig.for_model(model_type, **shape, **special, **extra)
    torch.manual_seed(seed)
    model = AutoModel.from_config(config)
    output_dir = Path(output_dir)
    with without_transformers_bars():
        model.save_pretrained(output_dir)
    tokenizer.model_max_length = max_length
    tokenizer.save_pretrained(output_dir)
    return output_dir
