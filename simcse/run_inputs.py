"""A run's inputs, read and checked before anything is built: the dev set, every training dataset of the mixture
(of a kind its objective takes), their fingerprints for resume, the model, and the tokenizer's fit to the data."""

from __future__ import annotations

import logging

import numpy as np
import torch

from simcse.config import TrainConfig
from simcse.device import weights_dtype
from simcse.distributed import ProcessInfo
from simcse.families import family_problem
from simcse.loader import text_settings
from simcse.lora import LoraSettings, add_adapters, load_adapters, peft_module, target_problem
from simcse.model import SimCSEModel
from simcse.model_loading import check_location, read_model_config, unknown_token_share
from simcse.objectives import OBJECTIVES
from simcse.registry import TOKEN_STORE_IN_MEMORY
from simcse.rules import as_list, one_or_list
from simcse.tasks import EvalSet, load_set, set_files
from simcse.text_files import file_fingerprint
from simcse.token_store import StoreSettings, tokenized_train_data
from simcse.tokenized import TokenizedData
from simcse.train_data import TrainSource, negatives_per_query

logger = logging.getLogger(__name__)

# Sentences of each training dataset (and of the dev set) a tokenizer is probed with, and the share of unknown
# tokens it may produce.
TOKENIZER_PROBE_SIZE = 2000
PROBE_PLACES = 100  # places of the file the probe reads, each a run of consecutive texts
UNKNOWN_SHARE_LIMIT = 0.5


def read_inputs(config: TrainConfig) -> tuple[EvalSet, list[TrainSource]]:
    """The dev set (of any task in ``simcse.tasks``; a retrieval set's qrels/dev.tsv, else qrels/test.tsv) and
    every training file with its kind (one its objective takes), found before anything is built so that a wrong
    file fails in seconds; ``tokenize_inputs`` reads the training files once the tokenizer is known."""
    valid_data = sampled(load_set(config.valid_data, None, config.data_dir), config.valid_samples, config.seed)
    if valid_data.split == "test":
        logger.warning(
            "%s has no qrels/dev.tsv: the best checkpoint is selected on its qrels/test.tsv, so its test results "
            "are not held out",
            config.valid_data,
        )
    sources = [OBJECTIVES[part.objective].source(part.train_data, config.data_dir) for part in config.parts()]
    check_model_config(config)
    if config.num_negatives is not None and not any(source.kind.documents for source in sources):
        raise ValueError(
            f"--num_negatives reads the 'neg' lists of .jsonl retrieval data; {config.train_data} holds "
            f"{', '.join(source.kind.description for source in sources)}: leave it out"
        )
    return valid_data, sources


def tokenize_inputs(
    config: TrainConfig, sources: list[TrainSource], model: SimCSEModel, process: ProcessInfo
) -> list[TokenizedData]:
    """Every training file as token ids, from its token store (built by the first process when absent or
    stale; ``--token_store memory``: in memory), each checked for what the run needs."""
    store = StoreSettings.from_flag(config.token_store, config.token_store_timeout, process.is_main, process.rank)
    tokenized: dict[TrainSource, TokenizedData] = {}  # a file given twice in a mixture is read once
    for source in sources:
        if source not in tokenized:
            text = text_settings(config.max_length, source.kind, model)
            data = tokenized[source] = tokenized_train_data(source.path, source.kind, text, store)
            data.summary.check_for_run(data.path, negatives_per_query(config.num_negatives))
    if config.distill_weight:
        check_teacher_scores([tokenized[source] for source in sources], config)
    return [tokenized[source] for source in sources]


def check_teacher_scores(train_data: list[TokenizedData], config: TrainConfig) -> None:
    """Refuse ``--distill_weight`` unless each retrieval dataset an objective distils on holds a teacher's score
    of every document (and one such dataset is there)."""
    distilled = [data for part, data in zip(config.parts(), train_data) if OBJECTIVES[part.objective].teacher_scores]
    with_documents = [data for data in distilled if data.summary.has_documents]
    for data in with_documents or distilled[:1]:
        data.summary.check_teacher_scores(data.path)


def prepare_token_stores(config: TrainConfig) -> list[TokenizedData]:
    """data/prepare.py: the token store of every ``--train_data`` file, built as train.py with the same flags
    reads it (its model's tokenizer, lengths and prompts, its objective's check of the kind), nothing trained."""
    if config.token_store == TOKEN_STORE_IN_MEMORY:
        raise ValueError(f"--token_store {TOKEN_STORE_IN_MEMORY} keeps nothing: name a folder, or leave it out")
    sources = [OBJECTIVES[part.objective].source(part.train_data, config.data_dir) for part in config.parts()]
    model = build_model(config, None, torch.device("cpu"))
    tokenized = tokenize_inputs(config, sources, model, ProcessInfo())
    for data in dict.fromkeys(tokenized):
        print(f"{data.path}: {len(data)} examples of {data.kind} in {data.store}")
    return tokenized


def check_model_config(config: TrainConfig) -> None:
    """Refuse, from the model's config.json (no weights read), a family the package does not train or a pooler it
    cannot take, a ``--matryoshka_dims`` size above its hidden size, and ``--lora_target_modules`` naming none of
    its modules (the model built on the meta device: no memory)."""
    from transformers import AutoModel

    model_config = read_model_config(check_location(config.model), config.trust_remote_code)
    if problem := family_problem(model_config.model_type, config.pooler, f"--model {config.model}"):
        raise ValueError(problem)
    hidden = model_config.hidden_size
    if too_large := [dim for dim in as_list(config.matryoshka_dims or []) if dim > hidden]:
        raise ValueError(
            f"--matryoshka_dims {too_large[0]} is above the {hidden} dimensions of {config.model}'s embeddings"
        )
    if lora := LoraSettings.of(config):
        peft_module()  # installed, before anything is read
        with torch.device("meta"):
            skeleton = AutoModel.from_config(model_config, trust_remote_code=config.trust_remote_code)
        if problem := target_problem(skeleton, lora.target_modules, config.model):
            raise ValueError(problem)


