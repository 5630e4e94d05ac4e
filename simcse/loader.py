"""A run's loader: each training dataset over its token ids (``simcse.token_store``), and the batches of a mixture
of datasets, one dataset per batch, in an order that depends only on (seed, epoch), so that a resumed run sees the
batches the uninterrupted run saw, and every torchrun process takes the same dataset at each step (its own slice
of that batch)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch.utils.data import DataLoader

from simcse.batching import EpochBatchSampler, QueryDocumentsDataset, SimCSEDataset, ValuesCollator
from simcse.model_loading import prompt_length
from simcse.objectives import OBJECTIVES
from simcse.rules import one_or_list
from simcse.tokenized import TextSettings, TokenizedData
from simcse.train_data import DATA_KINDS, DataKind, negatives_per_query

if TYPE_CHECKING:
    from simcse.config import Part
    from simcse.distributed import ProcessInfo
    from simcse.model import SimCSEModel

logger = logging.getLogger("simcse.batching")


@dataclass(frozen=True)
class LoaderSettings:
    """What the loader reads of a run's settings."""

    parts: list[Part]  # the training datasets, each with its objective and batch size
    max_length: int
    num_negatives: int | None
    seed: int
    mixture: str
    num_workers: int
    distill: bool = False  # --distill_weight above 0: retrieval batches carry the teacher's scores


class MixtureBatchSampler:
    """The batches of several datasets' ``EpochBatchSampler``s, one dataset per batch: ``round_robin`` takes each
    dataset in turn and ends the epoch when the smallest runs out (sentence-transformers' round-robin sampler);
    ``proportional`` takes every batch of every dataset once, the order of the datasets' batches drawn with
    (seed, epoch). Yields lists of (dataset, example) pairs; a single dataset gives its own sampler's batches."""

    def __init__(self, samplers: Sequence[EpochBatchSampler], mixture: str, seed: int):
        self.samplers, self.mixture, self.seed = list(samplers), mixture, seed
        self.epoch, self.start_batch = 0, 0

    @property
    def batches_per_epoch(self) -> int:
        counts = [sampler.batches_per_epoch for sampler in self.samplers]
        return len(counts) * min(counts) if self.mixture == "round_robin" else sum(counts)

    def dataset_order(self, epoch: int) -> list[int]:
        """The dataset of each batch of ``epoch``."""
        counts = [sampler.batches_per_epoch for sampler in self.samplers]
        if self.mixture == "round_robin":
            return list(range(len(counts))) * min(counts)
        order = [part for part, count in enumerate(counts) for _ in range(count)]
        if len(counts) == 1:
            return order
        shuffle = torch.randperm(len(order), generator=torch.Generator().manual_seed(self.seed + epoch)).tolist()
        return [order[i] for i in shuffle]

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        self.epoch, self.start_batch = epoch, start_batch

    def __len__(self) -> int:
        return self.batches_per_epoch - self.start_batch

    def __iter__(self):
        batches = []
        for sampler in self.samplers:
            sampler.set_epoch(self.epoch)
            batches.append(iter(sampler))
        for step, part in enumerate(self.dataset_order(self.epoch)):
            batch = next(batches[part])  # every dataset's batches in its own order, consumed in turn
            if step >= self.start_batch:
                yield [(part, index) for index in batch]


class MixtureDataset(torch.utils.data.Dataset):
    """The training datasets of a run, indexed by (dataset, example)."""

    def __init__(self, datasets: Sequence[SimCSEDataset | QueryDocumentsDataset]):
        self.datasets = list(datasets)
        self.longest = max(dataset.longest for dataset in self.datasets)  # tokens of the longest text, at most

    def set_epoch(self, epoch: int) -> None:
        for dataset in self.datasets:
            if hasattr(dataset, "set_epoch"):  # a dataset that draws its examples' documents each epoch
                dataset.set_epoch(epoch)

    def __len__(self) -> int:
        return sum(len(dataset) for dataset in self.datasets)

    def __getitem__(self, key: tuple[int, int]) -> tuple:
        part, index = key
        return part, self.datasets[part][index]


class MixtureCollator:
    """A batch of one dataset through that dataset's collator, with ``part`` (a 0-dim tensor) naming the dataset."""

    def __init__(self, collators: Sequence):
        self.collators = list(collators)

    def __call__(self, examples: Sequence[tuple[int, tuple]]) -> dict[str, torch.Tensor]:
        part = examples[0][0]
        batch = self.collators[part]([example for _, example in examples])
        batch["part"] = torch.tensor(part)
        return batch


