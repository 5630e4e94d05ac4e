import sys

import numpy as np
import pytest
import torch
from transformers import AutoModel, AutoTokenizer

from simcse.batching import SimCSEDataset
from simcse.config import DEFAULT_MAX_LENGTH
from simcse.loss import info_nce
from simcse.model import SimCSEModel
from simcse.poolers import POOLERS
from simcse.tokenized import TextSettings, tokenize_in_memory
from simcse.train_data import TrainData


def batch_of(model, sentences, pad_to=None):
    """Tokenized (N, L) inputs, padded to the longest sentence or to ``pad_to``."""
    kwargs = {"padding": "max_length", "max_length": pad_to} if pad_to else {"padding": True}
    encoded = model.tokenizer(sentences, return_tensors="pt", return_token_type_ids=False, **kwargs)
    return {"input_ids": encoded["input_ids"], "attention_mask": encoded["attention_mask"]}


def naive_mean(states, mask):
    """Mean over real tokens, one sequence at a time."""
    return torch.stack([states[n, mask[n].bool()].mean(dim=0) for n in range(len(states))])


@pytest.mark.parametrize("pooler", ["avg", "avg_first_last", "avg_top2", "cls_before_pooler"])
def test_poolers_match_a_naive_computation(tiny_model_dir, korean_sentences, pooler):
    model = SimCSEModel(tiny_model_dir, pooler=pooler, dropout=0.0).eval()
    batch = batch_of(model, korean_sentences[:6])
    with torch.no_grad():
        got = model(**batch)
        reference = AutoModel.from_pretrained(tiny_model_dir)(**batch, output_hidden_states=True)
    states, mask = reference.hidden_states, batch["attention_mask"]
    assert len(states) == 4  # embeddings + 3 layers: first layer output is states[1], not states[0]
    expected = {
        "avg": naive_mean(states[3], mask),
        "avg_first_last": naive_mean((states[1] + states[3]) / 2, mask),
        "avg_top2": naive_mean((states[2] + states[3]) / 2, mask),
        "cls_before_pooler": states[3][:, 0],
    }
    torch.testing.assert_close(got, expected[pooler], atol=1e-5, rtol=1e-5)
    # The poolers are told apart: the comparison above fails for any other pooler's formula.
    for other, vectors in expected.items():
        if other != pooler:
            assert (got - vectors).abs().max() > 1e-3, other


def test_pool_first_last_uses_first_layer_not_embeddings():
    mask = torch.tensor([[1, 1, 0]])
    embeddings, layer1, layer2 = torch.zeros(1, 3, 2), torch.ones(1, 3, 2), 3 * torch.ones(1, 3, 2)
    first_last = POOLERS["avg_first_last"].padded(mask, layer2, (embeddings, layer1, layer2))
    assert first_last.tolist() == [[2.0, 2.0]]


def test_an_unknown_pooler_is_refused(tiny_bert_dir):
    with pytest.raises(ValueError, match="unknown pooler 'no such pooler!'"):
        SimCSEModel(tiny_bert_dir, pooler="no such pooler!")


@pytest.mark.parametrize("pooler", POOLERS)
def test_extra_padding_changes_nothing(tiny_model_dir, korean_sentences, pooler):
    model = SimCSEModel(tiny_model_dir, pooler=pooler, dropout=0.0).eval()
    with torch.no_grad():
        tight = model(**batch_of(model, korean_sentences[:4]))
        padded = model(**batch_of(model, korean_sentences[:4], pad_to=40))
    assert batch_of(model, korean_sentences[:4])["input_ids"].shape[1] < 40
    torch.testing.assert_close(tight, padded, atol=1e-5, rtol=1e-5)


def test_cls_head_is_applied_and_gets_gradients(tiny_bert_dir, korean_sentences):
    model = SimCSEModel(tiny_bert_dir, pooler="cls", dropout=0.0).train()
    batch = batch_of(model, korean_sentences[:4])
    embeddings = model(**batch)
    cls_vectors = model.encoder(**batch).last_hidden_state[:, 0]
    torch.testing.assert_close(embeddings, torch.tanh(model.head.dense(cls_vectors)))
    info_nce(embeddings[:2], embeddings[2:]).backward()
    for parameter in model.head.parameters():
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0


