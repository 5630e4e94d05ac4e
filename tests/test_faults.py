"""Runs that cannot be lost or silently wrong: the run folder's lock and its refusal of an earlier run, NaN dev
scores, resuming a finished run, what a resume must keep, non-finite gradients, duplicate-heavy corpora, the
pooler of a plain transformers export, and failures that still end in one line."""

import errno
import fcntl
import json
import logging
import os
import shutil
import signal
import subprocess
import sys

import pytest
import torch
from conftest import TRAIN_SCRIPT, assert_one_line_error
from transformers import AutoModel, AutoTokenizer

import simcse.evaluate
import simcse.hub
import simcse.loss
import simcse.trainer
from simcse import checkpoint
from simcse.batching import EpochBatchSampler
from simcse.model import SimCSEModel
from simcse.run_folder import LOCK_NAME, METRICS_NAME, TRAIN_ARGS_NAME, RunFolderError, RunFolderLock, read_metrics
from simcse.trainer import NonFiniteGradientError, train


def steps_logged(output):
    return [json.loads(line)["step"] for line in (output / METRICS_NAME).read_text().splitlines()]


# ---------------------------------------------------------------------------------------------------
# The run folder


def test_a_second_run_into_a_locked_folder_fails_naming_the_holder(demo_train_flags, run_here, tmp_path):
    """Run A pauses inside its first save; run B into the same folder fails at once naming A's pid; once A is
    killed the OS has released the lock and a run can start afresh there."""
    output = tmp_path / "run"
    env = {**os.environ, "SIMCSE_TEST_PAUSE_IN_SAVE": "best model"}
    holder = subprocess.Popen(
        [sys.executable, str(TRAIN_SCRIPT), *demo_train_flags(output, max_steps=2)],
        env=env,
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
    )
    try:
        for line in holder.stderr:
            if "pausing inside the save of" in line:
                break
        second = run_here(TRAIN_SCRIPT, *demo_train_flags(output, max_steps=2))
        assert_one_line_error(second, str(output), f"another run (pid {holder.pid})")
        second = run_here(TRAIN_SCRIPT, *demo_train_flags(output, max_steps=2, resume_from_checkpoint="latest"))
        assert_one_line_error(second, f"pid {holder.pid}")
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    assert (output / LOCK_NAME).read_text().strip() == str(holder.pid)
    after = run_here(TRAIN_SCRIPT, *demo_train_flags(output, max_steps=2, overwrite_output_path=True))
    assert after.returncode == 0, after.stderr
    assert steps_logged(output) == [0, 2] and not list(output.glob(".staging-*"))


def test_an_earlier_run_is_refused_then_replaced_with_overwrite(config, tmp_path):
    train(config(tmp_path, max_steps=4, save_steps=2))
    with pytest.raises(ValueError, match="holds an earlier run .*checkpoint-2, checkpoint-4"):
        train(config(tmp_path, max_steps=2, save_steps=1))
    assert steps_logged(tmp_path) == [0, 2, 4]  # untouched
    result = train(config(tmp_path, max_steps=2, save_steps=1, overwrite_output_path=True))
    assert [p.name for p in checkpoint.list_checkpoints(tmp_path)] == ["checkpoint-1", "checkpoint-2"]
    assert steps_logged(tmp_path) == [0, 2] and result.steps == 2
    assert json.loads((tmp_path / TRAIN_ARGS_NAME).read_text())["args"]["max_steps"] == 2
    train(config(tmp_path / "new" / "folder", max_steps=1))  # a new folder, or an empty one, needs nothing


def test_a_run_removes_its_lock_and_a_refused_run_the_folders_it_created(config, demo_data, tmp_path):
    """A finished run leaves no lock file; a run refused before writing anything leaves no folder behind (its
    parents included, when it created them), but never removes a folder that held something before."""
    train(config(tmp_path / "done", max_steps=1))
    assert (tmp_path / "done" / METRICS_NAME).is_file() and not (tmp_path / "done" / LOCK_NAME).exists()
    bad = tmp_path / "bad.tsv"
    bad.write_text("sent0\tsent1\n한 문장\n", encoding="utf-8")
    with pytest.raises(ValueError, match="bad.tsv"):
        train(config(tmp_path / "new" / "run", max_steps=1, train_data=str(bad)))
    assert not (tmp_path / "new").exists()
    (tmp_path / "kept").mkdir()
    with pytest.raises(ValueError, match="bad.tsv"):
        train(config(tmp_path / "kept" / "run", max_steps=1, train_data=str(bad)))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.tsv", "done", "kept"]
    assert list((tmp_path / "kept").iterdir()) == []


