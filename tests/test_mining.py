"""data/mine_hard_negatives.py against a brute-force loop over the whole similarity matrix, and its bad input."""

import json

import numpy as np
import pytest
from conftest import REPO_ROOT, assert_one_line_error

from simcse.mining import MiningSettings, mine_hard_negatives, read_pairs
from simcse.model import SimCSEModel
from simcse.train_data import load_train_data

MINE_SCRIPT = REPO_ROOT / "data" / "mine_hard_negatives.py"


@pytest.fixture
def pairs_file(demo_data, tmp_path):
    """24 (query, positive) pairs of the demo triplets, the first query given a second positive on its own line."""
    rows = [line.split("\t") for line in (demo_data / "train.tsv").read_text(encoding="utf-8").splitlines()[1:25]]
    lines = ["sent0\tsent1"] + [f"{a}\t{p}" for a, p, _ in rows] + [f"{rows[0][0]}\t{rows[1][1]}"]
    path = tmp_path / "pairs.tsv"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(dict.fromkeys(text for _, p, n in rows for text in (p, n))) + "\n", encoding="utf-8")
    return path, corpus


def brute_force(model, queries, positives, corpus, settings):
    """Every query against every document, in float64: sort, drop positives, skip, cut, filter, take."""
    unit = lambda x: x / np.linalg.norm(x, axis=1, keepdims=True)  # noqa: E731
    q = unit(model.encode_query(queries).astype(np.float64))
    d = unit(model.encode_document(corpus).astype(np.float64))
    rows = []
    for i, own in enumerate(positives):
        own_scores = [float(q[i] @ unit(model.encode_document([text]).astype(np.float64))[0]) for text in own]
        order = sorted(range(len(corpus)), key=lambda j: (-float(q[i] @ d[j]), j))
        kept = [j for j in order if corpus[j] not in own][settings.skip_top : settings.candidates]
        if settings.max_score_ratio is not None:
            kept = [j for j in kept if float(q[i] @ d[j]) <= settings.max_score_ratio * min(own_scores)]
        rows.append(([corpus[j] for j in kept[: settings.num_negatives]], own_scores))
    return rows


class RandomTableEncoder:
    """A stand-in encoder: each text a fixed random vector (well spread, unlike an untrained tiny encoder's
    near-identical ones), queries prompted so that a query and the same text as a document differ."""

    def __init__(self, texts):
        generator = np.random.default_rng(0)
        self.vectors = {text: generator.standard_normal(16).astype(np.float32) for text in texts}

    def encode_query(self, texts, batch_size=None):
        return np.stack([self.vectors["query: " + text] for text in texts])

    def encode_document(self, texts, batch_size=None):
        return np.stack([self.vectors[text] for text in texts])


def test_mining_equals_a_brute_force_loop(pairs_file):
    pairs, corpus_file = pairs_file
    queries, positives = read_pairs(pairs)
    assert len(queries) == 24 and len(positives[0]) == 2  # the repeated query gathered its two positives
    corpus = corpus_file.read_text(encoding="utf-8").splitlines()
    model = RandomTableEncoder(corpus + ["query: " + query for query in queries])
    # A ratio that removes about half of the queries' nearest candidates: the filter is exercised.
    plain = brute_force(model, queries, positives, corpus, MiningSettings(3, 1, None, 20))
    first_ratios = []
    for i, (negatives, own_scores) in enumerate(plain):
        query, document = model.encode_query([queries[i]])[0], model.encode_document(negatives[:1])[0]
        first_ratios.append(
            float(query @ document) / np.linalg.norm(query) / np.linalg.norm(document) / min(own_scores)
        )
    settings = MiningSettings(
        num_negatives=3, skip_top=1, max_score_ratio=float(np.median(first_ratios)), candidates=20
    )
    got = mine_hard_negatives(model, queries, positives, corpus, settings)
    expected = brute_force(model, queries, positives, corpus, settings)
    assert [row["neg"] for row in got] == [negatives for negatives, _ in expected]
    assert [row["pos"] for row in got] == positives
    for row, (_, own_scores) in zip(got, expected):
        assert row["pos_scores"] == pytest.approx(own_scores, abs=1e-5)
        assert all(score <= settings.max_score_ratio * min(own_scores) + 1e-6 for score in row["neg_scores"])
    assert [row["neg"] for row in got] != [negatives for negatives, _ in plain]  # the ratio removed some
    assert any(not row["neg"] for row in got) and any(len(row["neg"]) == 3 for row in got)
    # A corpus without the positives: their scores come from their own vectors.
    others = [text for text in corpus if all(text not in own for own in positives)]
    without = mine_hard_negatives(model, queries, positives, others, settings)
    expected = brute_force(model, queries, positives, others, settings)
    assert [row["neg"] for row in without] == [negatives for negatives, _ in expected]
    for row, (_, own_scores) in zip(without, expected):
        assert row["pos_scores"] == pytest.approx(own_scores, abs=1e-5)


