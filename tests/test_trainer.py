import pytest
import torch
from transformers import get_linear_schedule_with_warmup

from simcse.device import autocast_dtype, fused_adamw
from simcse.model import SimCSEModel
from simcse.optim import build_optimizer_and_scaler, learning_rate_at, parameter_groups


def transformers_rates(total: int, warmup: int, peak: float) -> list[float]:
    """The learning rate of each optimizer step under transformers' linear schedule, stepped as its Trainer does."""
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=peak)
    scheduler = get_linear_schedule_with_warmup(optimizer, num_warmup_steps=warmup, num_training_steps=total)
    rates = []
    for _ in range(total):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return rates


@pytest.mark.parametrize("total", [1, 7, 100])
def test_learning_rate_without_warmup_is_transformers_linear_schedule(total):
    ours = [learning_rate_at(step, total, 0, 5e-5) for step in range(total)]
    assert ours == pytest.approx(transformers_rates(total, 0, 5e-5), rel=1e-12, abs=0)


@pytest.mark.parametrize("total, warmup", [(100, 10), (20, 1), (5, 4)])
def test_learning_rate_with_warmup_is_transformers_schedule_without_its_zero_step(total, warmup):
    """transformers spends its first warmup step at rate 0; ours starts at peak / (warmup + 1), climbs the same
    line and decays to 0 at the same end: transformers' schedule with one more warmup step, its first dropped."""
    ours = [learning_rate_at(step, total, warmup, 5e-5) for step in range(total)]
    theirs = transformers_rates(total + 1, warmup + 1, 5e-5)
    assert theirs[0] == 0.0
    assert ours == pytest.approx(theirs[1:], rel=1e-12, abs=0)
    assert min(ours) > 0 and learning_rate_at(total, total, warmup, 5e-5) == 0.0


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


def test_the_trainers_optimizer_steps_like_the_reference_adamw(tiny_bert_dir, demo_config, tmp_path):
    """The trainer's AdamW (fused kernel on the CPU) moves the weights as torch's reference per-parameter AdamW
    does with the run's learning rate and weight decay groups."""
    config = demo_config(tmp_path)
    models = [SimCSEModel(tiny_bert_dir) for _ in range(2)]
    models[1].load_state_dict(models[0].state_dict())
    trainers_optimizer, _ = build_optimizer_and_scaler(models[0], config.learning_rate, config.weight_decay, None, None)
    assert trainers_optimizer.defaults["fused"] and fused_adamw(torch.device("cpu"))
    assert not fused_adamw(torch.device("mps"))
    reference = torch.optim.AdamW(
        parameter_groups(models[1], config.weight_decay), lr=config.learning_rate, foreach=False
    )
    generator = torch.Generator().manual_seed(0)
    for _ in range(3):
        gradients = [torch.randn(p.shape, generator=generator) for p in models[0].parameters()]
        for model, optimizer in zip(models, (trainers_optimizer, reference)):
            for parameter, gradient in zip(model.parameters(), gradients):
                parameter.grad = gradient.clone()
            optimizer.step()
    for (name, got), expected in zip(models[0].named_parameters(), models[1].parameters()):
        torch.testing.assert_close(got, expected, atol=1e-6, rtol=1e-5, msg=name)
    before = SimCSEModel(tiny_bert_dir).encoder.embeddings.word_embeddings.weight
    assert not torch.allclose(models[0].encoder.embeddings.word_embeddings.weight, before, atol=1e-4)  # it moved


def test_amp_is_ignored_on_cpu_with_a_warning(caplog):
    assert autocast_dtype(True, torch.device("cpu")) is None
    assert [r.getMessage() for r in caplog.records] == [
        "--amp is ignored on the CPU (bf16 matmuls are slow there); training in float32"
    ]
    assert autocast_dtype(False, torch.device("cpu")) is None


def test_the_training_bar_says_when_it_waits_for_the_dev_evaluation(demo_config, tmp_path, monkeypatch):
    """The bar stops moving while the dev set is encoded: its postfix says why."""
    import simcse.trainer

    postfixes = []

    def recording(model, valid_data, batch_size=None):
        postfixes.append(trainer.progress.postfix)
        return real(model, valid_data, batch_size)

    real = simcse.trainer.evaluate_dev
    monkeypatch.setattr(simcse.trainer, "evaluate_dev", recording)
    trainer = simcse.trainer.Trainer(demo_config(tmp_path, max_steps=1, eval_steps=1))
    try:
        trainer.fit()
    finally:
        trainer.close()
    assert len(postfixes) == 2 and all(postfix == "evaluating on the dev set" for postfix in postfixes)