def test_a_lock_taken_as_its_holder_releases_it_is_the_only_one(tmp_path, monkeypatch):
    """A run that opens the lock file just before its holder deletes it on release then locks a file no longer in
    the folder: it must take the folder's new lock file instead, so that a third run is refused, not let in."""
    first = RunFolderLock(tmp_path)
    real_flock, released = fcntl.flock, []

    def flock_after_the_holder_ends(file, operation):
        if not released:  # the holder releases between the newcomer's open and its flock
            released.append(True)
            first.release()
        return real_flock(file, operation)

    monkeypatch.setattr(fcntl, "flock", flock_after_the_holder_ends)
    second = RunFolderLock(tmp_path)
    monkeypatch.setattr(fcntl, "flock", real_flock)
    assert released and (tmp_path / LOCK_NAME).read_text().strip() == str(os.getpid())
    with pytest.raises(RunFolderError, match="another run"):
        RunFolderLock(tmp_path)
    second.release()
    assert not (tmp_path / LOCK_NAME).exists() and tmp_path.is_dir()


@pytest.fixture
def config(demo_config):
    return demo_config


# ---------------------------------------------------------------------------------------------------
# Dev scores and the final model


def nan_metrics(model, data, batch_size=None, max_length=None, description=None):
    from simcse.evaluate import METRIC_KEYS

    return dict.fromkeys(METRIC_KEYS, float("nan"))


def test_nan_dev_scores_are_never_best_and_the_final_model_is_saved(config, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(simcse.evaluate, "evaluate_sts", nan_metrics)
    pushed = []
    monkeypatch.setattr(simcse.hub, "check_push_access", lambda repo: None)
    monkeypatch.setattr(simcse.hub, "push_checkpoint", lambda folder, repo, private: pushed.append(folder) or "url")
    result = train(config(tmp_path, max_steps=3, push_to_hub="me/model"))
    assert result.best_step == -1 and "no finite dev score" in capsys.readouterr().out
    reloaded = SimCSEModel(tmp_path)
    model_weight = reloaded.encoder.embeddings.word_embeddings.weight
    assert not torch.equal(model_weight, SimCSEModel(config(tmp_path).model).encoder.embeddings.word_embeddings.weight)
    assert pushed == [tmp_path]


# ---------------------------------------------------------------------------------------------------
# Resuming


def test_resuming_a_finished_run_trains_nothing_and_still_pushes(config, tmp_path, monkeypatch, capsys):
    train(config(tmp_path, max_steps=4, save_steps=4))
    before = (tmp_path / "model.safetensors").read_bytes(), (tmp_path / METRICS_NAME).read_text()
    pushed = []
    monkeypatch.setattr(simcse.hub, "check_push_access", lambda repo: None)
    monkeypatch.setattr(simcse.hub, "push_checkpoint", lambda folder, repo, private: pushed.append(repo) or "url")
    result = train(config(tmp_path, max_steps=4, save_steps=4, resume_from_checkpoint="latest", push_to_hub="me/m"))
    assert "already reached its last step (4)" in capsys.readouterr().out
    assert result.steps == 4 and pushed == ["me/m"]
    assert ((tmp_path / "model.safetensors").read_bytes(), (tmp_path / METRICS_NAME).read_text()) == before


def test_resume_compares_paths_resolved_and_data_by_content(config, demo_data, tmp_path, monkeypatch):
    train_copy = tmp_path / "data" / "train.tsv"
    train_copy.parent.mkdir()
    shutil.copy(demo_data / "train.tsv", train_copy)
    output = tmp_path / "run"
    train(config(output, train_data=str(train_copy), max_steps=4, save_steps=2))
    checkpoint.rotate_checkpoints(output, None)
    shutil.rmtree(output / "checkpoint-4")
    monkeypatch.chdir(tmp_path)
    # The same file, named relatively: accepted.
    train(config(output, train_data="data/train.tsv", max_steps=4, save_steps=2, resume_from_checkpoint="latest"))
    shutil.rmtree(output / "checkpoint-4")
    with pytest.raises(ValueError, match="--unpad True -> False"):
        train(
            config(
                output,
                train_data=str(train_copy),
                max_steps=4,
                save_steps=2,
                unpad=False,
                resume_from_checkpoint="latest",
            )
        )
    lines = train_copy.read_text(encoding="utf-8").splitlines()
    lines[1], lines[2] = lines[2], lines[1]  # same rows, another order
    train_copy.write_text("\n".join(lines) + "\n", encoding="utf-8")
    with pytest.raises(ValueError, match="--train_data .* changed since the run started"):
        train(config(output, train_data=str(train_copy), max_steps=4, save_steps=2, resume_from_checkpoint="latest"))


def test_recover_refuses_a_damaged_complete_save(tiny_bert_dir, tmp_path):
    staging = tmp_path / ".staging-model"
    SimCSEModel(tiny_bert_dir).save_pretrained(staging)
    (staging / ".complete").touch()
    weights = staging / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-10])
    with pytest.raises(checkpoint.CorruptCheckpointError, match=r"\.staging-model/model\.safetensors: truncated"):
        checkpoint.recover(tmp_path)


