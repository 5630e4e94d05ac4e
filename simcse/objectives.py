"""The training objectives: one entry each in ``OBJECTIVES``, chosen by ``--objective``.

An entry declares the training data it takes (kinds of ``simcse.data.DATA_KINDS``; any other is refused in one
line that names the objective taking it), its loss as a pure function of the batch's embeddings, whether the
batch's other examples are its negatives (then duplicate masking applies and ``train_args.json`` counts the
negatives per anchor) and whether it reads a triplet's hard negative. The trainer calls ``objective.loss``; the
tests of every objective (two processes, GradCache, resume) call the same function. A new objective is one
entry here (its loss, if new, in ``simcse.loss``).

This module imports no torch (``simcse.loss`` is imported when a loss runs): ``simcse.config`` reads the names
for train.py's flags, and ``--help`` answers at once.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from simcse.data import DATA_KINDS, DataFormatError, TrainData, load_train_data

Tensor = Any  # torch.Tensor, not imported here
# (embeddings (B, S, H): the S sentences of each example; scores (B,) or None; exclude (B, C) or None: candidates
# removed from each anchor's softmax; settings: the run's TrainConfig (temp, hard_negative_weight); gather: the
# loss's gather hook, see simcse.loss.Gather) -> a scalar
Loss = Callable[[Tensor, Tensor | None, Tensor | None, Any, Callable], Tensor]


def contrastive_loss(embeddings, scores, exclude, settings, gather) -> Tensor:
    """InfoNCE: each anchor picks its positive among every positive (and hard negatives) of the global batch."""
    from simcse import loss

    return loss.info_nce(
        embeddings[:, 0],
        embeddings[:, 1],
        embeddings[:, 2:] if embeddings.shape[1] > 2 else None,  # (B, K, H): K hard negatives per anchor
        temperature=settings.temp,
        hard_negative_weight=settings.hard_negative_weight,
        gather=gather,
        exclude=exclude,
    )


def cosent_loss(embeddings, scores, exclude, settings, gather) -> Tensor:
    """CoSENT: the global batch's pairs ranked by cosine as their gold scores rank them, scale 1/temp."""
    from simcse import loss

    return loss.cosent(embeddings[:, 0], embeddings[:, 1], scores, scale=1 / settings.temp, gather=gather)


def cosine_mse_loss(embeddings, scores, exclude, settings, gather) -> Tensor:
    """sentence-transformers' CosineSimilarityLoss: MSE between each pair's cosine and its gold score / 5."""
    from simcse import loss
    from simcse.text_files import MAX_SCORE

    return loss.cosine_mse(embeddings[:, 0], embeddings[:, 1], scores, max_score=MAX_SCORE, gather=gather)


@dataclass(frozen=True)
class Objective:
    name: str
    help: str
    data_kinds: tuple[str, ...]  # the training data it takes, by DATA_KINDS name
    loss: Loss
    in_batch_negatives: bool  # the batch's other examples are negatives: duplicate masking applies
    hard_negatives: bool  # reads a triplet's third sentence, a query's negatives (--hard_negative_weight)

    def read(self, name_or_path: str | os.PathLike, data_dir: str | os.PathLike | None = None) -> TrainData:
        """The training data, refused in one line when it is of a kind this objective does not take."""
        data = load_train_data(name_or_path, data_dir)
        if data.kind not in self.data_kinds:
            taker = next((name for name, other in OBJECTIVES.items() if data.kind in other.data_kinds), None)
            raise DataFormatError(
                data.path,
                "line 1",
                f"{DATA_KINDS[data.kind].description}: train on it with --objective {taker} (--objective "
                f"{self.name} takes {', '.join(self.data_kinds)})",
            )
        return data

    def negatives_per_anchor(self, batch: int, num_sent: int) -> int | None:
        """The candidates each anchor is contrasted with, for train_args.json (None without in-batch negatives)."""
        if not self.in_batch_negatives:
            return None
        return batch - 1 + batch * (num_sent - 2)  # the other positives, and every hard negative

    def unread_flag(self, settings) -> str | None:
        """Why a flag given with this objective would do nothing, or None."""
        if not self.hard_negatives and settings.hard_negative_weight != 0:
            return (
                f"--objective {self.name} has no hard negatives: --hard_negative_weight does nothing there, leave it 0"
            )
        if not self.in_batch_negatives and not settings.mask_duplicate_negatives:
            return (
                f"--objective {self.name} has no in-batch negatives: --no-mask_duplicate_negatives does nothing there"
            )
        return None


OBJECTIVES: dict[str, Objective] = {
    objective.name: objective
    for objective in (
        Objective(
            "simcse",
            "InfoNCE with in-batch negatives, on sentences, pairs, triplets or queries with K hard negatives",
            ("sentences", "pairs", "triplets", "query_documents"),
            contrastive_loss,
            in_batch_negatives=True,
            hard_negatives=True,
        ),
        Objective(
            "cosent",
            "CoSENT on scored pairs, scale 1/--temp",
            ("scored_pairs",),
            cosent_loss,
            in_batch_negatives=False,
            hard_negatives=False,
        ),
        Objective(
            "cosine_mse",
            "CosineSimilarityLoss on scored pairs: MSE between the cosine and the gold score scaled to [0, 1]",
            ("scored_pairs",),
            cosine_mse_loss,
            in_batch_negatives=False,
            hard_negatives=False,
        ),
    )
}
DEFAULT_OBJECTIVE = next(iter(OBJECTIVES))  # the first entry: the reference recipe's
