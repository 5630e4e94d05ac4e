"""A run's folder before the loop starts: claiming it, checking what a resume continues from, and starting its
logs. Nothing here deletes or overwrites a file before every check that can fail has passed.

* ``claim_output_folder`` locks ``output_path`` and refuses what the run must not write to (a folder holding an
  earlier run without ``--overwrite_output_path``, a folder holding the user's files, the folder of the model
  being trained). It deletes nothing: ``clear_earlier_run`` does, once the model and data are loaded.
* ``find_resume_point`` checks a checkpoint (files whole, the settings and data of the run, its state files of
  one save) before the run relies on it.
* ``start_logs`` writes train_args.json and starts metrics.jsonl, adopting the logs and best model of another
  run's checkpoint when a resume starts in an empty folder.
"""

from __future__ import annotations

import logging
import math
import platform
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import transformers

import simcse
from simcse import checkpoint, distributed
from simcse.config import PATH_SETTINGS, RESUME_MUST_MATCH, TrainConfig, upgrade_saved_settings
from simcse.loop_state import LoopState
from simcse.run_folder import (
    METRICS_NAME,
    TRAIN_ARGS_NAME,
    RunFolderError,
    RunFolderLock,
    clear_run_folder,
    clearing_problem,
    earlier_run_entries,
    is_run_folder,
    lock_holder,
    read_metrics,
    shown,
    write_json,
    write_metrics,
)
from simcse.run_inputs import example_counts
from simcse.tokenized import TokenizedData

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ResumePoint:
    """A training checkpoint to continue from: its folder, trainer_state.json and training_state.pt."""

    path: Path
    trainer_state: dict
    training_state: dict

    @property
    def run_folder(self) -> Path:
        """The folder of the run that saved the checkpoint."""
        return self.path.parent


def resolved_path(value: str | list[str] | None) -> str | list[str] | None:
    """A local file or folder as its absolute path (each of a mixture's list); a hub name, a dataset name or None
    unchanged."""
    if isinstance(value, list):
        return [resolved_path(one) for one in value]
    return str(Path(value).resolve()) if value and Path(value).exists() else value


def resolved_paths(config: TrainConfig) -> dict[str, str | None]:
    return {name: resolved_path(getattr(config, name)) for name in PATH_SETTINGS}


def check_resumable(config: TrainConfig, trainer_state: dict) -> None:
    """Refuse a resume whose settings differ from the run's, listing every difference. Paths are compared
    resolved: the same file named relatively or absolutely is the same setting."""
    saved = upgrade_saved_settings(trainer_state["config"])
    saved_paths = trainer_state.get("resolved_paths", {})  # absent from checkpoints of earlier releases
    now_paths = resolved_paths(config)
    differences = []
    defaults = TrainConfig.__dataclass_fields__
    for name in RESUME_MUST_MATCH:
        # A setting newer than the checkpoint ran with its default.
        before, now = saved.get(name, defaults[name].default), getattr(config, name)
        if name in PATH_SETTINGS:
            same = saved_paths.get(name, resolved_path(before)) == now_paths[name]
        else:
            same = before == now
        if not same:
            differences.append(f"--{name} {before!r} -> {now!r}")
    if differences:
        raise ValueError("cannot resume with settings that change the run: " + "; ".join(differences))


# ---------------------------------------------------------------------------------------------------
# The output folder


def check_inputs_outside_output(config: TrainConfig) -> None:
    """Refuse a ``--model``, ``--tokenizer`` or checkpoint that lies inside ``--output_path`` or holds it: the run
    would write over (or delete) what it reads."""
    output = Path(config.output_path).resolve()
    for name in ("model", "tokenizer", "resume_from_checkpoint"):
        value = getattr(config, name)
        if not value or value == "latest" or not Path(value).exists():
            continue
        source = Path(value).resolve()
        # A run resumes from a checkpoint of its own folder; it never writes inside a folder it reads.
        inside = source.is_relative_to(output) and name != "resume_from_checkpoint"
        if inside or output.is_relative_to(source):
            raise RunFolderError(
                f"--{name} {value} and --output_path {config.output_path} overlap: the run would write over what "
                "it reads; choose an --output_path outside it"
            )


