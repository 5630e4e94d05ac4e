"""Training data, every kind read exactly as a stream of rows (``simcse.tokenized`` and ``simcse.token_store`` turn
the rows into token ids; ``load_train_data`` holds them whole, for mining and small tools).

Kinds (``DATA_KINDS``), recognised from the file:
  * ``*.txt``: one sentence per line. Unsupervised SimCSE: each sentence is its own positive.
  * ``*.jsonl``: one ``{"query": str, "pos": [str, ...], "neg": [str, ...]}`` per line (FlagEmbedding's
    fine-tuning format; a teacher's ``pos_scores`` and ``neg_scores``, one number per document, are read for
    ``--distill_weight``; other keys are ignored): retrieval training.
  * an STS file (``simcse.data``): scored pairs, for CoSENT.
  * else tab-separated with a header, ``sent0<TAB>sent1`` (pairs) or ``sent0<TAB>sent1<TAB>hard_neg`` (triplets).
  * a Parquet file or a ``datasets`` folder (``save_to_disk``) with a kind's columns (``simcse.table_files``).

A bad row raises ``DataFormatError`` naming the file and the line (a table's row); blank lines are skipped and
counted in a log line.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from simcse.data import (
    PLAIN_STS_HEADER,
    Row,
    check_scored_pairs,
    record_text,
    resolve_sts_path,
    scored_pair,
    scored_pair_rows,
    sts_layout,
)
from simcse.run_folder import write_together
from simcse.table_files import is_table, is_table_folder, table_kind, table_rows
from simcse.text_files import (
    DataFormatError,
    check_sentence,
    drop_blank_lines,
    json_objects,
    quoted,
    split_row,
    stream_lines,
)

TRAIN_HEADERS = (("sent0", "sent1"), ("sent0", "sent1", "hard_neg"))


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
    places: list[str] | None = None  # where each example is in its file ("line 12"), for errors found later
    positive_scores: list[list[float] | None] | None = None  # retrieval data: a teacher's, per query (or None)
    negative_scores: list[list[float] | None] | None = None

    def texts(self) -> list[str]:
        """Every sentence and document of the data, column by column."""
        lists = (self.positives or []) + (self.negatives or [])
        documents = [text for texts in lists for text in texts]
        return [sentence for column in self.columns for sentence in column] + documents

    def rows(self) -> Iterator[Row]:
        """The examples as ``load_train_data`` read them."""
        places = self.places or [f"example {i + 1}" for i in range(len(self))]
        for i, texts in enumerate(zip(*self.columns)):
            yield Row(
                places[i],
                texts,
                None if self.scores is None else self.scores[i],
                None if self.positives is None else self.positives[i],
                None if self.negatives is None else self.negatives[i],
                None if self.positive_scores is None else self.positive_scores[i],
                None if self.negative_scores is None else self.negative_scores[i],
            )

    @property
    def num_sent(self) -> int:
        """Sentences the encoder sees per example: an unsupervised sentence is encoded twice."""
        return 2 if len(self.columns) == 1 else len(self.columns)

    def __len__(self) -> int:
        return len(self.columns[0])


@dataclass
class RowSummary:
    """What the checks of a training file need to know of all its rows, gathered while they stream past (a token
    store records it, so that a reused store is checked without reading the file)."""

    rows: int = 0
    first_text: str | None = None
    texts_differ: bool = False
    first_score: float | None = None
    scores_differ: bool = False
    has_documents: bool = False  # retrieval data: queries with their own negatives
    most_negatives: int = 0
    without_negatives: int = 0
    first_without_negatives: str | None = None  # where the first query without negatives is
    without_teacher_scores: int = 0  # retrieval data: queries without pos_scores / neg_scores
    first_without_teacher_scores: str | None = None

    def add(self, row: Row) -> None:
        self.rows += 1
        for text in (*row.texts, *(row.positives or ()), *(row.negatives or ())):
            if self.first_text is None:
                self.first_text = text
            elif not self.texts_differ and text != self.first_text:
                self.texts_differ = True
        if row.score is not None:
            self.first_score = row.score if self.first_score is None else self.first_score
            self.scores_differ = self.scores_differ or row.score != self.first_score
        if row.negatives is not None:
            self.has_documents = True
            self.most_negatives = max(self.most_negatives, len(row.negatives))
            if not row.negatives:
                self.without_negatives += 1
                self.first_without_negatives = self.first_without_negatives or row.where
            if row.positive_scores is None:
                self.without_teacher_scores += 1
                self.first_without_teacher_scores = self.first_without_teacher_scores or row.where

    def check_file(self, path: str, kind: str) -> None:
        """Refuse a file that holds no examples, or scored pairs that correlations cannot use."""
        if self.rows == 0:
            raise DataFormatError(path, None, "no training examples found")
        if kind == "scored_pairs":
            check_scored_pairs(path, Path(path).stem, self.rows, self.scores_differ, self.first_score)

    def check_for_run(self, path: str, num_negatives: int | None) -> None:
        """Refuse data a run cannot train on: fewer than 2 examples, one text throughout, or ``--num_negatives``
        that retrieval data cannot give (a query without negatives, or more than any query holds)."""
        if self.rows < 2:
            raise ValueError(f"{path}: {self.rows} training example; in-batch negatives need 2 or more")
        if not self.texts_differ:
            raise ValueError(f"{path}: every sentence is the same; in-batch negatives need different ones")
        if not (num_negatives and self.has_documents) or (
            not self.without_negatives and num_negatives <= self.most_negatives
        ):
            return
        if self.without_negatives:
            raise DataFormatError(
                path,
                self.first_without_negatives,
                f"no 'neg' documents ({self.without_negatives} such queries), and --num_negatives {num_negatives} "
                f"takes {num_negatives} per query: mine them (data/mine_hard_negatives.py) or pass --num_negatives 0",
            )
        raise ValueError(
            f"--num_negatives {num_negatives} is more than any query of {path} holds (at most "
            f"{self.most_negatives} 'neg' documents): pass --num_negatives {self.most_negatives} or fewer"
        )

    def check_teacher_scores(self, path: str) -> None:
        """Refuse, for ``--distill_weight``, retrieval data without a teacher's score of every document."""
        if not self.has_documents:
            raise ValueError(
                f"--distill_weight reads the teacher's pos_scores / neg_scores of .jsonl retrieval data; {path} holds "
                "none (give the retrieval file its own --objective, or leave --distill_weight 0)"
            )
        if self.without_teacher_scores:
            raise DataFormatError(
                path,
                self.first_without_teacher_scores,
                f"no 'pos_scores' / 'neg_scores' ({self.without_teacher_scores} of {self.rows} queries have none); "
                "--distill_weight needs a teacher's score of every document: data/score_with_teacher.py writes them",
            )


