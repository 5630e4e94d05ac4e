"""The CoSENT objective on scored pairs through the trainer (resume, GradCache), and prompts (e5's "query: ") in
training, encoding, saved checkpoints, sentence-transformers and eval.py."""

import json

import numpy as np
import pytest
import torch
from conftest import EVAL_SCRIPT, TRAIN_SCRIPT, kind_files
from safetensors.torch import load_file
from sentence_transformers import SentenceTransformer
from test_checkpoint import cut_back_to, metrics_lines

import simcse.loss
import simcse.trainer
from simcse.data import load_sts
from simcse.model import SimCSEModel
from simcse.objectives import OBJECTIVES
from simcse.trainer import train


@pytest.fixture
def cosent_config(demo_config, demo_data):
    """CoSENT on the demo's scored pairs (the dev file's 40), selected on the test file."""

    def make(output, **changes):
        settings = dict(
            objective="cosent", train_data=str(demo_data / "dev.tsv"), valid_data=str(demo_data / "test.tsv")
        )
        return demo_config(output, **settings | {"batch_size": 8} | changes)

    return make


def test_cosent_runs_the_loss_on_the_batch_s_scores(cosent_config, demo_data, tmp_path, monkeypatch):
    """Each step's loss is cosent() of the batch's embeddings and the gold scores of exactly its pairs."""
    gold = load_sts(demo_data / "dev.tsv")
    real, seen = simcse.loss.cosent, []  # the objective's loss looks simcse.loss.cosent up at each step

    def recording(embeddings1, embeddings2, scores, **kwargs):
        seen.append((scores.tolist(), kwargs["scale"]))
        return real(embeddings1, embeddings2, scores, **kwargs)

    monkeypatch.setattr(simcse.loss, "cosent", recording)
    result = train(cosent_config(tmp_path, max_steps=5, temp=0.1))
    assert result.steps == 5 and np.isfinite(result.mean_train_loss)
    assert all(scale == pytest.approx(10.0) for _, scale in seen)
    one_epoch = sorted(score for scores, _ in seen for score in scores)
    assert one_epoch == sorted(gold.scores)  # 5 batches of 8: every pair once, with its own score


@pytest.mark.parametrize("objective", OBJECTIVES)
def test_every_objective_resumes_exactly(objective, demo_config, demo_data, tmp_path):
    """Each objective of the table, on a file of its first data kind: a run cut at step 2 and resumed logs the
    same metrics and ends with the same weights as the run never interrupted (dropout on)."""
    kind = OBJECTIVES[objective].data_kinds[0]
    data = kind_files(demo_data, tmp_path)[kind]
    settings = dict(objective=objective, train_data=str(data), valid_data=str(demo_data / "test.tsv"))
    settings |= {"distill_weight": 1.0} if objective == "distill" else {}
    assert_resumes_exactly(demo_config, tmp_path, **settings, batch_size=8, max_steps=4, save_steps=2, dropout=0.1)


def assert_resumes_exactly(demo_config, tmp_path, **settings) -> None:
    """A run cut at its first checkpoint (``save_steps``) and resumed logs the same metrics and holds the same
    weights at its second as the run never interrupted."""
    straight, split = tmp_path / "straight", tmp_path / "split"
    train(demo_config(straight, **settings))
    train(demo_config(split, **settings))
    cut_back_to(split, settings["save_steps"])
    train(demo_config(split, **settings, resume_from_checkpoint="latest"))
    assert metrics_lines(split) == metrics_lines(straight)
    second = f"checkpoint-{2 * settings['save_steps']}"
    expected, got = (load_file(run / second / "model.safetensors") for run in (straight, split))
    for name in expected:
        torch.testing.assert_close(got[name], expected[name], atol=1e-6, rtol=0)


def test_cosent_with_grad_cache_gives_the_whole_batch_s_loss(cosent_config, tmp_path):
    """GradCache embeds the batch in chunks yet ranks all its pairs: the same loss (its gradients are compared
    with the whole batch's in test_distributed)."""
    whole, chunked = tmp_path / "whole", tmp_path / "chunked"
    train(cosent_config(whole, max_steps=1, dropout=0.0))
    train(cosent_config(chunked, max_steps=1, dropout=0.0, grad_cache_chunk=2))
    (expected,), (got,) = (
        [json.loads(line)["train_loss"] for line in metrics_lines(run)[1:]] for run in (whole, chunked)
    )
    assert got == pytest.approx(expected, abs=1e-6)


def test_a_prompt_goes_before_every_sentence_everywhere(demo_bert, demo_data, run_here, tmp_path):
    sentences = load_sts(demo_data / "dev.tsv").sentences1[:6]
    prompted = SimCSEModel(demo_bert, prompt="query: ")
    plain = SimCSEModel(demo_bert)
    np.testing.assert_allclose(prompted.encode(sentences), plain.encode(["query: " + s for s in sentences]), atol=1e-6)
    assert np.abs(prompted.encode(sentences) - plain.encode(sentences)).max() > 1e-4
    prompted.save_pretrained(tmp_path / "saved")
    reloaded = SimCSEModel(tmp_path / "saved")
    assert reloaded.prompt == "query: "
    np.testing.assert_allclose(reloaded.encode(sentences), prompted.encode(sentences), atol=1e-6)
    st_vectors = SentenceTransformer(str(tmp_path / "saved"), device="cpu").encode(sentences, convert_to_numpy=True)
    np.testing.assert_allclose(st_vectors, prompted.encode(sentences), atol=1e-5)
    assert SimCSEModel(tmp_path / "saved", prompt="").prompt == ""  # eval.py --prompt '' overrides it


def test_train_py_trains_and_saves_with_its_prompt(demo_data, demo_train_flags, run_here, tmp_path):
    output = tmp_path / "run"
    trained = run_here(TRAIN_SCRIPT, *demo_train_flags(output, prompt="query: ", max_steps=2))
    assert trained.returncode == 0, trained.stderr
    assert json.loads((output / "simcse_config.json").read_text())["prompt"] == "query: "
    report = tmp_path / "eval.json"
    evaluated = run_here(EVAL_SCRIPT, "--model", output, "--test_data", demo_data / "dev.tsv", "--output_json", report)
    assert evaluated.returncode == 0 and "prompt 'query: '" in evaluated.stdout
    best = max((json.loads(line) for line in metrics_lines(output)), key=lambda line: line["cosine_spearman"])
    score = json.loads(report.read_text())["results"][str(demo_data / "dev.tsv")]["cosine_spearman"]
    assert score == pytest.approx(best["cosine_spearman"], abs=1e-5)
