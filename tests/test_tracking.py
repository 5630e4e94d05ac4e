"""--report_to: TensorBoard's event files and wandb's offline run files read back with the trackers' own readers
hold every metrics.jsonl line at its step and the run's settings; a resumed run continues the same curves."""

import dataclasses
import importlib.util
import json
import os
import subprocess
import sys

import pytest
from conftest import TRAIN_SCRIPT, assert_one_line_error

from simcse.run_folder import METRICS_NAME, TENSORBOARD_FOLDER, WANDB_FOLDER, WANDB_RUN_ID_NAME, read_metrics
from simcse.trainer import train

# metrics.jsonl keys and the names the trackers show them under
TAGS = {
    "train_loss": "train/train_loss",
    "learning_rate": "train/learning_rate",
    "skipped_steps": "train/skipped_steps",
    "epoch": "train/epoch",
    "cosine_spearman": "dev/cosine_spearman",
    "avg": "dev/avg",
    "dot_pearson": "dev/dot_pearson",
}


def expected_curves(lines: list[dict]) -> dict[str, list[tuple[int, float]]]:
    return {tag: [(line["step"], line[key]) for line in lines if line[key] is not None] for key, tag in TAGS.items()}


def two_runs_with_a_resume(config, tmp_path, report_to):
    """A 4-step run, then the same run resumed from its step-2 checkpoint: steps 3 and 4 are logged twice."""
    settings = dict(max_steps=4, eval_steps=2, save_steps=2, report_to=report_to)
    train(config(tmp_path, **settings))
    train(config(tmp_path, **settings, resume_from_checkpoint=str(tmp_path / "checkpoint-2")))
    return read_metrics(tmp_path / METRICS_NAME)


@pytest.mark.slow  # two runs: the fast suite stays under 3 minutes
def test_tensorboard_holds_every_line_once_at_its_step_and_the_settings(demo_config, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import plugin_data_pb2

    lines = two_runs_with_a_resume(demo_config, tmp_path, "tensorboard")
    events = EventAccumulator(str(tmp_path / TENSORBOARD_FOLDER))
    events.Reload()
    for tag, expected in expected_curves(lines).items():
        logged = [(event.step, event.value) for event in events.Scalars(tag)]
        assert [step for step, _ in logged] == [step for step, _ in expected], tag  # step 4 once: purged on resume
        assert [value for _, value in logged] == pytest.approx([value for _, value in expected], rel=1e-6), tag
    content = events.PluginTagToContent("hparams")["_hparams_/session_start_info"]
    hparams = plugin_data_pb2.HParamsPluginData.FromString(content).session_start_info.hparams
    config = dataclasses.asdict(demo_config(tmp_path, max_steps=4, eval_steps=2, save_steps=2))
    assert hparams["learning_rate"].number_value == pytest.approx(config["learning_rate"])
    assert hparams["train_data"].string_value == config["train_data"]
    assert hparams["pooler"].string_value == config["pooler"]


def test_a_missing_tracker_package_is_one_line_naming_the_extra(demo_train_flags, run_here, tmp_path, monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "wandb" else real(name, *a))
    result = run_here(TRAIN_SCRIPT, *demo_train_flags(tmp_path / "run", max_steps=1), "--report_to", "wandb")
    assert_one_line_error(result, "--report_to wandb needs the wandb package", "[wandb]")
    assert not (tmp_path / "run").exists()
    both = run_here(TRAIN_SCRIPT, *demo_train_flags(tmp_path / "run", max_steps=1), "--report_to", "none", "wandb")
    assert_one_line_error(both, "--report_to none names no tracker")


def wandb_records(folder) -> list[dict]:
    """Every record of the offline runs under ``folder``, read by wandb's own inspector."""
    records = []
    for run_file in sorted(folder.glob("offline-run-*/run-*.wandb")):
        command = [sys.executable, "-m", "wandb", "leet", "inspect", "--json", str(run_file)]
        output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
        records += [json.loads(line) for line in output.splitlines() if line.startswith("{")]
    return records


@pytest.mark.slow
def test_wandb_without_an_api_key_is_refused_before_anything_is_written(demo_train_flags, tmp_path):
    """It was an unexpected UsageError after the run folder was written, so the corrected command was refused as
    an earlier run. In a fresh process: wandb keeps its login state per process."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("WANDB_")}
    env |= {"HOME": str(tmp_path / "home"), "WANDB_CONFIG_DIR": str(tmp_path / "wandb-config")}  # no ~/.netrc
    flags = [*map(str, demo_train_flags(tmp_path / "run", max_steps=1)), "--report_to", "wandb"]
    command = [sys.executable, str(TRAIN_SCRIPT), *flags]
    refused = subprocess.run(command, capture_output=True, text=True, env=env, stdin=subprocess.DEVNULL)
    assert_one_line_error(refused, "--report_to wandb: no W&B API key", "WANDB_API_KEY", "WANDB_MODE=offline")
    assert not (tmp_path / "run").exists()
    corrected = subprocess.run(command, capture_output=True, text=True, env=env | {"WANDB_MODE": "offline"})
    assert corrected.returncode == 0, corrected.stderr
    assert (tmp_path / "run" / WANDB_RUN_ID_NAME).is_file()


@pytest.mark.slow
def test_wandb_offline_holds_every_line_at_its_step_and_a_resume_continues_the_same_run(
    demo_config, tmp_path, monkeypatch
):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    lines = two_runs_with_a_resume(demo_config, tmp_path, ["tensorboard", "wandb"])
    records = wandb_records(tmp_path / WANDB_FOLDER)
    run_ids = {record["run"]["run_id"] for record in records if record["type"] == "run"}
    assert run_ids == {(tmp_path / WANDB_RUN_ID_NAME).read_text().strip()}  # the resume continued the same run
    history = [record["history"]["item"] for record in records if record["type"] == "history"]
    logged = {}
    for item in history:  # a step logged again by the resumed run replaces the first one, as wandb shows it
        logged[item["_step"]] = item
    assert sorted(logged) == [line["step"] for line in lines]
    for tag, expected in expected_curves(lines).items():
        values = [logged[step].get(tag) for step, _ in expected]
        assert values == pytest.approx([value for _, value in expected], rel=1e-6), tag
    config = next(record["run"]["config"]["update"] for record in records if record["type"] == "run")
    assert config["learning_rate"] == pytest.approx(demo_config(tmp_path).learning_rate)
    assert config["train_data"] == demo_config(tmp_path).train_data