def negatives_per_query(num_negatives: int | None) -> int:
    """``--num_negatives`` as retrieval training uses it: 1 when not given."""
    return 1 if num_negatives is None else num_negatives


# ---------------------------------------------------------------------------------------------------
# Training data: each kind reads its file line by line into rows, and a table's records (simcse.table_files)
# through the same checks


def _sentence_rows(path: Path, lines: Iterable[tuple[int, str]]) -> Iterator[Row]:
    for number, line in drop_blank_lines(path, lines):
        if "\t" in line:
            raise DataFormatError(
                path,
                f"line {number}",
                "a tab inside a sentence; a .txt training file holds one sentence per line "
                "(for pairs or triplets use a .tsv with the header sent0<TAB>sent1[<TAB>hard_neg])",
            )
        yield Row(f"line {number}", (check_sentence(path, f"line {number}", line, "sentence"),))


def _column_rows(path: Path, lines: Iterable[tuple[int, str]]) -> Iterator[Row]:
    lines = drop_blank_lines(path, lines)
    header = tuple(next(lines)[1].split("\t"))
    for number, line in lines:
        fields = split_row(path, number, line, len(header), ", ".join(header))
        yield _columns(header)(path, f"line {number}", dict(zip(header, fields)))


def _columns(names: tuple[str, ...]) -> Callable[[Path, str, dict], Row]:
    """A record's sentences, in the order of ``names``."""
    return lambda path, where, record: Row(where, tuple(record_text(path, where, record, name) for name in names))


