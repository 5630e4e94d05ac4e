"""The evaluation tasks: one entry each in ``TASKS``. eval.py, a training run's dev evaluation and checkpoint
selection, metrics.jsonl, eval_results.json, the push and the model card all read this table; none of them asks
"STS or retrieval" itself.

An entry holds the task's facts (how its sets are given, the metric a run selects by, the console's short line,
its key in eval_results.json, its model-index task); its code is a module (``EvalTask.code``) that provides
``METRIC_KEYS`` and these functions:

* ``recognises(name_or_path, data_dir) -> bool``: the set is of this task (the fallback entry, STS, takes any set
  no other task recognises);
* ``files(name_or_path, split, data_dir)`` and ``load(name_or_path, split, data_dir)``: the set's files (what a
  resume fingerprints) and the set read and checked; a ``split`` of None is a training run's dev split;
* ``texts(data)``: every text of the set, to probe the tokenizer with; ``subset(data, rows)``: the set cut to the
  items (pairs, queries) at ``rows``, ``len(data)`` counting them (``--valid_samples``);
* ``evaluate(model, data, batch_size, description) -> dict``: the metrics;
* ``describe(name, data, model)``, ``format_table(results)`` and ``card_sections(results, row_name)``: eval.py's
  line before a set, its Markdown table, and the model card's sections.

A new task is a module with those and one entry here. This module imports no torch (a task's module is imported
when it is first used): train.py's ``--help`` lists the tasks and answers at once.
"""

from __future__ import annotations

import importlib
import os
import random
from collections.abc import Mapping
from dataclasses import dataclass
from types import ModuleType
from typing import Any

from simcse.run_folder import read_json, write_json

# eval_results.json's key of STS results: the package's first releases wrote only those, and it is always there.
STS_REPORT_KEY = "results"


@dataclass(frozen=True)
class EvalTask:
    name: str
    module: str  # the task's code
    sets: str  # how a set of this task is given, for the flags' help
    reports: str  # what eval.py reports of a set, for its help
    selection_metric: str  # what a run with a dev set of this task selects its best checkpoint by
    shown: tuple[tuple[str, str], ...]  # the console's short line: (metric key, as people write it)
    report_key: str  # its results' key in eval_results.json
    card_task: tuple[str, str]  # the model-index task type and name
    fallback: bool = False  # takes every set no other task recognises (its module refuses what it cannot read)

    @property
    def code(self) -> ModuleType:
        return importlib.import_module(self.module)

    @property
    def metric_keys(self) -> tuple[str, ...]:
        return self.code.METRIC_KEYS

    def short_line(self, metrics: Mapping[str, float]) -> str:
        """The console's line of a dev evaluation: the shown metrics, 4 decimals."""
        return ", ".join(f"{label} {metrics[key]:.4f}" for key, label in self.shown)

    @property
    def selection_label(self) -> str:
        return dict(self.shown)[self.selection_metric]


# In the order of the reports and cards; a set is the first non-fallback task's that recognises it, else the
# fallback's.
TASKS: dict[str, EvalTask] = {
    task.name: task
    for task in (
        EvalTask(
            "sts",
            "simcse.evaluate",
            "an STS dataset name or file",
            "cosine, euclidean, manhattan and dot similarity, Pearson and Spearman",
            "cosine_spearman",
            (("cosine_pearson", "cosine Pearson"), ("cosine_spearman", "cosine Spearman")),
            STS_REPORT_KEY,
            ("sentence-similarity", "Semantic Textual Similarity"),
            fallback=True,
        ),
        EvalTask(
            "retrieval",
            "simcse.retrieval",
            "a retrieval set's name or folder in the BEIR layout (corpus.jsonl, queries.jsonl, qrels/)",
            "nDCG@10, MRR@10, MAP@100, Recall@1/5/10/100 of exact search",
            "ndcg@10",
            (("ndcg@10", "nDCG@10"), ("recall@1", "Recall@1")),
            "retrieval",
            ("retrieval", "Retrieval"),
        ),
        EvalTask(
            "pair_classification",
            "simcse.pair_classification",
            "a TSV of labelled pairs (sentence1, sentence2, label 0/1, or KorNLI's gold_label)",
            "accuracy, F1, precision, recall, AP and MCC of the best cosine threshold",
            "cosine_ap",
            (("cosine_accuracy", "cosine accuracy"), ("cosine_ap", "cosine AP")),
            "pair_classification",
            ("pair-classification", "Pair Classification"),
        ),
    )
}
# The help texts of the flags that take sets: eval.py's --test_data and description, train.py's --valid_data.
SETS_HELP = "; ".join(task.sets for task in TASKS.values())
REPORTS_HELP = "\n".join(f"- {task.sets}: {task.reports}" for task in TASKS.values())
DEV_SETS_HELP = "; ".join(f"{task.sets} (selection by {task.selection_metric})" for task in TASKS.values())


@dataclass
class EvalSet:
    """A loaded evaluation set: its name as given, its task and its data (of the task's own kind)."""

    name: str
    task: EvalTask
    data: Any

    def texts(self) -> list[str]:
        return self.task.code.texts(self.data)

    @property
    def split(self) -> str | None:
        """The split its labels come from, for a task whose sets have several (a retrieval set's qrels)."""
        return getattr(self.data, "split", None)

    @property
    def dev_label(self) -> str:
        """How a training run's lines name it: "dev", with the qrels file when that is not qrels/dev.tsv."""
        return "dev" if self.split in (None, "dev") else f"dev (qrels/{self.split}.tsv)"

    def sample(self, count: int, seed: int) -> EvalSet:
        """``count`` of its items (pairs, queries), drawn with ``seed`` and kept in file order."""
        rows = sorted(random.Random(seed).sample(range(len(self.data)), count))
        return EvalSet(self.name, self.task, self.task.code.subset(self.data, rows))

    def evaluate(self, model, batch_size: int | None = None, description: str | None = None) -> dict:
        return self.task.code.evaluate(model, self.data, batch_size, description or self.name)


