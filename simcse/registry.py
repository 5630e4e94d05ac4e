"""The named datasets: where each file lies under the data folder, which script downloads it, and what it is
on the Hugging Face Hub (for model cards). The loader, eval.py and the model card all read this table."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

DATA_DIR_VARIABLE = "SIMCSE_KO_DATA_DIR"
DATA_DIR_DEFAULT = f"${DATA_DIR_VARIABLE}, else the checkout's data/ (a source checkout), else ./data"
DATA_DIR_HELP = f"folder the dataset names resolve in (default: {DATA_DIR_DEFAULT})"
_CHECKOUT = Path(__file__).resolve().parent.parent
# Where the token stores of training files live (simcse.token_store): the flag, else the variable, else the user's
# cache folder; IN_MEMORY tokenizes in memory instead.
TOKEN_STORE_VARIABLE = "SIMCSE_KO_TOKEN_STORE"
TOKEN_STORE_IN_MEMORY = "memory"
TOKEN_STORE_TIMEOUT = 4 * 3600.0  # seconds the other torchrun processes wait for the first to build a store


def missing_data_hint(commands: str, held: str) -> str:
    """How to get a registered dataset that is not there: its download ``commands`` (in a source checkout, where
    the scripts are; an installed package has none), then where the package looks for ``held``."""
    where = f"--data_dir (or ${DATA_DIR_VARIABLE}) at the folder holding {held}"
    if (_CHECKOUT / "data" / "download.sh").is_file():
        return f"run `{commands}`, or point {where}"
    return f"the download scripts come with a source checkout of simcse-ko (`{commands}` there); then point {where}"


def default_data_dir() -> Path:
    """Where dataset names resolve when no data folder is given: ``$SIMCSE_KO_DATA_DIR`` if set; else, for the
    package of a source checkout (``pip install -e .``), the checkout's data/, where its download scripts write;
    else (an installed package, whose parent folder is site-packages) data/ in the current directory."""
    if os.environ.get(DATA_DIR_VARIABLE):
        return Path(os.environ[DATA_DIR_VARIABLE])
    if (_CHECKOUT / "data" / "download.sh").is_file():
        return _CHECKOUT / "data"
    return Path("data")


def default_token_store() -> str:
    """``$SIMCSE_KO_TOKEN_STORE`` (a folder, or ``memory``), else ``$XDG_CACHE_HOME`` (or ~/.cache)
    /simcse-ko/token-store: never the checkout."""
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return os.environ.get(TOKEN_STORE_VARIABLE) or str(cache / "simcse-ko" / "token-store")


@dataclass(frozen=True)
class Dataset:
    name: str
    file: str  # under the data folder
    download_script: str  # in the repo
    hub_id: str
    display_name: str
    hub_split: str


_KORSTS = ("data/download_korsts.sh", "kakaobrain/kor_nlu", "KorSTS")
_KLUE_STS = ("data/download_klue_sts.sh", "klue/klue", "KLUE-STS")

STS_DATASETS = {
    dataset.name: dataset
    for dataset in (
        Dataset("korsts_train", "korsts/sts-train.tsv", *_KORSTS, "train"),
        Dataset("korsts_dev", "korsts/sts-dev.tsv", *_KORSTS, "validation"),
        Dataset("korsts_test", "korsts/sts-test.tsv", *_KORSTS, "test"),
        Dataset("klue_sts_train", "klue_sts/klue-sts-v1.1_train.json", *_KLUE_STS, "train"),
        Dataset("klue_sts_dev", "klue_sts/klue-sts-v1.1_dev.json", *_KLUE_STS, "validation"),
    )
}
# The supervised training data's source (data/build_nli_triplets.py builds triplets from it).
KORNLI_HUB_ID = "kakaobrain/kor_nli"
KORNLI_DOWNLOAD_SCRIPT = "data/download_kornli.sh"


# The BEIR layout of a retrieval set's folder (simcse.retrieval reads it, simcse.korquad writes it).
CORPUS_NAME, QUERIES_NAME, QRELS_FOLDER = "corpus.jsonl", "queries.jsonl", "qrels"
QRELS_HEADER = ("query-id", "corpus-id", "score")


@dataclass(frozen=True)
class RetrievalSet:
    name: str
    folder: str  # under the data folder, in the BEIR layout
    source: str  # the file it is built from, under the data folder
    download_script: str
    build_command: str


# Retrieval sets by name: eval.py's --test_data korquad_dev reads DATA_DIR/korquad/korquad_dev.
RETRIEVAL_SETS = {
    dataset.name: dataset
    for dataset in (
        RetrievalSet(
            "korquad_dev",
            "korquad/korquad_dev",
            "korquad/KorQuAD_v1.0_dev.json",
            "data/download_korquad.sh",
            "python data/build_korquad.py",
        ),
    )
}
