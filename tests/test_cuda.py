"""The GPU path: the unpadded forward (both attention kernels), losses, GradCache, AMP training, encode and resume
on CUDA. Skipped without a CUDA device; benchmarks/gpu_check.sh runs them where one is lent.

Tolerances under autocast are not guessed: the unpadded pass must be no further from the float32 computation than
the model's own padded forward under the same autocast is (it rounds the same weights and activations to the same
dtype and only accumulates in another order), and the loss is bounded through its Lipschitz constant.
"""

import json

import numpy as np
import pytest
import torch
from peft.utils import SAFETENSORS_WEIGHTS_NAME
from safetensors.torch import load_file
from test_checkpoint import cut_back_to
from test_decoders import decoder_of  # noqa: F401  (the fixture)
from transformers import AutoModel

import simcse.device
from simcse.data import load_sts
from simcse.evaluate import SELECTION_METRIC, evaluate_sts
from simcse.grad_cache import chunked_backward
from simcse.loss import info_nce
from simcse.model import SimCSEModel
from simcse.run_folder import LORA_ADAPTER_FOLDER, METRICS_NAME, TRAIN_ARGS_NAME
from simcse.trainer import train
from simcse.unpad import ATTENTION_KERNELS, unpadded_forward

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (benchmarks/gpu_check.sh)"),
]

CUDA = torch.device("cuda")
HALF_DTYPES = [torch.bfloat16, torch.float16]


def skip_unsupported(dtype: torch.dtype) -> None:
    if dtype == torch.bfloat16 and not torch.cuda.is_bf16_supported():
        pytest.skip("this GPU has no bf16")


def padded_batch(config, lengths=(1, 3, 24, 5, 2, 7, 23, 6, 17, 24, 12, 9)):
    """Token ids of these lengths, right-padded, on the GPU; the first token stands for [CLS] / <s>."""
    generator = torch.Generator().manual_seed(0)
    width = max(lengths)
    input_ids = torch.full((len(lengths), width), config.pad_token_id)
    for row, length in enumerate(lengths):
        input_ids[row, :length] = torch.randint(5, config.vocab_size, (length,), generator=generator)
    attention_mask = (torch.arange(width) < torch.tensor(lengths)[:, None]).long()
    return input_ids.to(CUDA), attention_mask.to(CUDA)


def relative_error(got: torch.Tensor, expected: torch.Tensor) -> float:
    return ((got.float() - expected.float()).norm() / expected.float().norm()).item()


def gradient_scales(gradients: dict[str, torch.Tensor]) -> dict[str, float]:
    """Each gradient's norm, floored at 1e-3 of the norm of all of them: some gradients are zero in exact
    arithmetic (the attention key's bias: softmax ignores a constant shift) and hold only rounding noise."""
    total = torch.cat([g.flatten() for g in gradients.values()]).norm().item()
    return {name: max(g.norm().item(), 1e-3 * total) for name, g in gradients.items()}


def gradient_errors(got: dict[str, torch.Tensor], expected: dict[str, torch.Tensor]) -> dict[str, float]:
    """Each gradient's distance to the expected one, relative to ``gradient_scales`` of the expected ones."""
    assert got.keys() == expected.keys()
    scales = gradient_scales(expected)
    return {name: (got[name] - g).norm().item() / scales[name] for name, g in expected.items()}


def parameter_gradients(module) -> dict[str, torch.Tensor]:
    return {name: p.grad.detach().float().clone() for name, p in module.named_parameters() if p.grad is not None}


def forward_and_gradients(encoder, input_ids, attention_mask, weights, kernel=None, dtype=None):
    """Real tokens' last states (T, H) and the parameter gradients of sum(states * weights), padded when kernel
    is None, under autocast to ``dtype`` when given."""
    encoder.zero_grad()
    real = attention_mask.bool()
    with torch.autocast("cuda", dtype=dtype or torch.float32, enabled=dtype is not None):
        if kernel is None:
            states = encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state[real]  # (T, H)
        else:
            packing, last, _ = unpadded_forward(encoder, input_ids, attention_mask, kernel=kernel)  # (T, H)
            states = packing.pad(last)[real]  # (T, H)
    (states.float() * weights).sum().backward()
    return states.detach().float(), parameter_gradients(encoder)


