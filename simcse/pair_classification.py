"""Pair classification: labelled sentence pairs (paraphrase or not, entailment or contradiction) and how well one
cosine threshold separates them: accuracy, F1 (with its precision and recall), average precision and the Matthews
correlation, what sentence-transformers' ``BinaryClassificationEvaluator`` reports for cosine similarity.

A set is a TSV with the header ``sentence1 sentence2 label`` (labels 1 and 0) or KorNLI's ``sentence1 sentence2
gold_label`` (entailment is 1, contradiction 0, neutral pairs are dropped and counted). The best threshold is
searched between distinct cosines only: pairs whose cosines tie are always on the same side of it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from sklearn.metrics import average_precision_score, matthews_corrcoef

from simcse.text_files import DataFormatError, check_sentence, drop_blank_lines, quoted, read_lines, split_row

# The label column's names, and what each label means (None: the pair is dropped).
LABEL_COLUMNS = ("label", "gold_label")
LABELS = {"1": 1, "0": 0, "entailment": 1, "contradiction": 0, "neutral": None}
METRIC_KEYS = tuple(
    f"cosine_{name}" for name in ("accuracy", "accuracy_threshold", "f1", "f1_threshold", "precision", "recall", "ap")
) + ("cosine_mcc",)
# The original project's table style: (column title, metric key), x100 except the thresholds.
TABLE_COLUMNS = (
    ("Accuracy", "cosine_accuracy"),
    ("F1", "cosine_f1"),
    ("Precision", "cosine_precision"),
    ("Recall", "cosine_recall"),
    ("AP", "cosine_ap"),
    ("MCC", "cosine_mcc"),
)


@dataclass
class PairData:
    name: str
    sentences1: list[str]
    sentences2: list[str]
    labels: list[int]  # 1: the pair belongs together, 0: it does not
    dropped: int = 0  # neutral pairs

    def __len__(self) -> int:
        return len(self.labels)


def _header(path: Path) -> tuple[str, ...] | None:
    """The first line's fields, when the file is a TSV; None otherwise."""
    if path.suffix.lower() != ".tsv" or not path.is_file():
        return None
    with open(path, encoding="utf-8-sig", errors="replace") as file:
        first = next((line for line in file if line.strip()), "")
    return tuple(field.strip() for field in first.rstrip("\r\n").split("\t"))


def recognises(name_or_path: str | os.PathLike, data_dir: str | os.PathLike | None = None) -> bool:
    """A TSV whose header holds sentence1, sentence2 and a label column."""
    header = _header(Path(name_or_path))
    return header is not None and {"sentence1", "sentence2"} <= set(header) and bool(set(LABEL_COLUMNS) & set(header))


def files(name_or_path: str | os.PathLike, split: str | None = None, data_dir=None) -> list[Path]:
    return [Path(name_or_path)]


def load(name_or_path: str | os.PathLike, split: str | None = None, data_dir=None) -> PairData:
    """The labelled pairs of a TSV (``split`` and ``data_dir`` are not used: a set is one file)."""
    path = Path(name_or_path)
    lines = list(drop_blank_lines(path, read_lines(path)))
    header = tuple(field.strip() for field in lines[0][1].split("\t")) if lines else ()
    label_column = next((name for name in LABEL_COLUMNS if name in header), None)
    if label_column is None or not {"sentence1", "sentence2"} <= set(header):
        raise DataFormatError(path, "line 1", "expected a header with sentence1, sentence2 and label (or gold_label)")
    columns = [header.index(name) for name in ("sentence1", "sentence2", label_column)]
    data = PairData(path.stem, [], [], [])
    for number, line in lines[1:]:
        row = split_row(path, number, line, len(header), ", ".join(header))
        where = f"line {number}"
        first, second, label = (row[column] for column in columns)
        if label.strip() not in LABELS:
            raise DataFormatError(path, where, f"label {quoted(label)} is not one of {', '.join(LABELS)}")
        if (value := LABELS[label.strip()]) is None:
            data.dropped += 1
            continue
        data.sentences1.append(check_sentence(path, where, first, "sentence1"))
        data.sentences2.append(check_sentence(path, where, second, "sentence2"))
        data.labels.append(value)
    if len(set(data.labels)) < 2:
        raise DataFormatError(path, None, f"{len(data)} pairs, not both labels: a threshold needs pairs of each")
    return data


def texts(data: PairData) -> list[str]:
    return data.sentences1 + data.sentences2


