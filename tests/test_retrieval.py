"""Retrieval evaluation on BEIR-layout sets: the metrics against sentence-transformers' InformationRetrievalEvaluator
(binary qrels, several relevant documents, ties) and sklearn's ndcg_score (graded qrels), the block search against
a full sort, eval.py end to end against the evaluator on the same model, and bad files as one error line."""

import json
import random
import warnings

import numpy as np
import pytest
import torch
from conftest import EVAL_SCRIPT, assert_one_line_error
from sklearn.metrics import ndcg_score

from simcse.model import SimCSEModel
from simcse.retrieval import RETRIEVAL_KEYS, load_retrieval_set, ranking_metrics, search

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    from sentence_transformers.evaluation import InformationRetrievalEvaluator

CUTOFFS = dict(ndcg_at_k=[10], mrr_at_k=[10], map_at_k=[100], accuracy_at_k=[1], precision_recall_at_k=[1, 5, 10, 100])


def st_metrics(evaluator_output: dict) -> dict[str, float]:
    """InformationRetrievalEvaluator's numbers under this package's metric names."""
    return {
        f"{name}@{k}": float(evaluator_output[f"{name}@k"][k])
        for name, k in (("ndcg", 10), ("mrr", 10), ("map", 100), ("recall", 1), ("recall", 5), ("recall", 10))
        + (("recall", 100),)
    }


def write_set(folder, corpus, queries, qrels, header="query-id\tcorpus-id\tscore"):
    (folder / "qrels").mkdir(parents=True)
    (folder / "corpus.jsonl").write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in corpus))
    (folder / "queries.jsonl").write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in queries))
    (folder / "qrels" / "test.tsv").write_text(header + "\n" + "".join(f"{q}\t{d}\t{s}\n" for q, d, s in qrels))
    return folder


def test_metrics_equal_the_evaluators_with_ties_and_several_relevant_documents():
    generator = random.Random(0)
    documents = [f"d{i:02d}" for i in range(30)]
    rankings, relevant = [], {}
    for query in range(20):
        scores = [round(generator.random(), 1) for _ in documents]  # one decimal: many ties
        relevant[f"q{query}"] = set(generator.sample(documents, generator.randint(1, 4)))
        rankings.append([{"corpus_id": d, "score": s} for d, s in zip(documents, scores)])
    evaluator = InformationRetrievalEvaluator(
        {q: q for q in relevant}, {d: d for d in documents}, relevant, show_progress_bar=False, **CUTOFFS
    )
    expected = st_metrics(evaluator.compute_metrics(rankings))
    per_query = []
    for query, ranking in zip(relevant, rankings):
        ranked = [hit["corpus_id"] for hit in sorted(ranking, key=lambda hit: (-hit["score"], hit["corpus_id"]))]
        per_query.append(ranking_metrics(ranked, dict.fromkeys(relevant[query], 1)))
    got = {key: np.mean([metrics[key] for metrics in per_query]) for key in RETRIEVAL_KEYS}
    assert got == pytest.approx(expected, abs=1e-12)


def test_graded_ndcg_equals_sklearn():
    generator = np.random.default_rng(0)
    for _ in range(20):
        grades = generator.integers(0, 4, size=25)
        grades[generator.integers(0, 25)] = 2  # at least one relevant document
        scores = generator.permutation(25).astype(float)  # no ties: sklearn averages over tied groups
        ranked = [f"d{i}" for i in np.argsort(-scores)]
        relevance = {f"d{i}": int(g) for i, g in enumerate(grades) if g > 0}
        got = ranking_metrics(ranked, relevance)["ndcg@10"]
        assert got == pytest.approx(ndcg_score([grades], [scores], k=10), abs=1e-12)


@pytest.mark.parametrize("block", [1, 3, 64])
def test_block_search_equals_a_full_sort(block):
    generator = torch.Generator().manual_seed(0)
    queries, corpus = torch.randn(10, 8, generator=generator), torch.randn(50, 8, generator=generator)
    scores, rows = search(queries, corpus, depth=7, block=block)
    full = queries @ corpus.T
    expected_rows = full.argsort(dim=1, descending=True)[:, :7]
    assert torch.equal(rows, expected_rows)
    torch.testing.assert_close(scores, full.gather(1, expected_rows))
    assert search(queries, corpus, depth=100, block=block)[1].shape == (10, 50)  # deeper than the corpus


