"""STS evaluation: correlations between gold scores and four embedding similarities (the ``sts`` entry of
``simcse.tasks``)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch
from scipy.stats import pearsonr, spearmanr
from sklearn.metrics.pairwise import (
    paired_cosine_distances,
    paired_euclidean_distances,
    paired_manhattan_distances,
)

from simcse.data import STSData, load_sts, resolve_sts_path
from simcse.registry import STS_DATASETS
from simcse.tasks import TASKS

SIMILARITIES = ("cosine", "euclidean", "manhattan", "dot")
METRIC_KEYS = (
    *(f"{similarity}_{correlation}" for similarity in SIMILARITIES for correlation in ("pearson", "spearman")),
    "avg_pearson",
    "avg_spearman",
    "avg",
)
# The metric that picks the best checkpoint and that reports lead with (what MTEB reports for STS).
SELECTION_METRIC = TASKS["sts"].selection_metric
# The original project's README table: (column title, metric key).
TABLE_COLUMNS = (
    ("AVG", "avg"),
    ("Cosine Pearson", "cosine_pearson"),
    ("Cosine Spearman", "cosine_spearman"),
    ("Euclidean Pearson", "euclidean_pearson"),
    ("Euclidean Spearman", "euclidean_spearman"),
    ("Manhattan Pearson", "manhattan_pearson"),
    ("Manhattan Spearman", "manhattan_spearman"),
    ("Dot Pearson", "dot_pearson"),
    ("Dot Spearman", "dot_spearman"),
)


def _as_float64(name: str, array) -> np.ndarray:
    if isinstance(array, torch.Tensor):
        array = array.detach().float().cpu().numpy()
    array = np.asarray(array, dtype=np.float64)
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{name} holds NaN or infinite values")
    return array


def sts_metrics(embeddings1, embeddings2, scores) -> dict[str, float]:
    """Pearson and Spearman correlations of gold ``scores`` with each similarity of the embedding pairs.

    Similarities: cosine, negated euclidean and manhattan distances, dot product. Values are
    correlations (not x100); ``avg_pearson``/``avg_spearman`` average the four of each kind and ``avg``
    all eight. The headline number is ``SELECTION_METRIC``, cosine Spearman.
    """
    embeddings1 = _as_float64("embeddings1", embeddings1)  # (N, H)
    embeddings2 = _as_float64("embeddings2", embeddings2)  # (N, H)
    scores = _as_float64("scores", scores)  # (N,)
    if embeddings1.ndim != 2 or embeddings1.shape != embeddings2.shape:
        raise ValueError(f"embeddings must be two (N, H) arrays, got {embeddings1.shape} and {embeddings2.shape}")
    if scores.shape != (len(embeddings1),):
        raise ValueError(f"{len(embeddings1)} embedding pairs but scores shaped {scores.shape}")
    if len(scores) < 2:
        raise ValueError("correlations need at least 2 pairs")

    similarities = {
        "cosine": paired_cosines(embeddings1, embeddings2),
        "euclidean": -paired_euclidean_distances(embeddings1, embeddings2),
        "manhattan": -paired_manhattan_distances(embeddings1, embeddings2),
        "dot": np.einsum("nh,nh->n", embeddings1, embeddings2),
    }
    metrics: dict[str, float] = {}
    for name, similarity in similarities.items():
        metrics[f"{name}_pearson"] = float(pearsonr(scores, similarity).statistic)
        metrics[f"{name}_spearman"] = float(spearmanr(scores, similarity).statistic)
    for correlation in ("pearson", "spearman"):
        metrics[f"avg_{correlation}"] = float(np.mean([metrics[f"{name}_{correlation}"] for name in SIMILARITIES]))
    metrics["avg"] = (metrics["avg_pearson"] + metrics["avg_spearman"]) / 2
    return metrics


def evaluate_sts(
    model, sts_data: STSData, batch_size: int | None = None, max_length: int | None = None, description: str = "STS"
) -> dict[str, float]:
    """``sts_metrics`` of ``model.encode`` on the pairs; a sentence that appears twice is encoded once.

    ``batch_size`` and ``max_length`` left as None are ``encode``'s defaults (the model's max length);
    ``description`` labels encode's progress bar (shown on long inputs in a terminal).
    """
    embeddings1, embeddings2 = embed_pairs(
        model, sts_data.sentences1, sts_data.sentences2, batch_size, max_length, description
    )
    return sts_metrics(embeddings1, embeddings2, sts_data.scores)


def embed_pairs(
    model,
    sentences1: list[str],
    sentences2: list[str],
    batch_size: int | None = None,
    max_length: int | None = None,
    description: str = "pairs",
) -> tuple[np.ndarray, np.ndarray]:
    """``model.encode``'s embeddings (N, H) of each side of the pairs; a sentence that appears twice is encoded
    once."""
    unique = list(dict.fromkeys([*sentences1, *sentences2]))
    row_of = {sentence: row for row, sentence in enumerate(unique)}
    embeddings = model.encode(unique, batch_size=batch_size, max_length=max_length, description=description)  # (U, H)
    return embeddings[[row_of[s] for s in sentences1]], embeddings[[row_of[s] for s in sentences2]]


def paired_cosines(embeddings1, embeddings2) -> np.ndarray:
    """The cosine of each pair of rows, in float64; NaN or infinite embeddings are refused."""
    return 1.0 - paired_cosine_distances(
        _as_float64("embeddings1", embeddings1), _as_float64("embeddings2", embeddings2)
    )


def format_sts_table(results: Mapping[str, Mapping[str, float]]) -> str:
    """A Markdown table of results (row name -> metrics), as in the original README: x100, 2 decimals."""
    lines = [
        "| Model | " + " | ".join(title for title, _ in TABLE_COLUMNS) + " |",
        "|:---|" + "---:|" * len(TABLE_COLUMNS),
    ]
    for row_name, metrics in results.items():
        cells = [f"{100 * metrics[key]:.2f}" for _, key in TABLE_COLUMNS]
        lines.append(f"| {row_name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------------
# The STS task's entry points (simcse.tasks)


def recognises(name_or_path: str | os.PathLike, data_dir: str | os.PathLike | None = None) -> bool:
    return True  # the fallback task: any set no other task takes is read as STS (and refused there if not one)


def files(name_or_path: str | os.PathLike, split: str | None = None, data_dir=None) -> list[Path]:
    return [resolve_sts_path(name_or_path, data_dir)]


def subset(data: STSData, rows: list[int]) -> STSData:
    """The pairs at ``rows`` (a sample of the set)."""
    columns = ([values[i] for i in rows] for values in (data.sentences1, data.sentences2, data.scores))
    return STSData(*columns, data.name)


def load(name_or_path: str | os.PathLike, split: str | None = None, data_dir=None) -> STSData:
    return load_sts(name_or_path, data_dir)


def texts(data: STSData) -> list[str]:
    return data.sentences1 + data.sentences2


def evaluate(model, data: STSData, batch_size: int | None = None, description: str = "STS") -> dict[str, float]:
    return evaluate_sts(model, data, batch_size=batch_size, description=description)


def describe(name: str, data: STSData, model) -> str:
    return f"{name} ({len(data)} pairs)"


format_table = format_sts_table


def card_sections(results: Mapping[str, Mapping[str, float]], row_name: str) -> list[str]:
    """The model card's sections: a heading, then one table per dataset."""
    if not results:
        return []
    sections = ["## Results\n\nx100; AVG is the mean of the eight correlations."]
    for name, metrics in results.items():
        display = STS_DATASETS[name].display_name if name in STS_DATASETS else Path(name).stem
        sections.append(f"**{display} ({name})**\n\n{format_sts_table({row_name: metrics})}")
    return sections
