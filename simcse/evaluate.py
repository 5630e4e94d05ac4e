"""STS evaluation: correlations between gold scores and four embedding similarities."""

from __future__ import annotations

import os
from collections.abc import Mapping

import numpy as np
import torch
from scipy.stats import pearsonr, spearmanr
from sklearn.metrics.pairwise import (
    paired_cosine_distances,
    paired_euclidean_distances,
    paired_manhattan_distances,
)

from simcse.data import STSData
from simcse.run_folder import read_json, write_json

SIMILARITIES = ("cosine", "euclidean", "manhattan", "dot")
METRIC_KEYS = (
    *(f"{similarity}_{correlation}" for similarity in SIMILARITIES for correlation in ("pearson", "spearman")),
    "avg_pearson",
    "avg_spearman",
    "avg",
)
# The metric that picks the best checkpoint and that reports lead with (what MTEB reports for STS).
SELECTION_METRIC = "cosine_spearman"
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
        "cosine": 1.0 - paired_cosine_distances(embeddings1, embeddings2),
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
    unique = list(dict.fromkeys([*sts_data.sentences1, *sts_data.sentences2]))
    row_of = {sentence: row for row, sentence in enumerate(unique)}
    embeddings = model.encode(unique, batch_size=batch_size, max_length=max_length, description=description)  # (U, H)
    embeddings1 = embeddings[[row_of[s] for s in sts_data.sentences1]]  # (N, H)
    embeddings2 = embeddings[[row_of[s] for s in sts_data.sentences2]]  # (N, H)
    return sts_metrics(embeddings1, embeddings2, sts_data.scores)


def evaluate_dev(model, valid_data, batch_size: int | None = None) -> dict[str, float | str]:
    """A training run's dev metrics, with the name of the one it selects its best checkpoint by under
    ``selection_metric``: cosine Spearman on an STS set, nDCG@10 on a retrieval set (``RetrievalData``: the
    model's query and document prompts and document length). Its progress bar is labelled "dev"."""
    from simcse.retrieval import RetrievalData, evaluate_retrieval

    if isinstance(valid_data, RetrievalData):
        metrics = evaluate_retrieval(model, valid_data, batch_size, description="dev")
    else:
        metrics = evaluate_sts(model, valid_data, batch_size=batch_size, description="dev")
    return metrics | {"selection_metric": selection_metric(valid_data)}


def selection_metric(valid_data) -> str:
    """What a run selects its best checkpoint by on this dev set (STSData or RetrievalData)."""
    from simcse.retrieval import RETRIEVAL_SELECTION_METRIC, RetrievalData

    return RETRIEVAL_SELECTION_METRIC if isinstance(valid_data, RetrievalData) else SELECTION_METRIC


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


def read_eval_report(path: str | os.PathLike) -> dict | None:
    """An eval_results.json (what ``write_eval_report`` writes), or None when there is none; a file without its
    results per dataset and metric raises ValueError naming it and what is missing."""
    report = read_json(path)
    if report is None:
        return None
    results = report.get("results") if isinstance(report, dict) else None
    if not isinstance(results, dict):
        raise ValueError(f"{path}: not an eval.py report (no 'results' object)")
    for name, metrics in results.items():
        missing = [key for key in METRIC_KEYS if not isinstance(metrics, dict) or key not in metrics]
        if missing:
            raise ValueError(f"{path}: the results of {name!r} have no {', '.join(missing)}")
    return report


def write_eval_report(
    path: str | os.PathLike,
    model_name: str,
    model,
    results: Mapping[str, Mapping[str, float]],
    merge: bool = False,
    retrieval: Mapping[str, Mapping[str, float]] | None = None,
) -> dict:
    """Write (and return) the JSON eval.py produces: the model, its pooler settings and max length, the STS
    metrics per dataset under ``results`` and the retrieval metrics per set under ``retrieval``. With ``merge``
    the datasets of a report already there are kept (its results win: the trainer adds its dev result to what
    eval.py measured, never replaces it)."""
    earlier = (read_eval_report(path) or {}) if merge else {}
    report = {
        "model": str(model_name),
        "pooler": model.pooler,
        "mlp_only_train": model.mlp_only_train,
        "max_length": model.max_length,
        "results": {name: dict(metrics) for name, metrics in results.items()} | earlier.get("results", {}),
    }
    if retrieval or "retrieval" in earlier:
        report["retrieval"] = {name: dict(m) for name, m in (retrieval or {}).items()} | earlier.get("retrieval", {})
    write_json(path, report)
    return report
