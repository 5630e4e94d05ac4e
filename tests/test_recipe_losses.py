"""The retrieval recipe's loss terms (issue 32), each against an independent float64 loop and against
sentence-transformers' own loss where it has the same thing: the teacher's KL (DistillKLDivLoss), the
false-negative guards (the student's margin; a guide model: GISTEmbedLoss, CachedGISTEmbedLoss) and Matryoshka
sizes (MatryoshkaLoss around MultipleNegativesRankingLoss)."""

import math

import numpy as np
import pytest
import torch
from sentence_transformers import SentenceTransformer
from sentence_transformers.sentence_transformer import losses
from sentence_transformers.util import pairwise_cos_sim

from simcse import loss
from simcse.model import SimCSEModel
from simcse.objectives import OBJECTIVES, LossInputs, LossSettings, matryoshka

B, K, H = 6, 3, 8


@pytest.fixture
def batch():
    """(B, 2 + K, H) float64 embeddings (anchor, positive, K negatives) and (B, 1 + K) teacher scores."""
    generator = torch.Generator().manual_seed(3)
    embeddings = torch.randn(B, 2 + K, H, generator=generator, dtype=torch.float64)
    embeddings[:, 1] += embeddings[:, 0]  # positives near their anchors: some candidates fall below, some above
    return embeddings, torch.randn(B, 1 + K, generator=generator, dtype=torch.float64) * 3


def cos(x, y) -> float:
    return float(x @ y) / math.sqrt(float(x @ x) * float(y @ y))


def candidates_of(embeddings, i):
    """Anchor i's candidates in info_nce's order: every positive, then every example's negative k, slot by slot."""
    rows = embeddings.numpy()
    return [rows[j, 1] for j in range(len(rows))] + [rows[j, 2 + k] for k in range(K) for j in range(len(rows))]


def naive_kl(embeddings, teacher, temperature, teacher_temperature):
    total = 0.0
    for i, row in enumerate(embeddings.numpy()):
        student = [cos(row[0], doc) / temperature for doc in row[1:]]
        target = [score / teacher_temperature for score in teacher[i].tolist()]
        log_student = [s - math.log(sum(math.exp(x) for x in student)) for s in student]
        log_target = [t - math.log(sum(math.exp(x) for x in target)) for t in target]
        total += sum(math.exp(t) * (t - s) for t, s in zip(log_target, log_student))
    return total / len(embeddings)


def naive_masked_info_nce(embeddings, masked_of, temperature=0.05):
    """InfoNCE over each anchor's candidates minus those ``masked_of(i, column, cosines)`` removes."""
    total = 0.0
    for i, row in enumerate(embeddings.numpy()):
        cosines = [cos(row[0], candidate) for candidate in candidates_of(embeddings, i)]
        kept = [c / temperature for j, c in enumerate(cosines) if j == i or not masked_of(i, j, cosines)]
        total += math.log(sum(math.exp(x) for x in kept)) - cosines[i] / temperature
    return total / len(embeddings)


# ---------------------------------------------------------------------------------------------------
# Distillation


@pytest.mark.parametrize("temperature, teacher_temperature", [(0.05, 1.0), (0.1, 0.3)])
def test_distillation_is_the_kl_of_a_float64_loop(batch, temperature, teacher_temperature):
    embeddings, teacher = batch
    candidates = loss.candidate_cosines(embeddings[:, 0], embeddings[:, 1], embeddings[:, 2:])
    got = loss.distillation(candidates, teacher, temperature=temperature, teacher_temperature=teacher_temperature)
    assert got.item() == pytest.approx(naive_kl(embeddings, teacher, temperature, teacher_temperature), abs=1e-10)
    # A teacher that agrees with the student costs nothing.
    own = candidates.cosines.gather(1, candidates.own(K)) / temperature
    agreeing = loss.distillation(candidates, own * teacher_temperature, temperature=temperature,
                                 teacher_temperature=teacher_temperature)  # fmt: skip
    assert agreeing.item() == pytest.approx(0.0, abs=1e-12)


