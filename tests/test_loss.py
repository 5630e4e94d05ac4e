import math

import numpy as np
import pytest
import torch

from simcse.loss import cosent, cosine_mse, info_nce


def naive_row_losses(anchors, positives, hard_negatives=None, temperature=0.05, hard_negative_weight=0.0):
    """The SimCSE objective of each anchor, written out in float64 with Python's math module."""
    a, p = np.asarray(anchors, np.float64), np.asarray(positives, np.float64)
    n = None if hard_negatives is None else np.asarray(hard_negatives, np.float64)

    def cos(x, y):
        return float(x @ y) / (math.sqrt(float(x @ x)) * math.sqrt(float(y @ y)))

    losses = []
    for i in range(len(a)):
        logits = [cos(a[i], p[j]) / temperature for j in range(len(p))]
        if n is not None:
            logits += [cos(a[i], n[j]) / temperature + (hard_negative_weight if j == i else 0.0) for j in range(len(n))]
        losses.append(math.log(sum(math.exp(x) for x in logits)) - logits[i])
    return losses


def naive_loss(*args, **kwargs):
    losses = naive_row_losses(*args, **kwargs)
    return sum(losses) / len(losses)


@pytest.fixture
def embeddings():
    generator = torch.Generator().manual_seed(0)
    return [torch.randn(6, 8, generator=generator, dtype=torch.float64) for _ in range(3)]


def test_pairs_match_naive_loop(embeddings):
    anchors, positives, _ = embeddings
    for temperature in (0.05, 1.0):
        got = info_nce(anchors, positives, temperature=temperature).item()
        assert got == pytest.approx(naive_loss(anchors, positives, temperature=temperature), abs=1e-10)


@pytest.mark.parametrize("weight", [0.0, 1.5, -2.0])
def test_triplets_match_naive_loop(embeddings, weight):
    anchors, positives, hard_negatives = embeddings
    got = info_nce(anchors, positives, hard_negatives, hard_negative_weight=weight).item()
    assert got == pytest.approx(naive_loss(anchors, positives, hard_negatives, hard_negative_weight=weight), abs=1e-10)


def test_hard_negative_weight_changes_the_loss(embeddings):
    anchors, positives, hard_negatives = embeddings
    plain = info_nce(anchors, positives, hard_negatives)
    weighted = info_nce(anchors, positives, hard_negatives, hard_negative_weight=1.0)
    # A larger weight on each own hard negative makes every anchor's positive harder to pick.
    assert weighted > plain


def test_float32_inputs_match_naive_loop(embeddings):
    anchors, positives, hard_negatives = (x.float() for x in embeddings)
    got = info_nce(anchors, positives, hard_negatives, hard_negative_weight=0.5)
    assert got.dtype == torch.float32
    assert got.item() == pytest.approx(
        naive_loss(anchors, positives, hard_negatives, hard_negative_weight=0.5), rel=1e-5
    )


def test_invariant_to_rescaling(embeddings):
    anchors, positives, hard_negatives = embeddings
    scales = torch.rand(6, 1, dtype=torch.float64) * 100 + 0.01
    before = info_nce(anchors, positives, hard_negatives)
    after = info_nce(anchors * scales, positives * 7.0, hard_negatives * scales.flip(0))
    assert after.item() == pytest.approx(before.item(), abs=1e-10)


def test_gradcheck():
    generator = torch.Generator().manual_seed(1)
    inputs = [torch.randn(3, 4, generator=generator, dtype=torch.float64, requires_grad=True) for _ in range(3)]

    def loss(anchors, positives, hard_negatives):
        return info_nce(anchors, positives, hard_negatives, temperature=0.5, hard_negative_weight=0.7)

    assert torch.autograd.gradcheck(loss, inputs)
    assert torch.autograd.gradcheck(lambda a, p: info_nce(a, p, temperature=0.5), inputs[:2])


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_inputs_stay_finite(dtype):
    generator = torch.Generator().manual_seed(2)
    base = torch.randn(1, 32, generator=generator) * 50  # large values, as unnormalised hidden states can be
    # Near-identical vectors: every logit is close to 1 / 0.05 = 20, and exp(20) overflows float16.
    anchors = (base + 1e-3 * torch.randn(8, 32, generator=generator)).to(dtype)
    positives = (base + 1e-3 * torch.randn(8, 32, generator=generator)).to(dtype)
    hard_negatives = (base + 1e-3 * torch.randn(8, 32, generator=generator)).to(dtype)
    anchors.requires_grad_(True)
    loss = info_nce(anchors, positives, hard_negatives)
    assert loss.dtype == torch.float32
    assert torch.isfinite(loss)
    loss.backward()
    assert torch.isfinite(anchors.grad.float()).all()
    # Same value as the float64 computation on the same (rounded) inputs.
    expected = naive_loss(anchors.detach().double(), positives.double(), hard_negatives.double())
    assert loss.item() == pytest.approx(expected, abs=1e-3)


