"""Training data as token ids: rows streamed in, tokenized a chunk at a time (the fast tokenizer's batch encoding
runs on every core), written as flat arrays, in memory or to files that a token store (``simcse.token_store``)
memory-maps. Texts are never held whole: a chunk at a time, and a retrieval file's documents are read twice
(once to find the distinct ones by a 128-bit hash, once to tokenize each distinct one once)."""

from __future__ import annotations

import array
import hashlib
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np
from transformers import PreTrainedTokenizerBase

from simcse.data import Row
from simcse.progress import progress_bar
from simcse.train_data import DATA_KINDS, DataKind, RowSummary, TrainData

CHUNK_ROWS = 10_000  # rows read (and their texts written) at a time
ENCODE_BATCH = 2_000  # texts per tokenizer call: all cores busy, the encodings' memory small
BAR_DELAY = 2.0  # seconds


@dataclass
class Ragged:
    """Many variable-length rows in one flat array: row i is ``values[offsets[i]:offsets[i + 1]]``. Token ids
    (int32: 4 bytes a token, where a list of Python lists costs about ten times that) and each query's document
    rows are kept so."""

    values: np.ndarray
    offsets: np.ndarray  # int64, one more than the rows

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def __getitem__(self, index: int) -> np.ndarray:
        return self.values[self.offsets[index] : self.offsets[index + 1]]

    @cached_property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)


@dataclass(frozen=True)
class TextSettings:
    """How a dataset's texts become token ids: the tokenizer, the length and prompt of its sentences (its queries,
    for retrieval data) and, for retrieval data, of its documents."""

    tokenizer: PreTrainedTokenizerBase
    max_length: int
    prompt: str = ""
    document_max_length: int | None = None
    document_prompt: str | None = None

    def key(self) -> dict:
        """Everything of these settings that changes the ids, for a token store's key."""
        return {
            "tokenizer": tokenizer_fingerprint(self.tokenizer),
            "max_length": self.max_length,
            "prompt": self.prompt,
            "document_max_length": self.document_max_length,
            "document_prompt": self.document_prompt,
        }


