"""Saves a crash cannot corrupt, training-state checkpoints, and what exact resumption needs.

Every save is written into a staging folder next to its target and flushed to disk before it is moved
into place. A training checkpoint ``checkpoint-STEP/`` appears by one atomic rename. The best model,
which shares ``output_path`` with the logs, is moved in file by file with the weights last, after a
marker says the staging folder is complete: until then the folder does not load, and a move cut short
by a crash is finished the next time the run starts (``recover``).
"""

from __future__ import annotations

import os
import random
import re
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import torch

from simcse.run_folder import (
    CHECKPOINT_PREFIX,
    STAGING_PREFIX,
    TRAINER_STATE_NAME,
    TRAINING_STATE_NAME,
    read_json,
    write_json,
)

CHECKPOINT_PATTERN = re.compile(re.escape(CHECKPOINT_PREFIX) + r"(\d+)")
COMPLETE_MARKER = ".complete"
WEIGHTS_LAST = ("model.safetensors",)  # moved last: a folder without them does not load


def _pause_for_tests(what: str) -> None:
    """Tests kill the process here, in the middle of a save: SIMCSE_TEST_PAUSE_IN_SAVE names the save."""
    name = os.environ.get("SIMCSE_TEST_PAUSE_IN_SAVE")
    if name and name in what:
        print(f"pausing inside the save of {what}", file=sys.stderr, flush=True)
        time.sleep(600)


def _fsync_tree(folder: Path) -> None:
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            with open(path, "rb") as file:
                os.fsync(file.fileno())
    for directory in [folder, *[p for p in folder.rglob("*") if p.is_dir()]]:
        _fsync_directory(directory)


def _fsync_directory(directory: Path) -> None:
    descriptor = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _move_files_into(staging: Path, target: Path) -> None:
    """Move every file of ``staging`` to the same place under ``target``; the weights go last."""
    files = sorted((p for p in staging.rglob("*") if p.is_file() and p.name != COMPLETE_MARKER), key=str)
    files.sort(key=lambda p: p.relative_to(staging) in {Path(name) for name in WEIGHTS_LAST})
    for source in files:
        destination = target / source.relative_to(staging)
        destination.parent.mkdir(parents=True, exist_ok=True)
        os.replace(source, destination)
    _fsync_directory(target)
    shutil.rmtree(staging)


def recover(output: str | os.PathLike) -> None:
    """Finish a best-model save cut short after its staging folder was complete; drop unfinished ones."""
    output = Path(output)
    for staging in output.glob(STAGING_PREFIX + "*"):
        if staging.name == STAGING_PREFIX + "model" and (staging / COMPLETE_MARKER).exists():
            _move_files_into(staging, output)
        else:
            shutil.rmtree(staging)


def _stage(model, staging: Path) -> None:
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    model.save_pretrained(staging)


def save_model(model, output: str | os.PathLike) -> None:
    """Save ``model`` (a SimCSEModel) into ``output``, replacing the model saved there before."""
    output = Path(output)
    staging = output / (STAGING_PREFIX + "model")
    _stage(model, staging)
    _fsync_tree(staging)
    _pause_for_tests(f"the best model in {output}")
    (staging / COMPLETE_MARKER).touch()
    _fsync_directory(staging)
    _move_files_into(staging, output)


def save_training_checkpoint(model, output: str | os.PathLike, training_state: dict, trainer_state: dict) -> Path:
    """Write ``output/checkpoint-STEP/``: a loadable model plus everything needed to resume exactly."""
    name = f"{CHECKPOINT_PREFIX}{trainer_state['step']}"
    final = Path(output) / name
    staging = Path(output) / f"{STAGING_PREFIX}{name}"
    _stage(model, staging)
    torch.save(training_state, staging / TRAINING_STATE_NAME)
    write_json(staging / TRAINER_STATE_NAME, trainer_state)
    _fsync_tree(staging)
    _pause_for_tests(final.name)
    if final.exists():  # the same step saved again by a resumed run: identical content
        shutil.rmtree(final)
    os.rename(staging, final)
    _fsync_directory(final.parent)
    return final


def list_checkpoints(output: str | os.PathLike) -> list[Path]:
    """Complete training checkpoints in ``output``, oldest first."""
    found = []
    for path in Path(output).glob(CHECKPOINT_PREFIX + "*"):
        match = CHECKPOINT_PATTERN.fullmatch(path.name)
        if match and (path / TRAINER_STATE_NAME).is_file():
            found.append((int(match.group(1)), path))
    return [path for _, path in sorted(found)]


def rotate_checkpoints(output: str | os.PathLike, keep: int | None) -> None:
    """Delete all but the newest ``keep`` training checkpoints (the best model lives apart, never deleted)."""
    if keep is None:
        return
    checkpoints = list_checkpoints(output)
    for path in checkpoints[: max(0, len(checkpoints) - keep)]:
        shutil.rmtree(path)


def resolve_checkpoint(name: str, output: str | os.PathLike) -> Path:
    """``latest`` (the newest complete checkpoint in ``output``) or a checkpoint folder."""
    if name == "latest":
        checkpoints = list_checkpoints(output)
        if not checkpoints:
            raise FileNotFoundError(f"{output}: no {CHECKPOINT_PREFIX}STEP folder to resume from")
        return checkpoints[-1]
    path = Path(name)
    if not (path / TRAINER_STATE_NAME).is_file():
        raise FileNotFoundError(f"{path}: not a training checkpoint (no {TRAINER_STATE_NAME})")
    return path


def read_trainer_state(checkpoint: str | os.PathLike) -> dict:
    return read_json(Path(checkpoint) / TRAINER_STATE_NAME)


def read_training_state(checkpoint: str | os.PathLike) -> dict:
    """Optimizer, grad scaler and RNG states; loaded with ``weights_only=True`` (no arbitrary pickle)."""
    return torch.load(Path(checkpoint) / TRAINING_STATE_NAME, map_location="cpu", weights_only=True)


def rng_state() -> dict:
    """Python, NumPy and torch CPU/CUDA RNG states, as tensors and plain numbers."""
    kind, keys, position, has_gauss, cached_gaussian = np.random.get_state()
    return {
        "python": random.getstate(),
        "numpy": {
            "kind": kind,
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "position": int(position),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached_gaussian),
        },
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    numpy = state["numpy"]
    np.random.set_state(
        (
            numpy["kind"],
            numpy["keys"].numpy().astype(np.uint32),
            numpy["position"],
            numpy["has_gauss"],
            numpy["cached_gaussian"],
        )
    )
    torch.set_rng_state(state["torch"])
    if state["cuda"]:
        torch.cuda.set_rng_state_all(state["cuda"])