def test_float32_inside_an_autocast_region(embeddings):
    """Called inside ``torch.autocast`` (as a training loop that wraps its whole step would), the losses still
    compute in float32: a bf16 logit matrix moves InfoNCE at temperature 0.05 by ~3e-3."""
    anchors, positives, hard_negatives = (e.float() for e in embeddings)
    scores = torch.arange(6.0)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = info_nce(anchors, positives, hard_negatives)
        got_cosent = cosent(anchors, positives, scores)
    assert got.dtype == got_cosent.dtype == torch.float32
    assert got.item() == pytest.approx(naive_loss(*embeddings), abs=1e-5)
    assert got_cosent.item() == pytest.approx(cosent(*embeddings[:2], scores.double()).item(), abs=1e-5)


@pytest.mark.parametrize("loss_name", ["info_nce", "cosent"])
def test_the_gradient_stays_float32_when_backward_runs_inside_autocast(embeddings, loss_name):
    """A caller that runs backward() inside the autocast region gets the float64 gradient to float32 precision,
    not bf16's (~4e-3 relative)."""
    scores = torch.arange(6.0)

    def loss_of(anchors, positives, hard_negatives):
        if loss_name == "cosent":
            return cosent(anchors, positives, scores.to(anchors.dtype))
        return info_nce(anchors, positives, hard_negatives)

    leaves = [e.float().requires_grad_(True) for e in embeddings]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss_of(*leaves).backward()
    exact = [e.double().requires_grad_(True) for e in embeddings]
    loss_of(*exact).backward()
    for got, expected in zip(leaves, exact):
        if loss_name == "cosent" and expected.grad is None:
            continue  # cosent reads no hard negatives
        error = (got.grad.double() - expected.grad).norm() / expected.grad.norm()
        assert got.grad.dtype == torch.float32 and error < 1e-5, error.item()


def test_gather_hook_offsets_labels(embeddings):
    """With a gather hook, local anchors are scored against global candidates, labels offset to their rows."""
    anchors, positives, hard_negatives = embeddings  # a global batch of 6 over 2 "processes" of 3
    rank, local = 1, 3
    rows = slice(rank * local, (rank + 1) * local)

    def make_gather(offset):
        # What all_gather returns: both processes' normalised rows, this process's own rows in place.
        global_rows = iter([torch.nn.functional.normalize(x, dim=-1) for x in (positives, hard_negatives)])

        def gather(local_rows):
            gathered = next(global_rows).clone()
            gathered[rows] = local_rows
            return gathered, offset

        return gather

    def local_loss(gather):
        return info_nce(anchors[rows], positives[rows], hard_negatives[rows], hard_negative_weight=0.3, gather=gather)

    expected = naive_row_losses(anchors, positives, hard_negatives, hard_negative_weight=0.3)[rows]
    assert local_loss(make_gather(rank * local)).item() == pytest.approx(sum(expected) / local, abs=1e-10)
    # Labels not offset by rank would point at the other process's examples.
    assert local_loss(make_gather(0)).item() != pytest.approx(sum(expected) / local, abs=1e-3)


@pytest.mark.parametrize(
    "shapes, message",
    [
        (((4, 8), (4, 8), (3, 8)), "hard_negatives shape"),
        (((4, 8), (5, 8), None), "positives shape"),
        (((2, 4, 8), (2, 4, 8), None), "anchors must be"),
    ],
)
def test_bad_shapes_raise(shapes, message):
    tensors = [None if shape is None else torch.randn(*shape) for shape in shapes]
    with pytest.raises(ValueError, match=message):
        info_nce(*tensors)


def test_bad_temperature_raises(embeddings):
    with pytest.raises(ValueError, match="temperature"):
        info_nce(embeddings[0], embeddings[1], temperature=0.0)


