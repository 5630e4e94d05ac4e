"""The files of a run folder (what train.py, eval.py and the reports write and read), named once."""

from __future__ import annotations

import json
import os
from pathlib import Path

METRICS_NAME = "metrics.jsonl"  # one line per evaluation during training
TRAIN_ARGS_NAME = "train_args.json"  # every setting, library versions, device, data sizes
EVAL_RESULTS_NAME = "eval_results.json"  # eval.py's metrics per dataset
SIMCSE_CONFIG_NAME = "simcse_config.json"  # pooler settings and training max length, beside the weights
SUMMARY_NAME = "summary.json"  # mean ± std over seeds
CURVES_NAME = "curves.png"  # training curves
CHECKPOINT_PREFIX = "checkpoint-"  # training checkpoints: checkpoint-STEP/
STAGING_PREFIX = ".staging-"  # a save being written: .staging-model/, .staging-checkpoint-STEP/
TRAINER_STATE_NAME = "trainer_state.json"  # in a training checkpoint: the run's settings and loop state, readable
TRAINING_STATE_NAME = "training_state.pt"  # in a training checkpoint: optimizer, grad scaler, RNG states


def read_json(path: str | os.PathLike) -> dict | None:
    """A JSON file's content, or None when there is no such file."""
    path = Path(path)
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def write_json(path: str | os.PathLike, content: dict | list) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(content, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def read_metrics(path: str | os.PathLike) -> list[dict]:
    """The lines of a metrics.jsonl (NaN values are kept as float NaN)."""
    return [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]


def write_metrics(path: str | os.PathLike, lines: list[dict]) -> None:
    Path(path).write_text("".join(json.dumps(line) + "\n" for line in lines), encoding="utf-8")


def append_metrics(path: str | os.PathLike, line: dict) -> None:
    with Path(path).open("a", encoding="utf-8") as file:
        file.write(json.dumps(line) + "\n")
