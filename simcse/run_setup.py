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
from simcse.data import DATA_KINDS, STSData, TrainData, load_sts, resolve_sts_path
from simcse.model import SimCSEModel
from simcse.model_loading import unknown_token_share
from simcse.objectives import OBJECTIVES
from simcse.retrieval import RetrievalData, dev_split, is_retrieval_set, load_retrieval_set, set_files
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
from simcse.text_files import file_fingerprint
from simcse.unpad import attention_kernel

logger = logging.getLogger(__name__)

DATA_SETTINGS = ("train_data", "valid_data")  # the files a resumed run must still read as they were
# Sentences of the training data (and of the dev set) a tokenizer is probed with, and the share of unknown
# tokens it may produce.
TOKENIZER_PROBE_SIZE = 2000
UNKNOWN_SHARE_LIMIT = 0.5


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


def resolved_path(value: str | None) -> str | None:
    """A local file or folder as its absolute path; a hub name, a dataset name or None unchanged."""
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


def data_fingerprints(config: TrainConfig) -> dict[str, str]:
    """A hash of the training file and of the dev file (either may be a dataset name; the dev set may be a
    retrieval set, its three files hashed): what a resumed run must still read."""
    fingerprints = {}
    for name in DATA_SETTINGS:
        value = getattr(config, name)
        if name == "valid_data" and is_retrieval_set(value):
            files = set_files(value, dev_split(value, config.data_dir), config.data_dir)
            fingerprints[name] = "+".join(file_fingerprint(path) for path in files)
        else:
            fingerprints[name] = file_fingerprint(resolve_sts_path(value, config.data_dir))
    return fingerprints


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