# ---------------------------------------------------------------------------------------------------
# Values that train nothing


class InfiniteGradient(torch.autograd.Function):
    """The identity, whose gradient is infinite: a finite loss whose backward overflows."""

    @staticmethod
    def forward(ctx, loss):
        return loss.clone()

    @staticmethod
    def backward(ctx, grad):
        return grad * float("inf")


def loss_with_infinite_gradient_at(steps):
    real, calls = simcse.loss.info_nce_of, []

    def loss(*args, **kwargs):
        calls.append(1)
        value = real(*args, **kwargs)
        return InfiniteGradient.apply(value) if len(calls) in steps else value

    return loss


def test_a_run_whose_every_step_has_a_non_finite_gradient_stops(config, tmp_path, monkeypatch):
    monkeypatch.setattr(simcse.loss, "info_nce_of", loss_with_infinite_gradient_at(range(1, 100)))
    with pytest.raises(NonFiniteGradientError, match="not finite at each of the 3 steps"):
        train(config(tmp_path, max_steps=3))


def test_a_step_with_a_non_finite_gradient_is_skipped_and_counted(config, tmp_path, monkeypatch):
    untouched = SimCSEModel(config(tmp_path).model)
    monkeypatch.setattr(simcse.loss, "info_nce_of", loss_with_infinite_gradient_at({2}))
    result = train(config(tmp_path, max_steps=3, save_steps=3))
    assert result.skipped_steps == 1 and result.history[-1]["skipped_steps"] == 1
    trained = SimCSEModel(tmp_path / "checkpoint-3")  # the other steps trained: finite weights that moved
    for parameter in trained.parameters():
        assert torch.isfinite(parameter).all()
    before, after = (
        untouched.encoder.embeddings.word_embeddings.weight,
        trained.encoder.embeddings.word_embeddings.weight,
    )
    assert not torch.equal(before, after)


def test_a_corpus_of_repeated_sentences_warns(config, demo_data, tmp_path, caplog):
    sentences = (demo_data / "corpus.txt").read_text(encoding="utf-8").splitlines()[:6]
    corpus = tmp_path / "repeated.txt"
    corpus.write_text("\n".join(sentences * 20) + "\n", encoding="utf-8")
    with caplog.at_level(logging.WARNING, logger="simcse.trainer"):
        train(config(tmp_path / "run", train_data=str(corpus), max_steps=1))
    assert any("repeat the text of an anchor" in record.message for record in caplog.records)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="simcse.trainer"):
        train(config(tmp_path / "plain", max_steps=1))
    assert not any("repeat the text" in record.message for record in caplog.records)


@pytest.mark.parametrize("num_examples, batch_size, world_size", [(9, 4, 1), (17, 8, 1), (25, 8, 1)])
def test_an_epoch_never_ends_in_a_batch_of_one(num_examples, batch_size, world_size):
    sampler = EpochBatchSampler(num_examples, batch_size, seed=0, world_size=world_size)
    sizes = [len(batch) for batch in sampler]
    assert min(sizes) >= 2 and sampler.dropped_per_epoch == 1
    assert sum(sizes) + sampler.dropped_per_epoch == num_examples
    assert len(sizes) == sampler.batches_per_epoch == num_examples // batch_size


# ---------------------------------------------------------------------------------------------------
# The pooler of a folder without simcse_config.json