def demo_set(folder, demo_data):
    """Queries are dev.tsv's first sentences, their documents the second ones (graded by the gold score); two
    queries without a relevant document (none, and score 0 only)."""
    rows = [line.split("\t") for line in (demo_data / "dev.tsv").read_text(encoding="utf-8").splitlines()[1:]]
    corpus = [{"_id": f"doc{i}", "title": "", "text": row[1]} for i, row in enumerate(rows)]
    queries = [{"_id": f"q{i}", "text": row[0]} for i, row in enumerate(rows)]
    qrels = [(f"q{i}", f"doc{i}", 1) for i in range(len(rows) - 2)] + [(f"q{len(rows) - 1}", "doc0", 0)]
    qrels += [(f"q{i}", f"doc{i + 1}", 1) for i in range(0, 10, 3)]  # several relevant documents
    return write_set(folder, corpus, queries, qrels), rows


def sentence_transformers_metrics(model_folder, folder, prompts: tuple | None = None, split="test") -> dict:
    """The set's metrics by sentence-transformers alone: its encode with the query and document ``prompts`` (None:
    encode_query and encode_document, as a user deploys the folder) and its InformationRetrievalEvaluator's
    computation."""
    from sentence_transformers import SentenceTransformer

    data = load_retrieval_set(folder, split)
    evaluator = InformationRetrievalEvaluator(
        dict(zip(data.query_ids, data.query_texts)),
        dict(zip(data.corpus_ids, data.corpus_texts)),
        {query: set(documents) for query, documents in data.qrels.items()},
        show_progress_bar=False,
        **CUTOFFS,
    )
    st_model = SentenceTransformer(str(model_folder), device="cpu")
    if prompts is None:
        queries = st_model.encode_query(data.query_texts, convert_to_tensor=True)
        corpus = st_model.encode_document(data.corpus_texts, convert_to_tensor=True)
    else:
        queries = st_model.encode(data.query_texts, convert_to_tensor=True, prompt=prompts[0])
        corpus = st_model.encode(data.corpus_texts, convert_to_tensor=True, prompt=prompts[1])
    similarities = torch.nn.functional.normalize(queries, dim=-1) @ torch.nn.functional.normalize(corpus, dim=-1).T
    rankings = [[{"corpus_id": d, "score": s} for d, s in zip(data.corpus_ids, row)] for row in similarities.tolist()]
    return st_metrics(evaluator.compute_metrics(rankings))


def test_eval_py_equals_the_evaluator_on_the_same_model_with_query_and_document_prompts(
    demo_bert, demo_data, run_here, tmp_path
):
    model_folder = tmp_path / "model"
    SimCSEModel(demo_bert, pooler="avg").save_pretrained(model_folder)
    folder, rows = demo_set(tmp_path / "set", demo_data)
    output = tmp_path / "results.json"
    prompts = ["--query_prompt", "질문: ", "--document_prompt", "문단: "]
    result = run_here(EVAL_SCRIPT, "--model", model_folder, "--test_data", folder, "--output_json", output, *prompts)
    assert result.returncode == 0, result.stderr
    assert f"{len(rows) - 2} queries of qrels/test.tsv (2 without a relevant document, skipped)" in result.stdout
    got = json.loads(output.read_text())["retrieval"][str(folder)]
    expected = sentence_transformers_metrics(model_folder, folder, ("질문: ", "문단: "))
    assert {key: got[key] for key in RETRIEVAL_KEYS} == pytest.approx(expected, abs=1e-6)
    assert got["queries"] == len(rows) - 2 and got["skipped_queries"] == 2


CORPUS = [{"_id": "d1", "text": "문서 하나"}, {"_id": "d2", "title": "제목", "text": "문서 둘"}]
QUERIES = [{"_id": "q1", "text": "질문"}]


@pytest.mark.parametrize(
    "corpus, queries, qrels, header, words",
    [
        ([{"text": "id 없음"}], QUERIES, [("q1", "d1", 1)], None, ("corpus.jsonl, line 1", "'_id'")),
        (CORPUS + [CORPUS[0]], QUERIES, [("q1", "d1", 1)], None, ("corpus.jsonl, line 3", "appears twice")),
        ([{"_id": "d1", "text": "  "}], QUERIES, [("q1", "d1", 1)], None, ("line 1", "empty text")),
        (CORPUS, QUERIES, [("q1", "d9", 1)], None, ("test.tsv, line 2", "'d9' is not in corpus.jsonl")),
        (CORPUS, QUERIES, [("q7", "d1", 1)], None, ("test.tsv, line 2", "'q7' is not in queries.jsonl")),
        (CORPUS, QUERIES, [("q1", "d1", "1.5")], None, ("test.tsv, line 2", "not an integer")),
        (CORPUS, QUERIES, [("q1", "d1", 1)], "qid\tdocid\trel", ("test.tsv, line 1", "query-id")),
        (CORPUS, QUERIES, [("q1", "d1", 0)], None, ("no query has a relevant document",)),
    ],
)
def test_a_bad_retrieval_file_is_one_error_line(corpus, queries, qrels, header, words, demo_bert, run_here, tmp_path):
    kwargs = {"header": header} if header else {}
    folder = write_set(tmp_path / "set", corpus, queries, qrels, **kwargs)
    result = run_here(EVAL_SCRIPT, "--model", demo_bert, "--test_data", folder)
    assert result.returncode == 1
    assert_one_line_error(result, *words)
    assert "model" not in result.stdout  # refused before the model loads


