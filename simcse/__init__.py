"""simcse-ko: supervised and unsupervised SimCSE for Korean sentence embeddings.

The names below load on first use, so that ``import simcse.config`` (flag parsing, ``--help``) does not pay
for importing torch and transformers.
"""

import importlib

__version__ = "0.1.0"

_HOMES = {
    "DataFormatError": "simcse.data",
    "STSData": "simcse.data",
    "TrainData": "simcse.train_data",
    "load_sts": "simcse.data",
    "load_train_data": "simcse.train_data",
    "evaluate_sts": "simcse.evaluate",
    "format_sts_table": "simcse.evaluate",
    "sts_metrics": "simcse.evaluate",
    "info_nce": "simcse.loss",
    "mine_hard_negatives": "simcse.mining",
    "SimCSEModel": "simcse.model",
    "evaluate_retrieval": "simcse.retrieval",
    "format_retrieval_table": "simcse.retrieval",
    "load_retrieval_set": "simcse.retrieval",
    "TASKS": "simcse.tasks",
    "load_set": "simcse.tasks",
}
__all__ = sorted(_HOMES)


def __getattr__(name: str):
    if name in _HOMES:
        return getattr(importlib.import_module(_HOMES[name]), name)
    raise AttributeError(f"module 'simcse' has no attribute {name!r}")


def __dir__() -> list[str]:
    return [*globals(), *_HOMES]
