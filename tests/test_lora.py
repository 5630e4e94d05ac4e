"""LoRA adapters (peft) and gradient checkpointing: only the adapters train, the merged model saved equals the
adapted one and loads without peft, resume is bit-exact, GradCache and two processes (gloo) give the gradients of
one whole batch, and gradient checkpointing changes no number."""

import gc
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from peft import PeftModel
from peft.utils import SAFETENSORS_WEIGHTS_NAME
from safetensors.torch import load_file
from test_checkpoint import cut_back_to, metrics_lines
from test_decoders import decoder_of  # noqa: F401  (the fixture)
from torch.nn.parallel import DistributedDataParallel
from transformers import AutoModel

from simcse import distributed
from simcse.grad_cache import chunked_backward
from simcse.lora import LoraSettings, add_adapters
from simcse.loss import info_nce
from simcse.model import SimCSEModel
from simcse.random_encoder import DECODER_ARCHITECTURES
from simcse.run_folder import LORA_ADAPTER_FOLDER
from simcse.run_inputs import enable_gradient_checkpointing
from simcse.trainer import Trainer, train

LORA = dict(pooler="lasttoken", lora_rank=4, lora_alpha=8.0)


@pytest.fixture
def lora_config(demo_config, decoder_of):  # noqa: F811
    def make(output, **changes):
        return demo_config(output, **dict(model=str(decoder_of("qwen3"))) | LORA | changes)

    return make


def adapter_weights(folder):
    return load_file(folder / LORA_ADAPTER_FOLDER / SAFETENSORS_WEIGHTS_NAME)


def test_only_the_adapters_train(lora_config, decoder_of, tmp_path):  # noqa: F811
    trainer = Trainer(lora_config(tmp_path / "run", max_steps=3, eval_steps=3))
    try:
        named = dict(trainer.model.named_parameters())
        held = {id(p) for group in trainer.optimizer.param_groups for p in group["params"]}
        adapters = {name for name in named if ".lora_" in name}
        assert adapters and {name for name, p in named.items() if id(p) in held} == adapters
        before = {name: p.detach().clone() for name, p in named.items()}
        trainer.fit()
    finally:
        trainer.close()
    changed = {name for name, p in named.items() if not torch.equal(p, before[name])}
    assert changed == adapters  # every adapter moved, nothing else
    base = AutoModel.from_pretrained(decoder_of("qwen3")).state_dict()
    merged = load_file(tmp_path / "run" / "model.safetensors")
    assert set(merged) == set(base)  # a plain model's weights: no adapter, no base_layer
    # Every linear layer adapted (all-linear): those differ from the base, the norms and embeddings do not.
    for key, tensor in merged.items():
        assert torch.equal(tensor, base[key]) == (not key.endswith("proj.weight")), key


def adapted_run(lora_config, output, demo_data, **changes):
    """Two LoRA steps into ``output``: the trainer, sentences, and the adapted model's vectors of them."""
    trainer = Trainer(lora_config(output, max_steps=2, eval_steps=2, eval_at_start=False, **changes))
    try:
        trainer.fit()
        sentences = (demo_data / "corpus.txt").read_text(encoding="utf-8").splitlines()[:12]
        adapted = trainer.model.encode(sentences)
    finally:
        trainer.close()
    return trainer, sentences, adapted


@pytest.mark.parametrize("family", ["qwen3", "bert"])
def test_the_merged_model_equals_the_adapted_one_and_peft_s_loader(lora_config, demo_bert, demo_data, tmp_path,
                                                                    family):  # fmt: skip
    """A decoder, and an encoder with a pooler of no head (BERT's frozen pooling layer saved back beside)."""
    output = tmp_path / "run"
    encoder = dict(model=str(demo_bert), pooler="avg", lora_target_modules=["query", "value"])
    trainer, sentences, adapted = adapted_run(lora_config, output, demo_data, **encoder if family == "bert" else {})
    np.testing.assert_allclose(SimCSEModel(output).encode(sentences), adapted, atol=1e-5, rtol=0)
    # peft's own loader on the base model and lora_adapter/ gives the same states as the merged folder.
    base = AutoModel.from_pretrained(trainer.config.model)
    peft_model = PeftModel.from_pretrained(base, output / LORA_ADAPTER_FOLDER).eval()
    ids = torch.tensor([trainer.model.tokenizer(sentences[0])["input_ids"]])
    with torch.no_grad():
        expected = AutoModel.from_pretrained(output)(input_ids=ids).last_hidden_state
        torch.testing.assert_close(peft_model(input_ids=ids).last_hidden_state, expected, atol=1e-5, rtol=0)