def _query_documents(path: Path, where: str, record: dict) -> Row:
    query = record_text(path, where, record, "query")
    documents = []
    for key, least in (("pos", 1), ("neg", 0)):
        texts = record.get(key, [])
        if texts is None:  # a table's missing list
            texts = []
        if not isinstance(texts, list) or not all(isinstance(text, str) for text in texts):
            raise DataFormatError(path, where, f"{key!r} must be a list of strings")
        if len(texts) < least:
            raise DataFormatError(path, where, f"{key!r} is empty: every query needs a positive document")
        documents.append([check_sentence(path, where, text, key) for text in texts])
    return Row(where, (query,), None, *documents, *_teacher_scores(path, where, record, documents))


TEACHER_KEYS = ("pos_scores", "neg_scores")  # FlagEmbedding's: a teacher's score of each document, in order


def _teacher_scores(path: Path, where: str, record: dict, documents: list[list[str]]) -> list[list[float] | None]:
    """A query's ``pos_scores`` and ``neg_scores`` (None, None when it has neither): one finite number per document
    of ``pos`` and ``neg`` (a query without negatives may leave ``neg_scores`` out)."""
    given = {key: record[key] for key in TEACHER_KEYS if record.get(key) is not None}
    if not given:
        return [None, None]
    scores = []
    for key, texts in zip(TEACHER_KEYS, documents):
        values = given.get(key, [] if not texts else None)
        if values is None:
            other = next(iter(given))
            raise DataFormatError(path, where, f"{other!r} without {key!r}: give a score for every document")
        if not isinstance(values, list) or len(values) != len(texts):
            length = len(values) if isinstance(values, list) else "not a list"
            raise DataFormatError(path, where, f"{key!r} must hold one score per {key[:3]!r} document "
                                  f"({len(texts)}), got {length}")  # fmt: skip
        for value in values:
            if not _is_finite_number(value):
                raise DataFormatError(path, where, f"{key!r} holds {quoted(value)}, not a finite number")
        scores.append([float(value) for value in values])
    return scores


def _is_finite_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _query_document_rows(path: Path, lines: Iterable[tuple[int, str]]) -> Iterator[Row]:
    for number, record in json_objects(path, lines):
        yield _query_documents(path, f"line {number}", record)


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
    first line's tab-separated fields) and read (from its lines, as rows), the columns a table (Parquet, a
    ``datasets`` folder) of it holds and how one record of those becomes a row, what a model card calls it, the
    texts the encoder sees per example, and whether it holds queries with documents (their own prompts and length,
    K negatives drawn from each query's list every epoch)."""

    name: str
    description: str
    matches: Callable[[Path, tuple[str, ...]], bool]
    rows: Callable[[Path, Iterable[tuple[int, str]]], Iterator[Row]]
    columns: tuple[str, ...]  # a table's columns, the first one's values the example's texts
    record: Callable[[Path, str, dict], Row]
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
            _sentence_rows,
            ("sentence",),
            _columns(("sentence",)),
            "unlabelled sentences (unsupervised: dropout makes each sentence's positive)",
            2,  # each sentence twice
        ),
        DataKind(
            "pairs",
            "pairs without scores",
            lambda path, first: first == TRAIN_HEADERS[0],
            _column_rows,
            TRAIN_HEADERS[0],
            _columns(TRAIN_HEADERS[0]),
            "sentence pairs",
            2,
            query_positives=_grouped_pairs,
        ),
        DataKind(
            "triplets",
            "triplets without scores",
            lambda path, first: first == TRAIN_HEADERS[1],
            _column_rows,
            TRAIN_HEADERS[1],
            _columns(TRAIN_HEADERS[1]),
            "triplets with a hard negative each",
            3,
        ),
        DataKind(
            "query_documents",
            "queries with positive and negative documents (JSONL)",
            lambda path, first: path.suffix.lower() == ".jsonl",
            _query_document_rows,
            ("query", "pos", "neg", *TEACHER_KEYS),
            _query_documents,
            "queries with positive documents and mined hard negatives",
            2,
            documents=True,
            query_positives=lambda data: (data.columns[0], data.positives),
        ),
        DataKind(
            "scored_pairs",
            "an STS file of scored pairs",
            lambda path, first: path.suffix.lower() == ".json" or sts_layout(first) is not None,
            scored_pair_rows,
            PLAIN_STS_HEADER,
            scored_pair,
            "scored sentence pairs",
            2,
        ),
    )
}


