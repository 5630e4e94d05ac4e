"""Checkpoints: sentence-transformers files, exact resume, saves a crash cannot corrupt, failing safely."""

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import TRAIN_SCRIPT
from safetensors.torch import load_file, save_file
from sentence_transformers import SentenceTransformer

from simcse import checkpoint
from simcse.data import load_sts
from simcse.evaluate import sts_metrics
from simcse.model import SimCSEModel
from simcse.run_folder import METRICS_NAME, TRAIN_ARGS_NAME, TRAINER_STATE_NAME
from simcse.trainer import NonFiniteLossError, train

SENTENCES = [
    "한 남자가 공원에서 기타를 치고 있다.",
    '그는 "내일 보자"라고 말했다.',
    "고양이",
    "여자가 해변에서 수영을 하고 있다, 그리고 아이들이 모래성을 쌓고 있다.",
]


@pytest.fixture
def config(demo_config):
    """The demo run with dropout and a hard-negative weight: ``config(output, **changes)``."""
    return lambda output, **changes: demo_config(output, **{"dropout": 0.1, "hard_negative_weight": 0.3} | changes)


def metrics_lines(output):
    return (output / METRICS_NAME).read_text().splitlines()


def cut_back_to(output, step):
    """Leave ``output`` as a run that died right after saving checkpoint-STEP."""
    for path in checkpoint.list_checkpoints(output):
        if int(path.name.rsplit("-", 1)[1]) > step:
            shutil.rmtree(path)
    lines = [line for line in metrics_lines(output) if json.loads(line)["step"] <= step]
    (output / METRICS_NAME).write_text("\n".join(lines) + "\n")