@pytest.mark.slow
def test_the_merged_model_loads_without_peft(lora_config, demo_data, tmp_path):
    """In a process where peft cannot be imported, sentence-transformers loads the merged folder to the vectors of
    the adapted model."""
    output = tmp_path / "run"
    _, sentences, adapted = adapted_run(lora_config, output, demo_data)
    script = (
        "import sys, json; sys.modules['peft'] = None\n"
        "from sentence_transformers import SentenceTransformer\n"
        f"vectors = SentenceTransformer({str(output)!r}, device='cpu').encode({sentences!r})\n"
        "print(json.dumps(vectors.tolist()))\n"
    )
    env = os.environ | {"HF_HUB_OFFLINE": "1"}
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, check=True)
    np.testing.assert_allclose(np.array(json.loads(result.stdout)), adapted, atol=1e-5, rtol=0)


def test_a_lora_run_resumes_bit_exactly(lora_config, tmp_path):
    settings = dict(max_steps=4, save_steps=2, eval_steps=2, dropout=0.1, lora_dropout=0.1)
    straight, split = tmp_path / "straight", tmp_path / "split"
    train(lora_config(straight, **settings))
    train(lora_config(split, **settings))
    cut_back_to(split, 2)
    train(lora_config(split, **settings, resume_from_checkpoint="latest"))
    assert metrics_lines(split) == metrics_lines(straight)
    expected, got = (adapter_weights(run / "checkpoint-4") for run in (straight, split))
    assert expected.keys() == got.keys()
    for name in expected:
        assert torch.equal(got[name], expected[name]), name


def trained_weights(config, output, **changes):
    train(config(output, **changes))
    return load_file(output / "model.safetensors")


def assert_same_weights(got, expected, what):
    for key, tensor in expected.items():
        torch.testing.assert_close(got[key], tensor, atol=1e-6, rtol=0, msg=f"{what}: {key}")


@pytest.mark.parametrize("model_type", ["qwen3", "bert"])
def test_gradient_checkpointing_trains_to_the_same_weights(lora_config, demo_bert, tmp_path, model_type):
    """Dropout on (its masks replayed in the recomputation): a decoder with LoRA, and BERT's unpadded pass with
    every weight training, end at the weights of the run without checkpointing, with GradCache too."""
    changes = dict(max_steps=2, eval_steps=2, eval_at_start=False, dropout=0.1)
    if model_type == "bert":
        changes |= dict(model=str(demo_bert), pooler="cls", lora_rank=None, lora_alpha=None)
    else:
        changes |= dict(lora_dropout=0.1)
    for name, run in {"alone": {}, "with GradCache": dict(grad_cache_chunk=4)}.items():
        plain = trained_weights(lora_config, tmp_path / f"plain {name}", **changes, **run)
        checkpointed = trained_weights(lora_config, tmp_path / name, **changes, **run, gradient_checkpointing=True)
        assert_same_weights(checkpointed, plain, f"gradient checkpointing {name}")


def adapter_gradients(model, batch, chunk=None) -> dict[str, torch.Tensor]:
    model.zero_grad()

    def loss(embeddings):
        return info_nce(embeddings[:, 0], embeddings[:, 1])

    if chunk:
        chunked_backward(lambda part: model(**part), batch, loss, chunk)
    else:
        loss(model(**batch)).backward()
    return {name: p.grad.clone() for name, p in model.named_parameters() if p.requires_grad}


def test_grad_cache_with_lora_gives_the_whole_batch_s_gradients(decoder_of, demo_data):  # noqa: F811
    """Dropout off (GradCache draws its masks chunk by chunk, the whole batch at once): the same adapter gradients,
    with gradient checkpointing on as well."""
    torch.manual_seed(0)
    model = SimCSEModel(decoder_of("qwen3"), pooler="lasttoken", dropout=0.0, max_length=32)
    add_adapters(model, LoraSettings(rank=4, alpha=8.0, dropout=0.0, target_modules="all-linear"))
    for name, parameter in model.named_parameters():
        if name.endswith("lora_B.default.weight"):  # peft starts B at zero: let every adapter have a gradient
            torch.nn.init.normal_(parameter, std=0.02)
    sentences = (demo_data / "corpus.txt").read_text(encoding="utf-8").splitlines()[:8]
    batch = model.collator([(ids, ids) for ids in model.tokenizer(sentences)["input_ids"]])
    whole = adapter_gradients(model.train(), batch)
    assert whole and all(".lora_" in name for name in whole)
    for checkpointing in (False, True):
        if checkpointing:
            enable_gradient_checkpointing(model)
        chunked = adapter_gradients(model, batch, chunk=2)
        for name, gradient in whole.items():
            torch.testing.assert_close(chunked[name], gradient, atol=1e-6, rtol=0, msg=name)


WORLD, BATCH = 2, 8


