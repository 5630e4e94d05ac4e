"""Experiment trackers (``--report_to``): every metrics.jsonl line as scalars at its step and the run's settings
as hyperparameters, from the first process only, in files under ``--output_path``; a resumed run continues the
same curves. A tracker is one entry in ``REPORTERS``: a class built from (run folder, settings, step resumed
from or None) with ``log(line)`` and ``close()``."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import os
import secrets
from pathlib import Path

from simcse.run_folder import TENSORBOARD_FOLDER, WANDB_RUN_ID_NAME

TRAIN_KEYS = ("train_loss", "learning_rate", "skipped_steps", "epoch")  # the rest of a line is dev metrics


def scalars(line: dict) -> dict[str, float]:
    """A metrics.jsonl line's numbers under the trackers' names: ``train/<key>`` for the training side (each
    dataset of a mixture as ``train/loss_<n>``, numbered as on the progress bar), ``dev/<metric>`` for the rest."""
    values = {}
    for key, value in line.items():
        if key == "train_loss_by_dataset":
            for number, loss in enumerate(value.values(), 1):
                if loss is not None:
                    values[f"train/loss_{number}"] = loss
        elif key != "step" and isinstance(value, (int, float)) and not isinstance(value, bool):
            values[f"{'train' if key in TRAIN_KEYS else 'dev'}/{key}"] = value
    return values


def hyperparameters(config) -> dict[str, int | float | str | bool]:
    """Every setting as a tracker takes it: a number, text or flag (a mixture's lists and None as JSON text)."""
    settings = dataclasses.asdict(config)
    return {
        name: value if isinstance(value, (int, float, str, bool)) else json.dumps(value)
        for name, value in settings.items()
    }


class TensorBoardReporter:
    """Event files in OUTPUT/tensorboard (``tensorboard --logdir OUTPUT``). A resumed run purges what the
    interrupted one logged after the step it resumes from, so the curves do not fork."""

    package, extra = "tensorboard", "tensorboard"

    @staticmethod
    def start_problem() -> str | None:
        return None

    def __init__(self, output: Path, config, resumed_step: int | None):
        from torch.utils.tensorboard import SummaryWriter
        from torch.utils.tensorboard.summary import hparams

        purge_step = None if resumed_step is None else resumed_step + 1
        self.writer = SummaryWriter(log_dir=str(output / TENSORBOARD_FOLDER), purge_step=purge_step)
        if resumed_step is None:
            for summary in hparams(hyperparameters(config), {}):
                self.writer.file_writer.add_summary(summary)

    def log(self, line: dict) -> None:
        for tag, value in scalars(line).items():
            self.writer.add_scalar(tag, value, line["step"])
        self.writer.flush()  # a crash loses nothing that metrics.jsonl holds

    def close(self) -> None:
        self.writer.close()


class WandbReporter:
    """A Weights & Biases run (``WANDB_MODE=offline`` works without network; project ``$WANDB_PROJECT``, else
    simcse-ko), its files in OUTPUT/wandb; a resumed run continues the same wandb run (its id is kept in the run
    folder)."""

    package, extra = "wandb", "wandb"

    @staticmethod
    def start_problem() -> str | None:
        """Why wandb.init would fail once the run folder is written: online, and no API key found (wandb's own
        lookup: WANDB_API_KEY, then ~/.netrc; no network used, no prompt without a terminal)."""
        if os.environ.get("WANDB_MODE", "online").lower() in ("offline", "disabled", "dryrun"):
            return None
        import wandb

        try:
            wandb.login(verify=False)
        except wandb.errors.UsageError:
            return (
                "--report_to wandb: no W&B API key; set WANDB_API_KEY, run `wandb login`, or log offline "
                "(WANDB_MODE=offline)"
            )
        return None

    def __init__(self, output: Path, config, resumed_step: int | None):
        import wandb

        id_file = output / WANDB_RUN_ID_NAME
        run_id = id_file.read_text().strip() if resumed_step is not None and id_file.is_file() else None
        run_id = run_id or secrets.token_hex(4)  # wandb run ids: short, lowercase, alphanumeric
        id_file.write_text(run_id + "\n")
        self.run = wandb.init(
            project=os.environ.get("WANDB_PROJECT", "simcse-ko"),
            name=output.resolve().name,
            id=run_id,
            resume="allow",
            dir=str(output),
            config=hyperparameters(config),
        )

    def log(self, line: dict) -> None:
        self.run.log(scalars(line), step=line["step"])

    def close(self) -> None:
        self.run.finish()


REPORTERS = {"tensorboard": TensorBoardReporter, "wandb": WandbReporter}
NO_REPORTER = "none"


def requested(report_to: str | list[str]) -> list[str]:
    """The trackers named (``none`` names none)."""
    names = report_to if isinstance(report_to, list) else [report_to]
    return [name for name in names if name != NO_REPORTER]


def check_ready(report_to: str | list[str]) -> None:
    """Refuse a tracker whose package is missing (in one line naming the extra) or that could not start: before
    the run writes anything, so that the corrected command is not refused as an earlier run."""
    for name in requested(report_to):
        reporter = REPORTERS[name]
        if importlib.util.find_spec(reporter.package) is None:
            raise ImportError(
                f'--report_to {name} needs the {reporter.package} package: pip install "simcse-ko[{reporter.extra}]" '
                f'(or pip install -e ".[{reporter.extra}]" in a checkout)'
            )
        if problem := reporter.start_problem():
            raise ValueError(problem)


def open_reporters(report_to: str | list[str], output: Path, config, resumed_step: int | None) -> list:
    return [REPORTERS[name](output, config, resumed_step) for name in requested(report_to)]
