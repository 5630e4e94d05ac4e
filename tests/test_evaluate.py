import re

import numpy as np
import pytest
import torch
from scipy.stats import pearsonr, spearmanr
from sentence_transformers.util import (
    pairwise_cos_sim,
    pairwise_dot_score,
    pairwise_euclidean_sim,
    pairwise_manhattan_sim,
)

from simcse.data import STSData
from simcse.evaluate import METRIC_KEYS, TABLE_COLUMNS, evaluate_sts, format_sts_table, sts_metrics


@pytest.fixture
def random_pairs():
    rng = np.random.default_rng(0)
    embeddings1 = rng.normal(size=(200, 16)).astype(np.float32)
    # Correlated with the scores so that the correlations are far from zero and differ by similarity.
    scores = rng.uniform(0, 5, size=200)
    embeddings2 = embeddings1 + rng.normal(size=(200, 16)).astype(np.float32) * (5 - scores[:, None]) / 2
    return embeddings1, embeddings2, scores


def test_matches_sentence_transformers_similarities(random_pairs):
    """The similarities of sentence-transformers' EmbeddingSimilarityEvaluator, correlated with scipy."""
    embeddings1, embeddings2, scores = random_pairs
    metrics = sts_metrics(embeddings1, embeddings2, scores)
    e1, e2 = torch.from_numpy(embeddings1).double(), torch.from_numpy(embeddings2).double()
    reference = {
        "cosine": pairwise_cos_sim(e1, e2),
        "euclidean": pairwise_euclidean_sim(e1, e2),
        "manhattan": pairwise_manhattan_sim(e1, e2),
        "dot": pairwise_dot_score(e1, e2),
    }
    for name, similarity in reference.items():
        assert metrics[f"{name}_pearson"] == pytest.approx(pearsonr(scores, similarity.numpy())[0], abs=1e-6)
        assert metrics[f"{name}_spearman"] == pytest.approx(spearmanr(scores, similarity.numpy())[0], abs=1e-6)
    assert set(metrics) == set(METRIC_KEYS)
    assert metrics["cosine_spearman"] > 0.3  # the fixture is informative, not noise


def test_averages(random_pairs):
    metrics = sts_metrics(*random_pairs)
    pearsons = [metrics[f"{s}_pearson"] for s in ("cosine", "euclidean", "manhattan", "dot")]
    spearmans = [metrics[f"{s}_spearman"] for s in ("cosine", "euclidean", "manhattan", "dot")]
    assert metrics["avg_pearson"] == pytest.approx(sum(pearsons) / 4)
    assert metrics["avg_spearman"] == pytest.approx(sum(spearmans) / 4)
    assert metrics["avg"] == pytest.approx(sum(pearsons + spearmans) / 8)


def test_distances_are_negated():
    """A pair that is closer gets a higher euclidean/manhattan similarity: scores rising with closeness."""
    embeddings1 = np.zeros((5, 2))
    embeddings2 = np.array([[5.0, 0], [4, 0], [3, 0], [2, 0], [1, 0]])
    metrics = sts_metrics(embeddings1 + [1, 1], embeddings2 + [1, 1], [0, 1, 2, 3, 4])
    assert metrics["euclidean_spearman"] == pytest.approx(1.0)
    assert metrics["manhattan_spearman"] == pytest.approx(1.0)


def test_accepts_torch_tensors(random_pairs):
    embeddings1, embeddings2, scores = random_pairs
    from_numpy = sts_metrics(embeddings1, embeddings2, scores)
    from_torch = sts_metrics(torch.from_numpy(embeddings1), torch.from_numpy(embeddings2), list(scores))
    assert from_torch == pytest.approx(from_numpy)


@pytest.mark.parametrize(
    "embeddings1, embeddings2, scores, message",
    [
        (np.zeros((3, 4)), np.zeros((3, 5)), [1, 2, 3], "two"),
        (np.ones((3, 4)), np.ones((3, 4)), [1, 2], "scores"),
        (np.ones((1, 4)), np.ones((1, 4)), [1], "at least 2"),
        (np.full((3, 4), np.nan), np.ones((3, 4)), [1, 2, 3], "NaN"),
        (np.ones(4), np.ones(4), [1, 2, 3, 4], "two"),
    ],
)
def test_bad_input_raises(embeddings1, embeddings2, scores, message):
    with pytest.raises(ValueError, match=message):
        sts_metrics(embeddings1, embeddings2, scores)


class LookupModel:
    """A stand-in encoder: fixed vectors per sentence, and a record of what it was asked to encode."""

    def __init__(self, vectors):
        self.vectors = vectors
        self.calls = []

    def encode(self, sentences, batch_size, max_length, description):
        self.calls.append(list(sentences))
        return np.stack([self.vectors[s] for s in sentences])


def test_evaluate_sts_encodes_each_sentence_once_and_keeps_pairs():
    rng = np.random.default_rng(1)
    sentences = [f"문장 {i}" for i in range(8)]
    vectors = {s: rng.normal(size=4) for s in sentences}
    data = STSData(
        sentences1=["문장 0", "문장 1", "문장 2", "문장 0", "문장 5", "문장 6"],
        sentences2=["문장 3", "문장 4", "문장 0", "문장 7", "문장 1", "문장 2"],
        scores=[0.5, 1.0, 4.0, 2.5, 3.0, 5.0],
    )
    model = LookupModel(vectors)
    got = evaluate_sts(model, data, batch_size=2, max_length=16)
    expected = sts_metrics([vectors[s] for s in data.sentences1], [vectors[s] for s in data.sentences2], data.scores)
    assert got == pytest.approx(expected)
    (encoded,) = model.calls
    assert sorted(encoded) == sorted(set(data.sentences1 + data.sentences2))


def test_table_has_the_original_columns_and_x100_values(random_pairs):
    metrics = sts_metrics(*random_pairs)
    table = format_sts_table({"KoSimCSE (sup)": metrics, "other": {k: 0.5 for k in METRIC_KEYS}})
    header, rule, first, second = table.splitlines()
    titles = [cell.strip() for cell in header.strip("|").split("|")]
    assert titles == [
        "Model",
        "AVG",
        "Cosine Pearson",
        "Cosine Spearman",
        "Euclidean Pearson",
        "Euclidean Spearman",
        "Manhattan Pearson",
        "Manhattan Spearman",
        "Dot Pearson",
        "Dot Spearman",
    ]
    cells = [cell.strip() for cell in first.strip("|").split("|")]
    assert cells[0] == "KoSimCSE (sup)"
    for (title, key), cell in zip(TABLE_COLUMNS, cells[1:]):
        assert re.fullmatch(r"-?\d+\.\d\d", cell), (title, cell)
        assert float(cell) == pytest.approx(100 * metrics[key], abs=0.005)
    assert second.count("50.00") == 9
