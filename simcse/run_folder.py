"""The files of a run folder (what train.py, eval.py and the reports write and read), named once."""

from __future__ import annotations

import errno
import fcntl
import fnmatch
import json
import math
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
TENSORBOARD_FOLDER = "tensorboard"  # --report_to tensorboard: the event files
WANDB_FOLDER = "wandb"  # --report_to wandb: wandb's own run folders
WANDB_RUN_ID_NAME = "wandb_run_id.txt"  # the wandb run a resumed run continues
LOCK_NAME = ".lock"  # locked by the run writing to the folder, which writes its pid into it
CONFIG_NAME = "config.json"  # transformers' model config: a folder without it holds no model
WEIGHTS_NAME = "model.safetensors"  # the weights (of the encoder, and of a sentence-transformers Dense module)
# The sentence-transformers files (written and read by simcse.st_format).
ST_MODULES_NAME = "modules.json"
ST_SETTINGS_NAME = "sentence_bert_config.json"
ST_PROMPTS_NAME = "config_sentence_transformers.json"
ST_POOLING_FOLDER = "1_Pooling"
ST_DENSE_FOLDER = "2_Dense"
LORA_ADAPTER_FOLDER = "lora_adapter"  # --lora_rank: the adapters beside the merged model, in peft's format
MODEL_CARD_NAME = "README.md"  # the model card hub.py writes
CARD_MARKER = "<!-- model card written by simcse-ko -->"  # in every card the package writes, and in no other file
# Only this package writes these: a folder holding one is a run folder, which --overwrite_output_path may clear.
RUN_FOLDER_MARKERS = (TRAIN_ARGS_NAME, METRICS_NAME, SIMCSE_CONFIG_NAME, CHECKPOINT_PREFIX + "*", STAGING_PREFIX + "*")
# What a saved model holds besides the package's own files: transformers' config and weights, the tokenizer
# files of every supported encoder, the sentence-transformers modules.
MODEL_FILE_NAMES = (
    CONFIG_NAME,
    WEIGHTS_NAME,
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab.txt",
    "vocab.json",
    "merges.txt",
    "sentencepiece.bpe.model",
    "spm.model",
    "tokenizer.model",
    "chat_template.jinja",
    ST_MODULES_NAME,
    ST_SETTINGS_NAME,
    ST_PROMPTS_NAME,
    ST_POOLING_FOLDER,
    ST_DENSE_FOLDER,
    SIMCSE_CONFIG_NAME,
    SIMCSE_HEAD_NAME,
    LORA_ADAPTER_FOLDER,
)
# Every name a run, eval.py and the reports write into a run folder: all that --overwrite_output_path deletes.
RUN_WRITTEN = (
    *MODEL_FILE_NAMES,
    TRAIN_ARGS_NAME,
    METRICS_NAME,
    EVAL_RESULTS_NAME,
    SUMMARY_NAME,
    CURVES_NAME,
    TENSORBOARD_FOLDER,
    WANDB_FOLDER,
    WANDB_RUN_ID_NAME,
    LOCK_NAME,
    CHECKPOINT_PREFIX + "*",
    STAGING_PREFIX + "*",
)


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
    path.write_text(json_text(content), encoding="utf-8")


def json_text(content: dict | list) -> str:
    """A JSON file's text as the package writes it."""
    return json.dumps(content, indent=2, ensure_ascii=False) + "\n"


def write_together(files: dict[Path, str | bytes], flag: str) -> None:
    """Write files (text, or bytes as they are) so that a kill or a full disk never leaves one cut, nor a set of
    files half replaced: each is written and synced under a temporary name beside it, and all are renamed into
    place once every one is whole. On failure the temporary files are removed and what was there before stays;
    a full disk's error names ``flag``, the option that chose where to write."""
    temporary: dict[Path, Path] = {}
    try:
        for path, text in files.items():
            path.parent.mkdir(parents=True, exist_ok=True)
            temporary[path] = path.with_name(f".{path.name}.partial-{os.getpid()}")
            with open(temporary[path], "wb") as file:
                file.write(text if isinstance(text, bytes) else text.encode("utf-8"))
                file.flush()
                os.fsync(file.fileno())
    except BaseException as err:
        for partial in temporary.values():
            partial.unlink(missing_ok=True)
        if isinstance(err, OSError) and err.errno == errno.ENOSPC:
            err.flag = flag  # read by simcse.cli.error_line
        raise
    for path, partial in temporary.items():
        os.replace(partial, path)


def best_line(lines: list[dict], metric: str) -> dict | None:
    """The evaluation a run kept as its best: the first of the highest finite ``metric`` (a later equal score
    never replaces it), or None when no score is finite."""
    scored = [line for line in lines if isinstance(line.get(metric), (int, float)) and math.isfinite(line[metric])]
    return max(scored, key=lambda line: line[metric]) if scored else None


