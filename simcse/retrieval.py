"""Retrieval evaluation on BEIR-layout sets: exact search of a corpus by cosine similarity, and the metrics of
the ranking (nDCG@10, MRR@10, MAP@100, Recall@1/5/10/100).

A set is a folder as BEIR and MTEB lay it out: ``corpus.jsonl`` (``_id``, ``title``, ``text``), ``queries.jsonl``
(``_id``, ``text``) and ``qrels/<split>.tsv`` (header ``query-id corpus-id score``). A qrel of score 0 says "not
relevant"; a query without a relevant document is skipped and counted. Texts go through the package's reading
(UTF-8, NFC); a bad line is one ``DataFormatError`` naming the file and line.

Metrics, per query then averaged over the evaluated queries, on the ranking by score (ties by ascending document
id, as sentence-transformers' ``InformationRetrievalEvaluator`` breaks them): nDCG with the qrel score as the
gain (graded, as BEIR's pytrec_eval computes it; with 0/1 qrels the evaluator's binary nDCG), MRR, Recall, and
MAP@k as that evaluator defines it (precision at each relevant hit, over min(k, relevant documents)).
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from simcse.registry import (
    CORPUS_NAME,
    QRELS_FOLDER,
    QRELS_HEADER,
    QUERIES_NAME,
    RETRIEVAL_SETS,
    default_data_dir,
    missing_data_hint,
)
from simcse.text_files import DataFormatError, drop_blank_lines, json_objects, quoted, read_lines, split_row

METRIC_CUTOFFS = {"ndcg": (10,), "mrr": (10,), "map": (100,), "recall": (1, 5, 10, 100)}
METRIC_KEYS = RETRIEVAL_KEYS = tuple(f"{name}@{k}" for name, cutoffs in METRIC_CUTOFFS.items() for k in cutoffs)
SEARCH_DEPTH = max(k for cutoffs in METRIC_CUTOFFS.values() for k in cutoffs)  # documents kept per query
SEARCH_BLOCK = 1024  # queries scored at once: memory is a block of queries x the corpus block, never Q x corpus


@dataclass
class RetrievalData:
    name: str
    corpus_ids: list[str]
    corpus_texts: list[str]
    query_ids: list[str]  # the queries evaluated: those with a relevant document
    query_texts: list[str]
    qrels: dict[str, dict[str, int]]  # query id -> document id -> relevance (> 0)
    skipped_queries: int = 0  # queries without a relevant document
    split: str = "test"  # the qrels read: qrels/<split>.tsv

    def __len__(self) -> int:
        return len(self.query_ids)


def is_retrieval_set(name_or_path: str | os.PathLike) -> bool:
    """A registered retrieval set's name (``korquad_dev``) or a folder holding a corpus.jsonl."""
    return str(name_or_path) in RETRIEVAL_SETS or (Path(name_or_path) / CORPUS_NAME).is_file()


def resolve_retrieval_set(name_or_path: str | os.PathLike, data_dir: str | os.PathLike | None = None) -> Path:
    """The folder of a registered name (under ``data_dir``, default ``default_data_dir()``) or the folder given."""
    name = str(name_or_path)
    if name not in RETRIEVAL_SETS:
        return Path(name)
    dataset = RETRIEVAL_SETS[name]
    folder = Path(data_dir if data_dir is not None else default_data_dir()) / dataset.folder
    if not (folder / CORPUS_NAME).is_file():
        raise FileNotFoundError(
            f"{folder}: no retrieval set {name!r} there; "
            + missing_data_hint(f"bash {dataset.download_script} && {dataset.build_command}", dataset.folder)
        )
    return folder


def dev_split(name_or_path: str | os.PathLike, data_dir: str | os.PathLike | None = None) -> str:
    """The qrels a training run's dev evaluation reads: ``dev`` when the set has a qrels/dev.tsv, else ``test``."""
    folder = resolve_retrieval_set(name_or_path, data_dir)
    return "dev" if (folder / QRELS_FOLDER / "dev.tsv").is_file() else "test"


def set_files(name_or_path: str | os.PathLike, split: str, data_dir: str | os.PathLike | None = None) -> list[Path]:
    """The three files of a retrieval set's split: corpus, queries and qrels."""
    folder = resolve_retrieval_set(name_or_path, data_dir)
    return [folder / CORPUS_NAME, folder / QUERIES_NAME, folder / QRELS_FOLDER / f"{split}.tsv"]