class TableEncoder:
    """A stand-in for SimCSEModel.encode: each text's vector from a table (identical documents tie exactly)."""

    document_max_length = 512

    def __init__(self, vectors: dict[str, list[float]]):
        self.vectors, self.calls = vectors, []

    def prompt_for(self, role):
        return ""

    def encode(self, texts, batch_size=None, max_length=None, prompt=None, description=None):
        self.calls.append((texts[0], max_length, prompt))
        return np.array([self.vectors[text] for text in texts], dtype=np.float32)


def test_evaluate_retrieval_breaks_ties_as_the_evaluator(tmp_path):
    """Documents with the same vector tie; the ranking puts them in ascending id order, as the evaluator does."""
    from simcse.retrieval import evaluate_retrieval

    corpus = [{"_id": f"d{i}", "text": f"문서 {i % 3}"} for i in (5, 2, 8, 0, 4, 7)]  # three pairs of twins
    queries = [{"_id": f"q{i}", "text": f"질문 {i}"} for i in range(3)]
    qrels = [("q0", "d8", 1), ("q0", "d5", 1), ("q1", "d4", 1), ("q2", "d0", 1), ("q2", "d7", 1)]
    data = load_retrieval_set(write_set(tmp_path / "set", corpus, queries, qrels))
    vectors = {
        "문서 0": [1, 0],
        "문서 1": [0.6, 0.8],
        "문서 2": [0, 1],
        "질문 0": [1, 0.1],
        "질문 1": [0, 1],
        "질문 2": [0.7, 0.7],
    }
    got = evaluate_retrieval(TableEncoder(vectors), data)
    similarities = TableEncoder(vectors).encode(data.query_texts) @ TableEncoder(vectors).encode(data.corpus_texts).T
    rankings = [
        [{"corpus_id": d, "score": float(s)} for d, s in zip(data.corpus_ids, row)]
        for row in similarities
        / np.linalg.norm(TableEncoder(vectors).encode(data.query_texts), axis=1)[:, None]
        / np.linalg.norm(TableEncoder(vectors).encode(data.corpus_texts), axis=1)[None]
    ]
    evaluator = InformationRetrievalEvaluator(
        dict(zip(data.query_ids, data.query_texts)),
        dict(zip(data.corpus_ids, data.corpus_texts)),
        {query: set(documents) for query, documents in data.qrels.items()},
        show_progress_bar=False,
        **CUTOFFS,
    )
    assert {key: got[key] for key in RETRIEVAL_KEYS} == pytest.approx(st_metrics(evaluator.compute_metrics(rankings)))


def test_queries_and_documents_get_their_own_prompt_and_length(tmp_path):
    from simcse.retrieval import evaluate_retrieval

    corpus, queries = [{"_id": "d1", "text": "문서"}], [{"_id": "q1", "text": "질문"}]
    data = load_retrieval_set(write_set(tmp_path / "set", corpus, queries, [("q1", "d1", 1)]))
    encoder = TableEncoder({"문서": [1, 0], "질문": [1, 1]})
    evaluate_retrieval(encoder, data, document_max_length=300, query_prompt="query: ", document_prompt="passage: ")
    assert sorted(encoder.calls) == [("문서", 300, "passage: "), ("질문", None, "query: ")]


def test_a_document_length_too_short_is_refused_before_anything_loads(demo_bert, run_here, tmp_path):
    folder = write_set(tmp_path / "set", CORPUS, QUERIES, [("q1", "d1", 1)])
    result = run_here(EVAL_SCRIPT, "--model", demo_bert, "--test_data", folder, "--document_max_length", 0)
    assert_one_line_error(result, "--document_max_length must be at least 2")
    assert result.stdout == ""


# ---------------------------------------------------------------------------------------------------
# Ties at the search cut


