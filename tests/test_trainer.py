import pytest
import torch

from simcse.model import SimCSEModel
from simcse.trainer import TrainConfig, autocast_dtype, learning_rate_at, parameter_groups


def test_learning_rate_warms_up_then_decays_linearly_to_zero():
    total, warmup, peak = 100, 10, 5e-5
    rates = [learning_rate_at(step, total, warmup, peak) for step in range(total)]
    for step in range(warmup):
        assert rates[step] == pytest.approx(peak * (step + 1) / (warmup + 1))
    assert rates[warmup] == pytest.approx(peak)
    for step in range(warmup, total):
        assert rates[step] == pytest.approx(peak * (total - step) / (total - warmup))
    assert all(later <= earlier for earlier, later in zip(rates[warmup:], rates[warmup + 1 :]))
    assert min(rates) > 0 and learning_rate_at(total, total, warmup, peak) == 0.0


def test_one_epoch_schedule_never_alternates():
    """The original project's CosineAnnealingLR(T_max=1) stepped per batch swung between peak and 0."""
    rates = [learning_rate_at(step, 1000, 0, 5e-5) for step in range(1000)]
    assert rates[0] == pytest.approx(5e-5)
    assert all(b < a for a, b in zip(rates, rates[1:]))


def test_no_weight_decay_on_biases_and_layernorm(tiny_bert_dir):
    model = SimCSEModel(tiny_bert_dir)
    decayed, not_decayed = parameter_groups(model, 0.01)
    assert decayed["weight_decay"] == 0.01 and not_decayed["weight_decay"] == 0.0
    names = {id(p): n for n, p in model.named_parameters()}
    no_decay_names = {names[id(p)] for p in not_decayed["params"]}
    expected = {n for n, _ in model.named_parameters() if n.endswith("bias") or "LayerNorm" in n}
    assert no_decay_names == expected
    assert len(decayed["params"]) + len(not_decayed["params"]) == len(list(model.parameters()))


def test_frozen_pooler_is_not_optimised(tiny_bert_dir):
    model = SimCSEModel(tiny_bert_dir, pooler="avg")
    grouped = {id(p) for group in parameter_groups(model, 0.01) for p in group["params"]}
    assert not any(id(p) in grouped for p in model.frozen_pooler.parameters())


def test_amp_is_ignored_on_cpu_with_a_warning(caplog):
    assert autocast_dtype(True, torch.device("cpu")) is None
    assert [r.getMessage() for r in caplog.records] == [
        "--amp is ignored on the CPU (bf16 matmuls are slow there); training in float32"
    ]
    assert autocast_dtype(False, torch.device("cpu")) is None


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"batch_size": 1}, "--batch_size 1"),
        ({"train_data": ""}, "--train_data is required"),
        ({"pooler": "avg", "mlp_only_train": True}, "--mlp_only_train needs --pooler cls"),
        ({"warmup_ratio": 1.0}, "--warmup_ratio"),
        ({"temp": 0.0}, "--temp"),
        ({"max_steps": 0}, "--max_steps"),
        ({"dropout": -0.1}, "--dropout"),
    ],
)
def test_config_validation(changes, message):
    config = TrainConfig(**{"train_data": "train.tsv", **changes})
    with pytest.raises(ValueError, match=message):
        config.validate()
    TrainConfig(train_data="train.tsv").validate()  # the defaults are valid