def test_the_script_writes_training_data(demo_bert, pairs_file, run_here, tmp_path):
    pairs, corpus = pairs_file
    output = tmp_path / "not" / "yet" / "mined.jsonl"  # missing folders are made (it used to fail after mining)
    flags = ["--model", demo_bert, "--pairs", pairs, "--corpus", corpus, "--output", output, "--num_negatives", 2]
    result = run_here(MINE_SCRIPT, *flags, "--skip_top", 1)
    assert result.returncode == 0, result.stderr
    assert f"wrote {output}: 24 queries, 2 negatives each (0 with fewer)" in result.stdout
    data = load_train_data(output)
    assert data.kind == "query_documents" and all(len(negatives) == 2 for negatives in data.negatives)
    model = SimCSEModel(demo_bert)
    queries, positives = read_pairs(pairs)
    expected = mine_hard_negatives(
        model, queries, positives, corpus.read_text(encoding="utf-8").splitlines(), MiningSettings(2, 1)
    )
    assert [json.loads(line)["neg"] for line in output.read_text(encoding="utf-8").splitlines()] == [
        row["neg"] for row in expected
    ]


def test_mining_pools_as_the_checkpoint_does_unless_told(demo_bert, pairs_file, run_here, tmp_path):
    """--pooler did not exist: an e5 folder (mean pooling) was mined with CLS vectors."""
    pairs, corpus = pairs_file
    folder = tmp_path / "mean-pooled"
    SimCSEModel(demo_bert, pooler="avg").save_pretrained(folder)
    queries, positives = read_pairs(pairs)
    documents = corpus.read_text(encoding="utf-8").splitlines()
    mined = {}
    for pooler in (None, "cls_before_pooler"):
        output = tmp_path / f"{pooler}.jsonl"
        flags = ["--model", folder, "--pairs", pairs, "--corpus", corpus, "--output", output, "--num_negatives", 3]
        result = run_here(MINE_SCRIPT, *flags, *(["--pooler", pooler] if pooler else []))
        assert result.returncode == 0, result.stderr
        used = pooler or "avg"
        assert f"(pooler {used}, prompts" in result.stdout
        model = SimCSEModel(folder, pooler=used)  # mining itself is checked against brute force above
        expected = mine_hard_negatives(model, queries, positives, documents, MiningSettings(3))
        mined[used] = [json.loads(line)["neg"] for line in output.read_text(encoding="utf-8").splitlines()]
        assert mined[used] == [row["neg"] for row in expected]
    assert mined["avg"] != mined["cls_before_pooler"]  # the flag changes what is mined


@pytest.mark.parametrize(
    "change, words",
    [
        ({"--skip_top": -1}, "--skip_top must be at least 0"),
        ({"--num_negatives": 0}, "--num_negatives must be at least 1"),
        ({"--candidates": 3}, "--candidates 3 leaves no room"),
        ({"--max_score_ratio": 0}, "--max_score_ratio must lie in (0, 10]"),
        ({"--pairs": "TRIPLETS"}, "triplets without scores: mining needs (query, positive) pairs"),
        ({"--output": "PAIRS"}, "is also an input"),
    ],
)
def test_bad_mining_input_is_one_line(demo_bert, demo_data, pairs_file, run_here, tmp_path, change, words):
    pairs, corpus = pairs_file
    flags = {"--model": demo_bert, "--pairs": pairs, "--corpus": corpus, "--output": tmp_path / "out.jsonl"}
    flags |= {
        key: {"TRIPLETS": demo_data / "train.tsv", "PAIRS": pairs}.get(value, value) for key, value in change.items()
    }
    before = pairs.read_bytes()
    result = run_here(MINE_SCRIPT, *[str(x) for item in flags.items() for x in item])
    assert_one_line_error(result, words)
    assert pairs.read_bytes() == before and not (tmp_path / "out.jsonl").exists()


def test_an_output_that_is_the_corpus_folders_file_is_refused(demo_bert, pairs_file, run_here, tmp_path):
    """--corpus FOLDER reads FOLDER/corpus.jsonl: an --output naming that file would replace the corpus."""
    pairs, corpus = pairs_file
    beir = tmp_path / "beir"
    beir.mkdir()
    lines = corpus.read_text(encoding="utf-8").splitlines()
    (beir / "corpus.jsonl").write_text(
        "".join(json.dumps({"_id": str(i), "text": text}, ensure_ascii=False) + "\n" for i, text in enumerate(lines)),
        encoding="utf-8",
    )
    before = (beir / "corpus.jsonl").read_bytes()
    flags = ["--model", demo_bert, "--pairs", pairs, "--corpus", beir, "--output", beir / "corpus.jsonl"]
    assert_one_line_error(run_here(MINE_SCRIPT, *flags), "is also an input (--corpus)")
    assert (beir / "corpus.jsonl").read_bytes() == before
