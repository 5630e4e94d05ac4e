"""Hard-negative mining for retrieval training: each query's nearest documents that are not its positives.

The corpus is embedded once with the model's document prompt and length, the queries with its query prompt;
exact search (``simcse.retrieval.search``) ranks the corpus for each query by cosine similarity (ties by corpus
order). From a query's ranking the positives are removed, then the ``skip_top`` nearest (too near: likely
unlabelled positives), then, with ``max_score_ratio``, every candidate scoring above that share of the query's
lowest positive score (a false-negative guard); the first ``num_negatives`` left are its hard negatives.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from simcse.registry import CORPUS_NAME
from simcse.retrieval import search, texts_by_id
from simcse.run_folder import write_together
from simcse.text_files import DataFormatError, drop_blank_lines, read_lines
from simcse.train_data import DATA_KINDS, load_train_data


@dataclass(frozen=True)
class MiningSettings:
    num_negatives: int = 8  # written per query (fewer when the candidates run out)
    skip_top: int = 0  # nearest non-positive candidates skipped
    max_score_ratio: float | None = None  # drop candidates scoring above this share of the lowest positive score
    candidates: int = 100  # ranks of the corpus examined per query

    def problem(self) -> str | None:
        """Why these settings cannot mine, or None."""
        if self.num_negatives < 1:
            return f"--num_negatives must be at least 1, got {self.num_negatives}"
        if self.skip_top < 0:
            return f"--skip_top must be at least 0, got {self.skip_top}"
        if self.max_score_ratio is not None and not 0 < self.max_score_ratio <= 10:
            return f"--max_score_ratio must lie in (0, 10], got {self.max_score_ratio}"
        if self.candidates < self.skip_top + self.num_negatives:
            return f"--candidates {self.candidates} leaves no room for --skip_top plus --num_negatives"
        return None


def unit_rows(embeddings) -> torch.Tensor:
    return torch.nn.functional.normalize(torch.as_tensor(embeddings), dim=-1)


def mine_hard_negatives(
    model,
    queries: list[str],
    positives: list[list[str]],
    corpus: list[str],
    settings: MiningSettings,
    batch_size: int | None = None,
) -> list[dict]:
    """One ``{"query", "pos", "neg", "pos_scores", "neg_scores"}`` row per query (FlagEmbedding's format), in the
    order of ``queries``; ``positives[i]`` are query i's relevant documents (excluded from its negatives)."""
    if problem := settings.problem():
        raise ValueError(problem)
    query_vectors = unit_rows(model.encode_query(queries, batch_size=batch_size))  # (Q, H)
    document_vectors = unit_rows(model.encode_document(corpus, batch_size=batch_size))  # (D, H)
    # The positives' vectors: the corpus's where they are in it (by default the corpus is the positives).
    row_of = {text: row for row, text in enumerate(corpus)}
    missing = list(dict.fromkeys(text for texts in positives for text in texts if text not in row_of))
    if missing:
        row_of |= {text: len(corpus) + i for i, text in enumerate(missing)}
        extra = unit_rows(model.encode_document(missing, batch_size=batch_size))  # (M, H)
    positive_vectors = torch.cat([document_vectors, extra]) if missing else document_vectors  # (D + M, H)
    depth = min(settings.candidates + max(len(texts) for texts in positives), len(corpus))
    scores, rows = search(query_vectors, document_vectors, depth)  # each (Q, depth)
    mined = []
    for i, (query, own) in enumerate(zip(queries, positives)):
        own_scores = [float(query_vectors[i] @ positive_vectors[row_of[text]]) for text in own]
        ranked = sorted(zip(scores[i].tolist(), rows[i].tolist()), key=lambda pair: (-pair[0], pair[1]))
        candidates = [(score, corpus[row]) for score, row in ranked if corpus[row] not in own]
        candidates = candidates[settings.skip_top : settings.candidates]
        if settings.max_score_ratio is not None:
            ceiling = settings.max_score_ratio * min(own_scores)
            candidates = [(score, text) for score, text in candidates if score <= ceiling]
        chosen = candidates[: settings.num_negatives]
        mined.append(
            {
                "query": query,
                "pos": list(own),
                "neg": [text for _, text in chosen],
                "pos_scores": own_scores,
                "neg_scores": [score for score, _ in chosen],
            }
        )
    return mined


def read_pairs(path: str | os.PathLike) -> tuple[list[str], list[list[str]]]:
    """The distinct queries of a (query, positive) file, in order, and each one's positives: a sent0/sent1 TSV (a
    query on several lines has several positives) or a query/pos JSONL."""
    data = load_train_data(path)
    kind = DATA_KINDS[data.kind]
    if kind.query_positives is None:
        raise DataFormatError(
            data.path,
            None,
            f"{kind.description}: mining needs (query, positive) pairs, a sent0<TAB>sent1 TSV or a .jsonl of "
            "{query, pos}",
        )
    return kind.query_positives(data)


def corpus_file(path: str | os.PathLike) -> Path:
    """The file a corpus is read from: a BEIR folder's corpus.jsonl, else the file given."""
    path = Path(path)
    return path / CORPUS_NAME if path.is_dir() else path


def read_corpus(path: str | os.PathLike) -> list[str]:
    """The distinct documents of a corpus: a BEIR folder or corpus.jsonl (title and text), else one per line."""
    path = corpus_file(path)
    if path.suffix.lower() == ".jsonl":
        return list(dict.fromkeys(texts_by_id(path, with_title=True).values()))
    documents = [line for _, line in drop_blank_lines(path, read_lines(path))]
    if not documents:
        raise DataFormatError(path, None, "no documents found")
    return list(dict.fromkeys(documents))


def write_mined(rows: list[dict], path: str | os.PathLike, num_negatives: int) -> str:
    """Write the rows that got a negative as JSONL; returns the summary line, counting the rows left out (no
    candidate survived the filters) and those with fewer than ``num_negatives``."""
    kept = [row for row in rows if row["neg"]]
    write_together({Path(path): "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in kept)}, "--output")
    fewer = sum(len(row["neg"]) < num_negatives for row in kept)
    left_out = len(rows) - len(kept)
    return f"wrote {path}: {len(kept)} queries, {num_negatives} negatives each ({fewer} with fewer)" + (
        f"; {left_out} queries had no candidate left and are left out" if left_out else ""
    )
