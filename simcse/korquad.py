"""KorQuAD 1.0 (SQuAD 1.1 JSON) as the Korean retrieval set and retrieval training data: each question's document
is the paragraph that answers it. Articles are split, never paragraphs, so that training pairs and a held-out
retrieval set share no paragraph (nor the other paragraphs of its article)."""

from __future__ import annotations

import json
import logging
import os
import random
from dataclasses import dataclass
from pathlib import Path

from simcse.registry import CORPUS_NAME, QRELS_FOLDER, QRELS_HEADER, QUERIES_NAME
from simcse.run_folder import json_text, write_together
from simcse.text_files import DataFormatError, read_text
from simcse.train_data import TrainData

logger = logging.getLogger(__name__)


@dataclass
class Article:
    title: str
    paragraphs: list[str]
    questions: list[tuple[str, str, int]]  # (question id, question, index of its paragraph)


def read_korquad(path: str | os.PathLike) -> list[Article]:
    """The articles of a KorQuAD 1.0 file (``data[].title``, ``.paragraphs[].context``, ``.qas[].id/question``)."""
    path = Path(path)
    try:
        content = json.loads(read_text(path))
        articles = []
        for article in content["data"]:
            questions = [
                (qa["id"], qa["question"].strip(), index)
                for index, paragraph in enumerate(article["paragraphs"])
                for qa in paragraph["qas"]
            ]
            paragraphs = [paragraph["context"] for paragraph in article["paragraphs"]]
            articles.append(Article(article["title"], paragraphs, questions))
    except json.JSONDecodeError as err:
        raise DataFormatError(path, f"line {err.lineno}", f"not valid JSON ({err.msg})") from None
    except (KeyError, TypeError, AttributeError) as err:
        raise DataFormatError(path, None, f"not a KorQuAD 1.0 file (data[].paragraphs[].qas[]: {err!r})") from None
    if not any(article.questions for article in articles):
        raise DataFormatError(path, None, "no article with a question: nothing to build a set or pairs from")
    return articles


def read_korquad_files(paths: list[str | os.PathLike]) -> list[Article]:
    """The articles of several KorQuAD files, refused when a question id appears twice (within a file or across
    files: its question would be a query twice, or land on both sides of the held-out split)."""
    articles, seen = [], {}
    for path in paths:
        for article in read_korquad(path):
            for qid, _, _ in article.questions:
                if qid in seen:
                    where = "twice in it" if seen[qid] == str(path) else f"also in {seen[qid]}"
                    raise DataFormatError(path, None, f"question id {qid!r} appears {where}: pass each file once")
                seen[qid] = str(path)
            articles.append(article)
    return articles


def split_articles(articles: list[Article], heldout_share: float, seed: int) -> tuple[list[Article], list[Article]]:
    """(training articles, held-out articles): ``heldout_share`` of the articles, drawn with ``seed``."""
    if not 0 <= heldout_share <= 1:
        raise ValueError(f"--heldout_share must lie in [0, 1], got {heldout_share}")
    order = list(range(len(articles)))
    random.Random(seed).shuffle(order)
    heldout = set(order[: round(heldout_share * len(articles))])
    return [a for i, a in enumerate(articles) if i not in heldout], [a for i, a in enumerate(articles) if i in heldout]


def _paragraph_id(article_index: int, paragraph_index: int) -> str:
    return f"{article_index}-{paragraph_index}"


def write_retrieval_set(
    articles: list[Article], folder: str | os.PathLike, split: str = "test", flag: str = "--beir_dir"
) -> dict[str, int]:
    """A BEIR-layout folder: every paragraph a document (titled with its article), every question a query whose
    one relevant document is its paragraph. Returns the counts."""
    folder = Path(folder)
    corpus, queries, qrels = [], [], []
    for a, article in enumerate(articles):
        corpus += [
            {"_id": _paragraph_id(a, p), "title": article.title, "text": text}
            for p, text in enumerate(article.paragraphs)
        ]
        queries += [{"_id": qid, "text": question} for qid, question, _ in article.questions]
        qrels += [f"{qid}\t{_paragraph_id(a, p)}\t1" for qid, _, p in article.questions]
    jsonl = {name: "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows) for name, rows in (
        (CORPUS_NAME, corpus), (QUERIES_NAME, queries))}  # fmt: skip
    files = {folder / name: text for name, text in jsonl.items()} | {
        folder / QRELS_FOLDER / f"{split}.tsv": "\t".join(QRELS_HEADER) + "\n" + "\n".join(qrels) + "\n",
        folder / "source.json": json_text({"articles": [article.title for article in articles]}),
    }
    write_together(files, flag)  # the set's files together: never a new corpus beside old qrels
    for stale in sorted(path for path in (folder / QRELS_FOLDER).glob("*.tsv") if path.stem != split):
        logger.warning(
            "%s: left from an earlier build, it names the old corpus's documents; delete it (a training run's "
            "--valid_data reads qrels/dev.tsv before qrels/test.tsv)",
            stale,
        )
    return {"articles": len(articles), "documents": len(corpus), "queries": len(queries)}


def question_paragraph_pairs(articles: list[Article]) -> TrainData:
    """(question, its paragraph) training pairs; each is one TSV field, so its line breaks and tabs become spaces."""
    questions = [" ".join(question.split()) for article in articles for _, question, _ in article.questions]
    paragraphs = [" ".join(article.paragraphs[p].split()) for article in articles for _, _, p in article.questions]
    return TrainData([questions, paragraphs], kind="pairs")