def read_metrics(path: str | os.PathLike, required: tuple[str, ...] = ()) -> list[dict]:
    """The lines of a metrics.jsonl (NaN values are kept as float NaN); a bad line, or one without a ``required``
    key, raises ValueError naming it."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file (the run's log of evaluations)")
    lines = []
    for number, text in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if text.strip():
            try:
                line = json.loads(text)
            except (json.JSONDecodeError, RecursionError) as err:
                raise ValueError(f"{path}, line {number}: not valid JSON ({_json_problem(err)})") from None
            if not isinstance(line, dict):
                raise ValueError(f"{path}, line {number}: not a JSON object")
            if missing := [key for key in required if key not in line]:
                raise ValueError(f"{path}, line {number}: no {', '.join(map(repr, missing))}")
            lines.append(line)
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
    ``release`` deletes the file, and the folders the lock created if they are still empty (a run refused before
    writing anything leaves no trace); a killed process leaves the file, with a dead pid that locks nothing.
    """

    def __init__(self, folder: str | os.PathLike):
        folder = Path(folder)
        self.path = folder / LOCK_NAME
        self.created = [path for path in [folder, *folder.parents] if not path.exists()]
        folder.mkdir(parents=True, exist_ok=True)
        while True:
            self.file = open(self.path, "a+", encoding="utf-8")  # held until release
            try:
                fcntl.flock(self.file, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                self.file.seek(0)
                holder = self.file.read().strip() or "unknown"
                self.file.close()
                raise RunFolderError(self.refusal(folder, holder)) from None
            if self._still_linked():
                break
            self.file.close()  # the holder deleted the file as it released it: lock the new one
        self.file.seek(0)
        self.file.truncate()
        self.file.write(f"{os.getpid()}\n")
        self.file.flush()

    def _still_linked(self) -> bool:
        """Whether the locked file is still ``self.path`` (not one a releasing holder just deleted)."""
        try:
            return os.stat(self.path).st_ino == os.fstat(self.file.fileno()).st_ino
        except FileNotFoundError:
            return False

    @staticmethod
    def refusal(folder: Path, holder: str) -> str:
        return (
            f"{folder}: another run (pid {holder}) is writing to this folder; wait for it to end or choose another "
            "--output_path"
        )

    def release(self) -> None:
        if not self.file.closed:
            self.path.unlink(missing_ok=True)  # while still held: no other run can have taken it
            fcntl.flock(self.file, fcntl.LOCK_UN)
            self.file.close()
            for path in self.created:  # innermost first; a folder holding anything stays
                try:
                    path.rmdir()
                except OSError:
                    break


class RunFolderError(ValueError):
    """An output folder a run must not write to."""


def earlier_run_entries(folder: str | os.PathLike) -> list[str]:
    """What a folder holds besides the lock file, sorted (empty for a new folder)."""
    folder = Path(folder)
    return sorted(path.name for path in folder.iterdir() if path.name != LOCK_NAME) if folder.is_dir() else []


def is_run_folder(folder: str | os.PathLike) -> bool:
    """Whether ``folder`` holds a file only a run of this package writes."""
    return any(any(Path(folder).glob(pattern)) for pattern in RUN_FOLDER_MARKERS)


def written_by_a_run(path: Path) -> bool:
    """Whether ``path`` (an entry of a run folder) is one a run writes: a model card only when the package wrote
    it."""
    if path.name == MODEL_CARD_NAME:
        return path.is_file() and CARD_MARKER in path.read_text(encoding="utf-8", errors="replace")
    return any(fnmatch.fnmatchcase(path.name, pattern) for pattern in RUN_WRITTEN)


def shown(names: list[str], limit: int = 5) -> str:
    return ", ".join(names[:limit]) + (", ..." if len(names) > limit else "")


def clearing_problem(folder: str | os.PathLike) -> str | None:
    """Why --overwrite_output_path must not clear ``folder``, or None: it holds no run of this package, or it
    also holds files no run writes (a user's, which are never deleted)."""
    folder = Path(folder)
    if not is_run_folder(folder):
        return (
            f"{folder}: not a run folder of this package (it holds {shown(earlier_run_entries(folder))}); "
            "--overwrite_output_path only clears run folders: choose an empty or new --output_path"
        )
    foreign = sorted(path.name for path in folder.iterdir() if not written_by_a_run(path))
    if foreign:
        return (
            f"{folder}: holds files that no run writes ({shown(foreign)}); --overwrite_output_path deletes only a "
            "run's own files: move those away or choose another --output_path"
        )
    return None


def clear_run_folder(folder: str | os.PathLike) -> None:
    """Delete everything an earlier run left in ``folder`` (the lock file stays). Refused for a folder that is
    no run folder or that holds anything a run does not write (``clearing_problem``)."""
    folder = Path(folder)
    if problem := clearing_problem(folder):
        raise RunFolderError(problem)
    for path in folder.iterdir():
        if path.name == LOCK_NAME:
            continue
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()


def lock_holder(folder: str | os.PathLike) -> str | None:
    """The pid of the run writing to ``folder`` now, or None when no run holds its lock."""
    path = Path(folder) / LOCK_NAME
    if not path.is_file():
        return None
    with open(path, encoding="utf-8") as file:
        try:
            fcntl.flock(file, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return file.read().strip() or "unknown"
        fcntl.flock(file, fcntl.LOCK_UN)
    return None