def check_output_folder(config: TrainConfig, output: Path, locked: bool = False) -> None:
    """Refuse a folder the run must not write to (see ``claim_output_folder``); deletes nothing. ``locked``: this
    run holds the folder's lock."""
    if not locked and (holder := lock_holder(output)):
        raise RunFolderError(RunFolderLock.refusal(output, holder))
    earlier = earlier_run_entries(output)
    resume = config.resume_from_checkpoint
    if not earlier:
        return
    if resume and resume != "latest" and Path(resume).resolve().parent != output.resolve():
        raise RunFolderError(
            f"{output}: holds a run, and checkpoint {resume} belongs to another ({Path(resume).parent}); resume "
            f"into its own folder (--output_path {Path(resume).parent}) or into an empty one"
        )
    if resume:
        return
    if config.overwrite_output_path:
        if problem := clearing_problem(output):
            raise RunFolderError(problem)
    elif is_run_folder(output):
        check_inputs_outside_output(config)  # named first: --overwrite_output_path would not fix an overlap
        raise RunFolderError(
            f"{output}: holds an earlier run ({shown(earlier)}); resume it with --resume_from_checkpoint latest, "
            "start afresh with --overwrite_output_path (deletes it), or choose another --output_path"
        )
    else:
        raise RunFolderError(
            f"{output}: not a run folder of this package (it holds {shown(earlier)}); choose an empty or new "
            "--output_path"
        )


def claim_output_folder(config: TrainConfig, process: distributed.ProcessInfo) -> RunFolderLock | None:
    """Lock ``output_path`` for this run (first process only; the others wait for it) and check it: a fresh run
    needs an empty folder, or ``overwrite_output_path`` and a folder holding only an earlier run's files (cleared
    later, by ``clear_earlier_run``); a resume needs the checkpoint's own run folder or an empty one. Then saves a
    crash cut short are finished or dropped. Returns the lock, held until the run ends."""
    lock = None
    if process.is_main:
        output = Path(config.output_path)
        if output.exists() and not output.is_dir():
            raise RunFolderError(f"--output_path {output}: a file, not a folder")
        check_output_folder(config, output)  # before the lock file: none is left in a folder that is refused
        check_inputs_outside_output(config)
        lock = RunFolderLock(output)
        try:
            check_output_folder(config, output, locked=True)  # again: another run may have written since
            if not config.overwrite_output_path:
                checkpoint.recover(output)
        except BaseException:
            lock.release()
            raise
    distributed.barrier()
    return lock


def clear_earlier_run(config: TrainConfig, output: Path) -> None:
    """With ``--overwrite_output_path``, delete the earlier run's files: called once every check has passed."""
    if config.overwrite_output_path and earlier_run_entries(output):
        clear_run_folder(output)


# ---------------------------------------------------------------------------------------------------
# Resuming


def trainer_state(
    config: TrainConfig,
    loop: LoopState,
    steps_per_epoch: int,
    train_data: list[TokenizedData],
    world_size: int,
    data_fingerprints: dict[str, str],
) -> dict:
    """What a training checkpoint's trainer_state.json holds: where the loop stands, and what
    ``find_resume_point`` checks a resume against (the settings, resolved paths, data fingerprints)."""
    return {
        "step": loop.step,
        "epoch": loop.step // steps_per_epoch,
        "batch_in_epoch": loop.step % steps_per_epoch,
        "num_train_examples": example_counts(train_data),
        "world_size": world_size,
        "loop": loop.to_json(),
        "config": asdict(config),
        "resolved_paths": resolved_paths(config),
        "data_fingerprints": data_fingerprints,
    }


def check_one_save(path: Path, trainer_state: dict, training_state: dict) -> None:
    """Refuse a checkpoint whose files are not of one save: the step of its name, of trainer_state.json and of
    its loop state must agree, and training_state.pt must belong to the weights beside it."""
    steps = {"trainer_state.json step": trainer_state["step"], "its loop step": trainer_state["loop"].get("step")}
    if match := checkpoint.CHECKPOINT_PATTERN.fullmatch(path.name):
        steps["the folder name"] = int(match.group(1))
    if len(set(steps.values())) > 1:
        raise checkpoint.CorruptCheckpointError(
            f"checkpoint {path}: its steps disagree ({', '.join(f'{k} {v}' for k, v in steps.items())}); "
            "it was edited or mixed from several saves"
        )
    weights = checkpoint.weights_fingerprint(path)
    for name, saved in (
        ("trainer_state.json", trainer_state.get("weights_sha256")),
        ("training_state.pt", training_state.get("weights_sha256")),
    ):
        if saved is not None and saved != weights:  # absent from checkpoints of earlier releases
            raise checkpoint.CorruptCheckpointError(
                f"checkpoint {path}: {name} belongs to other weights than its model.safetensors (another run's "
                "or another step's); resume from a checkpoint as it was saved"
            )


