"""The unpadded forward pass equals the standard transformers forward at every real token, values and gradients."""

import numpy as np
import pytest
import torch
from transformers import AutoModel

import simcse.unpad
from simcse.data import STSData
from simcse.evaluate import evaluate_sts, sts_metrics
from simcse.model import SimCSEModel
from simcse.poolers import POOLERS
from simcse.unpad import (
    ATTENTION_KERNELS,
    Packing,
    attention_kernel,
    dropout,
    supports_unpadding,
    unpadded_forward,
    unpadding_problem,
)

MAX_LENGTH = 12


def mixed_batch(vocab_size, with_token_types, pad_id, cls_id, lengths=(1, 3, MAX_LENGTH, 5, 2, 7, 11, 6)):
    """Sequences of these lengths, right-padded to MAX_LENGTH. The default puts 12 and 11, and 7 and 6, into
    shared attention groups (padded keys inside a group) and leaves the others alone."""
    generator = torch.Generator().manual_seed(0)
    input_ids = torch.full((len(lengths), MAX_LENGTH), pad_id)
    attention_mask = torch.zeros(len(lengths), MAX_LENGTH, dtype=torch.long)
    token_type_ids = torch.zeros(len(lengths), MAX_LENGTH, dtype=torch.long)
    for row, length in enumerate(lengths):
        input_ids[row, :length] = torch.randint(5, vocab_size, (length,), generator=generator)
        input_ids[row, 0] = cls_id
        attention_mask[row, :length] = 1
        if with_token_types:
            token_type_ids[row, length // 2 : length] = 1
    return input_ids, attention_mask, token_type_ids if with_token_types else None


@pytest.fixture(params=["bert", "bert-token-types", "roberta", "xlm-roberta"])
def encoder_and_batch(request, tiny_bert_dir, tiny_roberta_dir, tiny_xlmr_dir):
    folder = {"roberta": tiny_roberta_dir, "xlm-roberta": tiny_xlmr_dir}.get(request.param, tiny_bert_dir)
    encoder = AutoModel.from_pretrained(folder, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    config = encoder.config
    cls_id = 0 if request.param in ("roberta", "xlm-roberta") else 2
    batch = mixed_batch(config.vocab_size, request.param == "bert-token-types", config.pad_token_id, cls_id)
    return encoder.train(), batch


@pytest.mark.parametrize("kernel", ATTENTION_KERNELS)
def test_states_equal_the_standard_forward(encoder_and_batch, kernel):
    encoder, (input_ids, attention_mask, token_type_ids) = encoder_and_batch
    assert supports_unpadding(encoder)
    expected = encoder(
        input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids, output_hidden_states=True
    )
    packing, last, states = unpadded_forward(encoder, input_ids, attention_mask, token_type_ids, True, kernel)
    assert [group.batch for group in packing.groups] == [2, 2, 1, 1, 1, 1]
    real = attention_mask.bool()
    assert last.shape == (int(real.sum()), encoder.config.hidden_size)
    torch.testing.assert_close(packing.pad(last)[real], expected.last_hidden_state[real], atol=1e-5, rtol=1e-5)
    assert len(states) == len(expected.hidden_states)
    for ours, theirs in zip(states, expected.hidden_states):
        torch.testing.assert_close(packing.pad(ours)[real], theirs[real], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("kernel", ATTENTION_KERNELS)
def test_gradients_equal_the_standard_forward(encoder_and_batch, kernel):
    """In float64: the [CLS] embedding's gradient sums large per-sequence terms that nearly cancel, so float32
    rounding alone moves it by ~1e-5; in float64 both paths must agree to 1e-9."""
    encoder, (input_ids, attention_mask, token_type_ids) = encoder_and_batch
    encoder.double()
    weights = torch.randn(
        MAX_LENGTH, encoder.config.hidden_size, generator=torch.Generator().manual_seed(1), dtype=torch.float64
    )
    real = attention_mask.bool()

    def gradients(states):
        encoder.zero_grad()
        (states[real] * weights.expand(len(real), -1, -1)[real]).sum().backward()
        return {n: p.grad.clone() for n, p in encoder.named_parameters() if p.grad is not None}

    expected = gradients(
        encoder(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids).last_hidden_state
    )
    packing, last, _ = unpadded_forward(encoder, input_ids, attention_mask, token_type_ids, kernel=kernel)
    got = gradients(packing.pad(last))
    assert got.keys() == expected.keys()
    for name in expected:
        torch.testing.assert_close(got[name], expected[name], atol=1e-9, rtol=1e-7, msg=name)


@pytest.mark.parametrize("kernel", ATTENTION_KERNELS)
def test_first_tokens_only_equals_the_standard_forwards_first_tokens(encoder_and_batch, kernel):
    """The last layer for the first tokens alone gives the standard forward's [CLS] states, in batch order, and
    their gradients (float64, as above)."""
    encoder, (input_ids, attention_mask, token_type_ids) = encoder_and_batch
    encoder.double()
    weights = torch.randn(len(input_ids), encoder.config.hidden_size, generator=torch.Generator().manual_seed(2))
    weights = weights.double()

    def value_and_gradients(first_states):
        encoder.zero_grad()
        (first_states * weights).sum().backward()
        grads = {n: p.grad.clone() for n, p in encoder.named_parameters() if p.grad is not None}
        return first_states.detach(), grads

    expected, expected_grads = value_and_gradients(
        encoder(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids).last_hidden_state[
            :, 0
        ]
    )
    _, first, states = unpadded_forward(
        encoder, input_ids, attention_mask, token_type_ids, kernel=kernel, first_tokens_only=True
    )
    assert states is None and first.shape == (len(input_ids), encoder.config.hidden_size)
    got, got_grads = value_and_gradients(first)
    torch.testing.assert_close(got, expected, atol=1e-9, rtol=1e-7)
    # The last layer's feed-forward of the other tokens is skipped, not its keys and values: every parameter
    # that the standard forward's first tokens depend on gets its gradient.
    assert got_grads.keys() == expected_grads.keys()
    for name in expected_grads:
        torch.testing.assert_close(got_grads[name], expected_grads[name], atol=1e-9, rtol=1e-7, msg=name)
    with pytest.raises(ValueError, match="first_tokens_only leaves the last layer's other tokens out"):
        unpadded_forward(encoder, input_ids, attention_mask, output_hidden_states=True, first_tokens_only=True)


def test_dropout_mask_rate_and_scale():
    x = torch.full((400_000,), 3.0)
    y = dropout(x, 0.1, training=True)
    dropped = (y == 0).double().mean().item()
    assert abs(dropped - 0.1) < 0.003  # 0.1 ± 6 standard deviations of the binomial
    assert torch.allclose(y[y != 0], torch.tensor(3.0 / 0.9))  # survivors scaled to keep the mean
    assert dropout(x, 0.1, training=False) is x and dropout(x, 0.0, training=True) is x


def test_training_path_with_dropout_equals_the_standard_forward_when_nothing_drops(tiny_model_dir, monkeypatch):
    """With dropout on, the CPU takes the spelled-out attention (masked softmax, then dropout, then values).
    With the dropout mask made a no-op, that path must give the standard forward's states without dropout."""
    encoder = AutoModel.from_pretrained(tiny_model_dir, hidden_dropout_prob=0.1, attention_probs_dropout_prob=0.1)
    cls_id = 2 if encoder.config.model_type == "bert" else 0
    # Lengths within 0.8 of each other share attention groups, so that keys inside a group are padded.
    lengths = (MAX_LENGTH, 11, 10, 6, 5, 1)
    input_ids, attention_mask, _ = mixed_batch(
        encoder.config.vocab_size, False, encoder.config.pad_token_id, cls_id, lengths
    )
    assert any(group.batch > 1 for group in Packing.from_mask(attention_mask).groups)
    with torch.no_grad():
        expected = encoder.eval()(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
    taken = []
    monkeypatch.setattr(simcse.unpad, "dropout", lambda x, p, training: taken.append(p) or x)
    with torch.no_grad():
        packing, last, _ = unpadded_forward(encoder.train(), input_ids, attention_mask)
    assert 0.1 in taken  # the dropout branches ran
    real = attention_mask.bool()
    torch.testing.assert_close(packing.pad(last)[real], expected[real], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("pooler", POOLERS)
def test_simcse_model_unpadded_equals_padded(tiny_model_dir, korean_sentences, pooler):
    torch.manual_seed(0)
    padded = SimCSEModel(tiny_model_dir, pooler=pooler, dropout=0.0, unpad=False).train()
    unpadded = SimCSEModel(tiny_model_dir, pooler=pooler, dropout=0.0)
    unpadded.load_state_dict(padded.state_dict())
    assert unpadded.unpad and not padded.unpad
    batch = padded.collator([(np.asarray(padded.tokenizer(s)["input_ids"]),) for s in korean_sentences[:9]])
    expected, got = padded(**batch), unpadded.train()(**batch)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    # Gradients in float64 (see test_gradients_equal_the_standard_forward).
    padded.double(), unpadded.double()
    padded(**batch).square().sum().backward()
    unpadded(**batch).square().sum().backward()
    for (name, p), q in zip(padded.named_parameters(), unpadded.parameters()):
        if p.grad is not None:
            torch.testing.assert_close(q.grad, p.grad, atol=1e-9, rtol=1e-7, msg=name)


def test_packing_round_trip_and_means():
    mask = torch.tensor([[1, 1, 0], [1, 0, 0], [1, 1, 1]])
    packing = Packing.from_mask(mask)
    assert packing.indices.tolist() == [6, 7, 8, 0, 1, 3]  # longest sequence first
    assert packing.rank.tolist() == [1, 2, 0] and packing.lengths.tolist() == [2, 1, 3]
    states = torch.tensor([5.0, 6.0, 7.0, 1.0, 2.0, 4.0]).unsqueeze(1)
    assert packing.pad(states).squeeze(-1).tolist() == [[1, 2, 0], [4, 0, 0], [5, 6, 7]]
    assert packing.mean(states).squeeze(-1).tolist() == [1.5, 4.0, 6.0]
    assert packing.unpad(packing.pad(states)).equal(states)
    # Lengths 3, 2, 1: each shorter than 0.8 of the one before, three attention groups tiling the tokens.
    assert [(g.start, g.end, g.batch, g.length) for g in packing.groups] == [(0, 3, 1, 3), (3, 5, 1, 2), (5, 6, 1, 1)]
    with pytest.raises(ValueError, match="at least one real token"):
        Packing.from_mask(torch.tensor([[1, 0], [0, 0]]))
    # The variable-length kernel takes the packed sequences' boundaries instead of groups.
    varlen = Packing.from_mask(mask, "varlen")
    assert varlen.offsets.tolist() == [0, 3, 5, 6] and varlen.longest == 3
    assert varlen.indices.equal(packing.indices) and packing.offsets is None
    # The first-token-only last layer reads each group's first tokens and puts sequences back by their rank.
    assert [g.first_tokens.tolist() for g in packing.groups] == [[0], [3], [5]]
    with pytest.raises(ValueError, match="attention kernel 'flash': expected one of grouped, varlen"):
        Packing.from_mask(mask, "flash")


def test_the_kernel_follows_the_device():
    assert attention_kernel(torch.device("cpu")) == "grouped"
    assert attention_kernel(torch.device("cuda", 1)) == "varlen"


def test_attention_groups_cover_every_token_once():
    lengths = torch.tensor([5, 64, 17, 40, 64, 3, 33, 52, 9, 40])
    mask = torch.arange(64) < lengths[:, None]
    packing = Packing.from_mask(mask)
    assert packing.groups[0].start == 0 and packing.groups[-1].end == int(lengths.sum())
    for before, after in zip(packing.groups, packing.groups[1:]):
        assert before.end == after.start
    for group in packing.groups:
        group_lengths = lengths[packing.sequence[group.start : group.end]].unique()
        assert int(group_lengths.max()) == group.length and int(group_lengths.min()) >= 0.8 * group.length
        assert len(group.rows.unique()) == group.end - group.start  # no two tokens on one grid cell


def test_evaluation_equals_the_plain_file_order_computation(tiny_model_dir, korean_sentences):
    """Sorted batches, unpadded, inference mode: the same metrics as padded batches in file order."""
    model = SimCSEModel(tiny_model_dir, pooler="avg")
    data = STSData(korean_sentences[:20], korean_sentences[20:40], [i % 6 * 0.9 for i in range(20)])
    got = evaluate_sts(model, data, batch_size=4, max_length=16)

    plain = AutoModel.from_pretrained(tiny_model_dir).eval()

    def embed(sentences):
        vectors = []
        for start in range(0, len(sentences), 7):  # file order, padded to the batch's longest
            batch = model.tokenizer(
                sentences[start : start + 7],
                padding=True,
                truncation=True,
                max_length=16,
                return_tensors="pt",
                return_token_type_ids=False,
            )
            with torch.no_grad():
                vectors.append(POOLERS["avg"].padded(batch["attention_mask"], plain(**batch).last_hidden_state, None))
        return torch.cat(vectors).numpy()

    expected = sts_metrics(embed(data.sentences1), embed(data.sentences2), data.scores)
    assert got == pytest.approx(expected, abs=1e-5)


# ---------------------------------------------------------------------------------------------------
# The check at model load: a transformers release this pass does not fit falls back to the padded forward


def test_a_current_encoder_passes_the_check(tiny_model_dir):
    assert unpadding_problem(AutoModel.from_pretrained(tiny_model_dir)) is None
    assert SimCSEModel(tiny_model_dir).unpad


def test_a_renamed_attribute_is_named(tiny_bert_dir):
    encoder = AutoModel.from_pretrained(tiny_bert_dir)
    del encoder.encoder.layer[0].attention.self.num_attention_heads  # as a release that renamed it would
    assert (
        unpadding_problem(encoder)
        == "this transformers release has no encoder.layer[i].attention.self.num_attention_heads"
    )


def test_a_pass_that_no_longer_matches_the_model_is_caught(tiny_bert_dir, monkeypatch):
    """Attributes all present, but the model computes something else (here: the pass loses the residual)."""
    monkeypatch.setattr(simcse.unpad, "_output", lambda module, x, residual: module.LayerNorm(module.dense(x)))
    problem = unpadding_problem(AutoModel.from_pretrained(tiny_bert_dir))
    assert problem.startswith("the unpadded pass differs from the model's own forward by")


def test_the_model_falls_back_to_the_padded_forward_with_one_warning(
    tiny_bert_dir, korean_sentences, monkeypatch, caplog
):
    import transformers.models.bert.modeling_bert as bert

    original_init = bert.BertSelfAttention.__init__

    def init_of_a_future_release(self, *args, **kwargs):
        original_init(self, *args, **kwargs)
        self.heads = self.num_attention_heads  # renamed; the padded forward does not read it
        del self.num_attention_heads

    monkeypatch.setattr(bert.BertSelfAttention, "__init__", init_of_a_future_release)
    model = SimCSEModel(tiny_bert_dir, pooler="avg", dropout=0.0).eval()
    warnings = [record.getMessage() for record in caplog.records if record.levelname == "WARNING"]
    assert len(warnings) == 1 and "using the padded forward" in warnings[0] and "num_attention_heads" in warnings[0]
    assert not model.unpad
    reference = SimCSEModel(tiny_bert_dir, pooler="avg", dropout=0.0, unpad=False).eval()
    np.testing.assert_allclose(model.encode(korean_sentences), reference.encode(korean_sentences), atol=1e-6)
