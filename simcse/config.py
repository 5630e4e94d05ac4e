"""Every setting of a training run, declared once.

Each field of ``TrainConfig`` carries its flag's help text, its group in ``--help``, whether a resumed run must
keep its value (``resume``) and whether the model card's recipe shows it (``card``). From these declarations
come train.py's parser (``simcse.cli.build_parser``), ``validate``, ``RESUME_MUST_MATCH`` and ``CARD_SETTINGS``.

This module imports no torch, so ``train.py --help`` and flag errors answer at once.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass

from simcse.loss_config import LOSS_GROUP, LossConfig
from simcse.model_config import MODEL_GROUP, ModelConfig
from simcse.objectives import DEFAULT_OBJECTIVE, OBJECTIVES
from simcse.registry import DATA_DIR_DEFAULT, TOKEN_STORE_IN_MEMORY, TOKEN_STORE_TIMEOUT, TOKEN_STORE_VARIABLE
from simcse.rules import (
    as_list,
    at_least,
    between,
    hub_repo_id,
    in_unit_interval,
    non_empty_path,
    non_negative,
    positive,
    setting,
)
from simcse.tasks import DEV_SETS_HELP
from simcse.tracking import NO_REPORTER, REPORTERS

EVAL_STRATEGIES = ("steps", "epoch")
# Tokens per sentence when nothing else says: the reference recipe's value, and what evaluation falls back to
# for a checkpoint that does not record its training value.
DEFAULT_MAX_LENGTH = 64
# Tokens per document of retrieval data and retrieval sets when nothing else says (capped at the model's positions).
DEFAULT_DOCUMENT_MAX_LENGTH = 512
# Flags renamed since they were first published: old name -> new name. The old names stay accepted on the
# command line and in the trainer_state.json of checkpoints written before the rename.
RENAMED_SETTINGS = {"eval_step": "eval_steps"}

# How the batches of several training datasets follow each other (simcse.batching.MixtureBatchSampler).
MIXTURES = ("round_robin", "proportional")
# The settings a mixture lists, one value per training dataset (or one for all).
MIXTURE_LISTS = ("train_data", "objective", "batch_size")

# Seeds NumPy accepts.
SEED_RANGE = (0, 2**32 - 1)


# train.py's flags are shown in these groups, in this order (each field names its group).
GROUPS = (
    MODEL_GROUP,
    "data",
    "optimisation",
    LOSS_GROUP,
    "evaluation and output",
    "checkpoints and the Hub",
    "runtime",
)


@dataclass
class TrainConfig(ModelConfig, LossConfig):
    """Every setting of a run; the defaults are the reference recipe. train/train.py exposes each as a flag."""

    # data
    train_data: str | list[str] = setting(
        "",
        "data of a kind the objective takes: .txt (one sentence per line), .tsv with header sent0 sent1 [hard_neg], "
        ".jsonl of {query, pos: [...], neg: [...]}, or scored pairs (an STS file or a name such as korsts_train); "
        "several files: a mixture, one dataset per batch (--mixture), each with its --objective and --batch_size",
        "data",
        required=True,
        resume=True,
        card=True,
        path=True,
    )
    valid_data: str = setting(
        "korsts_dev",
        f"dev set, of any evaluation task: {DEV_SETS_HELP}; a retrieval set's qrels/dev.tsv, else qrels/test.tsv",
        "data",
        resume=True,
        path=True,
    )
    valid_samples: int | None = setting(
        None, "evaluate on this many of the dev set's pairs or queries, drawn with --seed", "data", resume=True,
        card=True, rule=at_least(2), none_means="all",
    )  # fmt: skip
    data_dir: str | None = setting(
        None, "folder the dataset names resolve in", "data", resume=True, none_means=DATA_DIR_DEFAULT, path=True
    )
    max_length: int = setting(
        DEFAULT_MAX_LENGTH,
        "tokens per sentence, the prompt and special tokens included (truncated); batches are padded to their longest",
        "data",
        resume=True,
        card=True,
        rule=at_least(2),
    )
    document_max_length: int = setting(
        DEFAULT_DOCUMENT_MAX_LENGTH,
        "tokens per document of retrieval data and retrieval dev sets, capped at the model's positions (said, and "
        "train_args.json's document_max_length_used)",
        "data",
        resume=True,
        card=True,
        rule=at_least(2),
    )
    num_negatives: int | None = setting(
        None,
        "hard negatives per query of .jsonl retrieval data, drawn from its neg list each epoch (with the seed)",
        "data",
        resume=True,
        card=True,
        rule=at_least(0),
        none_means="1",
    )
    num_workers: int = setting(0, "DataLoader worker processes", "data", rule=non_negative)
    token_store: str | None = setting(
        None, f"folder of the token stores (each training file tokenized once, memory-mapped by every run and process; "
        f"README: Training data at scale), or {TOKEN_STORE_IN_MEMORY}: tokenize in memory", "data",
        none_means=f"${TOKEN_STORE_VARIABLE}, else ~/.cache/simcse-ko/token-store", path=True,
    )  # fmt: skip
    token_store_timeout: float = setting(
        TOKEN_STORE_TIMEOUT, "seconds the other torchrun processes wait for the first to build a token store", "data",
        rule=positive,
    )  # fmt: skip
    # optimisation
    objective: str | list[str] = setting(
        DEFAULT_OBJECTIVE,
        "; ".join(f"{name}: {objective.help}" for name, objective in OBJECTIVES.items())
        + " (one per --train_data file, or one for all)",
        "optimisation",
        resume=True,
        card=True,
        choices=tuple(OBJECTIVES),
    )
    batch_size: int | list[int] = setting(
        256,
        "examples per optimizer step over all processes (each of N torchrun processes takes batch/N); one per "
        "--train_data file, or one for all",
        "optimisation",
        resume=True,
        card=True,
        rule=lambda name, value: (
            None if value >= 2 else (f"--batch_size {value}: each anchor needs in-batch negatives, use 2 or more")
        ),
    )
    mixture: str = setting(
        MIXTURES[0],
        "with several --train_data files: round_robin (each dataset in turn, the epoch ends with the smallest) or "
        "proportional (every batch of every dataset once per epoch, the datasets' batches in an order drawn with the "
        "seed)",
        "optimisation",
        resume=True,
        card=True,
        choices=MIXTURES,
    )
    epochs: int = setting(1, "passes over the training data", "optimisation", resume=True, card=True, rule=at_least(1))
    max_steps: int | None = setting(
        None,
        "stop after this many steps (smoke runs)",
        "optimisation",
        resume=True,
        card=True,
        rule=at_least(1),
        none_means="none",
    )
    learning_rate: float = setting(
        5e-5,
        "peak learning rate: linear warmup, then linear decay to 0",
        "optimisation",
        resume=True,
        card=True,
        rule=positive,
    )
    weight_decay: float = setting(
        0.01, "AdamW; none on biases and LayerNorm weights", "optimisation", resume=True, card=True, rule=non_negative
    )
    warmup_ratio: float = setting(
        0.0, "share of the steps spent warming up", "optimisation", resume=True, card=True, rule=in_unit_interval
    )
    max_grad_norm: float = setting(
        1.0, "gradient clipping (0 disables)", "optimisation", resume=True, card=True, rule=non_negative
    )
    grad_cache_chunk: int | None = setting(
        None,
        "GradCache: embed the per-process batch in chunks of this many examples",
        "optimisation",
        resume=True,
        rule=at_least(1),
        none_means="none",
    )
    amp: bool = setting(
        False,
        "bf16 autocast on GPUs that support it, else fp16 with loss scaling; ignored on CPU",
        "optimisation",
        resume=True,
        card=True,
    )
    # evaluation and output
    output_path: str = setting(
        "outputs/simcse",
        "folder for the best checkpoint, train_args.json and metrics.jsonl",
        "evaluation and output",
        rule=non_empty_path,
    )
    overwrite_output_path: bool = setting(
        False,
        "start afresh in a folder that holds an earlier run, deleting that run (else such a folder is refused)",
        "evaluation and output",
    )
    report_to: str | list[str] = setting(
        NO_REPORTER,
        "experiment trackers that get every metrics.jsonl line at its step and the settings (first process; files "
        "under --output_path): none, tensorboard, wandb (several allowed)",
        "evaluation and output",
        choices=(NO_REPORTER, *REPORTERS),
    )
    eval_strategy: str = setting(
        "steps",
        "evaluate every --eval_steps steps, or at each epoch's end",
        "evaluation and output",
        resume=True,
        choices=EVAL_STRATEGIES,
    )
    eval_steps: int = setting(
        100,
        "steps between evaluations (also before training and at the end)",
        "evaluation and output",
        resume=True,
        rule=at_least(1),
    )
    eval_at_start: bool = setting(
        True, "evaluate the starting model as step 0 (false: quick runs skip it)", "evaluation and output"
    )
    eval_batch_size: int | None = setting(
        None,
        "sentences per batch when encoding the dev set",
        "evaluation and output",
        rule=at_least(1),
        none_means="32 on CPU, 256 on GPU",
    )
    # checkpoints and the Hub
    save_steps: int | None = setting(
        None,
        "write a training checkpoint checkpoint-STEP/ every N steps",
        "checkpoints and the Hub",
        rule=at_least(1),
        none_means="none",
    )
    save_total_limit: int | None = setting(
        None,
        "keep only the newest N training checkpoints",
        "checkpoints and the Hub",
        rule=at_least(1),
        none_means="all",
    )
    resume_from_checkpoint: str | None = setting(
        None,
        "latest (newest in --output_path) or a checkpoint-STEP folder",
        "checkpoints and the Hub",
        none_means="none",
        metavar="DIR|latest",
        rule=non_empty_path,
    )
    push_to_hub: str | None = setting(
        None,
        "user/name: upload the best checkpoint with a model card after training (token: HF_TOKEN or login)",
        "checkpoints and the Hub",
        none_means="none",
        metavar="REPO_ID",
        rule=hub_repo_id,
    )
    hub_private: bool = setting(False, "create the Hub repository as private", "checkpoints and the Hub")
    # runtime
    seed: int = setting(
        42,
        "Python, NumPy and torch seeds, and the data order",
        "runtime",
        resume=True,
        card=True,
        rule=between(*SEED_RANGE, "NumPy's seeds"),
    )
    device: str = setting("auto", "auto (CUDA if available, else CPU), cpu, cuda, cuda:1, ...", "runtime")

    def validate(self) -> None:
        """Raise ConfigError naming the first bad setting, or the first two that do not go together. Needs no
        file, model or process group: under torchrun every process answers the same, before any is built."""
        for field in dataclasses.fields(self):
            value, rule = getattr(self, field.name), field.metadata["rule"]
            if field.metadata["required"] and not value:
                raise ConfigError(f"--{field.name} is required")
            for one in value if isinstance(value, list) else [value]:  # a mixture's list: each value
                if rule and one is not None and (message := rule(field.name, one)):
                    raise ConfigError(message)
        objectives = as_list(self.objective)
        problem = (
            self.mixture_problem()
            or self.model_problem()
            or self.loss_problem(objectives)
            or self.combination_problem()
        )
        if message := problem:
            raise ConfigError(message)

    def mixture_problem(self) -> str | None:
        """Why the parallel lists of a mixture do not go together, or None."""
        datasets = len(as_list(self.train_data))
        for name in MIXTURE_LISTS[1:]:
            value = getattr(self, name)
            if isinstance(value, list) and len(value) not in (1, datasets):
                return (
                    f"--{name} has {len(value)} values for {datasets} --train_data file(s): give one for all, or "
                    "one per file"
                )
        return None

    def parts(self) -> list[Part]:
        """The training datasets with the objective and batch size of each (one value applies to all)."""
        datasets = as_list(self.train_data)

        def each(value) -> list:
            values = as_list(value)
            return values * len(datasets) if len(values) == 1 else values

        labels = [f"{name} #{n}" if datasets.count(name) > 1 else name for n, name in enumerate(datasets, 1)]
        return [Part(*row) for row in zip(datasets, each(self.objective), each(self.batch_size), labels)]

    def combination_problem(self) -> str | None:
        """Why two settings do not go together, or None."""
        world_size = int(os.environ.get("WORLD_SIZE", "1"))  # torchrun's, known before any process group
        if isinstance(self.report_to, list) and NO_REPORTER in self.report_to:
            return f"--report_to {NO_REPORTER} names no tracker: give it alone, or the trackers only"
        if isinstance(self.report_to, list) and len(set(self.report_to)) < len(self.report_to):
            return f"--report_to {' '.join(self.report_to)} names a tracker twice: it would log every value twice"
        if self.num_negatives == 0 and self.hard_negative_weight != 0:
            return "--num_negatives 0 draws no hard negatives: --hard_negative_weight does nothing there, leave it 0"
        if self.resume_from_checkpoint and self.overwrite_output_path:
            return "--overwrite_output_path deletes the run that --resume_from_checkpoint continues: give one of them"
        # A flag one dataset's objective reads acts on that dataset's batches; one that none reads is refused.
        unread = [OBJECTIVES[objective].unread_flags(self) for objective in as_list(self.objective)]
        if never_read := [message for flag, message in unread[0].items() if all(flag in u for u in unread)]:
            return never_read[0]
        for part in self.parts():
            if part.batch_size % world_size:
                return f"--batch_size {part.batch_size} is not divisible by the {world_size} torchrun processes"
            local_batch = part.batch_size // world_size
            if self.grad_cache_chunk and local_batch % self.grad_cache_chunk:
                return f"--grad_cache_chunk {self.grad_cache_chunk} does not divide the per-process batch {local_batch}"
        return None


@dataclass(frozen=True)
class Part:
    """One dataset of a run's training mixture (a run on one file has one)."""

    train_data: str
    objective: str
    batch_size: int
    label: str  # its name in metrics.jsonl: the file, with its place in the mixture when a file comes twice


class ConfigError(ValueError):
    """A bad setting: every torchrun process finds the same one, and only the first prints it."""


def fields_by_group() -> list[dataclasses.Field]:
    """``TrainConfig``'s fields as train.py shows them: group by group (``GROUPS``), each in declaration order."""
    return sorted(dataclasses.fields(TrainConfig), key=lambda field: GROUPS.index(field.metadata["group"]))


def _settings_where(key: str) -> tuple[str, ...]:
    return tuple(field.name for field in fields_by_group() if field.metadata[key])


# Settings that change what a run computes: a resumed run must use the values it was started with.
RESUME_MUST_MATCH = _settings_where("resume")
# The training recipe a model card shows.
CARD_SETTINGS = _settings_where("card")
# Settings that may name a local file or folder.
PATH_SETTINGS = _settings_where("path")


def upgrade_saved_settings(saved: dict) -> dict:
    """Settings as saved by any release (train_args.json, trainer_state.json), under today's names."""
    return {RENAMED_SETTINGS.get(name, name): value for name, value in saved.items()}