def texts_by_id(path: Path, with_title: bool) -> dict[str, str]:
    texts: dict[str, str] = {}
    for number, row in json_objects(path, read_lines(path), ("_id", "text")):
        where = f"line {number}"
        title = (row.get("title") or "") if with_title else ""
        if not isinstance(title, str):
            raise DataFormatError(path, where, "non-string 'title'")
        text = f"{title} {row['text']}".strip() if title else row["text"].strip()
        if not text:
            raise DataFormatError(path, where, f"empty text for _id {quoted(row['_id'])}")
        if row["_id"] in texts:
            raise DataFormatError(path, where, f"_id {quoted(row['_id'])} appears twice")
        texts[row["_id"]] = text
    if not texts:
        raise DataFormatError(path, None, "no entries found")
    return texts


def _read_qrels(path: Path, corpus: Mapping[str, str], queries: Mapping[str, str]) -> dict[str, dict[str, int]]:
    lines = list(drop_blank_lines(path, read_lines(path)))
    if not lines or tuple(lines[0][1].split("\t")) != QRELS_HEADER:
        raise DataFormatError(path, "line 1", "expected the header query-id\\tcorpus-id\\tscore")
    qrels: dict[str, dict[str, int]] = {}
    for number, line in lines[1:]:
        query, document, score = split_row(path, number, line, 3, ", ".join(QRELS_HEADER))
        where = f"line {number}"
        if query not in queries:
            raise DataFormatError(path, where, f"query-id {quoted(query)} is not in {QUERIES_NAME}")
        if document not in corpus:
            raise DataFormatError(path, where, f"corpus-id {quoted(document)} is not in {CORPUS_NAME}")
        if not score.lstrip("-").isdigit():
            raise DataFormatError(path, where, f"score {quoted(score)} is not an integer")
        if document in qrels.get(query, {}):
            raise DataFormatError(path, where, f"the pair {quoted(query)}, {quoted(document)} appears twice")
        qrels.setdefault(query, {})[document] = int(score)
    return qrels


def load_retrieval_set(
    name_or_path: str | os.PathLike, split: str = "test", data_dir: str | os.PathLike | None = None
) -> RetrievalData:
    """A BEIR-layout folder's (or a registered set's) corpus, queries and ``qrels/<split>.tsv``."""
    corpus_path, queries_path, qrels_path = set_files(name_or_path, split, data_dir)
    for path in (corpus_path, queries_path, qrels_path):
        if not path.is_file():
            others = sorted(other.stem for other in qrels_path.parent.glob("*.tsv")) if path == qrels_path else []
            hint = f"; it has {', '.join(f'qrels/{s}.tsv' for s in others)}: pass --split {others[0]}" if others else ""
            raise FileNotFoundError(
                f"{path}: no such file (a retrieval set holds corpus.jsonl, queries.jsonl, qrels/){hint}"
            )
    corpus = texts_by_id(corpus_path, with_title=True)
    queries = texts_by_id(queries_path, with_title=False)
    qrels = _read_qrels(qrels_path, corpus, queries)
    relevant = {query: {d: s for d, s in docs.items() if s > 0} for query, docs in qrels.items()}
    evaluated = [query for query in queries if relevant.get(query)]
    if not evaluated:
        raise DataFormatError(qrels_path, None, "no query has a relevant document (a score above 0)")
    return RetrievalData(
        name=str(name_or_path),
        corpus_ids=list(corpus),
        corpus_texts=list(corpus.values()),
        query_ids=evaluated,
        query_texts=[queries[query] for query in evaluated],
        qrels={query: relevant[query] for query in evaluated},
        skipped_queries=len(queries) - len(evaluated),
        split=split,
    )