def tokenizer_fingerprint(tokenizer: PreTrainedTokenizerBase) -> str:
    """SHA-256 of what makes a fast tokenizer's ids: its class and its tokenizers pipeline (normaliser,
    pre-tokenizer, vocabulary, special-token template), without the truncation and padding state that calls
    leave behind."""
    import json

    pipeline = json.loads(tokenizer.backend_tokenizer.to_str())
    pipeline.pop("truncation", None)
    pipeline.pop("padding", None)
    text = type(tokenizer).__name__ + json.dumps(pipeline, sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()


@dataclass(eq=False)  # one object per file read: compared (and hashed) by identity
class TokenizedData:
    """A training dataset as token ids: ``columns`` hold each example's texts (a retrieval query alone),
    ``documents`` the distinct documents of retrieval data, ``positives`` / ``negatives`` each query's rows of them
    and ``positive_scores`` / ``negative_scores`` a teacher's score of each (aligned with their ``values``; NaN for
    a query without); ``summary`` is what the checks read; ``fingerprint`` the SHA-256 of the file it came from."""

    path: str
    kind: str
    columns: list[Ragged]
    summary: RowSummary
    scores: np.ndarray | None = None
    documents: Ragged | None = None
    positives: Ragged | None = None
    negatives: Ragged | None = None
    positive_scores: np.ndarray | None = None
    negative_scores: np.ndarray | None = None
    fingerprint: str = ""
    store: str = "memory"  # the token store's folder

    def __len__(self) -> int:
        return len(self.columns[0])


def encode_chunk(texts: Sequence[str], tokenizer, max_length: int, prompt: str) -> tuple[np.ndarray, np.ndarray]:
    """The ids of ``texts`` (prompt and special tokens included, truncated), flat, and each text's length; asked of
    the tokenizer ``ENCODE_BATCH`` texts at a time (its encodings of a batch weigh about 40 KB a text)."""
    flat, lengths = [], []
    for start in range(0, len(texts), ENCODE_BATCH):
        ids = tokenizer(
            [prompt + text for text in texts[start : start + ENCODE_BATCH]],
            add_special_tokens=True,
            truncation=True,
            max_length=max_length,
            return_attention_mask=False,
            return_token_type_ids=False,
        )["input_ids"]
        lengths.append(np.fromiter(map(len, ids), dtype=np.int64, count=len(ids)))
        flat.append(np.fromiter((i for row in ids for i in row), dtype=np.int32, count=int(lengths[-1].sum())))
    if not flat:
        return np.zeros(0, np.int32), np.zeros(0, np.int64)
    return np.concatenate(flat), np.concatenate(lengths)


def check_tokenizer(tokenizer, max_length: int) -> None:
    if not getattr(tokenizer, "is_fast", False):
        raise ValueError(f"{type(tokenizer).__name__} is not a fast tokenizer; load it with use_fast=True")
    if max_length < 2:
        raise ValueError(f"max_length must be at least 2 (room for [CLS] and [SEP]), got {max_length}")


def tokenize_texts(
    texts: Sequence[str], tokenizer: PreTrainedTokenizerBase, max_length: int, prompt: str = "", desc: str | None = None
) -> Ragged:
    """Token ids of ``texts``, in memory (evaluation's sentences); a bar over the chunks when ``desc`` is given and
    there is more than one."""
    check_tokenizer(tokenizer, max_length)
    writer = RaggedWriter(None, "texts", np.int32)
    starts = range(0, len(texts), CHUNK_ROWS)
    show = desc is not None and len(texts) > CHUNK_ROWS
    for start in progress_bar(iterable=starts, desc=desc, unit="chunk", disable=not show):
        writer.append(*encode_chunk(texts[start : start + CHUNK_ROWS], tokenizer, max_length, prompt))
    return writer.finish()


class ArrayWriter:
    """A 1-D array built piece by piece: in memory, or appended to ``path`` and memory-mapped (read-only) once
    finished. ``arrays`` records each file's dtype and length, for the store's meta.json."""

    def __init__(self, path: Path | None, dtype, arrays: dict | None = None):
        self.path, self.dtype, self.count, self.arrays = path, np.dtype(dtype), 0, arrays
        self.pieces: list[np.ndarray] = []
        self.file = open(path, "wb") if path else None  # closed in finish

    def append(self, array: np.ndarray) -> None:
        array = np.ascontiguousarray(array, dtype=self.dtype)
        self.count += len(array)
        if self.file:
            self.file.write(array.tobytes())
        else:
            self.pieces.append(array)

    def finish(self) -> np.ndarray:
        if not self.file:
            return np.concatenate(self.pieces) if self.pieces else np.zeros(0, self.dtype)
        self.file.close()
        if self.arrays is not None:
            self.arrays[self.path.name] = [self.dtype.str, self.count]
        return map_array(self.path, self.dtype.str, self.count)


def map_array(path: Path, dtype: str, count: int) -> np.ndarray:
    """A store's array file, memory-mapped read-only (an empty one as an empty array: mmap cannot map 0 bytes)."""
    return np.memmap(path, dtype=dtype, mode="r", shape=(count,)) if count else np.zeros(0, dtype)


class RaggedWriter:
    """A ``Ragged`` built a chunk of rows at a time (``name``.values and ``name``.offsets in ``folder``, or in
    memory when ``folder`` is None)."""

    def __init__(self, folder: Path | None, name: str, dtype, arrays: dict | None = None):
        self.values = ArrayWriter(folder / f"{name}.values" if folder else None, dtype, arrays)
        self.offsets = ArrayWriter(folder / f"{name}.offsets" if folder else None, np.int64, arrays)
        self.offsets.append(np.zeros(1))
        self.end = 0

    def append(self, values: np.ndarray, lengths: np.ndarray) -> None:
        self.values.append(values)
        self.offsets.append(self.end + np.cumsum(lengths))
        self.end += int(lengths.sum())

    def finish(self) -> Ragged:
        return Ragged(self.values.finish(), self.offsets.finish())


@dataclass
class Build:
    """Where a build writes (``folder``: None for memory) and what it records (``arrays``: each file's dtype and
    length); ``bar`` shows its progress when given a description."""

    folder: Path | None
    desc: str | None = None
    arrays: dict = field(default_factory=dict)

    def ragged(self, name: str, dtype=np.int32) -> RaggedWriter:
        return RaggedWriter(self.folder, name, dtype, self.arrays)

    def array(self, name: str, dtype) -> ArrayWriter:
        return ArrayWriter(self.folder / name if self.folder else None, dtype, self.arrays)

    def bar(self, what: str, total: int | None = None):
        desc = f"{self.desc}: {what}" if self.desc else None
        # Shown once it has run a few seconds: a small file's build says nothing but its one line.
        return progress_bar(total=total, desc=desc, unit="row", disable=desc is None, delay=BAR_DELAY)


def chunks(rows: Iterator[Row], bar, summary: RowSummary | None = None) -> Iterator[list[Row]]:
    """``rows`` in lists of ``CHUNK_ROWS``, each row added to ``summary`` and counted on ``bar``."""
    chunk = []
    with bar:
        for row in rows:
            if summary is not None:
                summary.add(row)
            chunk.append(row)
            if len(chunk) == CHUNK_ROWS:
                bar.update(len(chunk))
                yield chunk
                chunk = []
        if chunk:
            bar.update(len(chunk))
            yield chunk


def build_tokenized(rows: Callable[[], Iterator[Row]], path: str, kind: DataKind, text: TextSettings, build: Build):
    """The ``TokenizedData`` of a training file's rows (``rows()`` streams them afresh; retrieval data twice),
    checked as a file (``RowSummary.check_file``) once read."""
    check_tokenizer(text.tokenizer, text.max_length)
    if kind.documents:
        return _build_query_documents(rows, path, kind, text, build)
    summary, scored = RowSummary(), kind.name == "scored_pairs"
    writers = [build.ragged(f"column{i}") for i in range(len(kind.columns) - scored)]
    scores = build.array("scores", np.float64) if scored else None
    for chunk in chunks(rows(), build.bar("tokenizing"), summary):
        for i, writer in enumerate(writers):
            writer.append(*encode_chunk([row.texts[i] for row in chunk], text.tokenizer, text.max_length, text.prompt))
        if scores:
            scores.append(np.array([row.score for row in chunk], dtype=np.float64))
    summary.check_file(path, kind.name)
    columns = [writer.finish() for writer in writers]
    return TokenizedData(path, kind.name, columns, summary, scores.finish() if scores else None)


def _build_query_documents(rows, path: str, kind: DataKind, text: TextSettings, build: Build) -> TokenizedData:
    summary, queries = RowSummary(), build.ragged("column0")
    digests, positive_counts, negative_counts, teacher = bytearray(), [], [], array.array("d")
    for chunk in chunks(rows(), build.bar("queries"), summary):
        queries.append(*encode_chunk([row.texts[0] for row in chunk], text.tokenizer, text.max_length, text.prompt))
        for row in chunk:
            positive_counts.append(len(row.positives))
            negative_counts.append(len(row.negatives))
            for document in (*row.positives, *row.negatives):
                digests += hashlib.blake2b(document.encode(), digest_size=16).digest()
            if row.positive_scores is None:  # no teacher's scores: NaN, which distillation refuses before a step
                teacher.extend([math.nan] * (len(row.positives) + len(row.negatives)))
            else:
                teacher.extend([*row.positive_scores, *row.negative_scores])
    summary.check_file(path, kind.name)
    row_of, is_first = _distinct(np.frombuffer(bytes(digests), dtype=[("high", "<u8"), ("low", "<u8")]))
    del digests
    counts = np.array(positive_counts, dtype=np.int64), np.array(negative_counts, dtype=np.int64)
    positives, negatives, positive_scores, negative_scores = _split_documents(row_of, np.array(teacher), *counts, build)
    documents = build.ragged("documents")
    occurrence = 0
    for chunk in chunks(rows(), build.bar("documents", total=summary.rows)):
        texts = []
        for row in chunk:
            for document in (*row.positives, *row.negatives):
                if is_first[occurrence]:
                    texts.append(document)
                occurrence += 1
        document_prompt, document_length = text.document_prompt, text.document_max_length
        documents.append(*encode_chunk(texts, text.tokenizer, document_length, document_prompt))
    data = TokenizedData(path, kind.name, [queries.finish()], summary)
    data.documents, data.positives, data.negatives = documents.finish(), positives, negatives
    data.positive_scores, data.negative_scores = positive_scores, negative_scores
    return data


def _distinct(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For each document occurrence (its hash in ``keys``): the row of its distinct document, the distinct
    documents numbered in the order they first occur; and whether it is that first occurrence."""
    _, first, inverse = np.unique(keys, return_index=True, return_inverse=True)
    rank = np.empty(len(first), dtype=np.int64)
    rank[np.argsort(first, kind="stable")] = np.arange(len(first))
    is_first = np.zeros(len(keys), dtype=bool)
    is_first[first] = True
    return rank[inverse.reshape(-1)], is_first


def _split_documents(row_of: np.ndarray, teacher: np.ndarray, positive_counts, negative_counts, build: Build) -> list:
    """Each query's positive and negative document rows, from the rows of its documents in the order read (its
    positives, then its negatives), and the teacher's scores of both (``teacher``: one per document read)."""
    sizes = positive_counts + negative_counts
    within = np.arange(len(row_of)) - np.repeat(np.cumsum(sizes) - sizes, sizes)
    is_positive = within < np.repeat(positive_counts, sizes)
    rows, scores = [], []
    for name, mask, counts in (
        ("positives", is_positive, positive_counts),
        ("negatives", ~is_positive, negative_counts),
    ):
        writer = build.ragged(name, np.int64)
        writer.append(row_of[mask], counts)
        rows.append(writer.finish())
        score_writer = build.array(f"{name[:-1]}_scores", np.float64)
        score_writer.append(teacher[mask])
        scores.append(score_writer.finish())
    return [*rows, *scores]


def tokenize_in_memory(data: TrainData, text: TextSettings) -> TokenizedData:
    """A training dataset held whole (``load_train_data``, or built by a tool) as token ids in memory."""
    return build_tokenized(data.rows, data.path, DATA_KINDS[data.kind], text, Build(None))
