"""Saves a crash cannot corrupt, training-state checkpoints, and what exact resumption needs.

Every save is written into a staging folder next to its target and flushed to disk before it is moved
into place. A training checkpoint ``checkpoint-STEP/`` appears by one atomic rename. The best model,
which shares ``output_path`` with the logs, is moved in file by file with the weights last, after a
marker says the staging folder is complete: until then the folder does not load, and a move cut short
by a crash is finished the next time the run starts (``recover``).
"""

from __future__ import annotations

import atexit
import errno
import json
import logging
import os
import pickle
import random
import re
import shutil
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import numpy as np
import torch

from simcse.run_folder import (
    CHECKPOINT_PREFIX,
    LOCK_NAME,
    MODEL_FILE_NAMES,
    STAGING_PREFIX,
    TRAINER_STATE_NAME,
    TRAINING_STATE_NAME,
    WEIGHTS_NAME,
    read_json,
    write_json,
)
from simcse.text_files import file_fingerprint

logger = logging.getLogger(__name__)


class CorruptCheckpointError(ValueError):
    """A saved file that cannot be what it claims (truncated weights, JSON that does not parse)."""


CHECKPOINT_PATTERN = re.compile(re.escape(CHECKPOINT_PREFIX) + r"(\d+)")
COMPLETE_MARKER = ".complete"
WEIGHTS_LAST = (WEIGHTS_NAME,)  # moved last: a folder without them does not load
BEST_MODEL_STAGING = STAGING_PREFIX + "model"
SKIPPED_IN_VIEW = (STAGING_PREFIX, CHECKPOINT_PREFIX, LOCK_NAME)  # not part of a saved model
# What a training_state.pt and a trainer_state.json hold, whatever else they carry.
TRAINING_STATE_KEYS = ("optimizer", "grad_scaler", "rng")
TRAINER_STATE_KEYS = ("step", "config", "loop", "world_size", "num_train_examples")
LOOP_STATE_KEYS = ("step", "best_step", "best_score", "window_loss_sum", "window_loss_count", "total_loss")


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
        if staging.name == BEST_MODEL_STAGING and (staging / COMPLETE_MARKER).exists():
            verify_folder(staging, f"the best-model save {staging} that a crash cut short")
            _move_files_into(staging, output)
            logger.warning("%s: finished moving in the best model whose save a crash cut short", output)
        else:
            shutil.rmtree(staging)


def _disk_full(err: BaseException) -> bool:
    """Whether a failed write ran out of space: safetensors and torch.save report it in their own words."""
    text = str(err)
    return (
        getattr(err, "errno", None) == errno.ENOSPC
        or "No space left" in text
        or "code: 28" in text  # safetensors' Rust IoError
        or "StorageFull" in text
    )


def _writing(what: Path, write) -> None:
    """Run ``write``; a full disk, however the writer reports it, becomes OSError(ENOSPC) naming ``what``."""
    try:
        write()
    except Exception as err:
        if _disk_full(err) or (isinstance(err, RuntimeError) and _torch_write_failed(err) and _nearly_full(what)):
            raise OSError(errno.ENOSPC, "No space left on device", str(what)) from err
        raise


def _torch_write_failed(err: RuntimeError) -> bool:
    """torch.save's zip writer failing: "file write failed", or on a full disk "[enforce fail at
    inline_container.cc:...] . unexpected pos 576 vs 534" (torch 2.13)."""
    return "write" in str(err) or "inline_container" in str(err)


def _nearly_full(path: Path) -> bool:
    """torch.save's errors do not say why it failed: the disk is the cause when under 1 MiB is left."""
    folder = next((p for p in [path, *path.parents] if p.exists()), Path("."))
    return shutil.disk_usage(folder).free < 1 << 20


def finished_move_view(folder: str | os.PathLike) -> Path:
    """The model a best-model save cut short while moving in (``interrupted_move``) would leave in ``folder``
    once ``recover`` finished it, as a temporary folder of links: each file from the staging folder where it still
    lies, else the folder's own (moved in already). Nothing in ``folder`` changes."""
    folder = Path(folder)
    view = Path(tempfile.mkdtemp(prefix="simcse-interrupted-save-"))
    atexit.register(shutil.rmtree, view, True)
    for root in (folder, folder / BEST_MODEL_STAGING):  # the staging folder last: its files win
        for path in root.rglob("*"):
            relative = path.relative_to(root)
            if path.is_dir() or path.name == COMPLETE_MARKER or relative.parts[0].startswith(SKIPPED_IN_VIEW):
                continue
            link = view / relative
            link.parent.mkdir(parents=True, exist_ok=True)
            link.unlink(missing_ok=True)
            link.symlink_to(path.resolve())
    return view


