"""simcse-ko: supervised and unsupervised SimCSE for Korean sentence embeddings."""

from simcse.data import DataFormatError, STSData, TrainData, load_sts, load_train_data
from simcse.evaluate import evaluate_sts, format_sts_table, sts_metrics
from simcse.loss import info_nce
from simcse.model import SimCSEModel

__version__ = "0.1.0"
__all__ = [
    "DataFormatError",
    "STSData",
    "SimCSEModel",
    "TrainData",
    "evaluate_sts",
    "format_sts_table",
    "info_nce",
    "load_sts",
    "load_train_data",
    "sts_metrics",
]
