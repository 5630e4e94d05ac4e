"""A run's inputs, read and checked before anything is built: the dev set, every training dataset of the mixture
(of a kind its objective takes), their fingerprints for resume, the model, and the tokenizer's fit to the data."""

from __future__ import annotations

import logging

import torch

from simcse.config import TrainConfig
from simcse.data import DATA_KINDS, TrainData, negatives_per_query, resolve_sts_path
from simcse.model import SimCSEModel
from simcse.model_loading import unknown_token_share
from simcse.objectives import OBJECTIVES
from simcse.rules import as_list, one_or_list
from simcse.tasks import EvalSet, load_set, set_files
from simcse.text_files import file_fingerprint

logger = logging.getLogger(__name__)

# Sentences of each training dataset (and of the dev set) a tokenizer is probed with, and the share of unknown
# tokens it may produce.
TOKENIZER_PROBE_SIZE = 2000
UNKNOWN_SHARE_LIMIT = 0.5


def read_inputs(config: TrainConfig) -> tuple[EvalSet, list[TrainData]]:
    """The dev set (of any task in ``simcse.tasks``; a retrieval set's qrels/dev.tsv, else test.tsv) and every
    training dataset (of a kind its objective takes), read before anything is built so that a bad file fails in
    seconds."""
    valid_data = sampled(load_set(config.valid_data, None, config.data_dir), config.valid_samples, config.seed)
    if valid_data.split == "test":
        logger.warning(
            "%s has no qrels/dev.tsv: the best checkpoint is selected on its qrels/test.tsv, so its test results "
            "are not held out",
            config.valid_data,
        )
    train_data = [OBJECTIVES[part.objective].read(part.train_data, config.data_dir) for part in config.parts()]
    if config.num_negatives is not None and not any(DATA_KINDS[data.kind].documents for data in train_data):
        raise ValueError(
            f"--num_negatives reads the 'neg' lists of .jsonl retrieval data; {config.train_data} holds "
            f"{', '.join(DATA_KINDS[data.kind].description for data in train_data)}: leave it out"
        )
    for data in train_data:
        data.check_negatives(negatives_per_query(config.num_negatives))
        if len(data) < 2:
            raise ValueError(f"{data.path}: {len(data)} training example; in-batch negatives need 2 or more")
        if len(set(data.texts())) < 2:
            raise ValueError(f"{data.path}: every sentence is the same; in-batch negatives need different ones")
    return valid_data, train_data


def sampled(dev: EvalSet, count: int | None, seed: int) -> EvalSet:
    """The dev set, or ``count`` of its pairs or queries (``--valid_samples``) drawn with ``seed``."""
    if count is None:
        return dev
    if count >= len(dev.data):
        logger.warning("--valid_samples %d: %s holds %d, all of them used", count, dev.name, len(dev.data))
        return dev
    print(f"dev set {dev.name}: {count} of its {len(dev.data)} drawn with seed {seed} (--valid_samples)")
    return dev.sample(count, seed)


def example_counts(train_data: list[TrainData]) -> int | list[int]:
    """The examples of each training dataset, as train_args.json and trainer_state.json record them (one number
    for a run on one dataset, as before mixtures)."""
    return one_or_list([len(data) for data in train_data])


def data_fingerprints(config: TrainConfig) -> dict[str, str]:
    """A hash of the training files and of the dev file (dataset names resolved; a retrieval dev set's three
    files): what a resumed run must still read."""
    train = [file_fingerprint(resolve_sts_path(path, config.data_dir)) for path in as_list(config.train_data)]
    valid = "+".join(file_fingerprint(path) for path in set_files(config.valid_data, None, config.data_dir))
    return {"train_data": "+".join(train), "valid_data": valid}


def build_model(config: TrainConfig, resume, device: torch.device) -> SimCSEModel:
    """The encoder of ``config.model``, or of the checkpoint being resumed (a ``ResumePoint``: its trained head
    included)."""
    return SimCSEModel(
        resume.path if resume else config.model,
        pooler=config.pooler,
        mlp_only_train=config.mlp_only_train,
        dropout=config.dropout,
        tokenizer=None if resume else config.tokenizer,
        trust_remote_code=config.trust_remote_code,
        unpad=config.unpad,
        max_length=config.max_length,
        fresh_head=resume is None,
        prompt=config.prompt,
        query_prompt=config.query_prompt,
        document_prompt=config.document_prompt,
        document_max_length=config.document_max_length,
    ).to(device)


def evenly_spaced(sentences: list[str], count: int) -> list[str]:
    """About ``count`` sentences spread over the whole list (all of them when there are fewer)."""
    return sentences[:: max(1, len(sentences) // count)]


def check_tokenizer_covers(
    model: SimCSEModel, train_data: list[TrainData], valid_data: EvalSet, config: TrainConfig
) -> None:
    """Refuse a tokenizer that maps most tokens of a training dataset or of the dev set to its unknown token: one
    made for another language or script (a fitting one maps well under 1%). Sentences are probed from the whole
    of each file, every column, so that a bad stretch past the first lines is found too."""
    probes = {data.path: evenly_spaced(data.texts(), TOKENIZER_PROBE_SIZE) for data in train_data}
    probes[config.valid_data] = evenly_spaced(valid_data.texts(), TOKENIZER_PROBE_SIZE)
    for source, probe in probes.items():
        share = unknown_token_share(model.tokenizer, probe)
        if share > UNKNOWN_SHARE_LIMIT:
            raise ValueError(
                f"{source}: the tokenizer of {model.tokenizer.name_or_path} maps {share:.0%} of the tokens of "
                f"{len(probe)} sentences spread over the file to {model.tokenizer.unk_token}; it does not fit this "
                "data (see --tokenizer)"
            )