def test_a_plain_export_keeps_its_trained_pooler_at_evaluation(tiny_bert_dir, tmp_path):
    """The original SimCSE's exports carry the trained head as the encoder's pooler and no simcse_config.json:
    evaluation uses it as saved, every time; only a training start re-initialises it."""
    export = tmp_path / "export"
    encoder = AutoModel.from_pretrained(tiny_bert_dir)
    torch.nn.init.normal_(encoder.pooler.dense.weight, std=0.3)
    encoder.save_pretrained(export)
    AutoTokenizer.from_pretrained(tiny_bert_dir).save_pretrained(export)
    first, second = SimCSEModel(export), SimCSEModel(export)
    torch.testing.assert_close(first.head.dense.weight, encoder.pooler.dense.weight, atol=0, rtol=0)
    sentences = ["한 남자가 기타를 치고 있다.", "고양이가 잔다."]
    assert (first.encode(sentences) == second.encode(sentences)).all()
    fresh = SimCSEModel(export, fresh_head=True)
    assert not torch.equal(fresh.head.dense.weight, encoder.pooler.dense.weight)
    trained = tmp_path / "trained"
    fresh.save_pretrained(trained)  # a SimCSE checkpoint: fresh_head leaves its trained head alone
    torch.testing.assert_close(SimCSEModel(trained, fresh_head=True).head.dense.weight, fresh.head.dense.weight)


# ---------------------------------------------------------------------------------------------------
# Failures a user cannot fix by a flag still end in one line


def test_a_full_disk_says_so(demo_train_flags, run_here, tmp_path, monkeypatch):
    def full(model, staging):
        raise OSError(errno.ENOSPC, "No space left on device", str(staging))

    monkeypatch.setattr(checkpoint, "_stage", full)
    result = run_here(TRAIN_SCRIPT, *demo_train_flags(tmp_path, max_steps=1))
    assert_one_line_error(result, "no space left on", ".staging-model")


def test_a_disk_that_fills_inside_torch_save_says_so(demo_train_flags, run_here, small_disk, tmp_path):
    """A real tmpfs with room for the models but not the training state: torch.save's own error ("[enforce fail
    at inline_container.cc...] unexpected pos") was an unexpected RuntimeError."""
    output = small_disk(512) / "run"
    result = run_here(TRAIN_SCRIPT, *demo_train_flags(output, max_steps=2, save_steps=2, eval_steps=2))
    assert_one_line_error(result, "no space left on", ".staging-checkpoint-2", "--output_path")
    assert (output / "model.safetensors").is_file()  # the best model, whole
    assert not list(output.glob("checkpoint-*"))


def test_an_unexpected_exception_is_one_line_with_the_debug_hint(demo_train_flags, run_here, tmp_path, monkeypatch):
    def broken(*args, **kwargs):
        raise KeyError("cosine_spearman")

    monkeypatch.setattr(simcse.evaluate, "evaluate_sts", broken)
    result = run_here(TRAIN_SCRIPT, *demo_train_flags(tmp_path, max_steps=1))
    assert_one_line_error(result, "unexpected KeyError", "SIMCSE_DEBUG=1")
    monkeypatch.setenv("SIMCSE_DEBUG", "1")
    with pytest.raises(KeyError):
        run_here(TRAIN_SCRIPT, *demo_train_flags(tmp_path / "debug", max_steps=1))


def test_a_run_whose_best_is_its_start_says_the_saved_model_is_the_start(demo_config, tmp_path, capsys, monkeypatch):
    """2 of 7 e5 runs kept step 0, and only "best ... at step 0" said so. Here every evaluation after the start
    scores 1 lower per evaluation than it measured (a learning rate far too high did so only for most demo
    tokenizers: their training is not deterministic)."""
    measure, evaluations = simcse.evaluate.evaluate_sts, []

    def worse_each_time(*args, **kwargs):
        metrics = measure(*args, **kwargs)
        evaluations.append(metrics)
        return {key: value - (len(evaluations) - 1) if isinstance(value, float) else value
                for key, value in metrics.items()}  # fmt: skip

    monkeypatch.setattr(simcse.evaluate, "evaluate_sts", worse_each_time)
    result = train(demo_config(tmp_path, max_steps=4, eval_steps=2))
    lines = read_metrics(tmp_path / METRICS_NAME)
    assert result.best_step == 0 and max(lines, key=lambda line: line["cosine_spearman"])["step"] == 0
    out = capsys.readouterr().out
    assert "no step improved on it, so the saved model is the one training started from" in out


def test_eval_at_start_false_skips_the_step_0_evaluation(demo_config, tmp_path, capsys):
    result = train(demo_config(tmp_path, max_steps=4, eval_steps=2, eval_at_start=False))
    assert [line["step"] for line in read_metrics(tmp_path / METRICS_NAME)] == [2, 4]
    assert result.best_step in (2, 4) and (tmp_path / "model.safetensors").is_file()
    assert "dev cosine Spearman not evaluated before training, best" in capsys.readouterr().out