def ddp_worker(rank, model_dir, init_file, out_dir):
    os.environ["HF_HUB_OFFLINE"] = "1"
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD)
    torch.set_num_threads(1)
    settings = LoraSettings(rank=4, alpha=8.0, dropout=0.0, target_modules="all-linear")
    models = []
    for checkpointing in (False, True):
        torch.manual_seed(0)  # the same adapters in both
        model = SimCSEModel(model_dir, pooler="lasttoken", dropout=0.0)
        add_adapters(model, settings)
        if checkpointing:
            enable_gradient_checkpointing(model)
        for name, parameter in model.named_parameters():
            if name.endswith("lora_B.default.weight"):  # peft starts B at zero: give every adapter a gradient path
                torch.nn.init.normal_(parameter, std=0.02, generator=torch.Generator().manual_seed(len(name)))
        models.append(model.train())
    reference, model = models
    sentences = [f"문장 {i}번은 서울의 날씨를 말한다" * (1 + i % 3) for i in range(BATCH)]
    batch = reference.collator([(ids, ids) for ids in reference.tokenizer(sentences)["input_ids"]])
    embeddings = reference(**batch)
    info_nce(embeddings[:, 0], embeddings[:, 1]).backward()
    rows = slice(rank * BATCH // WORLD, (rank + 1) * BATCH // WORLD)
    local = {key: value[rows] for key, value in batch.items()}
    ddp = DistributedDataParallel(model)

    def local_loss(e):
        return info_nce(e[:, 0], e[:, 1], gather=distributed.gather)

    chunked_backward(lambda chunk: ddp(**chunk), local, local_loss, 2, no_sync=ddp.no_sync)
    expected = dict(reference.named_parameters())
    differences = {  # relative to the gradient's size: the sums run in another order
        name: ((parameter.grad - expected[name].grad).abs().max() / expected[name].grad.abs().max()).item()
        for name, parameter in model.named_parameters()
        if parameter.requires_grad
    }
    (out_dir / f"rank{rank}.json").write_text(json.dumps(differences))
    dist.barrier()
    ddp = model = None
    gc.collect()
    dist.barrier()
    dist.destroy_process_group()


def test_two_processes_with_lora_grad_cache_and_checkpointing_equal_one(decoder_of, tmp_path):  # noqa: F811
    """A decoder with LoRA over two processes (gloo), GradCache and gradient checkpointing on: every adapter's
    gradient equals one process's on the whole batch."""
    mp.spawn(ddp_worker, args=(decoder_of("qwen3"), tmp_path / "init", tmp_path), nprocs=WORLD, join=True)
    for rank in range(WORLD):
        differences = json.loads((tmp_path / f"rank{rank}.json").read_text())
        assert differences and all(".lora_" in name for name in differences)
        assert max(differences.values()) <= 1e-5, differences


@pytest.mark.parametrize("family", ["bert", "roberta", "xlm-roberta", "electra", "deberta-v2", "modernbert", "qwen3",
                                    "qwen2", "llama", "gemma3_text", "mistral"])  # fmt: skip
def test_gradient_checkpointing_gives_every_family_the_same_gradients(family, demo_encoder_of, decoder_of, demo_data):  # noqa: F811
    """Dropout on, every weight training: the gradients of one step with and without checkpointing are equal."""
    folder = decoder_of(family) if family in DECODER_ARCHITECTURES else demo_encoder_of(family)
    pooler = "lasttoken" if family in DECODER_ARCHITECTURES else "avg"
    sentences = (demo_data / "corpus.txt").read_text(encoding="utf-8").splitlines()[:8]
    gradients = []
    for checkpointing in (False, True):
        torch.manual_seed(0)
        model = SimCSEModel(folder, pooler=pooler, dropout=0.1, max_length=32).train()
        if checkpointing:
            enable_gradient_checkpointing(model)
        # The first layer's feed-forward block is entered once per pass, and again in the backward pass when
        # checkpointed (a pre-hook: the recomputation stops inside the block, once it has what the backward needs).
        feed_forward = next(m for n, m in model.encoder.named_modules() if n.endswith(("0.mlp", "0.intermediate")))
        calls = []
        feed_forward.register_forward_pre_hook(lambda *_, calls=calls: calls.append(1))
        batch = model.collator([(ids, ids) for ids in model.tokenizer(sentences)["input_ids"]])
        torch.manual_seed(1)  # the same dropout masks
        embeddings = model(**batch)
        info_nce(embeddings[:, 0], embeddings[:, 1]).backward()
        assert len(calls) == 1 + checkpointing
        gradients.append({name: p.grad for name, p in model.named_parameters() if p.grad is not None})
    plain, checkpointed = gradients
    assert plain.keys() == checkpointed.keys() and len(plain) > 10
    for name, gradient in plain.items():
        torch.testing.assert_close(checkpointed[name], gradient, atol=1e-7, rtol=1e-5, msg=name)