@pytest.fixture
def encoder_on_gpu(tiny_model_dir):
    """A tiny encoder without dropout (the paths must agree exactly), on the GPU."""
    encoder = AutoModel.from_pretrained(tiny_model_dir, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    return encoder.to(CUDA).train()


@pytest.mark.parametrize("kernel", ATTENTION_KERNELS)
def test_unpadded_equals_padded_in_float32(encoder_on_gpu, kernel):
    input_ids, attention_mask = padded_batch(encoder_on_gpu.config)
    weights = torch.randn(int(attention_mask.sum()), encoder_on_gpu.config.hidden_size, device=CUDA)
    expected, expected_gradients = forward_and_gradients(encoder_on_gpu, input_ids, attention_mask, weights)
    got, got_gradients = forward_and_gradients(encoder_on_gpu, input_ids, attention_mask, weights, kernel)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    # A gradient sums many per-token terms that partly cancel: float32 reordering moves it by ~1e-6 of its
    # norm (the CPU test compares in float64 for this reason); a wrong pass moves it by far more.
    for name, error in gradient_errors(got_gradients, expected_gradients).items():
        assert error < 1e-4, name


@pytest.mark.parametrize("dtype", HALF_DTYPES)
@pytest.mark.parametrize("kernel", ATTENTION_KERNELS)
def test_unpadded_under_autocast_is_as_close_to_float32_as_the_padded_forward(encoder_on_gpu, kernel, dtype):
    skip_unsupported(dtype)
    input_ids, attention_mask = padded_batch(encoder_on_gpu.config)
    weights = torch.randn(int(attention_mask.sum()), encoder_on_gpu.config.hidden_size, device=CUDA)
    exact, exact_gradients = forward_and_gradients(encoder_on_gpu, input_ids, attention_mask, weights)
    padded, padded_gradients = forward_and_gradients(encoder_on_gpu, input_ids, attention_mask, weights, None, dtype)
    got, got_gradients = forward_and_gradients(encoder_on_gpu, input_ids, attention_mask, weights, kernel, dtype)
    assert torch.isfinite(got).all()
    # Twice the padded forward's own error, plus a few units in the last place of the dtype for rounding luck.
    slack = 4 * torch.finfo(dtype).eps
    assert relative_error(got, exact) <= 2 * relative_error(padded, exact) + slack
    assert all(torch.isfinite(gradient).all() for gradient in got_gradients.values())
    padded_errors = gradient_errors(padded_gradients, exact_gradients)
    for name, error in gradient_errors(got_gradients, exact_gradients).items():
        assert error <= 2 * padded_errors[name] + slack, name


@pytest.mark.parametrize("dtype", HALF_DTYPES)
def test_the_loss_under_autocast_is_float32_and_within_its_bound(tiny_bert_dir, korean_sentences, dtype):
    """InfoNCE at temperature 0.05 moves by at most 2 / 0.05 times the largest change of a cosine (cross-entropy
    changes by at most twice the largest change of a logit); inside autocast it must still compute in float32."""
    skip_unsupported(dtype)
    model = SimCSEModel(tiny_bert_dir, dropout=0.0).to(CUDA).train()
    batch = batch_of(model, korean_sentences, num_sent=3)
    with torch.no_grad():
        exact = model(**batch)  # (B, 3, H)
        with torch.autocast("cuda", dtype=dtype):
            half = model(**batch)  # (B, 3, H) in dtype
            loss = info_nce(half[:, 0], half[:, 1], half[:, 2], temperature=0.05)
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    same_inputs = info_nce(half[:, 0].float(), half[:, 1].float(), half[:, 2].float(), temperature=0.05)
    assert loss.item() == pytest.approx(same_inputs.item(), abs=1e-5)

    def cosines(embeddings):
        normed = torch.nn.functional.normalize(embeddings.float(), dim=-1)
        return normed[:, 0] @ torch.cat([normed[:, 1], normed[:, 2]]).T  # (B, 2B)

    bound = 2 / 0.05 * (cosines(half) - cosines(exact)).abs().max().item()
    exact_loss = info_nce(exact[:, 0], exact[:, 1], exact[:, 2], temperature=0.05)
    assert abs(loss.item() - exact_loss.item()) <= bound + 1e-5


def batch_of(model, sentences, num_sent, size=8):
    columns = [sentences[i * size : (i + 1) * size] for i in range(num_sent)]
    examples = [tuple(model.tokenizer(column[i])["input_ids"] for column in columns) for i in range(size)]
    return {key: value.to(CUDA) for key, value in model.collator(examples).items()}  # (size, num_sent, L)


def test_grad_cache_replays_cuda_dropout(tiny_bert_dir, korean_sentences):
    """GradCache's second pass must draw the dropout masks of the first: the CUDA generator's state is saved and
    restored per chunk (flash / memory-efficient attention dropout and F.dropout both draw from it)."""
    torch.manual_seed(0)
    model = SimCSEModel(tiny_bert_dir, dropout=0.1).to(CUDA).train()
    batch = batch_of(model, korean_sentences, num_sent=3)

    def loss_of(embeddings):
        return info_nce(embeddings[:, 0], embeddings[:, 1], embeddings[:, 2])

    cuda_state = torch.cuda.get_rng_state()
    # Reference: one graph through the whole batch, embedded chunk by chunk so that the masks are drawn in
    # the same order as GradCache's passes draw them.
    loss_of(torch.cat([model(**chunk) for chunk in split(batch, 3)])).backward()
    expected = parameter_gradients(model)
    model.zero_grad()
    torch.cuda.set_rng_state(cuda_state)
    chunked_backward(lambda chunk: model(**chunk), batch, loss_of, 3)
    got = parameter_gradients(model)
    assert len(got) == len(list(model.parameters()))
    assert max(gradient_errors(got, expected).values()) < 1e-4
    # Other masks give other gradients: the comparison above can fail.
    model.zero_grad()
    loss_of(torch.cat([model(**chunk) for chunk in split(batch, 3)])).backward()
    assert max(gradient_errors(parameter_gradients(model), expected).values()) > 1e-2


def split(batch, size):
    return [dict(zip(batch, values)) for values in zip(*(value.split(size) for value in batch.values()))]


@pytest.fixture(params=["bf16", "fp16 with the loss scaler"])
def amp_dtype(request, monkeypatch):
    """--amp takes bf16 where the GPU has it; fp16 (and the scaler) is forced here to test that path anywhere."""
    if request.param == "bf16":
        skip_unsupported(torch.bfloat16)
        return torch.bfloat16
    monkeypatch.setattr(simcse.device, "gpu_half_dtype", lambda: torch.float16)
    return torch.float16


def test_amp_training_lowers_the_loss_then_saves_and_reloads(demo_config, demo_data, amp_dtype, tmp_path):
    result = train(demo_config(tmp_path, device="cuda", amp=True, dropout=0.1, epochs=3, eval_steps=7))
    run_info = json.loads((tmp_path / TRAIN_ARGS_NAME).read_text())
    assert run_info["device"]["amp_dtype"] == str(amp_dtype).removeprefix("torch.")
    assert "varlen attention" in run_info["forward"]
    losses = [json.loads(line)["train_loss"] for line in (tmp_path / METRICS_NAME).read_text().splitlines()[1:]]
    assert all(np.isfinite(losses)) and losses[-1] < losses[0]
    # The saved best model, reloaded, scores on the dev set what the run logged for it.
    reloaded = SimCSEModel(tmp_path).to(CUDA)
    score = evaluate_sts(reloaded, load_sts(demo_data / "dev.tsv"))[SELECTION_METRIC]
    assert score == pytest.approx(result.best_score, abs=1e-6)


def test_encode_on_cuda_matches_the_cpu(tiny_model_dir, korean_sentences):
    """encode autocasts to bf16/fp16 on a GPU: each vector stays within a few percent of the CPU's float32 one, so
    its cosine to it is at least 1 - 0.045^2 / 2 > 0.999 (~10 roundings of 2^-8 each, bf16's worst case)."""
    model = SimCSEModel(tiny_model_dir)
    on_cpu = model.encode(korean_sentences)
    on_gpu = model.to(CUDA).encode(korean_sentences)
    cosines = (on_cpu * on_gpu).sum(1) / (np.linalg.norm(on_cpu, axis=1) * np.linalg.norm(on_gpu, axis=1))
    assert cosines.min() > 0.999


def test_exact_resume_on_cuda(demo_config, tmp_path):
    """6 steps straight == 3 steps, stop, resume, 3 steps, on the GPU with dropout on (CUDA RNG restored). The GPU's
    attention backward accumulates in a run-dependent order, so equality is to float32 noise, not bit for bit."""
    settings = dict(device="cuda", dropout=0.1, hard_negative_weight=0.3, max_steps=6, save_steps=3)
    straight, split_run = tmp_path / "straight", tmp_path / "split"
    train(demo_config(straight, **settings))
    train(demo_config(split_run, **settings))
    cut_back_to(split_run, 3)
    train(demo_config(split_run, **settings | {"resume_from_checkpoint": "latest"}))
    lines = [
        [json.loads(line) for line in (run / METRICS_NAME).read_text().splitlines()] for run in (straight, split_run)
    ]
    assert [line["step"] for line in lines[1]] == [line["step"] for line in lines[0]]
    for expected, got in zip(*lines):
        for key, value in expected.items():
            if isinstance(value, float):
                assert got[key] == pytest.approx(value, rel=1e-4, abs=1e-5), (expected["step"], key)
    expected, got = (load_file(run / "checkpoint-6" / "model.safetensors") for run in (straight, split_run))
    for name in expected:
        torch.testing.assert_close(got[name], expected[name], atol=1e-5, rtol=1e-4)


def test_k_negatives_train_under_amp(demo_config, demo_data, amp_dtype, tmp_path):
    """Retrieval data with K = 3 negatives per query under AMP: (B, 5, L) batches, the float32 loss over the
    gathered (1 + K) x B candidates, finite and lowering, and the saved model reloads to the logged dev score."""
    rows = [line.split("\t") for line in (demo_data / "train.tsv").read_text(encoding="utf-8").splitlines()[1:]]
    examples = [
        {"query": a, "pos": [p], "neg": [n, rows[i - 1][2], rows[i - 2][2]]} for i, (a, p, n) in enumerate(rows)
    ]
    data = tmp_path / "train.jsonl"
    data.write_text("".join(json.dumps(e, ensure_ascii=False) + "\n" for e in examples), encoding="utf-8")
    output = tmp_path / "run"
    settings = dict(device="cuda", amp=True, train_data=str(data), num_negatives=3, epochs=3, eval_steps=7)
    result = train(demo_config(output, **settings))
    info = json.loads((output / TRAIN_ARGS_NAME).read_text())
    assert info["negatives_per_anchor"] == 15 + 3 * 16 and info["device"]["amp_dtype"] == str(amp_dtype)[6:]
    losses = [json.loads(line)["train_loss"] for line in (output / METRICS_NAME).read_text().splitlines()[1:]]
    assert all(np.isfinite(losses)) and losses[-1] < losses[0]
    score = evaluate_sts(SimCSEModel(output).to(CUDA), load_sts(demo_data / "dev.tsv"))[SELECTION_METRIC]
    assert score == pytest.approx(result.best_score, abs=1e-6)


@pytest.mark.parametrize("kernel", ATTENTION_KERNELS)
def test_512_token_documents_unpadded_equal_padded(tmp_path, korean_sentences, kernel):
    """Documents of up to 512 tokens (a retrieval corpus), unpadded with variable-length attention: the states
    equal the padded forward's in float32, and encode_document under autocast stays within bf16/fp16 of it."""
    from simcse.random_encoder import build_random_encoder

    folder = build_random_encoder(tmp_path / "long", korean_sentences * 20, max_length=512)
    encoder = AutoModel.from_pretrained(folder, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    encoder = encoder.to(CUDA).eval()
    lengths = (512, 3, 300, 77, 511, 128, 2, 450)
    input_ids, attention_mask = padded_batch(encoder.config, lengths)
    weights = torch.randn(sum(lengths), encoder.config.hidden_size, device=CUDA)
    expected, expected_gradients = forward_and_gradients(encoder, input_ids, attention_mask, weights)
    got, got_gradients = forward_and_gradients(encoder, input_ids, attention_mask, weights, kernel)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    for name, error in gradient_errors(got_gradients, expected_gradients).items():
        assert error < 1e-4, name
    documents = [" ".join(korean_sentences[i:] * 12) for i in range(8)]  # long: cut at 512 tokens
    model = SimCSEModel(folder, pooler="avg", document_max_length=512)
    on_cpu = model.encode_document(documents)
    on_gpu = model.to(CUDA).encode_document(documents)
    assert max(len(ids) for ids in model.tokenizer(documents, truncation=True, max_length=512)["input_ids"]) == 512
    cosines = (on_cpu * on_gpu).sum(1) / (np.linalg.norm(on_cpu, axis=1) * np.linalg.norm(on_gpu, axis=1))
    assert cosines.min() > 0.999


@pytest.mark.parametrize("dtype", HALF_DTYPES)
def test_the_recipe_terms_under_autocast_compute_in_float32(tiny_bert_dir, korean_sentences, dtype):
    """The teacher's KL, the margin guard and two Matryoshka sizes on embeddings made under autocast: the loss is
    float32 and equals the loss of the same embeddings cast to float32 outside autocast (no matmul of the loss ran in
    half precision); the KL alone lies within 2 / temperature times the largest change of a cosine of the exact
    embeddings' KL."""
    from simcse import loss
    from simcse.objectives import OBJECTIVES, LossInputs, LossSettings, matryoshka

    skip_unsupported(dtype)
    model = SimCSEModel(tiny_bert_dir, dropout=0.0).to(CUDA).train()
    batch = batch_of(model, korean_sentences, num_sent=3)
    teacher = torch.randn(8, 2, generator=torch.Generator().manual_seed(1)).to(CUDA)
    settings = LossSettings(distill_weight=0.5, false_negative_margin=0.1, matryoshka_dims=(32, 16))

    def recipe_loss(embeddings):
        inputs = LossInputs(embeddings, batch["input_ids"], teacher_scores=teacher)
        return matryoshka(OBJECTIVES["simcse"].loss, inputs, settings, lambda rows: (rows, 0))

    def kl(embeddings):
        candidates = loss.candidate_cosines(embeddings[:, 0], embeddings[:, 1], embeddings[:, 2])
        return loss.distillation(candidates, teacher), candidates.cosines

    with torch.no_grad():
        exact = model(**batch)  # (B, 3, H)
        with torch.autocast("cuda", dtype=dtype):
            half = model(**batch)
            output = recipe_loss(half)
            half_kl, half_cosines = kl(half)
    assert output.loss.dtype == torch.float32 and half_kl.dtype == torch.float32
    assert torch.isfinite(output.loss) and output.masked is not None
    assert output.loss.item() == pytest.approx(recipe_loss(half.float()).loss.item(), abs=1e-5)
    exact_kl, exact_cosines = kl(exact)
    bound = 2 / 0.05 * (half_cosines - exact_cosines).abs().max().item()
    assert abs(half_kl.item() - exact_kl.item()) <= bound + 1e-5


def test_the_whole_recipe_trains_under_amp(demo_config, demo_data, demo_bert, amp_dtype, tmp_path):
    """Distillation, both guards and Matryoshka sizes with --amp and GradCache: finite, lowering losses, the masked
    share logged, and the saved model reloads to the logged dev score."""
    rows = [line.split("\t") for line in (demo_data / "train.tsv").read_text(encoding="utf-8").splitlines()[1:]]
    examples = [
        {"query": a, "pos": [p], "neg": [n, rows[i - 1][2]], "pos_scores": [2.0], "neg_scores": [0.5, -1.0]}
        for i, (a, p, n) in enumerate(rows)
    ]
    data = tmp_path / "scored.jsonl"
    data.write_text("".join(json.dumps(e, ensure_ascii=False) + "\n" for e in examples), encoding="utf-8")
    output = tmp_path / "run"
    settings = dict(
        device="cuda", amp=True, train_data=str(data), num_negatives=2, epochs=3, eval_steps=7, grad_cache_chunk=4,
        distill_weight=0.5, false_negative_margin=0.1, guide_model=str(demo_bert), matryoshka_dims=[32, 16],
    )  # fmt: skip
    result = train(demo_config(output, **settings))
    lines = [json.loads(line) for line in (output / METRICS_NAME).read_text().splitlines()[1:]]
    losses = [line["train_loss"] for line in lines]
    assert all(np.isfinite(losses)) and losses[-1] < losses[0]
    assert all(0 <= line["masked_share"] <= 1 for line in lines)
    score = evaluate_sts(SimCSEModel(output).to(CUDA), load_sts(demo_data / "dev.tsv"))[SELECTION_METRIC]
    assert score == pytest.approx(result.best_score, abs=1e-6)


def test_a_decoder_with_lora_trains_with_bf16_weights(demo_config, demo_data, decoder_of, tmp_path):  # noqa: F811
    """A Qwen3-class decoder, its weights in bf16 (--model_dtype), LoRA adapters in float32, gradient checkpointing,
    GradCache and AMP at once: finite, lowering losses; the merged model saved in bf16 reloads to the dev score."""
    skip_unsupported(torch.bfloat16)
    output = tmp_path / "run"
    settings = dict(
        model=str(decoder_of("qwen3")), pooler="lasttoken", device="cuda", amp=True, model_dtype="bf16", lora_rank=4,
        gradient_checkpointing=True, grad_cache_chunk=4, epochs=3, eval_steps=7, learning_rate=5e-3,
    )  # fmt: skip
    result = train(demo_config(output, **settings))
    losses = [json.loads(line)["train_loss"] for line in (output / METRICS_NAME).read_text().splitlines()[1:]]
    assert all(np.isfinite(losses)) and losses[-1] < losses[0]
    adapters = load_file(output / LORA_ADAPTER_FOLDER / SAFETENSORS_WEIGHTS_NAME)
    assert {tensor.dtype for tensor in adapters.values()} == {torch.float32}
    assert {tensor.dtype for tensor in load_file(output / "model.safetensors").values()} == {torch.bfloat16}
    model = SimCSEModel(output, dtype=torch.bfloat16).to(CUDA)
    score = evaluate_sts(model, load_sts(demo_data / "dev.tsv"))[SELECTION_METRIC]
    assert score == pytest.approx(result.best_score, abs=1e-3)


@pytest.mark.parametrize("family", ["bert", "qwen3"])
def test_gradient_checkpointing_on_cuda_changes_no_loss(demo_config, demo_bert, decoder_of, family, tmp_path):  # noqa: F811
    """Under AMP with dropout: BERT's unpadded pass (variable-length attention) training every weight, and a decoder
    with LoRA, log the losses of the run without checkpointing (CUDA's kernels sum in their own order: 1e-3)."""
    model = dict(model=str(demo_bert)) if family == "bert" else dict(model=str(decoder_of("qwen3")), pooler="lasttoken",
                                                                        lora_rank=4)  # fmt: skip
    losses = {}
    for checkpointing in (False, True):
        output = tmp_path / str(checkpointing)
        train(demo_config(output, **model, device="cuda", amp=True, max_steps=6, eval_steps=2, dropout=0.1,
                          gradient_checkpointing=checkpointing))  # fmt: skip
        losses[checkpointing] = [
            json.loads(line)["train_loss"] for line in (output / METRICS_NAME).read_text().splitlines()[1:]
        ]
    assert losses[True] == pytest.approx(losses[False], abs=1e-3)