def sampled(dev: EvalSet, count: int | None, seed: int) -> EvalSet:
    """The dev set, or ``count`` of its pairs or queries (``--valid_samples``) drawn with ``seed``."""
    if count is None:
        return dev
    if count >= len(dev.data):
        logger.warning("--valid_samples %d: %s holds %d, all of them used", count, dev.name, len(dev.data))
        return dev
    print(f"dev set {dev.name}: {count} of its {len(dev.data)} drawn with seed {seed} (--valid_samples)")
    return dev.sample(count, seed)


def example_counts(train_data: list[TokenizedData]) -> int | list[int]:
    """The examples of each training dataset, as train_args.json and trainer_state.json record them (one number
    for a run on one dataset, as before mixtures)."""
    return one_or_list([len(data) for data in train_data])


def data_fingerprints(config: TrainConfig, train_data: list[TokenizedData]) -> dict[str, str]:
    """A hash of the training files (as their token stores recorded it) and of the dev file (a retrieval dev set's
    three files): what a resumed run must still read."""
    valid = "+".join(file_fingerprint(path) for path in set_files(config.valid_data, None, config.data_dir))
    return {"train_data": "+".join(data.fingerprint for data in train_data), "valid_data": valid}


def build_model(config: TrainConfig, resume, device: torch.device) -> SimCSEModel:
    """The model of ``config.model``, or of the checkpoint being resumed (a ``ResumePoint``: its trained head
    included; with LoRA, ``config.model`` and the checkpoint's adapters), with its adapters and gradient
    checkpointing as the flags say."""
    lora = LoraSettings.of(config)
    from_checkpoint = resume is not None and lora is None  # merged weights are not what the adapters started on
    model = SimCSEModel(
        resume.path if from_checkpoint else config.model,
        pooler=config.pooler,
        mlp_only_train=config.mlp_only_train,
        dropout=config.dropout,
        tokenizer=None if from_checkpoint else config.tokenizer,
        trust_remote_code=config.trust_remote_code,
        unpad=config.unpad,
        max_length=config.max_length,
        fresh_head=resume is None,
        prompt=config.prompt,
        query_prompt=config.query_prompt,
        document_prompt=config.document_prompt,
        document_max_length=config.document_max_length,
        dtype=weights_dtype(config.model_dtype, device),
    )
    if lora is not None:
        add_adapters(model, lora)
        if resume is not None:
            load_adapters(model, resume.path)
    if config.gradient_checkpointing:
        enable_gradient_checkpointing(model)
    model.matryoshka_dims = as_list(config.matryoshka_dims) if config.matryoshka_dims else None  # saved with it
    return model.to(device)


def enable_gradient_checkpointing(model: SimCSEModel) -> None:
    """Each layer's activations recomputed in the backward pass (the padded and the unpadded pass alike); not
    reentrant: exact with dropout (its masks replayed), and no input needs a gradient."""
    encoder, options = model.encoder, {"use_reentrant": False}
    if hasattr(encoder, "activation_checkpointing_enable"):  # the newer name; later 5.x releases deprecate the other
        encoder.activation_checkpointing_enable(activation_checkpointing_kwargs=options)
    else:
        encoder.gradient_checkpointing_enable(gradient_checkpointing_kwargs=options)


def spread_rows(count: int, wanted: int) -> list[int]:
    """About ``wanted`` indices of ``range(count)`` (all of them when there are fewer): runs of consecutive rows at
    ``PROBE_PLACES`` evenly spaced places. Consecutive rows share the pages a token store maps, so a probe of a
    large store maps a few MB, where a page per row would map hundreds."""
    if count <= wanted:
        return list(range(count))
    run = max(1, wanted // PROBE_PLACES)
    starts = np.linspace(0, count - run, min(PROBE_PLACES, count // run)).astype(np.int64)
    return sorted({int(start) + offset for start in starts for offset in range(run)})


def check_tokenizer_covers(
    model: SimCSEModel, train_data: list[TokenizedData], valid_data: EvalSet, config: TrainConfig
) -> None:
    """Refuse a tokenizer that maps most tokens of a training dataset or of the dev set to its unknown token: one
    made for another language or script (a fitting one maps well under 1%). Texts are probed from the whole of
    each file, every column and the documents, so that a bad stretch past the first lines is found too."""
    tokenizer = model.tokenizer
    probes = {}
    for data in train_data:
        columns = data.columns + ([data.documents] if data.documents is not None else [])
        probes[data.path] = [column[i] for column in columns for i in spread_rows(len(column), TOKENIZER_PROBE_SIZE)]
    sentences = valid_data.texts()
    probes[config.valid_data] = tokenizer(
        [sentences[i] for i in spread_rows(len(sentences), TOKENIZER_PROBE_SIZE)],
        add_special_tokens=False,
        verbose=False,  # whole sentences, never cut: no warning that they exceed the model length
    )["input_ids"]
    for source, probe in probes.items():
        share = unknown_token_share(tokenizer, probe)
        if share > UNKNOWN_SHARE_LIMIT:
            raise ValueError(
                f"{source}: the tokenizer of {tokenizer.name_or_path} maps {share:.0%} of the tokens of "
                f"{len(probe)} sentences spread over the file to {tokenizer.unk_token}; it does not fit this "
                "data (see --tokenizer)"
            )
