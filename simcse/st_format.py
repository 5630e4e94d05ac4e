"""The sentence-transformers files of a checkpoint folder, written without importing sentence-transformers.

``SentenceTransformer(folder)`` then loads the folder's transformers model as module 0 (path ""), a pooling
module, and for pooler ``cls`` (head used at evaluation) a dense+tanh module holding the head: it encodes
exactly as ``SimCSEModel.encode`` does. The classic module names below are the ones every
sentence-transformers release since 2 reads.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
from safetensors.torch import save_file

from simcse.poolers import POOLERS
from simcse.run_folder import (
    CONFIG_NAME,
    ST_DENSE_FOLDER,
    ST_MODULES_NAME,
    ST_POOLING_FOLDER,
    ST_PROMPTS_NAME,
    ST_SETTINGS_NAME,
    WEIGHTS_NAME,
    read_json,
    write_json,
)

# sentence-transformers' pooling modes; how it pools each of our poolers is the pooler's ``st_mode``
# (``simcse.poolers``): those over inner layers have none, its standard modules do not offer them.
ALL_POOLING_MODES = ("cls_token", "mean_tokens", "max_tokens", "mean_sqrt_len_tokens", "lasttoken")
PROMPT_NAME = "simcse"  # the name of the default prompt in config_sentence_transformers.json
ROLE_PROMPTS = ("query", "document")  # the named prompts of encode_query and encode_document


def write_sentence_transformers_files(
    folder: str | Path,
    pooler: str,
    hidden_size: int,
    max_length: int,
    head: torch.nn.Linear | None,
    prompt: str = "",
    normalize: bool = False,
    role_prompts: dict[str, str] | None = None,
) -> None:
    """Write modules.json, sentence_bert_config.json, 1_Pooling/ and (with ``head``) 2_Dense/ into ``folder``.

    ``head`` is the dense layer applied after pooling, followed by tanh; None when the embedding is the
    pooled vector itself (``cls_before_pooler``, ``avg``, or ``cls`` with ``mlp_only_train``). A ``prompt`` is
    written as the default prompt, which ``SentenceTransformer.encode`` puts before every sentence; ``role_prompts``
    (``{"query": ..., "document": ...}``) as the named prompts ``encode_query`` and ``encode_document`` apply.
    """
    mode = POOLERS[pooler].st_mode
    if mode is None:
        raise ValueError(f"sentence-transformers has no module for pooler {pooler!r}")
    folder = Path(folder)
    modules = [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": ST_POOLING_FOLDER, "type": "sentence_transformers.models.Pooling"},
    ]
    write_json(folder / ST_SETTINGS_NAME, {"max_seq_length": max_length, "do_lower_case": False})
    write_json(
        folder / ST_POOLING_FOLDER / CONFIG_NAME,
        {"word_embedding_dimension": hidden_size}
        | {f"pooling_mode_{name}": name == mode for name in ALL_POOLING_MODES},
    )
    if head is not None:
        modules.append({"idx": 2, "name": "2", "path": ST_DENSE_FOLDER, "type": "sentence_transformers.models.Dense"})
        write_json(
            folder / ST_DENSE_FOLDER / CONFIG_NAME,
            {
                "in_features": head.in_features,
                "out_features": head.out_features,
                "bias": head.bias is not None,
                "activation_function": "torch.nn.modules.activation.Tanh",
            },
        )
        weights = {"linear." + name: tensor.detach().cpu().contiguous() for name, tensor in head.state_dict().items()}
        save_file(weights, folder / ST_DENSE_FOLDER / WEIGHTS_NAME)
    if normalize:
        index = len(modules)  # Normalize has no files: its folder needs not exist
        modules.append(
            {
                "idx": index,
                "name": str(index),
                "path": f"{index}_Normalize",
                "type": "sentence_transformers.models.Normalize",
            }
        )
    write_json(folder / ST_MODULES_NAME, modules)
    prompts = ({PROMPT_NAME: prompt} if prompt else {}) | (role_prompts or {})
    st_config = {"similarity_fn_name": "cosine"} | ({"prompts": prompts} if prompts else {})
    write_json(folder / ST_PROMPTS_NAME, st_config | ({"default_prompt_name": PROMPT_NAME} if prompt else {}))


TANH = "torch.nn.modules.activation.Tanh"


def read_settings(find: Callable[[str], str | None]) -> dict | None:
    """The pooler, max length, normalisation and default prompt a sentence-transformers folder declares, for a
    folder without ``simcse_config.json``; None when it has no ``modules.json``. ``find(name)`` is the path of
    a file of the folder, or None. The result's ``source`` names the files read. A module this package cannot
    reproduce raises ValueError naming the file."""
    modules_path = find(ST_MODULES_NAME)
    if modules_path is None:
        return None
    modules = read_json(modules_path)
    kinds = {}
    for module in modules if isinstance(modules, list) else [None]:
        if not isinstance(module, dict) or not isinstance(module.get("type"), str):
            raise ValueError(f"{modules_path}: not a sentence-transformers modules list")
        kinds[module["type"].rsplit(".", 1)[-1]] = module.get("path", "")
    if unknown := sorted(set(kinds) - {"Transformer", "Pooling", "Dense", "Normalize"}):
        raise ValueError(f"{modules_path}: module {unknown[0]} has no counterpart in this package")
    source = [ST_MODULES_NAME]
    settings = {"normalize": "Normalize" in kinds}  # and what else the files declare
    if "Pooling" in kinds:
        name = f"{kinds['Pooling']}/{CONFIG_NAME}"
        pooling = _read_found(find, name) or {}
        modes = [mode for mode in ALL_POOLING_MODES if pooling.get(f"pooling_mode_{mode}")]
        dense = _read_found(find, f"{kinds['Dense']}/{CONFIG_NAME}") if "Dense" in kinds else None
        settings["pooler"] = _pooler(modes, dense, name)
        if dense is not None:
            settings["dense_weights"] = f"{kinds['Dense']}/{WEIGHTS_NAME}"
        source.append(name)
    if (bert_config := _read_found(find, ST_SETTINGS_NAME)) and bert_config.get("max_seq_length"):
        # sentence-transformers cuts queries and documents alike at max_seq_length.
        settings["max_length"] = settings["document_max_length"] = int(bert_config["max_seq_length"])
        source.append(ST_SETTINGS_NAME)
    st_config = _read_found(find, ST_PROMPTS_NAME) or {}
    default = st_config.get("default_prompt_name")
    prompts = st_config.get("prompts") if isinstance(st_config.get("prompts"), dict) else {}
    if default and default in prompts:
        settings["prompt"] = prompts[default]
    for role in ROLE_PROMPTS:
        if isinstance(prompts.get(role), str):
            settings[f"{role}_prompt"] = prompts[role]
    if prompts:
        source.append(ST_PROMPTS_NAME)
    return settings | {"source": ", ".join(source)}


def _read_found(find: Callable[[str], str | None], name: str) -> dict | None:
    path = find(name)
    return read_json(path) if path else None


def _pooler(modes: list[str], dense: dict | None, where: str) -> str:
    """Our pooler for sentence-transformers' pooling mode and optional Dense module (dense + tanh: SimCSE's head,
    the encoder's pooling layer saved again as the Dense module)."""
    head = dense is not None
    if head and (dense.get("activation_function") != TANH or not dense.get("bias", True)):
        raise ValueError(f"{where}: a Dense module other than dense + tanh has no counterpart in this package")
    found = [name for name, pooler in POOLERS.items() if [pooler.st_mode] == modes and pooler.head == head]
    if not found:
        raise ValueError(
            f"{where}: pooling {', '.join(modes) or 'none'}"
            + (" with a Dense module" if head else "")
            + " has no counterpart among this package's poolers"
        )
    return found[0]