def test_mlp_only_train_changes_evaluation_not_training(tiny_bert_dir, korean_sentences):
    torch.manual_seed(0)
    with_head = SimCSEModel(tiny_bert_dir, pooler="cls", dropout=0.0)
    train_only = SimCSEModel(tiny_bert_dir, pooler="cls", mlp_only_train=True, dropout=0.0)
    train_only.load_state_dict(with_head.state_dict())
    no_head = SimCSEModel(tiny_bert_dir, pooler="cls_before_pooler", dropout=0.0)
    batch = batch_of(with_head, korean_sentences[:4])
    with torch.no_grad():
        torch.testing.assert_close(train_only.train()(**batch), with_head.train()(**batch))
        evaluated = train_only.eval()(**batch)
        assert not torch.allclose(evaluated, with_head.eval()(**batch))
        torch.testing.assert_close(evaluated, no_head.eval()(**batch))


def test_dropout_reaches_the_encoder(tiny_bert_dir):
    model = SimCSEModel(tiny_bert_dir, dropout=0.25)
    assert model.config.hidden_dropout_prob == 0.25 and model.config.attention_probs_dropout_prob == 0.25
    rates = {m.p for m in model.encoder.modules() if isinstance(m, torch.nn.Dropout)}
    assert rates == {0.25}
    assert model.encoder.pooler is None and not any("pooler" in name for name, _ in model.named_parameters())


def test_one_training_step_gives_finite_gradients_everywhere(tiny_model_dir, korean_sentences):
    torch.manual_seed(0)
    model = SimCSEModel(tiny_model_dir, pooler="cls", dropout=0.1).train()
    triplets = TrainData([korean_sentences[0:8], korean_sentences[8:16], korean_sentences[16:24]], kind="triplets")
    dataset = SimCSEDataset(tokenize_in_memory(triplets, TextSettings(model.tokenizer, 32)))
    batch = model.collator([dataset[i] for i in range(len(dataset))])  # (8, 3, L)
    if model.config.type_vocab_size == 1:
        assert "token_type_ids" not in batch
    embeddings = model(**batch)  # (8, 3, H)
    assert embeddings.shape == (8, 3, model.config.hidden_size)
    loss = info_nce(embeddings[:, 0], embeddings[:, 1], embeddings[:, 2], hard_negative_weight=0.5)
    assert torch.isfinite(loss)
    loss.backward()
    for name, parameter in model.named_parameters():
        assert parameter.grad is not None, name
        assert torch.isfinite(parameter.grad).all(), name
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    optimizer.step()
    assert torch.isfinite(info_nce(*model(**batch).unbind(dim=1)))


def test_encode_ignores_batch_size_and_order(tiny_model_dir, korean_sentences):
    model = SimCSEModel(tiny_model_dir, pooler="cls", dropout=0.1).train()
    sentences = korean_sentences + ["짧다", " ".join(korean_sentences[:8])]
    reference = model.encode(sentences, batch_size=len(sentences))
    assert model.training  # encode restores the mode it found
    assert reference.shape == (len(sentences), model.config.hidden_size) and reference.dtype == np.float32
    one_by_one = model.encode(sentences, batch_size=1)
    permutation = np.random.default_rng(0).permutation(len(sentences))
    shuffled = model.encode([sentences[i] for i in permutation], batch_size=5)
    np.testing.assert_allclose(one_by_one, reference, atol=1e-5)
    np.testing.assert_allclose(shuffled, reference[permutation], atol=1e-5)
    # Each row is that sentence's own embedding (eval mode, head applied).
    model.eval()
    with torch.no_grad():
        alone = model(**batch_of(model, [sentences[3]]))
    np.testing.assert_allclose(reference[3], alone[0].numpy(), atol=1e-5)