def build_loader(
    settings: LoaderSettings,
    train_data: Sequence[TokenizedData],
    model: SimCSEModel,
    process: ProcessInfo,
    device: torch.device,
) -> tuple[MixtureBatchSampler, DataLoader]:
    """The loader of this process's slice of every batch of the training datasets."""
    warn_about_prompt(settings, model, process)
    samplers, datasets = [], []
    for part, data in zip(settings.parts, train_data):
        sampler = EpochBatchSampler(len(data), part.batch_size, settings.seed, process.rank, process.world_size)
        if sampler.dropped_per_epoch and process.is_main:
            logger.warning(
                "%s: each epoch leaves out %d example(s) of its last batch: a batch holds 2 examples or more and "
                "splits evenly over the %d process(es)",
                part.train_data,
                sampler.dropped_per_epoch,
                process.world_size,
            )
        if sampler.largest_batch < part.batch_size and process.is_main:
            logger.warning(
                "--batch_size %d exceeds the %d training examples of %s: each step takes %d",
                part.batch_size,
                sampler.num_examples,
                part.train_data,
                sampler.largest_batch,
            )
        samplers.append(sampler)
        datasets.append(training_dataset(settings, part, data, model))
    collators = [collator_for(dataset, model) for dataset in datasets]
    sampler = MixtureBatchSampler(samplers, settings.mixture, settings.seed)
    loader = DataLoader(
        MixtureDataset(datasets),
        batch_sampler=sampler,
        collate_fn=MixtureCollator(collators),
        num_workers=settings.num_workers,
        pin_memory=device.type == "cuda",
        generator=torch.Generator(),  # its seed draw must not consume the global RNG that drives dropout
    )
    return sampler, loader


def collator_for(dataset: SimCSEDataset | QueryDocumentsDataset, model: SimCSEModel):
    """The model's collator, with the values a dataset's examples carry: gold scores, or a teacher's."""
    if getattr(dataset, "scores", None) is not None:
        return ValuesCollator(model.collator, "scores")
    if getattr(dataset, "teacher", None) is not None:
        return ValuesCollator(model.collator, "teacher_scores")
    return model.collator


def batch_facts(sampler: MixtureBatchSampler, datasets: Sequence, objectives: Sequence, world_size: int) -> dict:
    """What train_args.json records of each dataset's batches: the examples a step takes per process (its
    --batch_size, or all of them when there are fewer), the negatives each anchor is contrasted with, and the
    examples each epoch leaves out."""
    batches = [one.largest_batch for one in sampler.samplers]
    return {
        "per_process_batch": one_or_list([batch // world_size for batch in batches]),
        "negatives_per_anchor": one_or_list(
            [o.negatives_per_anchor(b, d.num_sent) for o, b, d in zip(objectives, batches, datasets)]
        ),
        "dropped_examples_per_epoch": one_or_list([one.dropped_per_epoch for one in sampler.samplers]),
    }


def warn_about_prompt(settings: LoaderSettings, model: SimCSEModel, process: ProcessInfo) -> None:
    if model.prompt and process.is_main and prompt_length(model.tokenizer, model.prompt) > settings.max_length / 4:
        logger.warning(
            "the prompt takes %d of the %d tokens of --max_length; the sentences keep the rest",
            prompt_length(model.tokenizer, model.prompt),
            settings.max_length,
        )


def text_settings(max_length: int, kind: DataKind, model: SimCSEModel) -> TextSettings:
    """How a dataset of ``kind`` becomes token ids: retrieval data's queries and documents each with their own
    prompt (and documents with their own length), other data with the model's prompt."""
    if kind.documents:
        prompts = model.prompt_for("query"), model.prompt_for("document")
        return TextSettings(model.tokenizer, max_length, prompts[0], model.document_max_length, prompts[1])
    return TextSettings(model.tokenizer, max_length, model.prompt)


def training_dataset(
    settings: LoaderSettings, part: Part, data: TokenizedData, model: SimCSEModel
) -> SimCSEDataset | QueryDocumentsDataset:
    """One training dataset over its token ids, refused when every sentence comes out the same."""
    if DATA_KINDS[data.kind].documents:
        teacher = settings.distill and OBJECTIVES[part.objective].teacher_scores
        dataset = QueryDocumentsDataset(data, negatives_per_query(settings.num_negatives), settings.seed, teacher)
    else:
        dataset = SimCSEDataset(data)
    if tokenizes_alike(dataset):
        if len(dataset.columns[0][0]) == settings.max_length:
            raise ValueError(
                f"--max_length {settings.max_length} leaves no room for the sentences: after the special tokens"
                + (f" and the prompt's {prompt_length(model.tokenizer, model.prompt)}" if model.prompt else "")
                + " every sentence is cut to the same token ids; raise --max_length"
            )
        raise ValueError(
            f"{part.train_data}: every sentence has the same token ids (they differ only in what the tokenizer "
            "drops, such as spaces); in-batch negatives need different ones"
        )
    return dataset


def tokenizes_alike(dataset: SimCSEDataset | QueryDocumentsDataset) -> bool:
    """Whether every sentence of every column has the token ids of the first one."""
    first = dataset.columns[0][0]  # (L,)
    return all(
        (column.lengths == len(first)).all() and (np.asarray(column.values).reshape(-1, len(first)) == first).all()
        for column in dataset.columns
    )