@pytest.mark.parametrize("block", [1, 3, 64])
def test_block_search_breaks_ties_by_the_tie_order_at_the_cut_too(block):
    generator = torch.Generator().manual_seed(1)
    queries = torch.randint(-1, 2, (10, 4), generator=generator).float()
    corpus = torch.randint(-1, 2, (60, 4), generator=generator).float()  # many documents share a score
    tie_order = torch.randperm(60, generator=generator)
    scores, rows = search(queries, corpus, depth=7, block=block, tie_order=tie_order)
    full = queries @ corpus.T
    for query in range(10):
        expected = sorted(range(60), key=lambda row: (-full[query, row].item(), tie_order[row].item()))[:7]
        assert rows[query].tolist() == expected
    default = search(queries, corpus, depth=7, block=block)[1]  # corpus order
    assert default[0].tolist() == sorted(range(60), key=lambda row: (-full[0, row].item(), row))[:7]


class SameVectorForEveryText:
    """An encoder that gives every text the same vector: every document ties with every other."""

    document_max_length = 16

    def prompt_for(self, role):
        return ""

    def encode(self, texts, **kwargs):
        return np.ones((len(texts), 4), dtype=np.float32)

    encode_query = encode_document = encode


def test_documents_tying_at_the_cut_rank_by_ascending_id():
    from simcse.retrieval import RetrievalData, evaluate_retrieval

    ids = [f"doc{i:04d}" for i in range(2000)]
    random.Random(0).shuffle(ids)  # corpus order is not id order
    data = RetrievalData(
        "copies", ids, ["같은 문서"] * 2000, ["q"], ["질문"], {"q": {f"doc{i:04d}": 1 for i in range(5)}}
    )
    metrics = evaluate_retrieval(SameVectorForEveryText(), data)
    assert metrics["ndcg@10"] == metrics["mrr@10"] == metrics["recall@100"] == pytest.approx(1.0)


def test_mining_keeps_the_first_tying_documents_in_corpus_order():
    from simcse.mining import MiningSettings, mine_hard_negatives

    corpus = [f"문서 {i}" for i in range(300)]
    (row,) = mine_hard_negatives(
        SameVectorForEveryText(), ["질문"], [[corpus[0]]], corpus, MiningSettings(3, 0, None, 10)
    )
    assert row["neg"] == corpus[1:4]


@pytest.mark.parametrize("prompt", ["", "문단: "])
def test_a_document_length_that_leaves_no_room_for_text_is_refused(demo_bert, demo_data, run_here, tmp_path, prompt):
    """--document_max_length 2 made every document [CLS][SEP]: the ranking fell back to ids, with no warning."""
    folder, _ = demo_set(tmp_path / "set", demo_data)
    tokenizer = SimCSEModel(demo_bert).tokenizer
    filled = len(tokenizer(prompt)["input_ids"])  # the special tokens and the prompt
    flags = ["--model", demo_bert, "--test_data", folder, "--document_prompt", prompt]
    result = run_here(EVAL_SCRIPT, *flags, "--document_max_length", filled)
    assert_one_line_error(result, f"--document_max_length {filled} leaves no room for text", f"at least {filled + 1}")
    result = run_here(EVAL_SCRIPT, *flags, "--document_max_length", filled + 1)
    assert result.returncode == 0, result.stderr
    with pytest.raises(ValueError, match=f"--max_length {filled} leaves no room for text"):
        SimCSEModel(demo_bert, prompt=prompt, max_length=filled)


def test_a_sentence_transformers_folder_cuts_documents_at_its_max_seq_length(demo_bert, demo_data, run_here, tmp_path):
    """sentence-transformers cuts every text at max_seq_length; eval.py used 512 (capped) for its documents."""
    from sentence_transformers import SentenceTransformer

    model_folder = tmp_path / "model"
    SimCSEModel(demo_bert, pooler="avg").save_pretrained(model_folder)
    (model_folder / "simcse_config.json").unlink()  # a plain sentence-transformers folder
    settings = json.loads((model_folder / "sentence_bert_config.json").read_text())
    (model_folder / "sentence_bert_config.json").write_text(json.dumps(settings | {"max_seq_length": 6}))
    folder, rows = demo_set(tmp_path / "set", demo_data)
    assert SimCSEModel(model_folder).document_max_length == 6
    output = tmp_path / "results.json"
    result = run_here(EVAL_SCRIPT, "--model", model_folder, "--test_data", folder, "--output_json", output)
    assert result.returncode == 0, result.stderr
    got = json.loads(output.read_text())["retrieval"][str(folder)]
    assert SentenceTransformer(str(model_folder), device="cpu").max_seq_length == 6
    expected = sentence_transformers_metrics(model_folder, folder, (None, None))
    assert {key: got[key] for key in RETRIEVAL_KEYS} == pytest.approx(expected, abs=1e-6)