def search(
    queries: torch.Tensor,
    corpus: torch.Tensor,
    depth: int,
    block: int = SEARCH_BLOCK,
    tie_order: torch.Tensor | None = None,
):
    """Exact top-``depth`` of every query (Q, H) against the corpus (D, H) by dot product, block by block of
    queries and of documents with a running top-k; returns scores and document rows, each (Q, min(depth, D)),
    ranked by score. Documents tying in score rank by ``tie_order`` (D,), lower first (default: corpus order), at
    the cut too: of the documents tying at the last score kept, the first in that order are kept."""
    depth = min(depth, corpus.shape[0])
    tie_order = torch.arange(corpus.shape[0]) if tie_order is None else tie_order
    best_scores, best_rows = [], []
    for start in range(0, queries.shape[0], block):
        query_block = queries[start : start + block]  # (b, H)
        scores = query_block.new_full((query_block.shape[0], 0), -math.inf)  # (b, kept)
        rows = torch.zeros((query_block.shape[0], 0), dtype=torch.long)
        for first in range(0, corpus.shape[0], block):
            block_scores = query_block @ corpus[first : first + block].T  # (b, c)
            block_rows = torch.arange(first, first + block_scores.shape[1]).expand_as(block_scores)
            candidates = torch.cat([scores, block_scores], 1), torch.cat([rows, block_rows], 1)
            scores, rows = _best(*candidates, depth, tie_order)
        scores, rows = _ranked(scores, rows, tie_order)
        best_scores.append(scores)
        best_rows.append(rows)
    return torch.cat(best_scores), torch.cat(best_rows)


def _best(scores: torch.Tensor, rows: torch.Tensor, depth: int, tie_order: torch.Tensor):
    """The ``depth`` best of each query's candidates (b, n) by score, then ``tie_order``, in no particular order."""
    if scores.shape[1] <= depth:
        return scores, rows
    values, keep = scores.topk(depth + 1)  # (b, depth + 1), by score: the one past the cut shows a tie across it
    cut, keep = values[:, depth - 1 : depth], keep[:, :depth]  # (b, 1): the last score kept
    # Where the first left out ties with the last kept, topk chose among the tying ones at random: choose again.
    split = (cut[:, 0] == values[:, depth]).nonzero()[:, 0]
    if len(split):
        order = tie_order[rows[split]]  # (s, n)
        at_cut = torch.where(scores[split] == cut[split], order, torch.iinfo(order.dtype).max)
        keys = torch.where(scores[split] > cut[split], -1, at_cut)  # above the cut always, then by order
        keep[split] = keys.topk(depth, largest=False).indices
    return scores.gather(1, keep), rows.gather(1, keep)


def _ranked(scores: torch.Tensor, rows: torch.Tensor, tie_order: torch.Tensor):
    """Each query's kept documents (b, k) by score, ties by ``tie_order``."""
    by_order = tie_order[rows].argsort(dim=1, stable=True)
    scores, rows = scores.gather(1, by_order), rows.gather(1, by_order)
    by_score = scores.argsort(dim=1, descending=True, stable=True)
    return scores.gather(1, by_score), rows.gather(1, by_score)


def ranking_metrics(ranked: list[str], relevance: Mapping[str, int]) -> dict[str, float]:
    """The metrics of one query's ranked document ids against its relevant documents (id -> relevance > 0)."""
    hits = [relevance.get(document, 0) for document in ranked]
    metrics = {}
    ideal = sorted(relevance.values(), reverse=True)
    for k in METRIC_CUTOFFS["ndcg"]:
        dcg = sum(gain / math.log2(rank + 2) for rank, gain in enumerate(hits[:k]))
        metrics[f"ndcg@{k}"] = dcg / sum(gain / math.log2(rank + 2) for rank, gain in enumerate(ideal[:k]))
    for k in METRIC_CUTOFFS["mrr"]:
        metrics[f"mrr@{k}"] = next((1 / (rank + 1) for rank, gain in enumerate(hits[:k]) if gain > 0), 0.0)
    for k in METRIC_CUTOFFS["map"]:
        found, precisions = 0, 0.0
        for rank, gain in enumerate(hits[:k]):
            if gain > 0:
                found += 1
                precisions += found / (rank + 1)
        metrics[f"map@{k}"] = precisions / min(k, len(relevance))
    for k in METRIC_CUTOFFS["recall"]:
        metrics[f"recall@{k}"] = sum(gain > 0 for gain in hits[:k]) / len(relevance)
    return metrics


