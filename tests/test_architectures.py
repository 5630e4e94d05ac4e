"""Every encoder architecture the package supports, as a tiny random model with a tokenizer trained here: it trains
(finite gradients on every trainable parameter), saves, reloads to the same vectors, encodes in
sentence-transformers as in the package, and goes through train.py and eval.py."""

import json

import numpy as np
import pytest
import torch
from conftest import TRAIN_SCRIPT, assert_eval_py_scores_the_best_step
from sentence_transformers import SentenceTransformer

from simcse.loss import info_nce
from simcse.model import SimCSEModel
from simcse.random_encoder import ARCHITECTURES
from simcse.run_folder import SIMCSE_HEAD_NAME

# Encoders without a pooling layer of their own: the package creates their head and saves it beside them.
WITHOUT_POOLING_LAYER = ("electra", "deberta-v2", "modernbert")
UNPADDED = ("bert", "roberta", "xlm-roberta")  # simcse.unpad's; the others take the padded forward


@pytest.fixture(params=list(ARCHITECTURES))
def encoder_dir(request, demo_encoder_of):
    return demo_encoder_of(request.param)


def sentences_of(demo_data, count=12):
    return (demo_data / "corpus.txt").read_text(encoding="utf-8").splitlines()[:count]


def test_two_steps_train_every_parameter_then_save_and_reload(encoder_dir, demo_data, tmp_path):
    torch.manual_seed(0)
    model = SimCSEModel(encoder_dir, fresh_head=True, max_length=32).train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    sentences = sentences_of(demo_data)
    batch = model.collator([(ids, ids) for ids in model.tokenizer(sentences)["input_ids"]])
    for _ in range(2):
        optimizer.zero_grad()
        embeddings = model(**batch)  # (B, 2, H)
        info_nce(embeddings[:, 0], embeddings[:, 1]).backward()
        for name, parameter in model.named_parameters():
            if parameter.requires_grad:
                assert parameter.grad is not None, name
                assert torch.isfinite(parameter.grad).all(), name
        optimizer.step()

    model.save_pretrained(tmp_path)
    assert (tmp_path / SIMCSE_HEAD_NAME).exists() == (model.config.model_type in WITHOUT_POOLING_LAYER)
    reloaded = SimCSEModel(tmp_path)
    before, after = model.encode(sentences), reloaded.encode(sentences)
    np.testing.assert_allclose(after, before, atol=1e-6, rtol=0)
    st_vectors = SentenceTransformer(str(tmp_path), device="cpu").encode(sentences, convert_to_numpy=True)
    np.testing.assert_allclose(st_vectors, before, atol=1e-5, rtol=0)


def test_a_fresh_head_is_trained_and_kept(encoder_dir, tmp_path):
    """A created head starts new on every load of a pretrained model and comes back as saved from a checkpoint."""
    first, second = SimCSEModel(encoder_dir, fresh_head=True), SimCSEModel(encoder_dir, fresh_head=True)
    torch.nn.init.normal_(first.head.dense.weight, std=0.5)
    first.save_pretrained(tmp_path)
    torch.testing.assert_close(SimCSEModel(tmp_path).head.dense.weight, first.head.dense.weight, atol=0, rtol=0)
    assert not torch.equal(second.head.dense.weight, first.head.dense.weight)


def test_train_and_eval_scripts_run_on_each_architecture(encoder_dir, demo_data, demo_train_flags, run_here, tmp_path):
    output = tmp_path / "run"
    trained = run_here(TRAIN_SCRIPT, *demo_train_flags(output, model=encoder_dir, max_steps=2))
    assert trained.returncode == 0, trained.stderr
    unpadded = json.loads((encoder_dir / "config.json").read_text())["model_type"] in UNPADDED
    assert ("unpadded, grouped attention" if unpadded else "padded") + " forward pass" in trained.stdout
    assert_eval_py_scores_the_best_step(run_here, output, demo_data / "dev.tsv", tmp_path / "eval.json")
