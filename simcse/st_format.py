"""The sentence-transformers files of a checkpoint folder, written without importing sentence-transformers.

``SentenceTransformer(folder)`` then loads the folder's transformers model as module 0 (path ""), a pooling
module, and for pooler ``cls`` (head used at evaluation) a dense+tanh module holding the head: it encodes
exactly as ``SimCSEModel.encode`` does. The classic module names below are the ones every
sentence-transformers release since 2 reads.
"""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import save_file

from simcse.run_folder import write_json

# How sentence-transformers pools each of our poolers; avg_first_last and avg_top2 need hidden states of
# inner layers, which its standard modules do not offer.
POOLING_MODES = {"cls": "cls_token", "cls_before_pooler": "cls_token", "avg": "mean_tokens"}
ALL_POOLING_MODES = ("cls_token", "mean_tokens", "max_tokens", "mean_sqrt_len_tokens")
PROMPT_NAME = "simcse"  # the name of the default prompt in config_sentence_transformers.json


def supports(pooler: str) -> bool:
    return pooler in POOLING_MODES


def write_sentence_transformers_files(
    folder: str | Path,
    pooler: str,
    hidden_size: int,
    max_length: int,
    head: torch.nn.Linear | None,
    prompt: str = "",
) -> None:
    """Write modules.json, sentence_bert_config.json, 1_Pooling/ and (with ``head``) 2_Dense/ into ``folder``.

    ``head`` is the dense layer applied after pooling, followed by tanh; None when the embedding is the
    pooled vector itself (``cls_before_pooler``, ``avg``, or ``cls`` with ``mlp_only_train``). A ``prompt`` is
    written as the default prompt, which ``SentenceTransformer.encode`` puts before every sentence.
    """
    if not supports(pooler):
        raise ValueError(f"sentence-transformers has no module for pooler {pooler!r}")
    folder = Path(folder)
    modules = [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
    ]
    write_json(folder / "sentence_bert_config.json", {"max_seq_length": max_length, "do_lower_case": False})
    write_json(
        folder / "1_Pooling" / "config.json",
        {"word_embedding_dimension": hidden_size}
        | {f"pooling_mode_{mode}": mode == POOLING_MODES[pooler] for mode in ALL_POOLING_MODES},
    )
    if head is not None:
        modules.append({"idx": 2, "name": "2", "path": "2_Dense", "type": "sentence_transformers.models.Dense"})
        write_json(
            folder / "2_Dense" / "config.json",
            {
                "in_features": head.in_features,
                "out_features": head.out_features,
                "bias": head.bias is not None,
                "activation_function": "torch.nn.modules.activation.Tanh",
            },
        )
        weights = {"linear." + name: tensor.detach().cpu().contiguous() for name, tensor in head.state_dict().items()}
        save_file(weights, folder / "2_Dense" / "model.safetensors")
    write_json(folder / "modules.json", modules)
    prompts = {"prompts": {PROMPT_NAME: prompt}, "default_prompt_name": PROMPT_NAME} if prompt else {}
    write_json(folder / "config_sentence_transformers.json", {"similarity_fn_name": "cosine"} | prompts)
