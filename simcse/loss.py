"""The SimCSE objective (InfoNCE with in-batch negatives), as a pure function of embeddings."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import torch
import torch.nn.functional as F

# Maps this process's rows (B, H) to every process's rows (W*B, H) and returns with them the index of
# this process's first row. The identity (one process) returns (rows, 0).
Gather = Callable[[torch.Tensor], tuple[torch.Tensor, int]]


def info_nce(
    anchors: torch.Tensor,
    positives: torch.Tensor,
    hard_negatives: torch.Tensor | None = None,
    *,
    temperature: float = 0.05,
    hard_negative_weight: float = 0.0,
    gather: Gather | None = None,
    exclude: torch.Tensor | None = None,
) -> torch.Tensor:
    """Mean cross-entropy of picking each anchor's own positive among all candidates.

    Args:
        anchors: (B, H) embeddings; row i is the anchor of example i.
        positives: (B, H); row i is the positive of anchor i and an in-batch negative for every other.
        hard_negatives: optional (B, H), or (B, K, H) for K per anchor; row i holds the hard negatives of
            anchor i, negatives for the others too. They are appended as extra columns of the similarity matrix,
            slot by slot: column N + k*N + j is negative k of global example j.
        temperature: cosine similarities are divided by it (0.05: logits lie in [-20, 20]).
        hard_negative_weight: added to each anchor's logits for its own hard negatives: a log-space
            weight, 0 leaves the hard negative with weight 1 (as in the original SimCSE).
        gather: turns local candidate rows into the global ones for multi-process training; the
            anchors stay local and their labels are offset to their own rows.
        exclude: optional (B, C) booleans over the candidate columns (C = N, or (1 + K) N with hard negatives):
            True removes that candidate from that anchor's softmax (never mark an anchor's own positive).
            ``duplicate_candidates`` builds it from token ids: the same text twice in a batch is a false
            negative, not a negative; ``above_positive`` from similarities.

    Returns:
        A scalar. Normalisation, logits and cross-entropy are computed in at least float32 whatever the
        input dtype (exp(20) overflows float16).
    """
    candidates = candidate_cosines(anchors, positives, hard_negatives, gather=gather)
    return info_nce_of(candidates, temperature=temperature, hard_negative_weight=hard_negative_weight, exclude=exclude)


class Candidates(NamedTuple):
    """Each anchor against every candidate of the global batch (``candidate_cosines``)."""

    cosines: torch.Tensor  # (B, C), C = (1 + K) N: the N positives, then the K slots of hard negatives
    labels: torch.Tensor  # (B,): the column of each anchor's own positive
    num_positives: int  # N: the global batch's examples

    def own(self, slots: int) -> torch.Tensor:
        """(B, 1 + slots): the columns of each anchor's own positive and its own ``slots`` hard negatives."""
        steps = torch.arange(slots + 1, device=self.labels.device)
        return self.labels[:, None] + self.num_positives * steps


def candidate_cosines(
    anchors: torch.Tensor,
    positives: torch.Tensor,
    hard_negatives: torch.Tensor | None = None,
    *,
    gather: Gather | None = None,
) -> Candidates:
    """The cosines (B, C) of each anchor with every candidate of the global batch, in at least float32, ordered as
    ``info_nce`` says; arguments as there."""
    _check_rows(anchors, positives=positives, hard_negatives=hard_negatives)
    gather = gather or (lambda rows: (rows, 0))
    dtype = torch.promote_types(anchors.dtype, torch.float32)
    # Inside an autocast region the matmuls would run in bf16/fp16 again: logits of up to 1 / temperature would
    # then carry errors of ~0.1.
    with torch.autocast(anchors.device.type, enabled=False):
        anchors = F.normalize(anchors.to(dtype), dim=-1)  # (B, H)
        candidates, first_row = gather(F.normalize(positives.to(dtype), dim=-1))  # (N, H), N = B * processes
        num_positives = candidates.shape[0]
        if hard_negatives is not None:
            negatives = hard_negatives if hard_negatives.ndim == 3 else hard_negatives[:, None]  # (B, K, H)
            candidates = torch.cat([candidates, _gather_slots(F.normalize(negatives.to(dtype), dim=-1), gather)])
        cosines = _Float32Similarities.apply(anchors, candidates)  # (B, (1 + K) N)
    labels = torch.arange(anchors.shape[0], device=anchors.device) + first_row  # (B,)
    return Candidates(cosines, labels, num_positives)


