"""GradCache gives the full-batch gradients; duplicate texts are not used as negatives; batches split exactly."""

import math

import pytest
import torch

from simcse.batching import EpochBatchSampler, SimCSEDataset
from simcse.grad_cache import chunked_backward
from simcse.loss import duplicate_candidates, info_nce
from simcse.model import SimCSEModel
from simcse.tokenized import TextSettings, tokenize_in_memory
from simcse.train_data import TrainData


def batch_for(model, korean_sentences, num_sent, size=8):
    columns = [korean_sentences[i * size : (i + 1) * size] for i in range(num_sent)]
    kind = {1: "sentences", 2: "pairs", 3: "triplets"}[num_sent]
    dataset = SimCSEDataset(tokenize_in_memory(TrainData(columns, kind=kind), TextSettings(model.tokenizer, 32)))
    return model.collator([dataset[i] for i in range(len(dataset))])  # (size, num_sent, L)


def loss_of(embeddings):
    hard_negatives = embeddings[:, 2] if embeddings.shape[1] == 3 else None
    return info_nce(embeddings[:, 0], embeddings[:, 1], hard_negatives, hard_negative_weight=0.4)


def gradients(model):
    return {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("num_sent", [2, 3])
@pytest.mark.parametrize("chunk_size", [3, 4])
def test_grad_cache_matches_the_full_batch_with_dropout_on(tiny_bert_dir, korean_sentences, num_sent, chunk_size):
    torch.manual_seed(0)
    model = SimCSEModel(tiny_bert_dir, dropout=0.1).train()
    batch = batch_for(model, korean_sentences, num_sent)
    rng = torch.get_rng_state()

    # Reference: one graph through the whole batch, embedded chunk by chunk so that dropout draws
    # the same masks in the same order as GradCache's passes do.
    embeddings = torch.cat([model(**chunk) for chunk in split(batch, chunk_size)])
    reference_loss = loss_of(embeddings)
    reference_loss.backward()
    expected = gradients(model)
    model.zero_grad()

    torch.set_rng_state(rng)
    loss = chunked_backward(lambda chunk: model(**chunk), batch, loss_of, chunk_size)
    assert loss.item() == pytest.approx(reference_loss.item(), abs=1e-6)
    got = gradients(model)
    assert got.keys() == expected.keys() and len(got) == len(list(model.parameters()))
    for name in expected:
        torch.testing.assert_close(got[name], expected[name], atol=1e-5, rtol=1e-4, msg=name)

    # Without restoring the RNG state the second pass would draw other masks: other gradients.
    model.zero_grad()
    torch.set_rng_state(rng)
    broken = _chunked_backward_without_rng_replay(model, batch, chunk_size)
    assert any(not torch.allclose(broken[name], expected[name], atol=1e-5) for name in expected)


def _chunked_backward_without_rng_replay(model, batch, chunk_size):
    chunks = split(batch, chunk_size)
    with torch.no_grad():
        cached = torch.cat([model(**chunk) for chunk in chunks]).requires_grad_()
    loss_of(cached).backward()
    start = 0
    for chunk in chunks:
        rows = len(chunk["input_ids"])
        model(**chunk).backward(cached.grad[start : start + rows])
        start += rows
    return gradients(model)


def split(batch, size):
    return [dict(zip(batch, values)) for values in zip(*(value.split(size) for value in batch.values()))]


def test_grad_cache_carries_the_loss_scale(tiny_bert_dir, korean_sentences):
    torch.manual_seed(0)
    model = SimCSEModel(tiny_bert_dir, dropout=0.0).train()
    batch = batch_for(model, korean_sentences, 3)
    chunked_backward(lambda chunk: model(**chunk), batch, loss_of, 4)
    unscaled = gradients(model)
    model.zero_grad()
    chunked_backward(lambda chunk: model(**chunk), batch, loss_of, 4, scale=lambda loss: loss * 1024.0)
    for name, grad in gradients(model).items():
        torch.testing.assert_close(grad, unscaled[name] * 1024.0, rtol=1e-4, atol=1e-6)


# ---------------------------------------------------------------------------------------------------
# Duplicate-aware negatives


def test_duplicates_removed_equal_columns_deleted_by_hand():
    generator = torch.Generator().manual_seed(0)
    anchors, positives, hard_negatives = (torch.randn(5, 8, generator=generator, dtype=torch.float64) for _ in range(3))
    ids = torch.tensor([[2, 10, 11, 3], [2, 12, 3, 0], [2, 10, 11, 3], [2, 13, 3, 0], [2, 14, 15, 3]])
    hard_ids = torch.tensor([[2, 20, 3, 0], [2, 12, 3, 0], [2, 21, 3, 0], [2, 22, 3, 0], [2, 23, 3, 0]])
    # Positives 0 and 2 are the same text, hard negative 1 is the text of positive 1: near-identical
    # vectors, and anchors near their positives, so that those false negatives weigh in the loss.
    noise = lambda: 0.05 * torch.randn(8, generator=generator, dtype=torch.float64)  # noqa: E731
    positives[2] = positives[0] + noise()
    hard_negatives[1] = positives[1] + noise()
    anchors = positives + 0.3 * torch.randn(5, 8, generator=generator, dtype=torch.float64)
    anchor_ids = torch.tensor([[2, 30 + i, 3, 0] for i in range(5)])  # texts found nowhere else
    exclude = duplicate_candidates(anchor_ids, ids, hard_ids)
    got = info_nce(anchors, positives, hard_negatives, exclude=exclude, hard_negative_weight=0.5)

    candidates = torch.cat([positives, hard_negatives])  # columns 0-4 positives, 5-9 hard negatives
    removed = {0: [2], 2: [0], 1: [6]}  # anchor -> columns holding its positive's text (not its own)
    total = 0.0
    for i in range(5):
        keep = [c for c in range(10) if c not in removed.get(i, [])]
        cosines = torch.nn.functional.cosine_similarity(anchors[i][None], candidates[keep]) / 0.05
        cosines = cosines + torch.tensor([0.5 if c == 5 + i else 0.0 for c in keep], dtype=torch.float64)
        total += (torch.logsumexp(cosines, 0) - cosines[keep.index(i)]).item()
    assert got.item() == pytest.approx(total / 5, abs=1e-10)
    without_masking = info_nce(anchors, positives, hard_negatives, hard_negative_weight=0.5)
    assert without_masking.item() > got.item() + 0.1


def test_unsupervised_duplicate_lines_are_masked():
    generator = torch.Generator().manual_seed(1)
    anchors, positives = torch.randn(4, 6, generator=generator), torch.randn(4, 6, generator=generator)
    ids = torch.tensor([[2, 5, 3], [2, 6, 3], [2, 5, 3], [2, 7, 3]])  # lines 0 and 2 repeat
    got = info_nce(anchors, positives, exclude=duplicate_candidates(ids, ids))
    expected = 0.0
    for i in range(4):
        keep = [c for c in range(4) if not (c != i and ids[c].equal(ids[i]))]
        logits = torch.nn.functional.cosine_similarity(anchors[i][None], positives[keep]) / 0.05
        expected += (torch.logsumexp(logits, 0) - logits[keep.index(i)]).item() / 4
    assert got.item() == pytest.approx(expected, rel=1e-5)


def test_a_candidate_repeating_the_anchors_text_is_masked_too():
    """Supervised rows where another row's hypothesis is this row's premise: that candidate is masked for this
    anchor (its own text), not for the others; the loss equals a loop over the kept columns."""
    generator = torch.Generator().manual_seed(2)
    anchors, positives, hard_negatives = (torch.randn(4, 6, generator=generator, dtype=torch.float64) for _ in range(3))
    anchor_ids = torch.tensor([[2, 40, 3], [2, 41, 3], [2, 42, 3], [2, 43, 3]])
    positive_ids = torch.tensor([[2, 50, 3], [2, 40, 3], [2, 52, 3], [2, 53, 3]])  # positive 1 = anchor 0's text
    hard_ids = torch.tensor([[2, 60, 3], [2, 61, 3], [2, 62, 3], [2, 42, 3]])  # hard negative 3 = anchor 2's text
    exclude = duplicate_candidates(anchor_ids, positive_ids, hard_ids)
    expected_removed = {0: [1], 2: [7]}  # anchor -> candidate columns (positives 0-3, hard negatives 4-7)
    assert exclude.nonzero().tolist() == [[a, c] for a, cs in expected_removed.items() for c in cs]
    got = info_nce(anchors, positives, hard_negatives, exclude=exclude)
    candidates = torch.cat([positives, hard_negatives])
    expected = 0.0
    for i in range(4):
        keep = [c for c in range(8) if c not in expected_removed.get(i, [])]
        logits = torch.nn.functional.cosine_similarity(anchors[i][None], candidates[keep]) / 0.05
        expected += (torch.logsumexp(logits, 0) - logits[keep.index(i)]).item() / 4
    assert got.item() == pytest.approx(expected, abs=1e-10)
    positive_only = duplicate_candidates(positive_ids, positive_ids, hard_ids)  # what masking did before
    assert not positive_only[0, 1] and not positive_only[2, 7]


def test_k_negatives_repeating_an_anchor_or_its_positive_are_masked():
    """K = 2 negatives per anchor, some repeating another example's anchor or positive text: the mask equals a
    loop over the candidate columns (positives, then negative slot 0 of every example, then slot 1)."""
    texts = torch.randint(100, 120, (3, 4, 1), generator=torch.Generator().manual_seed(3))  # anchor, pos, 2 negs
    ids = torch.cat([torch.full((3, 4, 1), 2), texts, torch.full((3, 4, 1), 3)], dim=2)  # (B, 4, L)
    exclude = duplicate_candidates(ids[:, 0], ids[:, 1], ids[:, 2:])
    columns = [ids[j, 1] for j in range(3)] + [ids[j, 2 + k] for k in range(2) for j in range(3)]
    expected = [
        [c != i and (columns[c].equal(ids[i, 0]) or columns[c].equal(ids[i, 1])) for c in range(9)] for i in range(3)
    ]
    assert exclude.tolist() == expected
    assert any(any(row) for row in expected)  # the seed gives repeats to mask


def test_duplicate_ids_bad_shapes():
    anchors = torch.randn(3, 4)
    ids = torch.zeros(3, 5, dtype=torch.long)
    with pytest.raises(ValueError, match="positive_ids"):
        duplicate_candidates(ids, torch.zeros(2, 5, dtype=torch.long))
    with pytest.raises(ValueError, match="hard_negative_ids"):
        duplicate_candidates(ids, ids, torch.zeros(3, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="hard_negative_ids"):
        duplicate_candidates(ids, ids, torch.zeros(3, 2, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="exclude"):
        info_nce(anchors, anchors, anchors, exclude=torch.zeros(3, 3, dtype=torch.bool))


# ---------------------------------------------------------------------------------------------------
# How batches are split over processes


@pytest.mark.parametrize("num_examples", [40, 45, 46])
def test_processes_share_the_single_process_order(num_examples):
    single = EpochBatchSampler(num_examples, 8, seed=3)
    single.set_epoch(2)
    shards = [EpochBatchSampler(num_examples, 8, seed=3, rank=r, world_size=2) for r in range(2)]
    for shard in shards:
        shard.set_epoch(2)
    batches = list(single)
    sharded = list(zip(*shards))
    assert len(sharded) == shards[0].batches_per_epoch == len(shards[0])
    for full, (first, second) in zip(batches, sharded):
        assert len(first) == len(second)
        assert first + second == full[: len(first) + len(second)]
    used = sum(len(a) + len(b) for a, b in sharded)
    assert used + shards[0].dropped_per_epoch == num_examples and shards[0].dropped_per_epoch == num_examples % 2
    assert len(batches) == math.ceil(num_examples / 8)


def test_resumed_sampler_starts_mid_epoch():
    sampler = EpochBatchSampler(50, 8, seed=0)
    sampler.set_epoch(1)
    full = list(sampler)
    sampler.set_epoch(1, start_batch=3)
    assert list(sampler) == full[3:] and len(sampler) == len(full) - 3


def test_batch_must_split_evenly():
    with pytest.raises(ValueError, match="--batch_size 10 is not divisible by the 4 processes"):
        EpochBatchSampler(100, 10, seed=0, rank=0, world_size=4)
