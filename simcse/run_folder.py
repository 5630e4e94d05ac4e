"""The files of a run folder (what train.py, eval.py and the reports write and read), named once."""

from __future__ import annotations

import fcntl
import json
import os
import shutil
from pathlib import Path

METRICS_NAME = "metrics.jsonl"  # one line per evaluation during training
TRAIN_ARGS_NAME = "train_args.json"  # every setting, library versions, device, data sizes
EVAL_RESULTS_NAME = "eval_results.json"  # eval.py's metrics per dataset
SIMCSE_CONFIG_NAME = "simcse_config.json"  # pooler settings and training max length, beside the weights
SIMCSE_HEAD_NAME = "simcse_head.safetensors"  # the head the package created, for encoders without a pooling layer
SUMMARY_NAME = "summary.json"  # mean ± std over seeds
CURVES_NAME = "curves.png"  # training curves
CHECKPOINT_PREFIX = "checkpoint-"  # training checkpoints: checkpoint-STEP/
STAGING_PREFIX = ".staging-"  # a save being written: .staging-model/, .staging-checkpoint-STEP/
TRAINER_STATE_NAME = "trainer_state.json"  # in a training checkpoint: the run's settings and loop state, readable
TRAINING_STATE_NAME = "training_state.pt"  # in a training checkpoint: optimizer, grad scaler, RNG states
LOCK_NAME = ".lock"  # locked by the run writing to the folder, which writes its pid into it
# Only this package writes these: a folder holding one is a run folder, which --overwrite_output_path may clear.
RUN_FOLDER_MARKERS = (TRAIN_ARGS_NAME, METRICS_NAME, SIMCSE_CONFIG_NAME, CHECKPOINT_PREFIX + "*", STAGING_PREFIX + "*")


def read_json(path: str | os.PathLike) -> dict | None:
    """A JSON file's content, or None when there is no such file; a file that does not parse raises ValueError
    naming it."""
    path = Path(path)
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as err:
        raise ValueError(f"{path}: not valid JSON ({_json_problem(err)})") from None


def _json_problem(err: Exception) -> str:
    if isinstance(err, RecursionError):
        return "nested too deeply"
    if isinstance(err, json.JSONDecodeError):
        return f"line {err.lineno}: {err.msg}"
    return "not UTF-8"


def write_json(path: str | os.PathLike, content: dict | list) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(content, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def read_metrics(path: str | os.PathLike) -> list[dict]:
    """The lines of a metrics.jsonl (NaN values are kept as float NaN); a bad line raises ValueError naming it."""
    lines = []
    for number, text in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), start=1):
        if text.strip():
            try:
                lines.append(json.loads(text))
            except (json.JSONDecodeError, RecursionError) as err:
                raise ValueError(f"{path}, line {number}: not valid JSON ({_json_problem(err)})") from None
    return lines


def write_metrics(path: str | os.PathLike, lines: list[dict]) -> None:
    Path(path).write_text("".join(json.dumps(line) + "\n" for line in lines), encoding="utf-8")


def append_metrics(path: str | os.PathLike, line: dict) -> None:
    with Path(path).open("a", encoding="utf-8") as file:
        file.write(json.dumps(line) + "\n")


class RunFolderLock:
    """An exclusive lock on a run folder, so that two runs never write to one folder at once.

    ``flock`` on ``LOCK_NAME``: the OS releases it when the holder exits, however it ends, so a crashed
    run never leaves the folder locked. The holder writes its pid into the file for the refusal to name.
    """

    def __init__(self, folder: str | os.PathLike):
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        self.file = open(folder / LOCK_NAME, "a+", encoding="utf-8")  # held until release
        try:
            fcntl.flock(self.file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self.file.seek(0)
            holder = self.file.read().strip() or "unknown"
            self.file.close()
            raise RunFolderError(
                f"{folder}: another run (pid {holder}) is writing to this folder; wait for it to end or choose "
                "another --output_path"
            ) from None
        self.file.seek(0)
        self.file.truncate()
        self.file.write(f"{os.getpid()}\n")
        self.file.flush()

    def release(self) -> None:
        if not self.file.closed:
            fcntl.flock(self.file, fcntl.LOCK_UN)
            self.file.close()


class RunFolderError(ValueError):
    """An output folder a run must not write to."""


def earlier_run_entries(folder: str | os.PathLike) -> list[str]:
    """What a folder holds besides the lock file, sorted (empty for a new folder)."""
    folder = Path(folder)
    return sorted(path.name for path in folder.iterdir() if path.name != LOCK_NAME) if folder.is_dir() else []


def clear_run_folder(folder: str | os.PathLike) -> None:
    """Delete everything an earlier run left in ``folder`` (the lock file stays). Refused for a folder with no
    sign of a run, so that a mistyped --output_path cannot empty some other folder."""
    folder = Path(folder)
    if not any(any(folder.glob(pattern)) for pattern in RUN_FOLDER_MARKERS):
        raise RunFolderError(
            f"{folder}: holds files but no run of this package ({', '.join(earlier_run_entries(folder)[:5])}); "
            "--overwrite_output_path only clears run folders: choose an empty or new --output_path"
        )
    for path in folder.iterdir():
        if path.name == LOCK_NAME:
            continue
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()