def evaluate_retrieval(
    model,
    data: RetrievalData,
    batch_size: int | None = None,
    document_max_length: int | None = None,
    query_prompt: str | None = None,
    document_prompt: str | None = None,
    description: str = "retrieval",
) -> dict[str, float]:
    """The metrics of ``model.encode``'s embeddings on a retrieval set: the corpus embedded once (length-sorted,
    as ``encode`` does), cosine similarity, exact search. The prompts and the document length default to the
    model's (``prompt_for``, ``document_max_length``); ``description`` labels encode's progress bars. Returns the
    mean of every metric and the counts."""
    query_prompt = model.prompt_for("query") if query_prompt is None else query_prompt
    document_prompt = model.prompt_for("document") if document_prompt is None else document_prompt
    document_max_length = document_max_length or model.document_max_length
    documents = model.encode(
        data.corpus_texts,
        batch_size=batch_size,
        max_length=document_max_length,
        prompt=document_prompt,
        description=f"{description}: documents",
    )
    queries = model.encode(
        data.query_texts, batch_size=batch_size, prompt=query_prompt, description=f"{description}: queries"
    )
    normalized = [torch.nn.functional.normalize(torch.from_numpy(e), dim=-1) for e in (queries, documents)]
    by_id = sorted(range(len(data.corpus_ids)), key=data.corpus_ids.__getitem__)
    id_order = torch.empty(len(by_id), dtype=torch.long)
    id_order[by_id] = torch.arange(len(by_id))  # each document's place in ascending id order
    _, rows = search(*normalized, SEARCH_DEPTH, tie_order=id_order)
    per_query = []
    for query, query_rows in zip(data.query_ids, rows.tolist()):  # ranked by score, ties by ascending id
        per_query.append(ranking_metrics([data.corpus_ids[row] for row in query_rows], data.qrels[query]))
    means = {key: float(np.mean([metrics[key] for metrics in per_query])) for key in RETRIEVAL_KEYS}
    return means | {
        "queries": len(data.query_ids),
        "skipped_queries": data.skipped_queries,
        "documents": len(documents),
    }


def format_retrieval_table(results: Mapping[str, Mapping[str, float]]) -> str:
    """A Markdown table of retrieval results (row name -> metrics), x100, two decimals."""
    lines = ["| Model | " + " | ".join(RETRIEVAL_KEYS) + " |", "|:---|" + "---:|" * len(RETRIEVAL_KEYS)]
    for name, metrics in results.items():
        lines.append(f"| {name} | " + " | ".join(f"{100 * metrics[key]:.2f}" for key in RETRIEVAL_KEYS) + " |")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------------
# The retrieval task's entry points (simcse.tasks)


def recognises(name_or_path: str | os.PathLike, data_dir: str | os.PathLike | None = None) -> bool:
    return is_retrieval_set(name_or_path)


def files(name_or_path: str | os.PathLike, split: str | None, data_dir: str | os.PathLike | None = None) -> list[Path]:
    """The set's corpus, queries and qrels of ``split`` (None: a training run's, ``dev_split``)."""
    return set_files(name_or_path, split or dev_split(name_or_path, data_dir), data_dir)


def load(
    name_or_path: str | os.PathLike, split: str | None, data_dir: str | os.PathLike | None = None
) -> RetrievalData:
    """The set with the qrels of ``split`` (None: a training run's, ``dev_split``)."""
    return load_retrieval_set(name_or_path, split or dev_split(name_or_path, data_dir), data_dir)


def texts(data: RetrievalData) -> list[str]:
    return data.query_texts + data.corpus_texts


def subset(data: RetrievalData, rows: list[int]) -> RetrievalData:
    """The queries at ``rows`` (a sample of the set) against the whole corpus."""
    ids = [data.query_ids[i] for i in rows]
    return dataclasses.replace(
        data, query_ids=ids, query_texts=[data.query_texts[i] for i in rows], qrels={q: data.qrels[q] for q in ids}
    )


def evaluate(model, data: RetrievalData, batch_size: int | None = None, description: str = "retrieval") -> dict:
    return evaluate_retrieval(model, data, batch_size, description=description)


def describe(name: str, data: RetrievalData, model) -> str:
    """eval.py's line before a set is encoded: its size, the document length and the prompts."""
    counts = (
        f"{len(data.query_ids)} queries of qrels/{data.split}.tsv ({data.skipped_queries} without a relevant "
        "document, skipped)"
    )
    return (
        f"{name}: {counts} over {len(data.corpus_ids)} documents, documents up to {model.document_max_length} "
        f"tokens, prompts {model.prompt_for('query')!r} / {model.prompt_for('document')!r}"
    )


format_table = format_retrieval_table


def card_sections(results: Mapping[str, Mapping[str, float]], row_name: str) -> list[str]:
    """The model card's sections: one table per set."""
    return [
        f"## Retrieval: {name}\n\nx100, exact search by cosine similarity.\n\n{format_table({row_name: metrics})}"
        for name, metrics in results.items()
    ]
