"""Batching for training and encoding: the training datasets over token ids (``simcse.tokenized``), the epoch
sampler and the collators (``simcse.loader`` builds a run's loader from them)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch
from transformers import PreTrainedTokenizerBase

if TYPE_CHECKING:
    from simcse.tokenized import TokenizedData

logger = logging.getLogger(__name__)


class SimCSEDataset(torch.utils.data.Dataset):
    """Training examples as token ids: each item is ``num_sent`` id arrays (anchor, positive[, hard neg]); for
    scored pairs, the pair's two id arrays and its gold score."""

    def __init__(self, data: TokenizedData):
        self.columns, self.scores = data.columns, data.scores
        self.num_sent = 2 if len(self.columns) == 1 else len(self.columns)
        self.longest = max(int(column.lengths.max(initial=0)) for column in self.columns)  # its longest text's tokens

    def __len__(self) -> int:
        return len(self.columns[0])

    def __getitem__(self, index: int) -> tuple:
        ids = tuple(column[index] for column in self.columns)
        if self.scores is not None:
            return ids, float(self.scores[index])
        # Unsupervised: the same ids twice; the two dropout masks make the two views differ.
        return ids * 2 if len(ids) == 1 else ids


class QueryDocumentsDataset(torch.utils.data.Dataset):
    """Retrieval examples as token ids: each item is a query's ids, one of its positive documents and
    ``num_negatives`` of its negative documents, drawn afresh each epoch from (seed, epoch, example), so that a
    resumed run draws what the uninterrupted run drew. A query with fewer negatives than that takes every one of
    its own, repeated as evenly as they go (each ``num_negatives // n`` or one more times), so that none is left out
    of a step (FlagEmbedding's rule); ``RowSummary.check_for_run`` refuses, before, a query with none. Each
    distinct document is stored (and tokenized) once. With ``teacher`` an item is (ids, the teacher's scores of the
    positive and negatives drawn), for distillation."""

    def __init__(self, data: TokenizedData, num_negatives: int, seed: int, teacher: bool = False):
        self.num_sent, self.num_negatives, self.seed, self.epoch = 2 + num_negatives, num_negatives, seed, 0
        self.queries, self.documents = data.columns[0], data.documents
        self.positive_rows, self.negative_rows = data.positives, data.negatives
        self.teacher = (data.positive_scores, data.negative_scores) if teacher else None
        self.longest = max(int(column.lengths.max(initial=0)) for column in (self.queries, self.documents))
        if few := int((self.negative_rows.lengths < num_negatives).sum()):
            logger.warning(
                "%s: %d queries hold fewer than %d negatives; each takes all of its own, repeated evenly",
                data.path,
                few,
                num_negatives,
            )
        self.columns = [self.queries, self.documents]

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.queries)

    def __getitem__(self, index: int) -> tuple:
        draw = np.random.default_rng((self.seed, self.epoch, index))
        positive_rows, negative_rows = self.positive_rows[index], self.negative_rows[index]
        positive = draw.choice(len(positive_rows))  # the draws of choice(positive_rows): a position, then its row
        chosen = draw_negatives(draw, np.arange(len(negative_rows)), self.num_negatives)
        rows = (positive_rows[positive], *negative_rows[chosen])
        ids = (self.queries[index], *(self.documents[row] for row in rows))
        if self.teacher is None:
            return ids
        positive_scores, negative_scores = self.teacher
        first_positive, first_negative = self.positive_rows.offsets[index], self.negative_rows.offsets[index]
        teacher = [positive_scores[first_positive + positive]], negative_scores[first_negative + chosen]
        return ids, np.concatenate(teacher)  # (1 + K,)


def draw_negatives(draw: np.random.Generator, negatives: np.ndarray, count: int) -> np.ndarray:
    """``count`` of ``negatives`` in a random order: without repeats when there are enough, otherwise every one
    ``count // len(negatives)`` times and the remainder drawn without replacement (no negative left out)."""
    copies, remainder = divmod(count, len(negatives)) if len(negatives) else (0, 0)
    if not copies:
        return draw.choice(negatives, count, replace=False)
    chosen = np.concatenate([np.tile(negatives, copies), draw.choice(negatives, remainder, replace=False)])
    return draw.permutation(chosen)