def test_distillation_is_sentence_transformers_distill_kl_div_loss(batch):
    """DistillKLDivLoss multiplies the KL by the student temperature squared; the issue's form does not."""
    embeddings, teacher = batch
    embeddings, teacher = embeddings.float(), teacher.float()
    theirs = losses.DistillKLDivLoss(None, similarity_fct=pairwise_cos_sim, student_temperature=0.05,
                                     teacher_temperature=0.5)  # fmt: skip
    expected = theirs.compute_loss_from_embeddings(list(embeddings.unbind(1)), teacher)
    candidates = loss.candidate_cosines(embeddings[:, 0], embeddings[:, 1], embeddings[:, 2:])
    got = loss.distillation(candidates, teacher, temperature=0.05, teacher_temperature=0.5)
    assert got.item() * 0.05**2 == pytest.approx(expected.item(), abs=1e-6)


def test_distillation_reads_only_each_anchor_s_own_candidates_over_processes(batch):
    """As the second of two processes: the other process's rows change nothing (the KL is over own candidates)."""
    embeddings, teacher = batch
    one = loss.distillation(loss.candidate_cosines(embeddings[:, 0], embeddings[:, 1], embeddings[:, 2:]), teacher)
    generator = torch.Generator().manual_seed(9)

    def second_of_two(rows):
        return torch.cat([torch.randn(rows.shape, generator=generator, dtype=rows.dtype), rows]), len(rows)

    candidates = loss.candidate_cosines(embeddings[:, 0], embeddings[:, 1], embeddings[:, 2:], gather=second_of_two)
    assert loss.distillation(candidates, teacher).item() == pytest.approx(one.item(), abs=1e-12)


def test_distillation_refuses_scores_of_another_shape(batch):
    embeddings, teacher = batch
    candidates = loss.candidate_cosines(embeddings[:, 0], embeddings[:, 1], embeddings[:, 2:])
    with pytest.raises(ValueError, match="teacher_scores must be"):
        loss.distillation(candidates, teacher[:, :2])


def test_the_objectives_add_the_weighted_kl_or_take_it_alone(batch):
    embeddings, teacher = batch
    ids = torch.arange(B * (2 + K))[:, None].reshape(B, 2 + K, 1)  # every text distinct
    inputs = LossInputs(embeddings, ids, teacher_scores=teacher)
    plain = OBJECTIVES["simcse"].loss(inputs, LossSettings(), lambda rows: (rows, 0)).loss
    settings = LossSettings(distill_weight=0.3, teacher_temperature=0.5)
    kl = naive_kl(embeddings, teacher, 0.05, 0.5)
    with_kl = OBJECTIVES["simcse"].loss(inputs, settings, lambda rows: (rows, 0)).loss
    assert with_kl.item() == pytest.approx(plain.item() + 0.3 * kl, abs=1e-10)
    alone = OBJECTIVES["distill"].loss(inputs, settings, lambda rows: (rows, 0)).loss
    assert alone.item() == pytest.approx(0.3 * kl, abs=1e-10)


# ---------------------------------------------------------------------------------------------------
# False-negative guards


@pytest.mark.parametrize("margin", [0.1, 0.0, -0.3])
def test_the_margin_guard_masks_what_a_loop_finds(batch, margin):
    embeddings, _ = batch
    ids = torch.arange(B * (2 + K))[:, None].reshape(B, 2 + K, 1)
    settings = LossSettings(false_negative_margin=margin)
    output = OBJECTIVES["simcse"].loss(LossInputs(embeddings, ids), settings, lambda rows: (rows, 0))

    def above(i, j, cosines):
        return cosines[j] > cosines[i] + margin

    expected = [[j != i and above(i, j, [cos(embeddings[i, 0].numpy(), c) for c in candidates_of(embeddings, i)])
                 for j in range((1 + K) * B)] for i in range(B)]  # fmt: skip
    assert output.masked.tolist() == expected
    assert 0 < output.masked.sum() < B * (1 + K) * B - B  # the case masks some candidates, not all
    assert output.loss.item() == pytest.approx(naive_masked_info_nce(embeddings, above), abs=1e-10)


