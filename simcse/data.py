"""STS data, read exactly (training data: ``simcse.train_data``; batching: ``simcse.batching``).

``load_sts``: KorSTS TSV, KLUE-STS JSON, or a plain ``sentence1<TAB>sentence2<TAB>score`` TSV. Files are split on
tabs with quoting disabled (a ``"`` is text, never a field delimiter) and sentences are kept verbatim. A bad row
raises ``DataFormatError`` naming the file and the 1-based line (or the JSON index); no row is ever shifted or
dropped silently. Blank lines are skipped and counted in a log line. ``Row`` is one example of any data file.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from simcse.registry import STS_DATASETS, default_data_dir, missing_data_hint
from simcse.text_files import (
    DataFormatError,
    check_is_file,
    check_sentence,
    drop_blank_lines,
    is_number,
    parse_score,
    quoted,
    read_lines,
    split_row,
)

__all__ = ["STS_DATASETS", "DataFormatError", "Row", "STSData", "load_sts", "resolve_sts_path"]

logger = logging.getLogger(__name__)

KORSTS_HEADER = ("genre", "filename", "year", "id", "score", "sentence1", "sentence2")
PLAIN_STS_HEADER = ("sentence1", "sentence2", "score")


@dataclass
class STSData:
    """Sentence pairs with gold similarity scores (0 to 5)."""

    sentences1: list[str]
    sentences2: list[str]
    scores: list[float]
    name: str = ""

    def __post_init__(self) -> None:
        if not len(self.sentences1) == len(self.sentences2) == len(self.scores):
            raise ValueError(
                f"STSData {self.name!r}: {len(self.sentences1)} sentences1, "
                f"{len(self.sentences2)} sentences2 and {len(self.scores)} scores"
            )

    def __len__(self) -> int:
        return len(self.scores)


class Row(NamedTuple):
    """One training example as read: where it is ("line 12", "row 12"), its texts (the kind's columns in order; a
    retrieval query alone), its gold score (scored pairs), a retrieval query's documents and a teacher's scores of
    them (None: the row has none)."""

    where: str
    texts: tuple[str, ...]
    score: float | None = None
    positives: list[str] | None = None
    negatives: list[str] | None = None
    positive_scores: list[float] | None = None
    negative_scores: list[float] | None = None


# ---------------------------------------------------------------------------------------------------
# Reading lines


# ---------------------------------------------------------------------------------------------------
# STS data


def resolve_sts_path(name_or_path: str | os.PathLike, data_dir: str | os.PathLike | None = None) -> Path:
    """The file behind a dataset name (see ``STS_DATASETS``) or a path, which must exist."""
    name = str(name_or_path)
    if name in STS_DATASETS:
        dataset = STS_DATASETS[name]
        path = Path(data_dir if data_dir is not None else default_data_dir()) / dataset.file
        if not path.is_file():
            raise FileNotFoundError(
                f"{path}: no such file for dataset {name!r}; "
                + missing_data_hint(f"bash {dataset.download_script}", dataset.file)
            )
        return path
    path = Path(name)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file (known dataset names: {', '.join(STS_DATASETS)})")
    check_is_file(path)
    return path


def load_sts(name_or_path: str | os.PathLike, data_dir: str | os.PathLike | None = None) -> STSData:
    """Read STS pairs from a dataset name (``korsts_dev``, ``klue_sts_dev``, ...) or a file.

    The format comes from the file: ``.json`` is KLUE-STS; otherwise the first line must be the KorSTS
    header (7 columns) or ``sentence1<TAB>sentence2<TAB>score``, or be a headerless 3-column row.
    """
    path = resolve_sts_path(name_or_path, data_dir)
    name = str(name_or_path) if str(name_or_path) in STS_DATASETS else path.stem
    return _sts_from_lines(path, name, read_lines(path))


def _sts_from_lines(path: Path, name: str, lines: list[tuple[int, str]]) -> STSData:
    """The STS pairs of a file read into ``lines`` (KLUE-STS JSON by its suffix, else a TSV), checked for use."""
    data = STSData([], [], [], name)
    for row in scored_pair_rows(path, lines):
        data.sentences1.append(row.texts[0])
        data.sentences2.append(row.texts[1])
        data.scores.append(row.score)
    if len(data) == 0:
        raise DataFormatError(path, None, "no sentence pairs found")
    check_scored_pairs(path, name, len(data), len(set(data.scores)) > 1, data.scores[0])
    return data


def check_scored_pairs(path: str | Path, name: str, count: int, scores_differ: bool, first_score: float) -> None:
    """Refuse scored pairs that correlations cannot use: one pair, or one score throughout."""
    if count == 1:
        raise DataFormatError(path, None, f"{name!r} holds 1 sentence pair; correlations need 2 or more")
    if not scores_differ:
        raise DataFormatError(
            path,
            None,
            f"every gold score of {name!r} is {first_score:g}: correlations with constant scores are undefined",
        )


def sts_layout(first: tuple[str, ...]) -> tuple[tuple[int, int, int], str, bool] | None:
    """For an STS TSV's first line: the (score, sentence1, sentence2) columns, their description and whether the
    line is a header; None when it is no STS file."""
    if first == KORSTS_HEADER:
        return (4, 5, 6), "KorSTS: " + ", ".join(KORSTS_HEADER), True
    if first == PLAIN_STS_HEADER:
        return (2, 0, 1), "sentence1, sentence2, score", True
    if len(first) == len(PLAIN_STS_HEADER) and is_number(first[2]):
        return (2, 0, 1), "sentence1, sentence2, score", False
    return None


def scored_pair_rows(path: Path, lines: Iterable[tuple[int, str]]) -> Iterator[Row]:
    """The pairs of an STS file: KLUE-STS JSON by its suffix (read whole), else a TSV (read line by line)."""
    if path.suffix.lower() == ".json":
        yield from _klue_sts_rows(path, "\n".join(line for _, line in lines))
        return
    lines = drop_blank_lines(path, lines)
    first_line = next(lines, None)
    if first_line is None:
        return
    first = tuple(first_line[1].split("\t"))
    if (layout := sts_layout(first)) is None:
        raise DataFormatError(
            path,
            "line 1",
            "unrecognised STS file: expected the KorSTS header (" + "\\t".join(KORSTS_HEADER) + ") or "
            "sentence1\\tsentence2\\tscore (header optional)",
        )
    (score_col, s1_col, s2_col), what, has_header = layout
    for number, line in lines if has_header else itertools.chain([first_line], lines):
        fields = split_row(path, number, line, len(first), what)
        record = {"sentence1": fields[s1_col], "sentence2": fields[s2_col], "score": fields[score_col]}
        yield scored_pair(path, f"line {number}", record)


def _klue_sts_rows(path: Path, text: str) -> Iterator[Row]:
    try:
        items = json.loads(text)
    except json.JSONDecodeError as err:
        # JSON Lines under a .json name: one object parses, then the next line is "Extra data".
        lines_hint = "; one JSON object per line is JSON Lines: name the file .jsonl" if err.msg == "Extra data" else ""
        raise DataFormatError(path, f"line {err.lineno}", f"invalid JSON: {err.msg}{lines_hint}") from None
    if not isinstance(items, list):
        raise DataFormatError(path, None, "expected a JSON list of {sentence1, sentence2, labels: {label}}")
    for index, item in enumerate(items):
        where = f"JSON index {index}"
        if not isinstance(item, dict):
            raise DataFormatError(path, where, f"expected an object, found {type(item).__name__}")
        labels = item.get("labels")
        if not isinstance(labels, dict) or "label" not in labels:
            raise DataFormatError(path, where, "missing labels.label")
        yield scored_pair(path, where, {"sentence1": item.get("sentence1"), "sentence2": item.get("sentence2"),
                                         "score": labels["label"]})  # fmt: skip


def record_text(path: Path, where: str, record: dict, key: str) -> str:
    """``record[key]``, a sentence."""
    text = record.get(key)
    if not isinstance(text, str):
        raise DataFormatError(path, where, f"missing or non-string {key!r}")
    return check_sentence(path, where, text, key)


def scored_pair(path: Path, where: str, record: dict) -> Row:
    score = record.get("score")
    if isinstance(score, bool) or not isinstance(score, (int, float, str)):
        raise DataFormatError(path, where, f"score {quoted(score)} is not a number")
    score = parse_score(path, where, score)
    return Row(
        where, (record_text(path, where, record, "sentence1"), record_text(path, where, record, "sentence2")), score
    )