# ---------------------------------------------------------------------------------------------------
# CoSENT


def naive_cosent(embeddings1, embeddings2, scores, scale):
    """The formula, pair by pair in float64: log(1 + sum over score_i > score_j of exp(scale (cos_j - cos_i)))."""
    cosines = [
        torch.nn.functional.cosine_similarity(a.double(), b.double(), dim=0).item()
        for a, b in zip(embeddings1, embeddings2)
    ]
    total = 1.0
    for i, score_i in enumerate(scores.tolist()):
        for j, score_j in enumerate(scores.tolist()):
            if score_i > score_j:
                total += math.exp(scale * (cosines[j] - cosines[i]))
    return math.log(total)


@pytest.mark.parametrize("scale", [20.0, 5.0])
def test_cosent_equals_the_formula_pair_by_pair(scale):
    generator = torch.Generator().manual_seed(3)
    embeddings1, embeddings2 = torch.randn(7, 16, generator=generator), torch.randn(7, 16, generator=generator)
    scores = torch.tensor([0.0, 2.5, 2.5, 5.0, 1.2, 4.0, 0.4])  # a tie: no term between those two
    got = cosent(embeddings1, embeddings2, scores, scale=scale).item()
    assert got == pytest.approx(naive_cosent(embeddings1, embeddings2, scores, scale), rel=1e-5)


def test_cosent_rewards_the_gold_order_and_ignores_scale_of_vectors():
    generator = torch.Generator().manual_seed(4)
    base = torch.randn(5, 8, generator=generator)
    scores = torch.tensor([0.0, 1.0, 2.0, 3.0, 4.0])
    # The higher the score, the closer the second vector: the gold order; reversed: the opposite order.
    closeness = torch.linspace(0.1, 3.0, 5)[:, None]
    aligned = base + torch.randn(5, 8, generator=generator) / closeness
    assert cosent(base, aligned, scores) < cosent(base, aligned, scores.flip(0))
    assert cosent(base * 3, aligned * 0.5, scores).item() == pytest.approx(
        cosent(base, aligned, scores).item(), rel=1e-5
    )
    assert cosent(base, aligned, torch.full((5,), 2.0)).item() == 0.0  # nothing to rank


def test_cosent_gradient_matches_finite_differences():
    generator = torch.Generator().manual_seed(5)
    inputs = [torch.randn(4, 6, generator=generator, dtype=torch.float64, requires_grad=True) for _ in range(2)]
    scores = torch.tensor([1.0, 3.0, 2.0, 0.5], dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda a, b: cosent(a, b, scores, scale=5.0), inputs)


def test_cosent_bad_shapes():
    embeddings = torch.randn(3, 4)
    with pytest.raises(ValueError, match="scores must be"):
        cosent(embeddings, embeddings, torch.zeros(4))
    with pytest.raises(ValueError, match="embeddings1 and embeddings2"):
        cosent(embeddings, torch.randn(3, 5), torch.zeros(3))


# ---------------------------------------------------------------------------------------------------
# K hard negatives per anchor


def naive_k_negative_loss(anchors, positives, negatives, temperature=0.05, hard_negative_weight=0.0):
    """Each anchor's cross-entropy over every positive and every negative of the batch, in float64 with math; the
    anchor's own K negatives get ``hard_negative_weight`` added. ``negatives[j]`` is the list of example j's."""

    def cos(x, y):
        x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
        return float(x @ y) / math.sqrt(float(x @ x) * float(y @ y))

    losses = []
    for i, anchor in enumerate(anchors):
        logits = [cos(anchor, positive) / temperature for positive in positives]
        for j, example_negatives in enumerate(negatives):
            own = hard_negative_weight if j == i else 0.0
            logits += [cos(anchor, negative) / temperature + own for negative in example_negatives]
        losses.append(math.log(sum(math.exp(x) for x in logits)) - logits[i])
    return sum(losses) / len(losses)


@pytest.mark.parametrize("num_negatives", [0, 1, 3])
@pytest.mark.parametrize("weight", [0.0, 0.7])
def test_k_negatives_match_a_float64_loop(num_negatives, weight):
    generator = torch.Generator().manual_seed(num_negatives)
    anchors, positives = torch.randn(2, 5, 8, generator=generator, dtype=torch.float64)
    negatives = torch.randn(5, num_negatives, 8, generator=generator, dtype=torch.float64)
    got = info_nce(anchors, positives, negatives if num_negatives else None, hard_negative_weight=weight).item()
    expected = naive_k_negative_loss(anchors.numpy(), positives.numpy(), negatives.numpy(), hard_negative_weight=weight)
    assert got == pytest.approx(expected, abs=1e-10)


