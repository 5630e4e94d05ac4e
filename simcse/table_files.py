"""Training data as a table: a Parquet file, or a folder a ``datasets`` Dataset was saved to (``save_to_disk``),
its columns named as the JSONL keys or the TSV headers. Read in record batches through pyarrow and ``datasets``
(the ``datasets`` extra), never whole; each record goes through its kind's checks, as a line of a text file does."""

from __future__ import annotations

import logging
import unicodedata
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from simcse.data import Row
from simcse.text_files import DataFormatError

if TYPE_CHECKING:
    from simcse.train_data import DataKind

logger = logging.getLogger("simcse.data")

BATCH_ROWS = 10_000  # records per batch read
# A retrieval table may leave out its queries' negatives and a teacher's scores.
OPTIONAL_COLUMNS = ("neg", "pos_scores", "neg_scores")


def is_table_folder(path: Path) -> bool:
    """Whether ``path`` is a folder ``save_to_disk`` wrote (a Dataset's state.json, or a DatasetDict's index)."""
    return path.is_dir() and any((path / name).is_file() for name in ("state.json", "dataset_dict.json"))


def is_table(path: Path) -> bool:
    return path.suffix.lower() == ".parquet" or is_table_folder(path)


def _dataset(path: Path):
    """The ``datasets.Dataset`` saved in ``path`` (memory-mapped Arrow, nothing read yet)."""
    datasets = _import("datasets", path)
    loaded = datasets.load_from_disk(str(path))
    if isinstance(loaded, datasets.DatasetDict):
        example = path / next(iter(loaded))
        raise DataFormatError(
            path, None, f"a DatasetDict of splits {', '.join(loaded)}: give one split's folder, e.g. {example}"
        )
    return loaded


def _import(module: str, path: Path):
    try:
        return __import__(module)
    except ImportError:
        raise ImportError(
            f"{path}: reading Parquet files and datasets folders needs the datasets package: "
            "pip install 'simcse-ko[datasets]'"
        ) from None


def table_columns(path: Path) -> list[str]:
    if is_table_folder(path):
        return list(_dataset(path).column_names)
    _import("pyarrow", path)
    import pyarrow.parquet

    try:
        return list(pyarrow.parquet.ParquetFile(path).schema_arrow.names)
    except pyarrow.ArrowException as err:
        raise DataFormatError(path, None, f"not a Parquet file ({err})") from None


def table_kind(path: Path, kinds: Mapping[str, DataKind]) -> DataKind:
    """The kind whose columns the table holds (the one with the most, when several fit: triplets over pairs)."""
    columns = set(table_columns(path))
    fitting = [kind for kind in kinds.values() if set(kind.columns) - set(OPTIONAL_COLUMNS) <= columns]
    if not fitting:
        expected = " | ".join(", ".join(kind.columns) for kind in kinds.values())
        raise DataFormatError(
            path, None, f"columns {', '.join(sorted(columns))} are no training data; name them as one of: {expected}"
        )
    return max(fitting, key=lambda kind: len(kind.columns))


def table_rows(path: Path, kind: DataKind) -> Iterator[Row]:
    """The table's records as rows of ``kind`` ("row 1" is its first record), texts in Unicode NFC as a text
    file's are."""
    present = set(table_columns(path))
    names = [name for name in kind.columns if name in present]
    number, changed = 0, 0
    for batch in _batches(path, names):
        for values in zip(*(batch[name] for name in names)):
            number += 1
            record = {}
            for name, value in zip(names, values):
                record[name], was_changed = _composed(value)
                changed += was_changed
            yield kind.record(path, f"row {number}", record)
    if changed:
        logger.warning("%s: %d text(s) normalised to Unicode NFC (decomposed Hangul composed)", path, changed)


def _batches(path: Path, names: list[str]) -> Iterator[dict[str, list]]:
    if is_table_folder(path):
        yield from _dataset(path).select_columns(names).iter(batch_size=BATCH_ROWS)
        return
    import pyarrow.parquet

    for batch in pyarrow.parquet.ParquetFile(path).iter_batches(batch_size=BATCH_ROWS, columns=names):
        yield batch.to_pydict()


def _composed(value) -> tuple[object, int]:
    """A text (or a list of texts) in NFC, and how many texts that changed."""
    if isinstance(value, str):
        if unicodedata.is_normalized("NFC", value):
            return value, 0
        return unicodedata.normalize("NFC", value), 1
    if isinstance(value, list):
        pairs = [_composed(item) for item in value]
        return [item for item, _ in pairs], sum(count for _, count in pairs)
    return value, 0
