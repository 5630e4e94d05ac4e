"""The model families the package trains, by transformers' ``model_type``, with the names the README and errors
use: encoders (bidirectional attention; first-token or mean poolers) and decoders (causal attention, so the last
token is the one that has seen the whole text: the ``lasttoken`` pooler). A new family is one entry here (and one in
``simcse.random_encoder``, which the tests build).

Decoder embedders end every text with the end-of-sequence token and pool its state (Qwen3-Embedding's recipe):
``decoder_tokenizer`` makes the tokenizer append it where it does not already, so that the saved tokenizer gives
sentence-transformers and ``AutoTokenizer`` users the same ids as the package.

This module imports no torch: train.py's ``--help`` and flag errors answer at once.
"""

from __future__ import annotations

import json

from simcse.poolers import POOLERS

ENCODER_NAMES = {
    "bert": "BERT",
    "roberta": "RoBERTa",
    "xlm-roberta": "XLM-R",
    "electra": "ELECTRA",
    "deberta-v2": "DeBERTa-v2",
    "modernbert": "ModernBERT",
}
DECODER_NAMES = {
    "qwen3": "Qwen3",
    "qwen2": "Qwen2",
    "llama": "Llama",
    "gemma3_text": "Gemma-3",
    "mistral": "Mistral",
}
SUPPORTED_MODEL_TYPES = (*ENCODER_NAMES, *DECODER_NAMES)
# The config attributes that hold a model's dropout probabilities, by architecture (ModernBERT: the last three;
# the decoders have attention dropout alone).
DROPOUT_SETTINGS = (
    "hidden_dropout_prob",
    "attention_probs_dropout_prob",
    "attention_dropout",
    "mlp_dropout",
    "embedding_dropout",
)


def is_decoder(model_type: str) -> bool:
    return model_type in DECODER_NAMES


def family_problem(model_type: str, pooler: str, where: str) -> str | None:
    """Why the model of ``where`` (of ``model_type``) cannot be trained or used with ``pooler``, or None."""
    if model_type not in SUPPORTED_MODEL_TYPES:
        return (
            f"{where}: not a model family this package supports: {model_type} (encoders: "
            f"{', '.join(ENCODER_NAMES)}; decoders: {', '.join(DECODER_NAMES)})"
        )
    if is_decoder(model_type) and POOLERS[pooler].first_token_only:
        return (
            f"{where} is a decoder ({DECODER_NAMES[model_type]}): pooler {pooler} reads its first token, which causal "
            "attention lets see only itself; use --pooler lasttoken"
        )
    return None


def decoder_tokenizer(tokenizer):
    """A decoder's tokenizer made fit for last-token pooling: padding with the end-of-sequence token when it has no
    pad token, and the end-of-sequence token appended to every text (after any prompt; kept by truncation) when
    its post-processor does not append it already. Changes ``tokenizer`` in place and returns it."""
    if tokenizer.eos_token_id is None:
        raise ValueError(f"{tokenizer.name_or_path}: the tokenizer has no end-of-sequence token to pool")
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    if tokenizer("a")["input_ids"][-1] != tokenizer.eos_token_id:
        backend = tokenizer.backend_tokenizer
        backend.post_processor = _appending(backend, tokenizer.eos_token, tokenizer.eos_token_id)
    tokenizer.model_input_names = ["input_ids", "attention_mask"]  # no token types
    return tokenizer


def _appending(backend, eos: str, eos_id: int):
    """``backend``'s post-processor with ``eos`` appended to each text: its template (alone, or in a sequence of
    processors) extended, else a template of its own after it. (A sequence of two templates applies only the
    first, hence the edit of the saved form.)"""
    from tokenizers import Tokenizer, processors

    state = json.loads(backend.to_str())
    templates = processors.TemplateProcessing(single=f"$A {eos}", pair=f"$A {eos} $B:1 {eos}:1",
                                              special_tokens=[(eos, eos_id)])  # fmt: skip
    processor = state["post_processor"]
    found = [processor] if processor and processor["type"] == "TemplateProcessing" else []
    found += [one for one in (processor or {}).get("processors", []) if one["type"] == "TemplateProcessing"]
    if not found:
        before = backend.post_processor
        return templates if before is None else processors.Sequence([before, templates])
    for template in found[:1]:
        template["single"].append({"SpecialToken": {"id": eos, "type_id": 0}})
        template["pair"].append({"SpecialToken": {"id": eos, "type_id": 1}})
        template["special_tokens"][eos] = {"id": eos, "ids": [eos_id], "tokens": [eos]}
    return Tokenizer.from_str(json.dumps(state)).post_processor