class TrainSource(NamedTuple):
    """A training file (or datasets folder) of a run, and its kind."""

    path: Path
    kind: DataKind


def resolve_train_path(name_or_path: str | os.PathLike, data_dir: str | os.PathLike | None = None) -> Path:
    """The file (or ``datasets`` folder) behind a training dataset's name or path."""
    if is_table_folder(Path(name_or_path)):
        return Path(name_or_path)
    return resolve_sts_path(name_or_path, data_dir)


def train_data_kind(path: Path) -> DataKind:
    """The kind of a training file, from its name and its first non-blank line (a table: from its columns)."""
    if is_table(path):
        return table_kind(path, DATA_KINDS)
    first = next((line for _, line in stream_lines(path) if line.strip()), None)
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
    next(train_rows(path, kind), None)  # its first example read: a file that is not what its name says fails here
    return kind


def train_rows(path: Path, kind: DataKind) -> Iterator[Row]:
    """The rows of a training file of ``kind``, read as a stream (a KLUE-STS .json is read whole)."""
    return table_rows(path, kind) if is_table(path) else kind.rows(path, stream_lines(path))


def load_train_data(name_or_path: str | os.PathLike, data_dir: str | os.PathLike | None = None) -> TrainData:
    """Read training data of any kind in ``DATA_KINDS``, whole, recognised from the file (a dataset name such as
    ``korsts_train`` is a file of scored pairs): ``.txt`` one sentence per line, a TSV with a sent0/sent1[/hard_neg]
    header, an STS file, retrieval JSONL, or a table (Parquet, a ``datasets`` folder). The result's ``kind`` names
    it; training reads it through a token store instead (``simcse.token_store``)."""
    path = resolve_train_path(name_or_path, data_dir)
    kind = train_data_kind(path)
    summary, rows = RowSummary(), []
    for row in train_rows(path, kind):
        summary.add(row)
        rows.append(row)
    summary.check_file(str(path), kind.name)

    def each(field: str) -> list | None:
        return [getattr(row, field) for row in rows] if getattr(rows[0], field) is not None else None

    def teacher(field: str) -> list | None:  # retrieval data where some query has a teacher's scores
        read = summary.has_documents and summary.without_teacher_scores < summary.rows
        return [getattr(row, field) for row in rows] if read else None

    columns = [list(column) for column in zip(*each("texts"))]
    data = TrainData(columns, str(path), each("score"), kind.name, each("positives"), each("negatives"), each("where"))
    data.positive_scores, data.negative_scores = teacher("positive_scores"), teacher("negative_scores")
    return data


def write_train_tsv(data: TrainData, path: str | os.PathLike, flag: str = "--output") -> None:
    """Write pairs or triplets as a training TSV with its header (the format ``load_train_data`` reads), whole or
    not at all (``flag``: the option naming the file, for a full disk's error)."""
    if len(data.columns) not in (2, 3):
        raise ValueError(f"a training TSV holds pairs or triplets, got {len(data.columns)} column(s)")
    header = TRAIN_HEADERS[len(data.columns) - 2]
    lines = ["\t".join(header)] + ["\t".join(row) for row in zip(*data.columns)]
    write_together({Path(path): "\n".join(lines) + "\n"}, flag)