def info_nce_of(
    candidates: Candidates,
    *,
    temperature: float = 0.05,
    hard_negative_weight: float = 0.0,
    exclude: torch.Tensor | None = None,
) -> torch.Tensor:
    """``info_nce`` of ``candidate_cosines``' result."""
    if temperature <= 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    with torch.autocast(candidates.cosines.device.type, enabled=False):
        logits = candidates.cosines / temperature  # (B, C)
        if hard_negative_weight != 0.0 and logits.shape[1] > candidates.num_positives:
            own = candidates.own(logits.shape[1] // candidates.num_positives - 1)[:, 1:]  # (B, K)
            own_hard_negatives = torch.zeros_like(logits).scatter_(1, own, 1.0)  # (B, C)
            logits = logits + hard_negative_weight * own_hard_negatives
        if exclude is not None:
            if exclude.shape != logits.shape:
                expected = tuple(logits.shape)
                raise ValueError(f"exclude must be (batch, candidates) {expected}, got {tuple(exclude.shape)}")
            logits = logits.masked_fill(exclude, -math.inf)  # (B, C)
        return F.cross_entropy(logits, candidates.labels)


def above_positive(candidates: Candidates, margin: float) -> torch.Tensor:
    """(B, C) True where a candidate's cosine with the anchor exceeds that of the anchor's own positive plus
    ``margin`` (never the positive itself): likely a false negative. Qwen3-Embedding's rule with its own scores
    (margin 0.1); GIST's with a guide model's (margin minus ``--guide_margin``). No gradient flows through it."""
    cosines = candidates.cosines.detach()
    rows = torch.arange(len(cosines), device=cosines.device)
    above = cosines > cosines[rows, candidates.labels][:, None] + margin  # (B, C)
    above[rows, candidates.labels] = False
    return above


def distillation(
    candidates: Candidates,
    teacher_scores: torch.Tensor,
    *,
    temperature: float = 0.05,
    teacher_temperature: float = 1.0,
) -> torch.Tensor:
    """KL(teacher || student) over each anchor's own candidates [positive, its K hard negatives], the mean over the
    anchors: the teacher's ``softmax(teacher_scores / teacher_temperature)`` against the student's
    ``log_softmax(cosine / temperature)`` (FlagEmbedding's and KURE-v2's distillation).

    Args:
        candidates: ``candidate_cosines`` of the batch (its own K negatives in K slots).
        teacher_scores: (B, 1 + K), a teacher's scores of each anchor's positive and K negatives, in that order.

    Returns:
        A scalar, in at least float32; its gradient reaches the student only.
    """
    slots = candidates.cosines.shape[1] // candidates.num_positives - 1
    if teacher_scores.shape != (len(candidates.labels), slots + 1):
        expected = (len(candidates.labels), slots + 1)
        raise ValueError(f"teacher_scores must be (batch, 1 + negatives) {expected}, got {tuple(teacher_scores.shape)}")
    with torch.autocast(candidates.cosines.device.type, enabled=False):
        student = candidates.cosines.gather(1, candidates.own(slots)) / temperature  # (B, 1 + K)
        teacher = teacher_scores.detach().to(student.dtype) / teacher_temperature  # (B, 1 + K)
        return F.kl_div(
            F.log_softmax(student, dim=-1), F.log_softmax(teacher, dim=-1), reduction="batchmean", log_target=True
        )


def _check_rows(anchors: torch.Tensor, **others: torch.Tensor | None) -> None:
    """Every row of ``others`` has the anchors' shape; ``hard_negatives`` / ``hard_negative_ids`` may hold K rows
    per anchor, (B, K, ...)."""
    if anchors.ndim != 2:
        raise ValueError(f"anchors must be (batch, hidden), got shape {tuple(anchors.shape)}")
    for name, other in others.items():
        per_anchor = name.startswith("hard_negative") and other is not None and other.ndim == 3
        if other is not None and (other.shape[:1] + other.shape[2:] if per_anchor else other.shape) != anchors.shape:
            raise ValueError(f"{name} shape {tuple(other.shape)} differs from anchors shape {tuple(anchors.shape)}")


def _gather_slots(rows: torch.Tensor, gather: Gather) -> torch.Tensor:
    """(B, K, ...) rows of this process -> (K * N, ...): every process's rows in one gather, slot by slot (row
    k * N + j is slot k of global example j)."""
    batch, slots = rows.shape[:2]
    gathered, _ = gather(rows.reshape(batch, -1))  # (N, K * ...)
    gathered = gathered.reshape(gathered.shape[0], slots, *rows.shape[2:])  # (N, K, ...)
    return gathered.transpose(0, 1).reshape(-1, *rows.shape[2:])  # (K * N, ...)


class _Float32Similarities(torch.autograd.Function):
    """``anchors @ candidates.T`` (B, H) x (C, H) -> (B, C), in the inputs' precision forward and backward. A
    caller that runs ``backward()`` inside an autocast region would otherwise get the two backward matmuls in
    bf16/fp16 (relative error ~4e-3 in the gradient)."""

    @staticmethod
    def forward(ctx, anchors: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(anchors, candidates)
        return anchors @ candidates.T

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        anchors, candidates = ctx.saved_tensors
        with torch.autocast(grad.device.type, enabled=False):
            grad = grad.to(anchors.dtype)
            return grad @ candidates, grad.T @ anchors  # (B, H), (C, H)


def duplicate_candidates(
    anchor_ids: torch.Tensor,
    positive_ids: torch.Tensor,
    hard_negative_ids: torch.Tensor | None = None,
    *,
    gather: Gather | None = None,
) -> torch.Tensor:
    """(B, C) True where a candidate's token ids equal those of the anchor or of the anchor's positive, the
    positive's own column excepted: ``info_nce``'s ``exclude``.

    Args:
        anchor_ids, positive_ids, hard_negative_ids: (B, L) token ids (hard negatives: or (B, K, L)), padded alike
            (to the same width on every process). The candidates are the gathered positives, then the gathered
            hard negatives slot by slot, as ``info_nce`` orders them.
        gather: as in ``info_nce``; rows of every process, and the index of this process's first row.

    In supervised data a candidate can repeat the anchor's own text (a premise reused as another row's
    hypothesis) or its positive's; in unsupervised data anchor and positive are the same text.
    """
    if anchor_ids.ndim != 2:
        raise ValueError(f"anchor_ids must be (batch, seq_len), got shape {tuple(anchor_ids.shape)}")
    _check_rows(anchor_ids, positive_ids=positive_ids, hard_negative_ids=hard_negative_ids)
    gather = gather or (lambda rows: (rows, 0))
    candidate_ids, first_row = gather(positive_ids)  # (N, L)
    if hard_negative_ids is not None:
        negative_ids = hard_negative_ids if hard_negative_ids.ndim == 3 else hard_negative_ids[:, None]  # (B, K, L)
        candidate_ids = torch.cat([candidate_ids, _gather_slots(negative_ids, gather)])  # (C, L), C = (1 + K) N
    batch = len(anchor_ids)
    # One integer per distinct row of token ids (exact, by sorting): rows are equal iff their numbers are.
    _, text_number = torch.unique(
        torch.cat([anchor_ids, positive_ids, candidate_ids]), dim=0, return_inverse=True
    )  # (2B + C,)
    anchor_text, positive_text, candidate_text = (
        text_number[:batch],
        text_number[batch : 2 * batch],
        text_number[2 * batch :],
    )
    same_text = (candidate_text[None] == anchor_text[:, None]) | (
        candidate_text[None] == positive_text[:, None]
    )  # (B, C)
    rows = torch.arange(batch, device=anchor_ids.device)
    same_text[rows, rows + first_row] = False  # (B, C)
    return same_text


def cosent(
    embeddings1: torch.Tensor,
    embeddings2: torch.Tensor,
    scores: torch.Tensor,
    *,
    scale: float = 20.0,
    gather: Gather | None = None,
) -> torch.Tensor:
    """CoSENT (Su, 2022): rank the batch's pairs by cosine similarity as their gold scores rank them.

    Args:
        embeddings1, embeddings2: (B, H); row i of each is pair i.
        scores: (B,) gold similarity scores; only their order matters.
        scale: cosine differences are multiplied by it (20: the 1 / 0.05 of the contrastive temperature).
        gather: as in ``info_nce``. The pairs are ranked over every process's batch: each process computes the
            same global loss, and the gather's backward sums the gradients so that DDP's mean is the gradient
            of one process on the global batch.

    Returns:
        log(1 + sum over pairs (i, j) with scores[i] > scores[j] of exp(scale * (cos_j - cos_i))), a scalar, in
        at least float32. Equal scores give no term; a batch with no ordered pair gives 0.
    """
    with torch.autocast(embeddings1.device.type, enabled=False):
        cosines, scores = _gathered_pairs(embeddings1, embeddings2, scores, gather)  # (N,), (N,)
        differences = scale * (cosines[None, :] - cosines[:, None])  # (N, N): (i, j) is scale * (cos_j - cos_i)
        ordered = scores[:, None] > scores[None, :]  # (N, N): pair i is scored above pair j
        terms = differences.masked_fill(~ordered, -math.inf).flatten()  # (N * N,)
        return torch.logsumexp(torch.cat([terms.new_zeros(1), terms]), dim=0)  # log(1 + sum exp)


def cosine_mse(
    embeddings1: torch.Tensor,
    embeddings2: torch.Tensor,
    scores: torch.Tensor,
    *,
    max_score: float = 5.0,
    gather: Gather | None = None,
) -> torch.Tensor:
    """CosineSimilarityLoss (sentence-transformers'): the mean squared difference between each pair's cosine and its
    gold score scaled to [0, 1] (``scores / max_score``).

    Args:
        embeddings1, embeddings2: (B, H); row i of each is pair i.
        scores: (B,) gold scores in [0, max_score].
        gather: as in ``cosent``: the mean is over every process's pairs, each process computes the same global
            loss and the gather's backward sums the gradients.

    Returns:
        A scalar, in at least float32.
    """
    with torch.autocast(embeddings1.device.type, enabled=False):
        cosines, scores = _gathered_pairs(embeddings1, embeddings2, scores, gather)  # (N,), (N,)
        return F.mse_loss(cosines, scores / max_score)


def _gathered_pairs(
    embeddings1: torch.Tensor, embeddings2: torch.Tensor, scores: torch.Tensor, gather: Gather | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Every process's pairs: their cosines and gold scores (N,), in at least float32 (call outside autocast)."""
    if embeddings1.ndim != 2 or embeddings1.shape != embeddings2.shape:
        raise ValueError(
            f"embeddings1 and embeddings2 must both be (batch, hidden), got {tuple(embeddings1.shape)} and "
            f"{tuple(embeddings2.shape)}"
        )
    if scores.shape != embeddings1.shape[:1]:
        raise ValueError(f"scores must be (batch,) = ({embeddings1.shape[0]},), got {tuple(scores.shape)}")
    gather = gather or (lambda rows: (rows, 0))
    dtype = torch.promote_types(embeddings1.dtype, torch.float32)
    cosines = F.cosine_similarity(embeddings1.to(dtype), embeddings2.to(dtype), dim=-1)  # (B,)
    return gather(cosines[:, None])[0][:, 0], gather(scores.to(dtype)[:, None])[0][:, 0]  # (N,), (N,)