def test_the_margin_guard_passes_no_gradient_through_its_mask(batch):
    """The mask is a constant: the gradient is that of the loss with those candidates removed by hand."""
    embeddings, _ = batch
    embeddings = embeddings.clone().requires_grad_()
    ids = torch.arange(B * (2 + K))[:, None].reshape(B, 2 + K, 1)
    output = OBJECTIVES["simcse"].loss(
        LossInputs(embeddings, ids), LossSettings(false_negative_margin=0.0), lambda rows: (rows, 0)
    )
    (guarded,) = torch.autograd.grad(output.loss, embeddings)
    candidates = loss.candidate_cosines(embeddings[:, 0], embeddings[:, 1], embeddings[:, 2:])
    by_hand = loss.info_nce_of(candidates, exclude=output.masked.clone())
    (expected,) = torch.autograd.grad(by_hand, embeddings)
    torch.testing.assert_close(guarded, expected, atol=1e-12, rtol=0)


def test_the_guide_guard_masks_by_the_guide_s_cosines_minus_its_margin(batch):
    embeddings, _ = batch
    guide = torch.randn(B, 2 + K, 5, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    guide[:, 1] += guide[:, 0]
    ids = torch.arange(B * (2 + K))[:, None].reshape(B, 2 + K, 1)
    settings = LossSettings(guide_margin=0.05)
    inputs = LossInputs(embeddings, ids, guide_embeddings=guide)
    output = OBJECTIVES["simcse"].loss(inputs, settings, lambda rows: (rows, 0))

    def masked_of(i, j, _student_cosines):
        guide_cosines = [cos(guide[i, 0].numpy(), c) for c in candidates_of(guide, i)]
        return guide_cosines[j] > guide_cosines[i] - 0.05

    assert 0 < output.masked.sum()
    assert output.loss.item() == pytest.approx(naive_masked_info_nce(embeddings, masked_of), abs=1e-10)


@pytest.fixture(scope="module")
def st_student_and_guide(demo_bert, tmp_path_factory):
    """The demo encoder and a perturbed copy (same tokenizer) as sentence-transformers models, in eval mode."""
    folder = tmp_path_factory.mktemp("st-models")
    model = SimCSEModel(demo_bert, pooler="avg")
    model.save_pretrained(folder / "student")
    torch.manual_seed(11)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(0.5 * torch.randn_like(parameter))
    model.save_pretrained(folder / "guide")
    return [SentenceTransformer(str(folder / name), device="cpu").eval() for name in ("student", "guide")]


def st_features(model, columns):
    return [model.tokenize(column) for column in columns]


def triplet_columns(demo_data, size=8):
    rows = [line.split("\t") for line in (demo_data / "train.tsv").read_text(encoding="utf-8").splitlines()[1:]]
    return [list(column) for column in zip(*rows[:size])]


def our_loss_on(student, guide, columns, settings):
    features = st_features(student, columns)
    with torch.no_grad():
        embeddings = torch.stack([student(dict(f))["sentence_embedding"] for f in features], dim=1)
        guided = torch.stack([guide(dict(f))["sentence_embedding"] for f in features], dim=1)
    ids = torch.arange(embeddings.shape[0] * embeddings.shape[1]).reshape(*embeddings.shape[:2], 1)
    inputs = LossInputs(embeddings, ids, guide_embeddings=guided)
    return matryoshka(OBJECTIVES["simcse"].loss, inputs, settings, lambda rows: (rows, 0))


@pytest.mark.parametrize("margin", [0.0, 0.1])
@pytest.mark.parametrize("cached", [False, True])
def test_the_guide_guard_is_sentence_transformers_gist(st_student_and_guide, demo_data, margin, cached):
    """GISTEmbedLoss / CachedGISTEmbedLoss without anchor-anchor and positive-positive columns, temperature 0.05,
    absolute margin: the same loss as the contrastive objective with --guide_model and --guide_margin."""
    student, guide = st_student_and_guide
    columns = triplet_columns(demo_data)
    kwargs = dict(temperature=0.05, margin=margin, contrast_anchors=False, contrast_positives=False)
    if cached:
        theirs = losses.CachedGISTEmbedLoss(student, guide, mini_batch_size=3, **kwargs)
    else:
        theirs = losses.GISTEmbedLoss(student, guide, **kwargs)
    with torch.no_grad():
        expected = theirs(st_features(student, columns), None)
    settings = LossSettings(mask_duplicate_negatives=False, guide_margin=margin)
    got = our_loss_on(student, guide, columns, settings)
    assert got.masked.sum() > 0
    assert got.loss.item() == pytest.approx(expected.item(), abs=1e-6)


# ---------------------------------------------------------------------------------------------------
# Matryoshka sizes


def test_matryoshka_sums_the_objective_at_each_size(batch):
    embeddings, _ = batch
    ids = torch.arange(B * (2 + K))[:, None].reshape(B, 2 + K, 1)
    settings = LossSettings(matryoshka_dims=(8, 4, 2), matryoshka_weights=(1.0, 0.5, 0.25))
    got = matryoshka(OBJECTIVES["simcse"].loss, LossInputs(embeddings, ids), settings, lambda rows: (rows, 0))
    expected = sum(
        weight * naive_masked_info_nce(embeddings[..., :dim], lambda i, j, c: False)
        for dim, weight in zip((8, 4, 2), (1.0, 0.5, 0.25))
    )
    assert got.loss.item() == pytest.approx(expected, abs=1e-10)
    scores = torch.tensor([0.0, 5.0, 2.5, 3.2, 1.0, 4.8], dtype=torch.float64)
    cosent = matryoshka(OBJECTIVES["cosent"].loss, LossInputs(embeddings[:, :2], ids[:, :2], scores), settings,
                        lambda rows: (rows, 0))  # fmt: skip
    one_size = [loss.cosent(embeddings[:, 0, :d], embeddings[:, 1, :d], scores) for d in (8, 4, 2)]
    assert cosent.loss.item() == pytest.approx(float(sum(w * v for w, v in zip((1.0, 0.5, 0.25), one_size))))


def test_matryoshka_is_sentence_transformers_matryoshka_loss_around_mnrl(st_student_and_guide, demo_data):
    student, _ = st_student_and_guide
    columns = triplet_columns(demo_data)
    dims, weights = (32, 16, 8), (1.0, 0.7, 0.3)
    theirs = losses.MatryoshkaLoss(student, losses.MultipleNegativesRankingLoss(student, scale=20.0), list(dims),
                                   list(weights))  # fmt: skip
    with torch.no_grad():
        expected = theirs(st_features(student, columns), None)
    settings = LossSettings(mask_duplicate_negatives=False, matryoshka_dims=dims, matryoshka_weights=weights)
    features = st_features(student, columns)
    with torch.no_grad():
        embeddings = torch.stack([student(dict(f))["sentence_embedding"] for f in features], dim=1)
    ids = torch.arange(embeddings.shape[0] * 3).reshape(-1, 3, 1)
    got = matryoshka(OBJECTIVES["simcse"].loss, LossInputs(embeddings, ids), settings, lambda rows: (rows, 0))
    assert got.loss.item() == pytest.approx(expected.item(), abs=1e-6)


def test_sentence_transformers_truncate_dim_gives_encode_s_vectors(demo_bert, demo_data, tmp_path):
    model = SimCSEModel(demo_bert, pooler="avg")
    model.matryoshka_dims = [32, 16]
    model.save_pretrained(tmp_path / "saved")
    sentences = triplet_columns(demo_data)[0]
    reloaded = SimCSEModel(tmp_path / "saved")
    assert reloaded.matryoshka_dims == [32, 16]
    ours = reloaded.encode(sentences, truncate_dim=16)
    assert ours.shape == (len(sentences), 16)
    np.testing.assert_allclose(ours, reloaded.encode(sentences)[:, :16], atol=1e-6)
    theirs = SentenceTransformer(str(tmp_path / "saved"), device="cpu", truncate_dim=16).encode(sentences)
    np.testing.assert_allclose(theirs, ours, atol=1e-5)
    assert SimCSEModel(tmp_path / "saved", truncate_dim=8).encode(sentences).shape == (len(sentences), 8)
    for bad in (0, 33):
        with pytest.raises(ValueError, match="truncate_dim"):
            reloaded.encode(sentences, truncate_dim=bad)