def kill_while_saving(command: list[str], what: str) -> None:
    """Start train.py, wait until it pauses inside the save of ``what``, and SIGKILL it there."""
    env = {**os.environ, "SIMCSE_TEST_PAUSE_IN_SAVE": what}
    process = subprocess.Popen(command, env=env, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
    for line in process.stderr:
        if "pausing inside the save of" in line and what in line:
            break
    process.send_signal(signal.SIGKILL)
    process.wait()


# ---------------------------------------------------------------------------------------------------
# sentence-transformers format


@pytest.mark.parametrize(
    "pooler, mlp_only_train, modules",
    [
        ("cls", False, ["Transformer", "Pooling", "Dense"]),
        ("cls", True, ["Transformer", "Pooling"]),
        ("cls_before_pooler", False, ["Transformer", "Pooling"]),
        ("avg", False, ["Transformer", "Pooling"]),
    ],
)
def test_sentence_transformers_encodes_like_simcse(tiny_bert_dir, tmp_path, pooler, mlp_only_train, modules):
    torch.manual_seed(0)
    model = SimCSEModel(tiny_bert_dir, pooler=pooler, mlp_only_train=mlp_only_train, max_length=24)
    if model.head is not None:  # a trained-looking head, far from its initialisation
        torch.nn.init.normal_(model.head.dense.weight, std=0.2)
    model.save_pretrained(tmp_path)
    st_model = SentenceTransformer(str(tmp_path), device="cpu")
    assert [type(module).__name__ for module in st_model] == modules
    assert st_model.max_seq_length == model.document_max_length == 128  # one length: the documents'
    ours = model.encode(SENTENCES, max_length=128)
    theirs = st_model.encode(SENTENCES, batch_size=3, convert_to_numpy=True)
    np.testing.assert_allclose(theirs, ours, atol=1e-5)
    # A different pooler really gives different vectors: the comparison above can fail.
    other = SimCSEModel(tmp_path, pooler="avg" if pooler != "avg" else "cls_before_pooler")
    assert np.abs(other.encode(SENTENCES, max_length=24) - ours).max() > 1e-3


@pytest.mark.parametrize("pooler", ["avg", "cls_before_pooler", "cls"])
def test_a_pooling_layer_the_base_model_lacks_is_saved_only_as_the_trained_head(
    tiny_bert_dir, tmp_path, caplog, pooler
):
    """e5 has no pooler weights: transformers fills the layer at random, and a mean-pooled run saved them (199
    tensors where e5 has 197), so outputs.pooler_output silently gave other vectors."""
    weights = load_file(tiny_bert_dir / "model.safetensors")
    without = {name: tensor for name, tensor in weights.items() if not name.startswith("pooler.")}
    assert len(without) == len(weights) - 2
    base = Path(shutil.copytree(tiny_bert_dir, tmp_path / "base"))
    save_file(without, base / "model.safetensors")
    with caplog.at_level("WARNING"):
        SimCSEModel(base, pooler=pooler).encode(["문장"])  # evaluated as it is: a cls head would be noise
    assert ("its pooling layer has no weights" in caplog.text) == (pooler == "cls")
    caplog.clear()
    SimCSEModel(base, pooler=pooler, fresh_head=True).save_pretrained(tmp_path / "saved")  # a run starting
    assert "its pooling layer has no weights" not in caplog.text
    saved = load_file(tmp_path / "saved" / "model.safetensors")
    head = {"pooler.dense.weight", "pooler.dense.bias"} if pooler == "cls" else set()  # cls: the head it trains
    assert set(saved) == set(without) | head
    SimCSEModel(tiny_bert_dir, pooler=pooler).save_pretrained(tmp_path / "kept")  # a base that has them
    kept = load_file(tmp_path / "kept" / "model.safetensors")
    assert set(kept) == set(weights)
    if pooler != "cls":  # saved back as it came
        torch.testing.assert_close(kept["pooler.dense.weight"], weights["pooler.dense.weight"], rtol=0, atol=0)


def test_no_sentence_transformers_files_for_layer_averages(tiny_bert_dir, tmp_path):
    SimCSEModel(tiny_bert_dir, pooler="avg_first_last").save_pretrained(tmp_path)
    assert not (tmp_path / "modules.json").exists()
    assert (tmp_path / "model.safetensors").exists()


def test_sentence_transformers_reproduces_the_logged_dev_score(config, demo_data, tmp_path):
    result = train(config(tmp_path, max_steps=4))
    dev = load_sts(demo_data / "dev.tsv")
    st_model = SentenceTransformer(str(tmp_path), device="cpu")
    vectors = st_model.encode(dev.sentences1 + dev.sentences2, convert_to_numpy=True)
    metrics = sts_metrics(vectors[: len(dev)], vectors[len(dev) :], dev.scores)
    assert metrics["cosine_spearman"] == pytest.approx(result.best_score, abs=1e-5)


# ---------------------------------------------------------------------------------------------------
# Exact resume


def test_resume_gives_the_uninterrupted_run(config, tmp_path):
    """6 steps in one run == 3 steps, stop, resume, 3 steps: same weights and same metrics.jsonl (dropout on)."""
    straight = tmp_path / "straight"
    train(config(straight, max_steps=6, save_steps=3))
    split = tmp_path / "split"
    train(config(split, max_steps=6, save_steps=3))
    cut_back_to(split, 3)
    train(config(split, max_steps=6, save_steps=3, resume_from_checkpoint="latest"))

    assert metrics_lines(split) == metrics_lines(straight)
    assert [json.loads(line)["step"] for line in metrics_lines(split)] == [0, 2, 4, 6]
    expected, got = (
        load_file(straight / "checkpoint-6" / "model.safetensors"),
        load_file(split / "checkpoint-6" / "model.safetensors"),
    )
    assert expected.keys() == got.keys()
    for name in expected:
        torch.testing.assert_close(got[name], expected[name], atol=1e-6, rtol=0)
    # Dropout was on: a run without restoring the RNG state would differ (the comparison can fail).
    assert json.loads(metrics_lines(straight)[1])["train_loss"] != json.loads(metrics_lines(straight)[2])["train_loss"]


@pytest.mark.slow
def test_resume_from_a_fresh_split_matches_too(config, demo_train_flags, tmp_path):
    """Resuming into a new process (subprocess) from a run killed after checkpoint-4 while saving checkpoint-6."""
    reference = tmp_path / "reference"
    train(config(reference, max_steps=8, save_steps=2, eval_steps=3))

    killed = tmp_path / "killed"
    flags = demo_train_flags(killed, dropout=0.1, hard_negative_weight=0.3, eval_steps=3, max_steps=8, save_steps=2)
    command = [sys.executable, str(TRAIN_SCRIPT), *flags]
    kill_while_saving(command, "checkpoint-6")
    # The killed save left a staging folder, never a checkpoint-6 that loads.
    assert [p.name for p in checkpoint.list_checkpoints(killed)] == ["checkpoint-2", "checkpoint-4"]
    assert not (killed / "checkpoint-6").exists() and (killed / ".staging-checkpoint-6").exists()

    resumed = subprocess.run(command + ["--resume_from_checkpoint", "latest"], capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming from" in resumed.stdout and "checkpoint-4 at step 4" in resumed.stdout
    assert not list(killed.glob(".staging-*"))
    assert metrics_lines(killed) == metrics_lines(reference)
    expected, got = (
        load_file(reference / "checkpoint-8" / "model.safetensors"),
        load_file(killed / "checkpoint-8" / "model.safetensors"),
    )
    for name in expected:
        torch.testing.assert_close(got[name], expected[name], atol=1e-6, rtol=0)


def test_resume_refuses_changed_settings(config, tmp_path):
    train(config(tmp_path, max_steps=2, save_steps=2))
    with pytest.raises(ValueError) as error:
        train(config(tmp_path, max_steps=2, save_steps=2, batch_size=8, max_length=32, resume_from_checkpoint="latest"))
    assert "--batch_size 16 -> 8" in str(error.value) and "--max_length 24 -> 32" in str(error.value)
    with pytest.raises(ValueError, match="--model"):
        train(config(tmp_path, model=str(tmp_path), max_steps=2, resume_from_checkpoint="latest"))
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        train(config(tmp_path / "elsewhere", resume_from_checkpoint="latest"))


def test_a_checkpoint_written_before_a_flag_was_renamed_still_resumes(config, tmp_path):
    """Checkpoints of earlier releases record --eval_steps under its old name eval_step: they still resume,
    still refuse a changed value, and the resumed run ends as an uninterrupted one does."""
    straight = tmp_path / "straight"
    train(config(straight, max_steps=4, save_steps=2))
    old = tmp_path / "old"
    train(config(old, max_steps=4, save_steps=2))
    cut_back_to(old, 2)
    for path in (old / "checkpoint-2" / TRAINER_STATE_NAME, old / TRAIN_ARGS_NAME):
        saved = json.loads(path.read_text())
        settings = saved["config"] if "config" in saved else saved["args"]
        settings["eval_step"] = settings.pop("eval_steps")
        path.write_text(json.dumps(saved))

    with pytest.raises(ValueError, match="--eval_steps 2 -> 3"):
        train(config(old, max_steps=4, save_steps=2, eval_steps=3, resume_from_checkpoint="latest"))
    train(config(old, max_steps=4, save_steps=2, resume_from_checkpoint="latest"))
    assert metrics_lines(old) == metrics_lines(straight)
    expected, got = (
        load_file(straight / "checkpoint-4" / "model.safetensors"),
        load_file(old / "checkpoint-4" / "model.safetensors"),
    )
    for name in expected:
        torch.testing.assert_close(got[name], expected[name], atol=0, rtol=0)


def test_save_total_limit_keeps_the_newest_and_the_best(config, tmp_path):
    train(config(tmp_path, max_steps=8, save_steps=2, save_total_limit=2))
    assert [p.name for p in checkpoint.list_checkpoints(tmp_path)] == ["checkpoint-6", "checkpoint-8"]
    assert (tmp_path / "model.safetensors").exists()
    state = checkpoint.read_trainer_state(tmp_path / "checkpoint-8")
    assert state["step"] == 8 and state["epoch"] == 8 // 8 and state["batch_in_epoch"] == 8 % 8
    assert state["config"]["batch_size"] == 16 and state["num_train_examples"] == 120


# ---------------------------------------------------------------------------------------------------
# Saves a crash cannot corrupt


@pytest.mark.slow
def test_best_model_save_killed_before_completion_leaves_nothing_that_loads(demo_train_flags, tmp_path):
    kill_while_saving([sys.executable, str(TRAIN_SCRIPT), *demo_train_flags(tmp_path, max_steps=2)], "best model")
    assert not (tmp_path / "model.safetensors").exists() and not (tmp_path / "config.json").exists()
    with pytest.raises((OSError, ValueError)):  # the folder does not load
        SimCSEModel(tmp_path)
    checkpoint.recover(tmp_path)  # an unfinished staging folder is dropped
    assert not list(tmp_path.glob(".staging-*"))


def move_cut_short(tiny_bert_dir, folder):
    """An old model saved in ``folder``, a new one staged complete, and a crash after one file was moved in."""
    old = SimCSEModel(tiny_bert_dir, max_length=24)
    checkpoint.save_model(old, folder)
    new = SimCSEModel(tiny_bert_dir, max_length=24)
    torch.nn.init.normal_(new.head.dense.weight, std=0.5)
    staging = folder / ".staging-model"
    new.save_pretrained(staging)
    (staging / ".complete").touch()
    os.replace(staging / "2_Dense" / "model.safetensors", folder / "2_Dense" / "model.safetensors")  # crash here
    return old, new


def test_loading_a_folder_whose_move_was_cut_short_gives_the_new_model_and_changes_nothing(tiny_bert_dir, tmp_path):
    old, new = move_cut_short(tiny_bert_dir, tmp_path)
    before = {path: path.read_bytes() for path in tmp_path.rglob("*") if path.is_file()}
    loaded = SimCSEModel(tmp_path)
    torch.testing.assert_close(loaded.head.dense.weight, new.head.dense.weight)
    assert not torch.equal(loaded.head.dense.weight, old.head.dense.weight)  # the comparison can fail
    assert {path: path.read_bytes() for path in tmp_path.rglob("*") if path.is_file()} == before


def test_recover_finishes_a_move_cut_short(tiny_bert_dir, tmp_path, caplog):
    _, new = move_cut_short(tiny_bert_dir, tmp_path)
    checkpoint.recover(tmp_path)
    assert "finished moving in the best model" in caplog.text
    reloaded = SimCSEModel(tmp_path)
    torch.testing.assert_close(reloaded.head.dense.weight, new.head.dense.weight)
    st_head = load_file(tmp_path / "2_Dense" / "model.safetensors")["linear.weight"]
    torch.testing.assert_close(st_head, new.head.dense.weight)


# ---------------------------------------------------------------------------------------------------
# Failing safely


def test_non_finite_loss_stops_with_step_and_last_checkpoint(config, tmp_path, monkeypatch):
    import simcse.loss

    real_loss, calls = simcse.loss.info_nce_of, []

    def loss_that_breaks(*args, **kwargs):
        calls.append(1)
        loss = real_loss(*args, **kwargs)
        return loss * float("nan") if len(calls) == 5 else loss

    monkeypatch.setattr(simcse.loss, "info_nce_of", loss_that_breaks)
    with pytest.raises(NonFiniteLossError, match=r"loss is nan at step 5; last good checkpoint: .*checkpoint-4"):
        train(config(tmp_path, max_steps=8, save_steps=2))


def test_training_state_refuses_arbitrary_pickles(tmp_path):
    (tmp_path / checkpoint.TRAINER_STATE_NAME).write_text("{}")
    torch.save({"optimizer": {}, "payload": Exception("not a tensor")}, tmp_path / checkpoint.TRAINING_STATE_NAME)
    with pytest.raises(checkpoint.CorruptCheckpointError, match="training_state.pt: holds Python objects .* refused"):
        checkpoint.read_training_state(tmp_path)


def test_remote_code_is_off_unless_asked(tiny_bert_dir, monkeypatch):
    import simcse.model

    seen = []
    real = simcse.model.AutoModel.from_pretrained

    def spy(*args, **kwargs):
        seen.append(kwargs.get("trust_remote_code"))
        return real(*args, **kwargs)

    monkeypatch.setattr(simcse.model.AutoModel, "from_pretrained", spy)
    SimCSEModel(tiny_bert_dir)
    SimCSEModel(tiny_bert_dir, trust_remote_code=True)
    assert seen == [False, True]