def test_encode_bad_input(tiny_bert_dir):
    model = SimCSEModel(tiny_bert_dir)
    with pytest.raises(TypeError, match="list of sentences"):
        model.encode("한 문장")
    with pytest.raises(ValueError, match="batch_size"):
        model.encode(["가"], batch_size=0)
    assert model.encode([]).shape == (0, model.config.hidden_size)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"pooler": "no such pooler!"}, "unknown pooler"),
        ({"pooler": "avg", "mlp_only_train": True}, "mlp_only_train needs pooler 'cls'"),
        ({"dropout": 1.0}, "dropout"),
        ({"max_length": 1}, "max_length must be at least 2"),
        ({"max_length": 0}, "max_length must be at least 2"),
    ],
)
def test_bad_model_arguments(tiny_bert_dir, kwargs, message):
    with pytest.raises(ValueError, match=message):
        SimCSEModel(tiny_bert_dir, **kwargs)


def test_separate_tokenizer_argument(tiny_bert_dir, tiny_roberta_dir):
    tokenizer = AutoTokenizer.from_pretrained(tiny_roberta_dir)
    model = SimCSEModel(tiny_bert_dir, tokenizer=tokenizer)
    assert model.tokenizer is tokenizer and model.collator.pad_token_id == 1


def test_the_training_max_length_is_the_default_after_reloading(tiny_bert_dir, korean_sentences, tmp_path):
    long_sentence = " ".join(korean_sentences[:6])
    assert SimCSEModel(tiny_bert_dir).max_length == DEFAULT_MAX_LENGTH  # no simcse_config.json
    SimCSEModel(tiny_bert_dir, pooler="avg", max_length=8).save_pretrained(tmp_path)
    reloaded = SimCSEModel(tmp_path, dropout=0.0)
    assert reloaded.max_length == 8
    default = reloaded.encode([long_sentence])
    np.testing.assert_allclose(default, reloaded.encode([long_sentence], max_length=8), atol=1e-6)
    assert np.abs(default - reloaded.encode([long_sentence], max_length=DEFAULT_MAX_LENGTH)).max() > 1e-3


def test_the_packages_loads_and_saves_print_no_transformers_progress_bars(tiny_bert_dir, tmp_path, capfd):
    """transformers' "Loading weights" and "Writing model shards" bars would interleave with the training bar on
    every save: off inside the package, and on again (the Hub's download bars too) everywhere else."""
    import huggingface_hub.utils
    from transformers.utils import logging as transformers_logging

    capfd.readouterr()
    SimCSEModel(tiny_bert_dir).save_pretrained(tmp_path / "saved")
    SimCSEModel(tmp_path / "saved")
    printed = capfd.readouterr().err
    assert "Loading weights" not in printed and "Writing model shards" not in printed
    assert transformers_logging.is_progress_bar_enabled() and not huggingface_hub.utils.are_progress_bars_disabled()
    AutoModel.from_pretrained(tmp_path / "saved")  # outside the package, transformers' own bar as before
    assert "Loading weights" in capfd.readouterr().err


def test_encode_shows_a_progress_bar_on_long_inputs_in_a_terminal_only(tiny_bert_dir, monkeypatch, capsys):
    """A bar labelled with the description, cleared when done; by default only on long inputs when stderr is a
    terminal, so logs and pipes stay clean; the embeddings are the same either way."""
    import simcse.model

    model = SimCSEModel(tiny_bert_dir)
    sentences = [f"문장 {i}" for i in range(10)]
    plain = model.encode(sentences)
    assert capsys.readouterr().err == ""  # not a terminal
    monkeypatch.setattr(simcse.model, "PROGRESS_MIN_SENTENCES", 10)
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    shown = model.encode(sentences, batch_size=4, description="korsts_dev")
    assert "korsts_dev" in capsys.readouterr().err and np.array_equal(shown, plain)
    model.encode(sentences[:9], batch_size=4, description="short")
    assert "short" not in capsys.readouterr().err
    model.encode(sentences[:2], show_progress_bar=True, description="asked")
    assert "asked" in capsys.readouterr().err
