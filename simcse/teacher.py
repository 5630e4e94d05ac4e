"""A teacher's scores of retrieval training data (data/score_with_teacher.py): each query's ``pos`` and ``neg``
documents scored by a cross-encoder (``AutoModelForSequenceClassification`` with one logit per pair) or by a
bi-encoder the package loads (the cosine of the query's and the document's embeddings, with the model's prompts),
written as FlagEmbedding's ``pos_scores`` / ``neg_scores``, which ``--distill_weight`` reads.

The output is appended to a query at a time, so that an interrupted run goes on where it stopped: the lines already
written are checked against the input's and skipped."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Sequence
from itertools import islice
from pathlib import Path

import numpy as np
import torch

from simcse.model_loading import check_location, saved_file
from simcse.progress import progress_bar
from simcse.text_files import DataFormatError, json_objects, stream_lines
from simcse.train_data import DATA_KINDS, TEACHER_KEYS

QUERIES_PER_WRITE = 16  # queries scored and appended to the output at a time
DOCUMENT_CACHE = 100_000  # document vectors a bi-encoder teacher keeps (384 dimensions: about 150 MB)


class CrossEncoderTeacher:
    """A cross-encoder: one logit per (query, document) pair, read whole by the model."""

    kind = "cross-encoder"

    def __init__(self, name_or_path: str, device: torch.device, max_length: int, batch_size: int):
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(name_or_path)
        self.model = AutoModelForSequenceClassification.from_pretrained(name_or_path).to(device).eval()
        if self.model.config.num_labels != 1:
            raise ValueError(
                f"--teacher {name_or_path}: a cross-encoder with {self.model.config.num_labels} labels; a teacher "
                "gives one score (logit) per (query, document) pair"
            )
        self.device, self.max_length, self.batch_size = device, max_length, batch_size

    def scores(self, query: str, documents: Sequence[str]) -> list[float]:
        scores = []
        for start in range(0, len(documents), self.batch_size):
            batch = list(documents[start : start + self.batch_size])
            features = self.tokenizer(
                [query] * len(batch), batch, truncation=True, max_length=self.max_length, padding=True,
                return_tensors="pt",
            )  # fmt: skip
            with torch.inference_mode():
                logits = self.model(**features.to(self.device)).logits  # (B, 1)
            scores.extend(logits[:, 0].float().tolist())
        return scores


class BiEncoderTeacher:
    """A bi-encoder the package loads: the cosine of the query's and each document's embedding. The vectors of the
    last ``DOCUMENT_CACHE`` documents are kept: mined data names the same documents for many queries."""

    kind = "bi-encoder"

    def __init__(self, name_or_path: str, device: torch.device, max_length: int, batch_size: int, settings: dict):
        from simcse.model import SimCSEModel

        self.model = SimCSEModel(name_or_path, document_max_length=max_length, **settings).to(device)
        self.batch_size = batch_size
        self.vectors: dict[str, np.ndarray] = {}  # document -> unit vector, oldest first

    def scores(self, query: str, documents: Sequence[str]) -> list[float]:
        missing = [document for document in dict.fromkeys(documents) if document not in self.vectors]
        if missing:
            encoded = self.model.encode_document(missing, batch_size=self.batch_size, show_progress_bar=False)
            self.vectors |= dict(zip(missing, _unit_rows(encoded)))
        encoded = self.model.encode_query([query], batch_size=self.batch_size, show_progress_bar=False)
        query_vector = _unit_rows(encoded)[0].astype(np.float64)
        scores = [float(self.vectors[document] @ query_vector) for document in documents]
        for oldest in list(islice(self.vectors, max(0, len(self.vectors) - DOCUMENT_CACHE))):
            del self.vectors[oldest]  # after the scores: a query's own documents are never dropped before use
        return scores


def _unit_rows(vectors: np.ndarray) -> np.ndarray:
    return vectors / np.linalg.norm(vectors, axis=-1, keepdims=True)


def load_teacher(name_or_path: str, device: torch.device, max_length: int, batch_size: int, bi_encoder: dict):
    """A cross-encoder when the folder's config.json names a ...ForSequenceClassification architecture, else a
    bi-encoder (``bi_encoder``: its pooler and prompts, None for what the folder declares)."""
    location = check_location(name_or_path, "teacher")
    config = saved_file(location, "config.json")
    architectures = (json.loads(Path(config).read_text(encoding="utf-8")).get("architectures") or []) if config else []
    if any(name.endswith("ForSequenceClassification") for name in architectures):
        return CrossEncoderTeacher(str(location), device, max_length, batch_size)
    return BiEncoderTeacher(str(location), device, max_length, batch_size, bi_encoder)


def _records(path: Path) -> Iterator[tuple[int, dict]]:
    """The input's (line number, object), each checked as train.py checks a retrieval line."""
    kind = DATA_KINDS["query_documents"]
    for number, record in json_objects(path, stream_lines(path)):
        kind.record(path, f"line {number}", {key: record.get(key) for key in ("query", "pos", "neg")})
        yield number, record


def scored_already(input_path: Path, output_path: Path) -> int:
    """The queries the output holds whole (a line cut short by an interruption is removed), each checked to be the
    input's query of that place: an output of another file is refused, never appended to."""
    if not output_path.exists():
        return 0
    data = output_path.read_bytes()
    whole = data[: data.rfind(b"\n") + 1]
    if len(whole) < len(data):
        with open(output_path, "r+b") as file:
            file.truncate(len(whole))
    lines = whole.decode("utf-8").splitlines()
    for place, ((number, record), line) in enumerate(zip(_records(input_path), lines), 1):
        if json.loads(line).get("query") != record["query"]:
            raise ValueError(
                f"--output {output_path}: its line {place} is not the scored line {number} of {input_path}; it "
                "holds another file's scores: name a new --output"
            )
    return len(lines)


def score_file(teacher, input_path: str | os.PathLike, output_path: str | os.PathLike) -> tuple[int, int]:
    """Append each input query, with ``pos_scores`` and ``neg_scores`` from ``teacher``, to the output; returns
    (queries scored now, queries the output held before)."""
    input_path, output_path = Path(input_path), Path(output_path)
    done = scored_already(input_path, output_path)
    total = sum(1 for _ in _records(input_path))
    if done > total:
        raise DataFormatError(output_path, None, f"holds {done} queries, more than the {total} of {input_path}")
    scored = 0
    bar = progress_bar(total=total, initial=done, desc=f"scoring with the {teacher.kind}", unit="query")
    with open(output_path, "a", encoding="utf-8") as output, bar:
        records = islice(_records(input_path), done, None)
        while chunk := list(islice(records, QUERIES_PER_WRITE)):
            lines = []
            for _, record in chunk:
                documents = [*record["pos"], *(record.get("neg") or [])]
                scores = teacher.scores(record["query"], documents)
                split = len(record["pos"])
                lines.append(json.dumps(record | dict(zip(TEACHER_KEYS, (scores[:split], scores[split:]))),
                                        ensure_ascii=False))  # fmt: skip
            output.write("".join(line + "\n" for line in lines))
            output.flush()
            scored += len(chunk)
            bar.update(len(chunk))
    return scored, done
