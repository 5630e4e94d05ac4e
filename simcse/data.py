"""Every data format of the SimCSE workflow, read exactly (batching lives in ``simcse.batching``).

Training data (``load_train_data``):
  * ``*.txt``: one sentence per line. Unsupervised SimCSE: each sentence is its own positive.
  * ``*.jsonl``: one ``{"query": str, "pos": [str, ...], "neg": [str, ...]}`` per line (FlagEmbedding's
    fine-tuning format; ``pos_scores``, ``neg_scores`` and other keys are ignored): retrieval training.
  * anything else: tab-separated with a header, ``sent0<TAB>sent1`` (pairs) or
    ``sent0<TAB>sent1<TAB>hard_neg`` (triplets: anchor, positive, hard negative).

STS data (``load_sts``): KorSTS TSV, KLUE-STS JSON, or a plain ``sentence1<TAB>sentence2<TAB>score`` TSV.

Files are split on tabs with quoting disabled (a ``"`` is text, never a field delimiter) and sentences
are kept verbatim. A bad row raises ``DataFormatError`` naming the file and the 1-based line (or the
JSON index); no row is ever shifted or dropped silently. Blank lines are skipped and counted in a log
line.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from simcse.registry import STS_DATASETS, default_data_dir, missing_data_hint
from simcse.run_folder import write_together
from simcse.text_files import (
    DataFormatError,
    check_is_file,
    check_sentence,
    drop_blank_lines,
    is_number,
    json_objects,
    parse_score,
    quoted,
    read_lines,
    split_row,
)

__all__ = [
    "STS_DATASETS",
    "DATA_KINDS",
    "DataFormatError",
    "DataKind",
    "STSData",
    "TrainData",
    "load_sts",
    "load_train_data",
    "resolve_sts_path",
    "write_train_tsv",
]

logger = logging.getLogger(__name__)

KORSTS_HEADER = ("genre", "filename", "year", "id", "score", "sentence1", "sentence2")
PLAIN_STS_HEADER = ("sentence1", "sentence2", "score")
TRAIN_HEADERS = (("sent0", "sent1"), ("sent0", "sent1", "hard_neg"))


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


@dataclass
class TrainData:
    """Training sentences by column: 1 column (unsupervised), 2 (pairs) or 3 (triplets); scored pairs (CoSENT)
    carry a gold score per pair. Retrieval data holds one column of queries and, per query, its positive and
    negative documents (a training step draws one positive and ``--num_negatives`` negatives of each)."""

    columns: list[list[str]]
    path: str = ""
    scores: list[float] | None = None
    kind: str = ""  # its entry in DATA_KINDS
    positives: list[list[str]] | None = None  # retrieval data: each query's relevant documents
    negatives: list[list[str]] | None = None  # retrieval data: each query's hard negatives (may be empty)
    line_numbers: list[int] | None = None  # retrieval data: the line of each query, for errors found later

    def texts(self) -> list[str]:
        """Every sentence and document of the data, column by column."""
        lists = (self.positives or []) + (self.negatives or [])
        documents = [text for texts in lists for text in texts]
        return [sentence for column in self.columns for sentence in column] + documents

    @property
    def num_sent(self) -> int:
        """Sentences the encoder sees per example: an unsupervised sentence is encoded twice."""
        return 2 if len(self.columns) == 1 else len(self.columns)

    def __len__(self) -> int:
        return len(self.columns[0])

    def check_negatives(self, num_negatives: int) -> None:
        """Refuse ``--num_negatives`` that retrieval data cannot give, before a model loads: a query without
        negatives, or more than any query holds (every query would only repeat its own)."""
        if not num_negatives or self.negatives is None:
            return
        if empty := [i for i, texts in enumerate(self.negatives) if not texts]:
            raise DataFormatError(
                self.path,
                f"line {self.line_numbers[empty[0]]}",
                f"no 'neg' documents ({len(empty)} such queries), and --num_negatives {num_negatives} takes "
                f"{num_negatives} per query: mine them (data/mine_hard_negatives.py) or pass --num_negatives 0",
            )
        if num_negatives > (most := max(len(texts) for texts in self.negatives)):
            raise ValueError(
                f"--num_negatives {num_negatives} is more than any query of {self.path} holds (at most {most} "
                f"'neg' documents): pass --num_negatives {most} or fewer"
            )


def negatives_per_query(num_negatives: int | None) -> int:
    """``--num_negatives`` as retrieval training uses it: 1 when not given."""
    return 1 if num_negatives is None else num_negatives


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
    if path.suffix.lower() == ".json":
        data = _read_klue_sts_json(path, name, "\n".join(line for _, line in lines))
    else:
        data = _read_sts_tsv(path, name, drop_blank_lines(path, lines))
    if len(data) == 0:
        raise DataFormatError(path, None, "no sentence pairs found")
    if len(data) == 1:
        raise DataFormatError(path, None, f"{name!r} holds 1 sentence pair; correlations need 2 or more")
    if len(set(data.scores)) == 1:
        raise DataFormatError(
            path,
            None,
            f"every gold score of {name!r} is {data.scores[0]:g}: correlations with constant scores are undefined",
        )
    return data


def _sts_layout(first: tuple[str, ...]) -> tuple[tuple[int, int, int], str, bool] | None:
    """For an STS TSV's first line: the (score, sentence1, sentence2) columns, their description and whether the
    line is a header; None when it is no STS file."""
    if first == KORSTS_HEADER:
        return (4, 5, 6), "KorSTS: " + ", ".join(KORSTS_HEADER), True
    if first == PLAIN_STS_HEADER:
        return (2, 0, 1), "sentence1, sentence2, score", True
    if len(first) == len(PLAIN_STS_HEADER) and is_number(first[2]):
        return (2, 0, 1), "sentence1, sentence2, score", False
    return None


def _read_sts_tsv(path: Path, name: str, lines: list[tuple[int, str]]) -> STSData:
    if not lines:
        raise DataFormatError(path, None, "no sentence pairs found")
    first = tuple(lines[0][1].split("\t"))
    if (layout := _sts_layout(first)) is None:
        raise DataFormatError(
            path,
            "line 1",
            "unrecognised STS file: expected the KorSTS header (" + "\\t".join(KORSTS_HEADER) + ") or "
            "sentence1\\tsentence2\\tscore (header optional)",
        )
    (score_col, s1_col, s2_col), what, has_header = layout
    data = STSData([], [], [], name)
    for number, line in lines[1:] if has_header else lines:
        fields = split_row(path, number, line, len(first), what)
        where = f"line {number}"
        data.scores.append(parse_score(path, where, fields[score_col]))
        data.sentences1.append(check_sentence(path, where, fields[s1_col], "sentence1"))
        data.sentences2.append(check_sentence(path, where, fields[s2_col], "sentence2"))
    return data


def _read_klue_sts_json(path: Path, name: str, text: str) -> STSData:
    try:
        items = json.loads(text)
    except json.JSONDecodeError as err:
        # JSON Lines under a .json name: one object parses, then the next line is "Extra data".
        lines_hint = "; one JSON object per line is JSON Lines: name the file .jsonl" if err.msg == "Extra data" else ""
        raise DataFormatError(path, f"line {err.lineno}", f"invalid JSON: {err.msg}{lines_hint}") from None
    if not isinstance(items, list):
        raise DataFormatError(path, None, "expected a JSON list of {sentence1, sentence2, labels: {label}}")
    data = STSData([], [], [], name)
    for index, item in enumerate(items):
        where = f"JSON index {index}"
        if not isinstance(item, dict):
            raise DataFormatError(path, where, f"expected an object, found {type(item).__name__}")
        labels = item.get("labels")
        if not isinstance(labels, dict) or "label" not in labels:
            raise DataFormatError(path, where, "missing labels.label")
        sentences = []
        for key in ("sentence1", "sentence2"):
            sentence = item.get(key)
            if not isinstance(sentence, str):
                raise DataFormatError(path, where, f"missing or non-string {key!r}")
            sentences.append(check_sentence(path, where, sentence, key))
        label = labels["label"]
        if isinstance(label, bool) or not isinstance(label, (int, float, str)):
            raise DataFormatError(path, where, f"score {quoted(label)} is not a number")
        data.scores.append(parse_score(path, where, label))
        data.sentences1.append(sentences[0])
        data.sentences2.append(sentences[1])
    return data


# ---------------------------------------------------------------------------------------------------
# Training data


def _read_sentences(path: Path, lines: list[tuple[int, str]]) -> TrainData:
    lines = drop_blank_lines(path, lines)
    for number, line in lines:
        if "\t" in line:
            raise DataFormatError(
                path,
                f"line {number}",
                "a tab inside a sentence; a .txt training file holds one sentence per line "
                "(for pairs or triplets use a .tsv with the header sent0<TAB>sent1[<TAB>hard_neg])",
            )
        check_sentence(path, f"line {number}", line, "sentence")
    return TrainData([[line for _, line in lines]], str(path))


def _read_columns(path: Path, lines: list[tuple[int, str]]) -> TrainData:
    lines = drop_blank_lines(path, lines)
    header = tuple(lines[0][1].split("\t"))
    columns: list[list[str]] = [[] for _ in header]
    for number, line in lines[1:]:
        fields = split_row(path, number, line, len(header), ", ".join(header))
        for column, name, sentence in zip(columns, header, fields):
            column.append(check_sentence(path, f"line {number}", sentence, name))
    return TrainData(columns, str(path))


def _read_scored_pairs(path: Path, lines: list[tuple[int, str]]) -> TrainData:
    sts = _sts_from_lines(path, path.stem, lines)
    return TrainData([sts.sentences1, sts.sentences2], str(path), sts.scores)


def _read_query_documents(path: Path, lines: list[tuple[int, str]]) -> TrainData:
    data = TrainData([[]], str(path), positives=[], negatives=[], line_numbers=[])
    for number, row in json_objects(path, lines, required=("query",)):
        where = f"line {number}"
        data.columns[0].append(check_sentence(path, where, row["query"], "query"))
        for key, documents, least in (("pos", data.positives, 1), ("neg", data.negatives, 0)):
            texts = row.get(key, [])
            if not isinstance(texts, list) or not all(isinstance(text, str) for text in texts):
                raise DataFormatError(path, where, f"{key!r} must be a list of strings")
            if len(texts) < least:
                raise DataFormatError(path, where, f"{key!r} is empty: every query needs a positive document")
            documents.append([check_sentence(path, where, text, key) for text in texts])
        data.line_numbers.append(number)
    return data


def _grouped_pairs(data: TrainData) -> tuple[list[str], list[list[str]]]:
    """The distinct queries of (query, positive) rows, in order, each with its positives."""
    grouped: dict[str, list[str]] = {}
    for query, positive in zip(*data.columns):
        if positive not in grouped.setdefault(query, []):
            grouped[query].append(positive)
    return list(grouped), list(grouped.values())


@dataclass(frozen=True)
class DataKind:
    """A kind of training data: what a refusal calls it, how a file of it is recognised (from its path and its
    first line's tab-separated fields) and read (from its non-blank lines), what a model card calls it, the texts
    the encoder sees per example, and whether it holds queries with documents (their own prompts and length, K
    negatives drawn from each query's list every epoch)."""

    name: str
    description: str
    matches: Callable[[Path, tuple[str, ...]], bool]
    read: Callable[[Path, list[tuple[int, str]]], TrainData]
    card_name: str
    texts_per_example: int  # with documents: the query and a positive, before the K negatives
    documents: bool = False
    # (queries, each query's positives) for mining hard negatives; None: mining does not read this kind
    query_positives: Callable[[TrainData], tuple[list[str], list[list[str]]]] | None = None

    def num_texts(self, num_negatives: int = 0) -> int:
        """Texts per example: with documents, the query, a positive and ``num_negatives`` negatives."""
        return self.texts_per_example + (num_negatives if self.documents else 0)


# Every kind of training data, tried in this order; an objective (simcse.objectives) names the kinds it takes.
DATA_KINDS: dict[str, DataKind] = {
    kind.name: kind
    for kind in (
        DataKind(
            "sentences",
            "one sentence per line",
            lambda path, first: path.suffix.lower() == ".txt",
            _read_sentences,
            "unlabelled sentences (unsupervised: dropout makes each sentence's positive)",
            2,  # each sentence twice
        ),
        DataKind(
            "pairs",
            "pairs without scores",
            lambda path, first: first == TRAIN_HEADERS[0],
            _read_columns,
            "sentence pairs",
            2,
            query_positives=_grouped_pairs,
        ),
        DataKind(
            "triplets",
            "triplets without scores",
            lambda path, first: first == TRAIN_HEADERS[1],
            _read_columns,
            "triplets with a hard negative each",
            3,
        ),
        DataKind(
            "query_documents",
            "queries with positive and negative documents (JSONL)",
            lambda path, first: path.suffix.lower() == ".jsonl",
            _read_query_documents,
            "queries with positive documents and mined hard negatives",
            2,
            documents=True,
            query_positives=lambda data: (data.columns[0], data.positives),
        ),
        DataKind(
            "scored_pairs",
            "an STS file of scored pairs",
            lambda path, first: path.suffix.lower() == ".json" or _sts_layout(first) is not None,
            _read_scored_pairs,
            "scored sentence pairs",
            2,
        ),
    )
}


def load_train_data(name_or_path: str | os.PathLike, data_dir: str | os.PathLike | None = None) -> TrainData:
    """Read training data of any kind in ``DATA_KINDS``, recognised from the file (a dataset name such as
    ``korsts_train`` is a file of scored pairs): ``.txt`` one sentence per line, a TSV with a sent0/sent1[/hard_neg]
    header, or an STS file. The result's ``kind`` names it."""
    path = resolve_sts_path(name_or_path, data_dir)
    lines = read_lines(path)  # once; each kind's reader skips (and counts) the blank lines
    first = next((line for _, line in lines if line.strip()), None)
    if first is None:
        raise DataFormatError(path, None, "no training examples found")
    kind = next((kind for kind in DATA_KINDS.values() if kind.matches(path, tuple(first.split("\t")))), None)
    if kind is None:
        raise DataFormatError(
            path,
            "line 1",
            f"header {quoted(first)} is not sent0\\tsent1 (pairs) or sent0\\tsent1\\thard_neg (triplets)"
            + ("; a file of one sentence per line must be named .txt" if "\t" not in first else ""),
        )
    data = kind.read(path, lines)
    if len(data) == 0:
        raise DataFormatError(path, None, "no training examples found")
    return dataclasses.replace(data, kind=kind.name)


def write_train_tsv(data: TrainData, path: str | os.PathLike, flag: str = "--output") -> None:
    """Write pairs or triplets as a training TSV with its header (the format ``load_train_data`` reads), whole or
    not at all (``flag``: the option naming the file, for a full disk's error)."""
    if len(data.columns) not in (2, 3):
        raise ValueError(f"a training TSV holds pairs or triplets, got {len(data.columns)} column(s)")
    header = TRAIN_HEADERS[len(data.columns) - 2]
    lines = ["\t".join(header)] + ["\t".join(row) for row in zip(*data.columns)]
    write_together({Path(path): "\n".join(lines) + "\n"}, flag)