def test_one_negative_per_anchor_is_the_triplet_path(embeddings):
    anchors, positives, hard_negatives = embeddings
    triplet = info_nce(anchors, positives, hard_negatives, hard_negative_weight=0.4)
    k_one = info_nce(anchors, positives, hard_negatives[:, None], hard_negative_weight=0.4)
    assert k_one.item() == triplet.item()


def test_k_negatives_over_two_processes_are_gathered_slot_by_slot():
    """Two "processes" of 3: each one's loss on its anchors against every process's positives and K = 2 negatives
    equals the float64 loop's rows of the global batch (a gather hook like torch.distributed's)."""
    generator = torch.Generator().manual_seed(5)
    anchors, positives = torch.randn(2, 6, 8, generator=generator, dtype=torch.float64)
    negatives = torch.randn(6, 2, 8, generator=generator, dtype=torch.float64)
    normalize = torch.nn.functional.normalize
    for rank in (0, 1):
        rows = slice(3 * rank, 3 * rank + 3)
        # What all_gather returns: every process's (normalised) rows, this process's own in place.
        global_rows = iter([normalize(positives, dim=-1), normalize(negatives, dim=-1).reshape(6, -1)])

        def gather(local_rows, rows=rows, rank=rank, global_rows=global_rows):
            gathered = next(global_rows).clone()
            gathered[rows] = local_rows
            return gathered, 3 * rank

        got = info_nce(anchors[rows], positives[rows], negatives[rows], gather=gather).item()
        expected = naive_rows_against(anchors.numpy(), positives.numpy(), negatives.numpy(), rows)
        assert got == pytest.approx(expected, abs=1e-10)


def naive_rows_against(anchors, positives, negatives, rows):
    """The mean float64 loss of the anchors in ``rows``, each labelled with its own global row."""

    def logit(x, y):
        return float(x @ y) / float(np.linalg.norm(x) * np.linalg.norm(y)) / 0.05

    total = 0.0
    for i in range(rows.start, rows.stop):
        logits = [logit(anchors[i], p) for p in positives] + [logit(anchors[i], n) for ex in negatives for n in ex]
        total += math.log(sum(math.exp(x) for x in logits)) - logits[i]
    return total / (rows.stop - rows.start)


def test_k_negatives_bad_shape_raises():
    with pytest.raises(ValueError, match="hard_negatives shape"):
        info_nce(torch.randn(4, 8), torch.randn(4, 8), torch.randn(4, 3, 7))


# ---------------------------------------------------------------------------------------------------
# CosineSimilarityLoss


def test_cosine_mse_is_sentence_transformers_cosine_similarity_loss():
    from sentence_transformers.sentence_transformer.losses import CosineSimilarityLoss

    generator = torch.Generator().manual_seed(4)
    embeddings1, embeddings2 = torch.randn(2, 7, 16, generator=generator, dtype=torch.float64)
    scores = torch.tensor([0.0, 5.0, 2.5, 3.2, 1.0, 4.8, 0.4], dtype=torch.float64)
    theirs = CosineSimilarityLoss(model=None).compute_loss_from_embeddings([embeddings1, embeddings2], scores / 5)
    ours = cosine_mse(embeddings1, embeddings2, scores)
    assert ours.item() == pytest.approx(theirs.item(), abs=1e-7)  # it casts the labels to float32
    loop = sum(
        (float(a @ b) / math.sqrt(float(a @ a) * float(b @ b)) - s / 5) ** 2
        for a, b, s in zip(embeddings1.numpy(), embeddings2.numpy(), scores.tolist())
    )
    assert ours.item() == pytest.approx(loop / 7, abs=1e-12)


def test_cosine_mse_bad_shapes():
    with pytest.raises(ValueError, match="both be"):
        cosine_mse(torch.randn(3, 4), torch.randn(3, 5), torch.zeros(3))
    with pytest.raises(ValueError, match="scores must be"):
        cosine_mse(torch.randn(3, 4), torch.randn(3, 4), torch.zeros(2))
