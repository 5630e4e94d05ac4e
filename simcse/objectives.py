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

import dataclasses
import functools
import operator
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
    distill_weight: float = 0.0  # of KL(teacher || student) over each query's own candidates
    teacher_temperature: float = 1.0
    false_negative_margin: float | None = None  # mask candidates the student scores above the positive plus it
    guide_margin: float = 0.0  # mask candidates the guide scores above the positive minus it
    matryoshka_dims: tuple[int, ...] = ()  # the loss summed over these sizes of the embedding (none: the whole)
    matryoshka_weights: tuple[float, ...] = ()  # one per size (none: 1 each)


@dataclass
class LossInputs:
    """A batch as a loss sees it."""

    embeddings: Tensor  # (B, S, H): the S texts of each example
    token_ids: Tensor  # (B, S, L): their token ids, padded to one width on every process (duplicates compare them)
    scores: Tensor | None = None  # (B,) gold scores, scored pairs only
    teacher_scores: Tensor | None = None  # (B, 1 + K) a teacher's scores of each query's positive and negatives
    guide_embeddings: Tensor | None = None  # (B, S, H') a frozen guide model's, without gradient


@dataclass
class LossOutput:
    loss: Tensor  # a scalar
    masked: Tensor | None = None  # (B, C): the candidates removed from each anchor's softmax (repeats, guards)


# (inputs, settings, gather: simcse.loss.Gather, every process's rows) -> LossOutput
Loss = Callable[[LossInputs, LossSettings, Callable], LossOutput]


def repeated_texts(token_ids, gather) -> Tensor:
    """(B, C): the candidates (positives, then hard negatives) whose text is the anchor's or its positive's."""
    from simcse import loss

    negatives = token_ids[:, 2:] if token_ids.shape[1] > 2 else None  # (B, K, L)
    return loss.duplicate_candidates(token_ids[:, 0], token_ids[:, 1], negatives, gather=gather)


def contrastive_loss(inputs: LossInputs, settings: LossSettings, gather) -> LossOutput:
    """InfoNCE: each anchor picks its positive among every positive (and hard negatives) of the global batch. A
    candidate is masked when it repeats the anchor's or the positive's text (unless the settings say not to), when
    the student scores it above the positive plus ``false_negative_margin`` and when the guide scores it above the
    positive minus ``guide_margin``; ``distill_weight`` adds the teacher's KL on a batch that carries its scores."""
    from simcse import loss

    candidates = _candidates(inputs.embeddings, gather)
    masked = _false_negatives(inputs, settings, candidates, gather)
    value = loss.info_nce_of(
        candidates,
        temperature=settings.temperature,
        hard_negative_weight=settings.hard_negative_weight,
        exclude=masked,
    )
    if settings.distill_weight and inputs.teacher_scores is not None:  # a mixture's other data has no teacher
        value = value + settings.distill_weight * _distillation(inputs, settings, candidates)
    return LossOutput(value, masked)


def distill_loss(inputs: LossInputs, settings: LossSettings, gather) -> LossOutput:
    """The teacher's KL alone, times ``distill_weight``: each query's candidates are its positive and negatives."""
    candidates = _candidates(inputs.embeddings, gather)
    return LossOutput(settings.distill_weight * _distillation(inputs, settings, candidates))


def _candidates(embeddings, gather):
    """``simcse.loss.candidate_cosines`` of a batch's (B, S, H) embeddings: anchor, positive, S - 2 negatives."""
    from simcse import loss

    negatives = embeddings[:, 2:] if embeddings.shape[1] > 2 else None  # (B, K, H): K hard negatives per anchor
    return loss.candidate_cosines(embeddings[:, 0], embeddings[:, 1], negatives, gather=gather)


def _false_negatives(inputs: LossInputs, settings: LossSettings, candidates, gather) -> Tensor | None:
    """(B, C): the candidates taken out of each anchor's softmax, or None when no rule is on."""
    from simcse import loss

    rules = []
    if settings.mask_duplicate_negatives:
        rules.append(repeated_texts(inputs.token_ids, gather))
    if settings.false_negative_margin is not None:
        rules.append(loss.above_positive(candidates, settings.false_negative_margin))
    if inputs.guide_embeddings is not None:
        guide = _candidates(inputs.guide_embeddings, gather)
        rules.append(loss.above_positive(guide, -settings.guide_margin))
    return functools.reduce(operator.or_, rules) if rules else None


def _distillation(inputs: LossInputs, settings: LossSettings, candidates) -> Tensor:
    from simcse import loss

    if inputs.teacher_scores is None:
        raise ValueError("distillation needs the teacher's scores of the batch (pos_scores / neg_scores)")
    return loss.distillation(
        candidates,
        inputs.teacher_scores,
        temperature=settings.temperature,
        teacher_temperature=settings.teacher_temperature,
    )


def matryoshka(objective_loss: Loss, inputs: LossInputs, settings: LossSettings, gather) -> LossOutput:
    """``objective_loss`` on the whole embedding, or with ``matryoshka_dims`` the weighted sum of it on each size
    (the first ``d`` dimensions; every loss normalises what it is given); the masks are the first size's."""
    if not settings.matryoshka_dims:
        return objective_loss(inputs, settings, gather)
    weights = settings.matryoshka_weights or (1.0,) * len(settings.matryoshka_dims)
    outputs = [
        objective_loss(dataclasses.replace(inputs, embeddings=inputs.embeddings[..., :dim]), settings, gather)
        for dim in settings.matryoshka_dims
    ]
    return LossOutput(sum(weight * output.loss for weight, output in zip(weights, outputs)), outputs[0].masked)


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
    hard_negatives: bool  # reads a triplet's third sentence, a query's negatives
    teacher_scores: bool = False  # reads a teacher's scores of each query's documents (--distill_weight)

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
        softmax, hard = "has no in-batch negatives", self.hard_negatives and self.in_batch_negatives
        flags = (  # (flag, given, read by this objective, why not)
            ("--hard_negative_weight", settings.hard_negative_weight != 0, hard, "has no hard negatives in a softmax"),
            ("--no-mask_duplicate_negatives", not settings.mask_duplicate_negatives, self.in_batch_negatives, softmax),
            ("--false_negative_margin", settings.false_negative_margin is not None, self.in_batch_negatives, softmax),
            ("--guide_model", settings.guide_model is not None, self.in_batch_negatives, softmax),
            ("--distill_weight", settings.distill_weight != 0, self.teacher_scores,
             "reads no teacher scores"),
        )  # fmt: skip
        return {
            flag: f"--objective {self.name} {why}: {flag} does nothing there"
            for flag, given, read, why in flags
            if given and not read
        }


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
            teacher_scores=True,
        ),
        Objective(
            "distill",
            "--distill_weight times the KL from a teacher's scores (pos_scores, neg_scores) over each query's positive "
            "and --num_negatives negatives, without the contrastive term",
            "distillation from a teacher's scores (KL divergence)",
            ("query_documents",),
            distill_loss,
            in_batch_negatives=False,
            hard_negatives=True,
            teacher_scores=True,
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