def task_of(name_or_path: str | os.PathLike, data_dir: str | os.PathLike | None = None) -> EvalTask:
    """The task of a set: the first entry whose code recognises it, else the fallback."""
    tried = sorted(TASKS.values(), key=lambda task: task.fallback)
    task = next(task for task in tried if task.fallback or task.code.recognises(name_or_path, data_dir))
    if task.fallback and os.path.isdir(name_or_path):  # a set's folder with a file misnamed, compressed or missing
        held = ", ".join(sorted(os.listdir(name_or_path))[:10]) or "nothing"
        raise IsADirectoryError(f"{name_or_path}: a folder that is no evaluation set ({SETS_HELP}); it holds {held}")
    return task


def load_set(name_or_path: str | os.PathLike, split: str | None = None, data_dir=None) -> EvalSet:
    """A set of any task, read and checked (``split``: a retrieval set's qrels; None: a training run's)."""
    task = task_of(name_or_path, data_dir)
    return EvalSet(str(name_or_path), task, task.code.load(name_or_path, split, data_dir))


def set_files(name_or_path: str | os.PathLike, split: str | None = None, data_dir=None) -> list:
    """The files a set is read from (a training run's dev split with ``split`` None)."""
    return task_of(name_or_path, data_dir).code.files(name_or_path, split, data_dir)


def evaluate_dev(model, dev: EvalSet, batch_size: int | None = None) -> dict[str, float | str]:
    """A training run's dev metrics, with the name of the one it selects its best checkpoint by under
    ``selection_metric`` (and ``dev_split``, the split read, for a set that has several). Its progress bar is
    labelled "dev". A model trained at Matryoshka sizes also reports that metric at each size below the whole,
    under ``METRIC_by_dim``."""
    line = dev.evaluate(model, batch_size, description="dev") | {"selection_metric": dev.task.selection_metric}
    sizes = [dim for dim in getattr(model, "matryoshka_dims", None) or () if dim < model.config.hidden_size]
    if sizes:
        metric, whole = dev.task.selection_metric, model.truncate_dim
        try:
            line[f"{metric}_by_dim"] = {
                str(dim): _at_size(model, dim, dev, batch_size)[metric] for dim in sorted(sizes, reverse=True)
            }
        finally:
            model.truncate_dim = whole
    return line | ({"dev_split": dev.split} if dev.split else {})


def _at_size(model, dim: int, dev: EvalSet, batch_size: int | None) -> dict:
    model.truncate_dim = dim
    return dev.evaluate(model, batch_size, description=f"dev at {dim}")


def task_selecting_by(metric: str) -> EvalTask:
    """The task whose runs select by ``metric`` (a metrics.jsonl line's ``selection_metric``)."""
    task = next((task for task in TASKS.values() if task.selection_metric == metric), None)
    if task is None:
        known = ", ".join(task.selection_metric for task in TASKS.values())
        raise ValueError(f"selection metric {metric!r} is none of the evaluation tasks' ({known})")
    return task


# ---------------------------------------------------------------------------------------------------
# eval_results.json: each task's results per set, under the task's report key


def read_eval_report(path: str | os.PathLike) -> dict | None:
    """An eval_results.json (what ``write_eval_report`` writes), or None when there is none; a file without its
    results per dataset and metric raises ValueError naming it and what is missing."""
    report = read_json(path)
    if report is None:
        return None
    results = report.get(STS_REPORT_KEY) if isinstance(report, dict) else None
    if not isinstance(results, dict):
        raise ValueError(f"{path}: not an eval.py report (no 'results' object)")
    for task in TASKS.values():
        if not isinstance(report.get(task.report_key, {}), dict):
            raise ValueError(f"{path}: its {task.report_key!r} is not an object of results per set")
        for name, metrics in report.get(task.report_key, {}).items():
            missing = [key for key in task.metric_keys if not isinstance(metrics, dict) or key not in metrics]
            if missing:
                raise ValueError(f"{path}: the {task.name} results of {name!r} have no {', '.join(missing)}")
    return report


def write_eval_report(
    path: str | os.PathLike,
    model_name: str,
    model,
    results: Mapping[str, Mapping[str, Mapping[str, float]]],
    merge: bool = False,
) -> dict:
    """Write (and return) the JSON eval.py produces: the model, its pooler settings and max length, and the
    metrics per set of each task (``results``: task name -> set -> metrics) under the task's report key. With
    ``merge`` the sets of a report already there are kept (its results win: the trainer adds its dev result to what
    eval.py measured, never replaces it)."""
    earlier = (read_eval_report(path) or {}) if merge else {}
    report = {
        "model": str(model_name),
        "pooler": model.pooler,
        "mlp_only_train": model.mlp_only_train,
        "max_length": model.max_length,
    }
    if getattr(model, "truncate_dim", None) is not None:  # evaluated at a Matryoshka size
        report["truncate_dim"] = model.truncate_dim
    for task in TASKS.values():
        now, before = results.get(task.name, {}), earlier.get(task.report_key, {})
        if now or before or task.report_key == STS_REPORT_KEY:
            report[task.report_key] = {name: dict(metrics) for name, metrics in now.items()} | before
    write_json(path, report)
    return report