def find_resume_point(config: TrainConfig, output: Path, process: distributed.ProcessInfo) -> ResumePoint | None:
    """The checkpoint ``--resume_from_checkpoint`` names, after checking that the run can go on from it: its
    files and the best model's are whole and of one save, the settings are the run's (``check_resumed_data``
    checks the data, once it is read)."""
    if not config.resume_from_checkpoint:
        return None
    path = checkpoint.resolve_checkpoint(config.resume_from_checkpoint, output)
    checkpoint.verify_folder(path.parent, f"the best model in {path.parent} (remove its damaged files to resume)")
    trainer_state = checkpoint.read_trainer_state(path)
    check_resumable(config, trainer_state)
    if trainer_state["world_size"] != process.world_size:
        raise ValueError(f"cannot resume a run of {trainer_state['world_size']} processes with {process.world_size}")
    training_state = checkpoint.read_training_state(path)
    check_one_save(path, trainer_state, training_state)
    return ResumePoint(path, trainer_state, training_state)


def check_resumed_data(
    config: TrainConfig, resume: ResumePoint | None, train_data: list[TokenizedData], fingerprints: dict[str, str]
) -> None:
    """Refuse to resume on training data other than the run's: other example counts, other file contents."""
    if resume is None:
        return
    if resume.trainer_state["num_train_examples"] != example_counts(train_data):
        raise ValueError(
            f"cannot resume: {config.train_data} now holds {example_counts(train_data)} examples, "
            f"the run was started on {resume.trainer_state['num_train_examples']}"
        )
    for name, fingerprint in resume.trainer_state.get("data_fingerprints", {}).items():  # absent before this check
        if fingerprints[name] != fingerprint:
            raise ValueError(f"cannot resume: --{name} {getattr(config, name)} changed since the run started")


# ---------------------------------------------------------------------------------------------------
# The logs


def run_info(config: TrainConfig, device: torch.device, amp_dtype: torch.dtype | None, **extra) -> dict:
    """What train_args.json records: the flags, the library versions, the device and the data sizes."""
    return {
        "args": asdict(config),
        "versions": {
            "simcse": simcse.__version__,
            "python": sys.version.split()[0],
            "torch": torch.__version__,
            "transformers": transformers.__version__,
        },
        "device": {
            "type": device.type,
            "name": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
            "amp_dtype": str(amp_dtype).removeprefix("torch.") if amp_dtype else None,
        },
        **extra,
    }


def prepare_output_folder(
    config: TrainConfig, output: Path, info: dict, model, resume: ResumePoint | None, loop: LoopState
) -> list[dict]:
    """Clear an earlier run (--overwrite_output_path, now that every check has passed), write ``info`` as
    train_args.json and start metrics.jsonl (or cut it back to the step being resumed). Returns the run's history
    so far."""
    clear_earlier_run(config, output)
    print(
        f"model {config.model} ({model.config.model_type}): {info['forward']} forward pass, pooler {model.pooler}"
        + (" with the package's head" if model.owns_head and model.head else "")
        + f"; {info['trainable_parameters']:,} trainable parameters"
        + (f" (LoRA rank {config.lora_rank})" if config.lora_rank else "")
    )
    history = start_logs(output, info, resume, loop.step)
    if resume:
        forget_lost_best_model(output, loop)
    return history


def start_logs(output: Path, info: dict, resume: ResumePoint | None, step: int) -> list[dict]:
    """Write train_args.json and start metrics.jsonl, or cut the resumed run's back to ``step``. A resume from
    another run's checkpoint (into an empty folder) takes that run's lines and its best model. Returns the
    metrics lines kept: the run's history so far."""
    history = []
    if resume:
        source = resume.run_folder / METRICS_NAME
        history = [line for line in read_metrics(source, required=("step",)) if line["step"] <= step]
        if resume.run_folder.resolve() != output.resolve():
            if checkpoint.saved_model_exists(resume.run_folder):
                checkpoint.copy_model(resume.run_folder, output)
            print(f"starting {output} from {resume.path}: its run's metrics up to step {step} and best model")
        print(f"resuming from {resume.path} at step {step}")
    write_json(output / TRAIN_ARGS_NAME, info)
    write_metrics(output / METRICS_NAME, history)
    return history


def forget_lost_best_model(output: Path, state) -> None:
    """A resumed run whose best model was deleted: the next evaluation saves a new one."""
    if state.best_step >= 0 and not checkpoint.saved_model_exists(output):
        logger.warning(
            "%s: the best model (step %d) is gone; the next evaluation saves a new one", output, state.best_step
        )
        state.best_step, state.best_score = -1, -math.inf