def _stage(model, staging: Path) -> None:
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    _writing(staging, lambda: model.save_pretrained(staging))


def saved_model_exists(folder: str | os.PathLike) -> bool:
    """Whether ``folder`` holds a saved model's weights (moved in last by ``save_model``)."""
    return all((Path(folder) / name).is_file() for name in WEIGHTS_LAST)


def save_model(model, output: str | os.PathLike) -> None:
    """Save ``model`` (a SimCSEModel) into ``output``, replacing the model saved there before."""
    output = Path(output)
    staging = output / BEST_MODEL_STAGING
    _stage(model, staging)
    _move_in_when_complete(staging, output)


def _move_in_when_complete(staging: Path, output: Path) -> None:
    _fsync_tree(staging)
    _pause_for_tests(f"the best model in {output}")
    (staging / COMPLETE_MARKER).touch()
    _fsync_directory(staging)
    _pause_for_tests(f"the move into {output}")
    _move_files_into(staging, output)


def copy_model(source: str | os.PathLike, output: str | os.PathLike) -> None:
    """Copy the model saved in ``source`` (its model files only, not its logs or checkpoints) into ``output``,
    as crash-safely as ``save_model``."""
    source, output = Path(source), Path(output)
    staging = output / BEST_MODEL_STAGING
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    for name in MODEL_FILE_NAMES:
        path = source / name
        if path.is_dir():
            shutil.copytree(path, staging / name)
        elif path.is_file():
            shutil.copy2(path, staging / name)
    _move_in_when_complete(staging, output)


def interrupted_move(folder: str | os.PathLike) -> bool:
    """Whether a best-model save into ``folder`` was cut short while its files were being moved in: the folder
    may then hold new files beside old ones."""
    return (Path(folder) / BEST_MODEL_STAGING / COMPLETE_MARKER).exists()


def weights_fingerprint(folder: str | os.PathLike) -> str:
    """SHA-256 of a saved model's weights: ties a checkpoint's training state to the weights it was saved with."""
    return file_fingerprint(Path(folder) / WEIGHTS_NAME)


def save_training_checkpoint(model, output: str | os.PathLike, training_state: dict, trainer_state: dict) -> Path:
    """Write ``output/checkpoint-STEP/``: a loadable model plus everything needed to resume exactly."""
    name = f"{CHECKPOINT_PREFIX}{trainer_state['step']}"
    final = Path(output) / name
    staging = Path(output) / f"{STAGING_PREFIX}{name}"
    _stage(model, staging)
    weights = weights_fingerprint(staging)  # both state files name the weights they belong to
    _writing(staging, lambda: torch.save(training_state | {"weights_sha256": weights}, staging / TRAINING_STATE_NAME))
    write_json(staging / TRAINER_STATE_NAME, trainer_state | {"weights_sha256": weights})
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


def _missing_keys(content: object, keys: tuple[str, ...]) -> list[str]:
    return [key for key in keys if not isinstance(content, dict) or key not in content]


def read_trainer_state(checkpoint: str | os.PathLike) -> dict:
    path = Path(checkpoint) / TRAINER_STATE_NAME
    state = read_json(path)
    missing = _missing_keys(state, TRAINER_STATE_KEYS)
    if not missing:
        missing = [f"loop.{key}" for key in _missing_keys(state["loop"], LOOP_STATE_KEYS)]
    if missing:
        raise CorruptCheckpointError(f"{path}: not a trainer state of this package (no {', '.join(missing)})")
    return state


def read_training_state(checkpoint: str | os.PathLike) -> dict:
    """Optimizer, grad scaler and RNG states; loaded with ``weights_only=True`` (no arbitrary pickle)."""
    path = Path(checkpoint) / TRAINING_STATE_NAME
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise CorruptCheckpointError(
            f"{path}: holds Python objects other than tensors and numbers; refused (torch.load weights_only)"
        ) from err
    except Exception as err:  # whatever a damaged zip raises
        raise CorruptCheckpointError(f"{path}: cannot be loaded, truncated or damaged ({type(err).__name__})") from err
    if missing := _missing_keys(state, TRAINING_STATE_KEYS):
        raise CorruptCheckpointError(f"{path}: not a training state of this package (no {', '.join(missing)})")
    return state


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
