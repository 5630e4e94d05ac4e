"""Saves a crash cannot corrupt, training-state checkpoints, and what exact resumption needs.

Every save is written into a staging folder next to its target and flushed to disk before it is moved
into place. A training checkpoint ``checkpoint-STEP/`` appears by one atomic rename. The best model,
which shares ``output_path`` with the logs, is moved in file by file with the weights last, after a
marker says the staging folder is complete: until then the folder does not load, and a move cut short
by a crash is finished the next time the run starts (``recover``).
"""

from __future__ import annotations

import json
import os
import pickle
import random
import re
import shutil
import sys
import time
import zipfile
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


class CorruptCheckpointError(ValueError):
    """A saved file that cannot be what it claims (truncated weights, JSON that does not parse)."""


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


# ---------------------------------------------------------------------------------------------------
# Checking saved files before relying on them


def _safetensors_problem(path: Path) -> str | None:
    """Why a .safetensors file is not whole: its size must be 8 + header + the data the header lays out."""
    size = path.stat().st_size
    with open(path, "rb") as file:
        if size < 8:
            return f"truncated ({size} bytes, no header)"
        header_size = int.from_bytes(file.read(8), "little")
        if 8 + header_size > size:
            return f"truncated ({size} bytes; the header alone takes {8 + header_size})"
        try:
            header = json.loads(file.read(header_size))
            data_end = max(
                (entry["data_offsets"][1] for key, entry in header.items() if key != "__metadata__"), default=0
            )
        except (ValueError, KeyError, TypeError, IndexError, RecursionError):
            return "its header is not a safetensors header"
    expected = 8 + header_size + data_end
    if size != expected:
        return f"truncated ({size} bytes, the header lays out {expected})" if size < expected else "has trailing bytes"
    return None


def _file_problem(path: Path) -> str | None:
    if path.suffix == ".safetensors":
        return _safetensors_problem(path)
    if path.suffix == ".json":
        try:
            json.loads(path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, ValueError, RecursionError) as err:
            return "nested too deeply" if isinstance(err, RecursionError) else "not valid JSON"
    if path.name == TRAINING_STATE_NAME and not zipfile.is_zipfile(path):
        return "truncated or not a torch.save file"
    return None


def folder_problem(folder: str | os.PathLike) -> str | None:
    """``'FILE: what is wrong'`` for the first saved file of ``folder`` that is not whole (weights whose size
    does not match their header, JSON that does not parse, a truncated training state), else None. Training
    checkpoints and unfinished saves inside ``folder`` are left to their own checks."""
    folder = Path(folder)
    for path in sorted(folder.rglob("*")):
        if not path.is_file() or path.relative_to(folder).parts[0].startswith((CHECKPOINT_PREFIX, STAGING_PREFIX)):
            continue
        if problem := _file_problem(path):
            return f"{path}: {problem}"
    return None


def verify_folder(folder: str | os.PathLike, what: str) -> None:
    """Raise CorruptCheckpointError naming the first damaged file of ``folder`` (``what`` says what it holds)."""
    if problem := folder_problem(folder):
        raise CorruptCheckpointError(f"{what} is damaged: {problem}")


def recover(output: str | os.PathLike) -> None:
    """Finish a best-model save cut short after its staging folder was complete; drop unfinished ones."""
    output = Path(output)
    for staging in output.glob(STAGING_PREFIX + "*"):
        if staging.name == STAGING_PREFIX + "model" and (staging / COMPLETE_MARKER).exists():
            verify_folder(staging, f"the best-model save {staging} that a crash cut short")
            _move_files_into(staging, output)
        else:
            shutil.rmtree(staging)


def _stage(model, staging: Path) -> None:
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    model.save_pretrained(staging)


def saved_model_exists(folder: str | os.PathLike) -> bool:
    """Whether ``folder`` holds a saved model's weights (moved in last by ``save_model``)."""
    return all((Path(folder) / name).is_file() for name in WEIGHTS_LAST)


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
    """``latest`` (the newest complete checkpoint in ``output``) or a checkpoint folder, after checking that
    its files are whole; a damaged one is refused, naming the newest intact checkpoint to resume from."""
    if name == "latest":
        checkpoints = list_checkpoints(output)
        if not checkpoints:
            raise FileNotFoundError(f"{output}: no {CHECKPOINT_PREFIX}STEP folder to resume from")
        path = checkpoints[-1]
    else:
        path = Path(name)
        if not (path / TRAINER_STATE_NAME).is_file():
            raise FileNotFoundError(f"{path}: not a training checkpoint (no {TRAINER_STATE_NAME})")
    if not (path / TRAINING_STATE_NAME).is_file():
        problem = f"{path / TRAINING_STATE_NAME}: missing"
    else:
        problem = folder_problem(path)
    if problem:
        others = [other for other in reversed(list_checkpoints(path.parent)) if other.resolve() != path.resolve()]
        intact = next((other for other in others if not folder_problem(other)), None)
        hint = f"resume from the newest intact one: --resume_from_checkpoint {intact}" if intact else "none is intact"
        raise CorruptCheckpointError(f"checkpoint {path} is damaged: {problem}; {hint}")
    return path


def read_trainer_state(checkpoint: str | os.PathLike) -> dict:
    state = read_json(Path(checkpoint) / TRAINER_STATE_NAME)
    if not isinstance(state, dict) or not {"step", "config", "loop"} <= state.keys():
        raise CorruptCheckpointError(f"{Path(checkpoint) / TRAINER_STATE_NAME}: not a trainer state of this package")
    return state


def read_training_state(checkpoint: str | os.PathLike) -> dict:
    """Optimizer, grad scaler and RNG states; loaded with ``weights_only=True`` (no arbitrary pickle)."""
    path = Path(checkpoint) / TRAINING_STATE_NAME
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise CorruptCheckpointError(
            f"{path}: holds Python objects other than tensors and numbers; refused (torch.load weights_only)"
        ) from err
    except Exception as err:  # whatever a damaged zip raises
        raise CorruptCheckpointError(f"{path}: cannot be loaded, truncated or damaged ({type(err).__name__})") from err


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