def trainer_state(trainer) -> dict:
    """What a training checkpoint's trainer_state.json holds of a ``Trainer``: where the loop stands, and what
    ``find_resume_point`` checks a resume against (the settings, resolved paths, data fingerprints)."""
    step, steps_per_epoch = trainer.state.step, trainer.schedule.steps_per_epoch
    return {
        "step": step,
        "epoch": step // steps_per_epoch,
        "batch_in_epoch": step % steps_per_epoch,
        "num_train_examples": trainer.sampler.num_examples,
        "world_size": trainer.process.world_size,
        "loop": trainer.state.to_json(),
        "config": asdict(trainer.config),
        "resolved_paths": resolved_paths(trainer.config),
        "data_fingerprints": trainer.data_fingerprints,
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


def find_resume_point(
    config: TrainConfig,
    output: Path,
    process: distributed.ProcessInfo,
    train_data: TrainData,
    fingerprints: dict[str, str],
) -> ResumePoint | None:
    """The checkpoint ``--resume_from_checkpoint`` names, after checking that the run can go on from it: its
    files and the best model's are whole and of one save, the settings and the data are the run's."""
    if not config.resume_from_checkpoint:
        return None
    path = checkpoint.resolve_checkpoint(config.resume_from_checkpoint, output)
    checkpoint.verify_folder(path.parent, f"the best model in {path.parent} (remove its damaged files to resume)")
    trainer_state = checkpoint.read_trainer_state(path)
    check_resumable(config, trainer_state)
    if trainer_state["world_size"] != process.world_size:
        raise ValueError(f"cannot resume a run of {trainer_state['world_size']} processes with {process.world_size}")
    if trainer_state["num_train_examples"] != len(train_data):
        raise ValueError(
            f"cannot resume: {config.train_data} now holds {len(train_data)} examples, "
            f"the run was started on {trainer_state['num_train_examples']}"
        )
    for name, fingerprint in trainer_state.get("data_fingerprints", {}).items():  # absent before this check
        if fingerprints[name] != fingerprint:
            raise ValueError(f"cannot resume: --{name} {getattr(config, name)} changed since the run started")
    training_state = checkpoint.read_training_state(path)
    check_one_save(path, trainer_state, training_state)
    return ResumePoint(path, trainer_state, training_state)


# ---------------------------------------------------------------------------------------------------
# The inputs and the model


def read_inputs(config: TrainConfig) -> tuple[STSData | RetrievalData, TrainData]:
    """The dev set (STS, or a retrieval set: its qrels/dev.tsv, else test.tsv) and the training data (of a kind the
    objective takes), read before anything is built so that a bad file fails in seconds."""
    if is_retrieval_set(config.valid_data):
        split = dev_split(config.valid_data, config.data_dir)
        valid_data = load_retrieval_set(config.valid_data, split, config.data_dir)
    else:
        valid_data = load_sts(config.valid_data, config.data_dir)
    train_data = OBJECTIVES[config.objective].read(config.train_data, config.data_dir)
    if config.num_negatives is not None and train_data.kind != "query_documents":
        raise ValueError(
            f"--num_negatives reads the 'neg' lists of .jsonl retrieval data; {config.train_data} holds "
            f"{DATA_KINDS[train_data.kind].description}: leave it out"
        )
    if len(train_data) < 2:
        raise ValueError(f"{config.train_data}: {len(train_data)} training example; in-batch negatives need 2 or more")
    if len(set(train_data.texts())) < 2:
        raise ValueError(f"{config.train_data}: every sentence is the same; in-batch negatives need different ones")
    return valid_data, train_data


def build_model(config: TrainConfig, resume: ResumePoint | None, device: torch.device) -> SimCSEModel:
    """The encoder of ``config.model``, or of the checkpoint being resumed (its trained head included)."""
    return SimCSEModel(
        resume.path if resume else config.model,
        pooler=config.pooler,
        mlp_only_train=config.mlp_only_train,
        dropout=config.dropout,
        tokenizer=None if resume else config.tokenizer,
        trust_remote_code=config.trust_remote_code,
        unpad=config.unpad,
        max_length=config.max_length,
        fresh_head=resume is None,
        prompt=config.prompt,
        query_prompt=config.query_prompt,
        document_prompt=config.document_prompt,
        document_max_length=config.document_max_length,
    ).to(device)


def evenly_spaced(sentences: list[str], count: int) -> list[str]:
    """About ``count`` sentences spread over the whole list (all of them when there are fewer)."""
    return sentences[:: max(1, len(sentences) // count)]


def check_tokenizer_covers(
    model: SimCSEModel, train_data: TrainData, valid_data: STSData | RetrievalData, config: TrainConfig
) -> None:
    """Refuse a tokenizer that maps most tokens of the training data or of the dev set to its unknown token: one
    made for another language or script (a fitting one maps well under 1%). Sentences are probed from the whole
    of each file, every column, so that a bad stretch past the first lines is found too."""
    probes = {
        config.train_data: evenly_spaced(train_data.texts(), TOKENIZER_PROBE_SIZE),
        config.valid_data: evenly_spaced(
            valid_data.query_texts + valid_data.corpus_texts
            if isinstance(valid_data, RetrievalData)
            else valid_data.sentences1 + valid_data.sentences2,
            TOKENIZER_PROBE_SIZE,
        ),
    }
    for source, probe in probes.items():
        share = unknown_token_share(model.tokenizer, probe)
        if share > UNKNOWN_SHARE_LIMIT:
            raise ValueError(
                f"{source}: the tokenizer of {model.tokenizer.name_or_path} maps {share:.0%} of the tokens of "
                f"{len(probe)} sentences spread over the file to {model.tokenizer.unk_token}; it does not fit this "
                "data (see --tokenizer)"
            )


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


def prepare_output_folder(trainer) -> list[dict]:
    """Clear an earlier run (--overwrite_output_path, now that every check has passed), write train_args.json
    and start metrics.jsonl (or cut it back to the step being resumed) for a built ``Trainer``. Returns the run's
    history so far."""
    config, world_size, sampler, model = trainer.config, trainer.process.world_size, trainer.sampler, trainer.model
    batch = sampler.largest_batch  # the examples a step takes: --batch_size, or all when there are fewer
    info = run_info(
        config,
        trainer.device,
        trainer.amp_dtype,
        num_train_examples=sampler.num_examples,
        steps_per_epoch=trainer.schedule.steps_per_epoch,
        total_steps=trainer.schedule.total_steps,
        world_size=world_size,
        per_process_batch=batch // world_size,
        grad_cache_chunk=config.grad_cache_chunk,
        negatives_per_anchor=trainer.objective.negatives_per_anchor(batch, trainer.num_sent),
        data_kind=trainer.data_kind,
        selection_metric=trainer.selection_metric,
        dropped_examples_per_epoch=sampler.dropped_per_epoch,
        resumed_from=str(trainer.resume.path) if trainer.resume else None,
        forward=f"unpadded, {attention_kernel(trainer.device)} attention" if model.unpad else "padded",
    )
    if batch < config.batch_size:
        logger.warning(
            "--batch_size %d exceeds the %d training examples: each step takes %d",
            config.batch_size,
            sampler.num_examples,
            batch,
        )
    clear_earlier_run(config, trainer.output)
    print(
        f"model {config.model} ({model.config.model_type}): {info['forward']} forward pass, pooler {model.pooler}"
        + (" with the package's head" if model.owns_head and model.head else "")
    )
    history = start_logs(trainer.output, info, trainer.resume, trainer.state.step)
    if trainer.resume:
        forget_lost_best_model(trainer.output, trainer.state)
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
