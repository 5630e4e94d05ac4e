"""The training objectives: one entry each in ``OBJECTIVES``, chosen by ``--objective``.

An entry declares the training data it takes (kinds of ``simcse.train_data.DATA_KINDS``; any other is refused in one
line that names the objective taking it), its whole loss (masks included) as a function of the batch's embeddings,
token ids and scores and of a small settings record (``LossSettings``), whether the batch's other examples are its
negatives (``train_args.json`` counts the negatives per anchor) and whether it reads a triplet's hard negative. The
trainer calls ``objective.loss`` and nothing else; the tests of every objective (two processes, GradCache,
resume) call the same function. A new objective is one entry here (its loss, if new, in ``simcse.loss``).

This module imports no torch (``simcse.loss`` is imported when a loss runs): ``simcse.config`` reads the names
for train.py's flags, and ``--help`` answers at once.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from simcse.data import DataFormatError
from simcse.table_files import is_table
from simcse.train_data import TrainSource, resolve_train_path, train_data_kind

Tensor = Any  # torch.Tensor, not imported here


@dataclass(frozen=True)
class LossSettings:
    """What a loss reads of the run's settings (``simcse.config`` builds it: ``loss_settings``)."""

    temperature: float = 0.05
    hard_negative_weight: float = 0.0
    mask_duplicate_negatives: bool = True


@dataclass
class LossInputs:
    """A batch as a loss sees it."""

    embeddings: Tensor  # (B, S, H): the S texts of each example
    token_ids: Tensor  # (B, S, L): their token ids, padded to one width on every process (duplicates compare them)
    scores: Tensor | None = None  # (B,) gold scores, scored pairs only


@dataclass
class LossOutput:
    loss: Tensor  # a scalar
    masked: Tensor | None = None  # (B, C): the candidates removed from each anchor's softmax (repeated texts)


# (inputs, settings, gather: simcse.loss.Gather, every process's rows) -> LossOutput
Loss = Callable[[LossInputs, LossSettings, Callable], LossOutput]


def repeated_texts(token_ids, gather) -> Tensor:
    """(B, C): the candidates (positives, then hard negatives) whose text is the anchor's or its positive's."""
    from simcse import loss

    negatives = token_ids[:, 2:] if token_ids.shape[1] > 2 else None  # (B, K, L)
    return loss.duplicate_candidates(token_ids[:, 0], token_ids[:, 1], negatives, gather=gather)


def contrastive_loss(inputs: LossInputs, settings: LossSettings, gather) -> LossOutput:
    """InfoNCE: each anchor picks its positive among every positive (and hard negatives) of the global batch; a
    candidate repeating the anchor's or the positive's text is masked (unless the settings say not to)."""
    from simcse import loss

    embeddings = inputs.embeddings
    exclude = repeated_texts(inputs.token_ids, gather) if settings.mask_duplicate_negatives else None
    value = loss.info_nce(
        embeddings[:, 0],
        embeddings[:, 1],
        embeddings[:, 2:] if embeddings.shape[1] > 2 else None,  # (B, K, H): K hard negatives per anchor
        temperature=settings.temperature,
        hard_negative_weight=settings.hard_negative_weight,
        gather=gather,
        exclude=exclude,
    )
    return LossOutput(value, exclude)


def cosent_loss(inputs: LossInputs, settings: LossSettings, gather) -> LossOutput:
    """CoSENT: the global batch's pairs ranked by cosine as their gold scores rank them, scale 1/temp."""
    from simcse import loss

    embeddings = inputs.embeddings
    return LossOutput(
        loss.cosent(embeddings[:, 0], embeddings[:, 1], inputs.scores, scale=1 / settings.temperature, gather=gather)
    )


def cosine_mse_loss(inputs: LossInputs, settings: LossSettings, gather) -> LossOutput:
    """sentence-transformers' CosineSimilarityLoss: MSE between each pair's cosine and its gold score / 5."""
    from simcse import loss
    from simcse.text_files import MAX_SCORE

    embeddings = inputs.embeddings
    return LossOutput(
        loss.cosine_mse(embeddings[:, 0], embeddings[:, 1], inputs.scores, max_score=MAX_SCORE, gather=gather)
    )


@dataclass(frozen=True)
class Objective:
    name: str
    help: str
    card_name: str  # what the model card says the model was trained with
    data_kinds: tuple[str, ...]  # the training data it takes, by DATA_KINDS name
    loss: Loss  # the whole loss, masks included: the trainer calls it and nothing else
    in_batch_negatives: bool  # the batch's other examples are negatives: duplicate masking applies
    hard_negatives: bool  # reads a triplet's third sentence, a query's negatives (--hard_negative_weight)

    def source(self, name_or_path: str | os.PathLike, data_dir: str | os.PathLike | None = None) -> TrainSource:
        """The training file and its kind (from its first line or its columns), refused in one line when the kind
        is not one this objective takes."""
        path = resolve_train_path(name_or_path, data_dir)
        kind = train_data_kind(path)
        if kind.name not in self.data_kinds:
            taker = next((name for name, other in OBJECTIVES.items() if kind.name in other.data_kinds), None)
            raise DataFormatError(
                path,
                None if is_table(path) else "line 1",
                f"{kind.description}: train on it with --objective {taker} (--objective "
                f"{self.name} takes {', '.join(self.data_kinds)})",
            )
        return TrainSource(path, kind)

    def negatives_per_anchor(self, batch: int, num_sent: int) -> int | None:
        """The candidates each anchor is contrasted with, for train_args.json (None without in-batch negatives)."""
        if not self.in_batch_negatives:
            return None
        return batch - 1 + batch * (num_sent - 2)  # the other positives, and every hard negative

    def unread_flags(self, settings) -> dict[str, str]:
        """The flags given that this objective does not read, each with why it would do nothing here."""
        unread = {}
        if not self.hard_negatives and settings.hard_negative_weight != 0:
            unread["--hard_negative_weight"] = "has no hard negatives: --hard_negative_weight does nothing there"
        if not self.in_batch_negatives and not settings.mask_duplicate_negatives:
            unread["--no-mask_duplicate_negatives"] = (
                "has no in-batch negatives: --no-mask_duplicate_negatives does nothing there"
            )
        return {flag: f"--objective {self.name} {why}" for flag, why in unread.items()}


OBJECTIVES: dict[str, Objective] = {
    objective.name: objective
    for objective in (
        Objective(
            "simcse",
            "InfoNCE with in-batch negatives, on sentences, pairs, triplets or queries with K hard negatives",
            "SimCSE's InfoNCE with in-batch negatives",
            ("sentences", "pairs", "triplets", "query_documents"),
            contrastive_loss,
            in_batch_negatives=True,
            hard_negatives=True,
        ),
        Objective(
            "cosent",
            "CoSENT on scored pairs, scale 1/--temp",
            "CoSENT",
            ("scored_pairs",),
            cosent_loss,
            in_batch_negatives=False,
            hard_negatives=False,
        ),
        Objective(
            "cosine_mse",
            "CosineSimilarityLoss on scored pairs: MSE between the cosine and the gold score scaled to [0, 1]",
            "cosine-similarity regression (sentence-transformers' CosineSimilarityLoss)",
            ("scored_pairs",),
            cosine_mse_loss,
            in_batch_negatives=False,
            hard_negatives=False,
        ),
    )
}
DEFAULT_OBJECTIVE = next(iter(OBJECTIVES))  # the first entry: the reference recipe's
