"""The settings of the loss (train.py's "loss" flags): temperature, hard negatives, duplicate masking, a teacher's
distillation, the false-negative guards and Matryoshka sizes. The run's settings (``simcse.config``) take them as a
base class; ``LossConfig.loss_settings`` is what the objectives read.

Like ``simcse.config`` this module imports no torch.
"""

from __future__ import annotations

from dataclasses import dataclass

from simcse.objectives import LossSettings
from simcse.rules import as_list, at_least, between, finite, non_negative, positive, setting

# Temperatures outside it train nothing: at 1e-30 every gradient overflows, at inf every logit is 0.
TEMPERATURE_RANGE = (1e-3, 10.0)
LOSS_GROUP = "loss"


@dataclass
class LossConfig:
    """The loss's settings; the defaults are the reference recipe's (no distillation, guard or Matryoshka size)."""

    temp: float = setting(
        0.05,
        "temperature of the softmax over cosine similarities",
        LOSS_GROUP,
        resume=True,
        card=True,
        rule=between(*TEMPERATURE_RANGE, "cosines are divided by it"),
    )
    hard_negative_weight: float = setting(
        0.0,
        "log-space weight added to each anchor's own hard-negative logit (0 = weight 1)",
        LOSS_GROUP,
        resume=True,
        card=True,
        rule=finite,
    )
    mask_duplicate_negatives: bool = setting(
        True,
        "remove in-batch candidates with the same token ids as the anchor or its positive",
        LOSS_GROUP,
        resume=True,
    )
    distill_weight: float = setting(
        0.0,
        "add this times KL(teacher || student) over each query's positive and negatives, from the pos_scores / "
        "neg_scores of .jsonl retrieval data (data/score_with_teacher.py writes them); --objective distill: the KL "
        "alone",
        LOSS_GROUP,
        resume=True,
        card=True,
        rule=non_negative,
    )
    teacher_temperature: float = setting(
        1.0,
        "the teacher's scores are divided by it before their softmax (a cross-encoder's logits: 1; cosines: about "
        "--temp)",
        LOSS_GROUP,
        resume=True,
        card=True,
        rule=between(*TEMPERATURE_RANGE, "the teacher's scores are divided by it"),
    )
    false_negative_margin: float | None = setting(
        None,
        "mask a candidate whose cosine with the anchor exceeds the positive's plus this (Qwen3-Embedding: 0.1)",
        LOSS_GROUP,
        resume=True,
        card=True,
        rule=finite,
        none_means="off",
    )
    guide_model: str | None = setting(
        None,
        "a frozen model (of the same tokenizer) whose cosines mask candidates it scores above the positive minus "
        "--guide_margin (GIST)",
        LOSS_GROUP,
        resume=True,
        card=True,
        path=True,
        none_means="off",
    )
    guide_margin: float = setting(0.0, "GIST's absolute margin", LOSS_GROUP, resume=True, card=True, rule=finite)
    matryoshka_dims: int | list[int] | None = setting(
        None,
        "train these sizes of the embedding too (its first N dimensions, re-normalised), the loss summed over them: "
        "list the full size as well, e.g. 768 256 128",
        LOSS_GROUP,
        resume=True,
        card=True,
        rule=at_least(1),
        none_means="the full size only",
        metavar="N",
    )
    matryoshka_weights: float | list[float] | None = setting(
        None,
        "each size's weight in that sum, one per --matryoshka_dims",
        LOSS_GROUP,
        resume=True,
        card=True,
        rule=positive,
        none_means="1 each",
        metavar="W",
    )

    def loss_settings(self) -> LossSettings:
        """What the objectives' losses read of the settings."""
        dims, weights = as_list(self.matryoshka_dims or []), as_list(self.matryoshka_weights or [])
        return LossSettings(
            self.temp,
            self.hard_negative_weight,
            self.mask_duplicate_negatives,
            self.distill_weight,
            self.teacher_temperature,
            self.false_negative_margin,
            self.guide_margin,
            tuple(dims),
            tuple(float(weight) for weight in weights),
        )

    def loss_problem(self, objectives: list[str]) -> str | None:
        """Why the loss settings do not go together (with the run's ``objectives``), or None."""
        dims, weights = as_list(self.matryoshka_dims or []), as_list(self.matryoshka_weights or [])
        if len(set(dims)) < len(dims):
            return f"--matryoshka_dims {' '.join(map(str, dims))} names a size twice"
        if weights and len(weights) != len(dims):
            return f"--matryoshka_weights has {len(weights)} values for {len(dims)} sizes: one per --matryoshka_dims"
        if self.guide_margin != 0 and self.guide_model is None:
            return "--guide_margin is GIST's margin: it needs --guide_model"
        if "distill" in objectives and self.distill_weight == 0:
            return "--objective distill trains on --distill_weight times the KL: give --distill_weight above 0"
        return None