def subset(data: PairData, rows: list[int]) -> PairData:
    """The pairs at ``rows`` (a sample of the set); refused when they hold one label only."""
    labels = [data.labels[i] for i in rows]
    if len(set(labels)) < 2:
        raise ValueError(f"{data.name}: the {len(rows)} pairs sampled hold one label only; sample more")
    pick = lambda values: [values[i] for i in rows]  # noqa: E731
    return PairData(data.name, pick(data.sentences1), pick(data.sentences2), labels)


def best_threshold_metrics(scores, labels) -> dict[str, float]:
    """The accuracy and F1 of the best threshold on ``scores`` (higher: more likely label 1), the threshold of
    each (halfway between two neighbouring distinct scores), the F1 threshold's precision, recall and Matthews
    correlation, and the average precision of the ranking."""
    scores, labels = np.asarray(scores, dtype=np.float64), np.asarray(labels, dtype=np.int64)
    order = np.argsort(-scores, kind="stable")
    ranked, ranked_labels = scores[order], labels[order]
    ends = np.flatnonzero(np.append(ranked[1:] != ranked[:-1], True))  # the last pair of each group of ties
    above = ends + 1  # pairs called 1 by a threshold just below the group
    true_positives = np.cumsum(ranked_labels)[ends]
    positives, total = int(labels.sum()), len(labels)
    following = np.append(ranked[ends[:-1] + 1], ranked[-1])  # the next group's score (the last: its own)
    thresholds = np.where(ends < total - 1, (ranked[ends] + following) / 2, ranked[ends])
    thresholds = np.where(thresholds == following, ranked[ends], thresholds)  # a midpoint rounded onto the next
    # Accuracy: "nothing is 1" first, so that a tie keeps the earliest (highest) threshold.
    accuracy = np.concatenate(
        [[(total - positives) / total], (true_positives + total - positives - (above - true_positives)) / total]
    )
    best = int(np.argmax(accuracy))
    accuracy_threshold = np.nextafter(ranked[0], np.inf) if best == 0 else thresholds[best - 1]
    precision, recall = true_positives / above, true_positives / positives
    with np.errstate(invalid="ignore", divide="ignore"):
        f1 = np.where(true_positives > 0, 2 * precision * recall / (precision + recall), 0.0)
    f1_best = int(np.argmax(f1))
    return {
        "cosine_accuracy": float(accuracy[best]),
        "cosine_accuracy_threshold": float(accuracy_threshold),
        "cosine_f1": float(f1[f1_best]),
        "cosine_f1_threshold": float(thresholds[f1_best]),
        "cosine_precision": float(precision[f1_best]),
        "cosine_recall": float(recall[f1_best]),
        "cosine_ap": float(average_precision_score(labels, scores)),
        "cosine_mcc": float(matthews_corrcoef(labels, scores >= thresholds[f1_best])),
    }


def evaluate(model, data: PairData, batch_size: int | None = None, description: str = "pairs") -> dict[str, float]:
    """``best_threshold_metrics`` of the cosines of ``model.encode``'s embeddings of each pair."""
    from simcse.evaluate import embed_pairs, paired_cosines

    embeddings = embed_pairs(model, data.sentences1, data.sentences2, batch_size, description=description)
    return best_threshold_metrics(paired_cosines(*embeddings), data.labels)


def describe(name: str, data: PairData, model) -> str:
    """eval.py's line before a set is encoded."""
    dropped = f"; {data.dropped} neutral dropped" if data.dropped else ""
    return f"{name} ({len(data)} labelled pairs, {sum(data.labels)} positive{dropped})"


def format_table(results: Mapping[str, Mapping[str, float]]) -> str:
    """A Markdown table of results (row name -> metrics): x100, 2 decimals, and the F1 threshold."""
    lines = [
        "| Model | " + " | ".join(title for title, _ in TABLE_COLUMNS) + " | Threshold (F1) |",
        "|:---|" + "---:|" * (len(TABLE_COLUMNS) + 1),
    ]
    for row_name, metrics in results.items():
        cells = [f"{100 * metrics[key]:.2f}" for _, key in TABLE_COLUMNS] + [f"{metrics['cosine_f1_threshold']:.4f}"]
        lines.append(f"| {row_name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def card_sections(results: Mapping[str, Mapping[str, float]], row_name: str) -> list[str]:
    """The model card's sections: one table per set."""
    return [
        f"## Pair classification: {name}\n\nx100, the best cosine threshold.\n\n{format_table({row_name: metrics})}"
        for name, metrics in results.items()
    ]