class EpochBatchSampler:
    """This process's share of each batch, in a shuffled order fixed by (seed, epoch).

    The order of an epoch depends on nothing else, so a run resumed at batch k of epoch e sees exactly
    the batches the uninterrupted run saw (``set_epoch(e, start_batch=k)``). With several processes
    (torchrun), each global batch of ``batch_size`` examples is cut into ``world_size`` equal slices
    and process ``rank`` takes slice ``rank``. The epoch's last, smaller batch is shortened to a multiple
    of ``world_size``, and dropped when that leaves one example (an anchor with no negative trains on
    nothing); the examples left out are counted in ``dropped_per_epoch``.
    """

    def __init__(self, num_examples: int, batch_size: int, seed: int, rank: int = 0, world_size: int = 1):
        if batch_size % world_size:
            raise ValueError(f"--batch_size {batch_size} is not divisible by the {world_size} processes")
        self.num_examples, self.batch_size, self.seed = num_examples, batch_size, seed
        self.rank, self.world_size = rank, world_size
        self.epoch, self.start_batch = 0, 0
        remainder = num_examples % batch_size
        self.last_batch_size = remainder - remainder % world_size
        if self.last_batch_size < 2:
            self.last_batch_size = 0
        self.dropped_per_epoch = remainder - self.last_batch_size

    @property
    def largest_batch(self) -> int:
        """The examples of a step's batch over all processes: ``batch_size``, or the last batch when the data
        holds fewer."""
        return self.batch_size if self.num_examples >= self.batch_size else self.last_batch_size

    @property
    def batches_per_epoch(self) -> int:
        return self.num_examples // self.batch_size + (self.last_batch_size > 0)

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        self.epoch, self.start_batch = epoch, start_batch

    def __len__(self) -> int:
        return self.batches_per_epoch - self.start_batch

    def __iter__(self):
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        order = torch.randperm(self.num_examples, generator=generator).tolist()
        for batch in range(self.start_batch, self.batches_per_epoch):
            size = min(self.batch_size, self.num_examples - batch * self.batch_size)
            size = self.batch_size if size == self.batch_size else self.last_batch_size
            local = size // self.world_size
            first = batch * self.batch_size + self.rank * local
            yield order[first : first + local]


class ValuesCollator:
    """Batches examples that carry values beside their ids: ``collator``'s tensors for the ids, plus the values
    stacked as float32 under ``name`` (scored pairs: ``scores`` (B,); a teacher's: ``teacher_scores`` (B, 1 + K))."""

    def __init__(self, collator: SimCSECollator, name: str):
        self.collator, self.name = collator, name

    def __call__(self, examples: Sequence[tuple[Sequence[np.ndarray], object]]) -> dict[str, torch.Tensor]:
        batch = self.collator([ids for ids, _ in examples])
        batch[self.name] = torch.tensor(np.array([values for _, values in examples]), dtype=torch.float32)
        return batch


class SimCSECollator:
    """Pads a batch of examples to its longest sentence: tensors shaped (batch, num_sent, seq_len).

    ``token_type_ids`` (all zeros: every input is a single sentence) are only returned when the model
    has token types; RoBERTa (``type_vocab_size == 1``) gets none.
    """

    def __init__(self, pad_token_id: int, use_token_type_ids: bool):
        self.pad_token_id = pad_token_id
        self.use_token_type_ids = use_token_type_ids

    @classmethod
    def for_model(cls, tokenizer: PreTrainedTokenizerBase, config) -> SimCSECollator:
        if tokenizer.pad_token_id is None:
            raise ValueError(f"tokenizer {tokenizer.name_or_path!r} has no pad token")
        return cls(tokenizer.pad_token_id, getattr(config, "type_vocab_size", 1) > 1)

    def __call__(self, examples: Sequence[Sequence[np.ndarray]]) -> dict[str, torch.Tensor]:
        batch_size, num_sent = len(examples), len(examples[0])
        seq_len = max(len(ids) for example in examples for ids in example)
        input_ids = np.full((batch_size, num_sent, seq_len), self.pad_token_id, dtype=np.int64)
        attention_mask = np.zeros((batch_size, num_sent, seq_len), dtype=np.int64)
        for b, example in enumerate(examples):
            if len(example) != num_sent:
                raise ValueError(f"example {b} has {len(example)} sentences, example 0 has {num_sent}")
            for s, ids in enumerate(example):
                input_ids[b, s, : len(ids)] = ids
                attention_mask[b, s, : len(ids)] = 1
        batch = {"input_ids": torch.from_numpy(input_ids), "attention_mask": torch.from_numpy(attention_mask)}
        if self.use_token_type_ids:
            batch["token_type_ids"] = torch.zeros_like(batch["input_ids"])
        return batch
