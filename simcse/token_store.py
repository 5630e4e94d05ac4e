"""The token store: each training file tokenized once, for a given tokenizer, lengths and prompts, into flat arrays
on disk that later runs and every torchrun process memory-map read-only (numpy memmaps of the ids and their
offsets: a batch reads its rows by two slices, no conversion).

Layout: ``ROOT/<file name>-<key>/`` holds the arrays and ``meta.json``, written last; the key is a hash of what
changes the ids (the file's resolved path, its kind, the tokenizer's pipeline, the lengths and prompts, the store
format). ``meta.json`` records the file's size, mtime and SHA-256: a file whose size and mtime are unchanged is
trusted without reading it, one that changed is hashed, and rebuilt when its bytes differ.

One process builds (the first torchrun process, under a lock that also keeps two runs from building the same
store), into a ``.partial-<pid>`` folder renamed into place when complete, so that a crash leaves nothing a later
run would trust; the other processes wait for its meta.json, saying what they wait for, up to a timeout.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import logging
import math
import os
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from simcse import __version__
from simcse.registry import TOKEN_STORE_IN_MEMORY, TOKEN_STORE_TIMEOUT, TOKEN_STORE_VARIABLE, default_token_store
from simcse.text_files import file_fingerprint
from simcse.tokenized import Build, Ragged, TextSettings, TokenizedData, build_tokenized, map_array
from simcse.train_data import DataKind, RowSummary, train_rows

logger = logging.getLogger(__name__)

FORMAT = 2  # bumped when the layout or the reading of a file changes, so that older stores are not read
META_NAME = "meta.json"
WAIT_SAY_EVERY = 60.0  # seconds between a waiting process's lines


@dataclass(frozen=True)
class StoreSettings:
    """Where stores live (None: in memory), how long a waiting process waits, and whether this process builds."""

    root: Path | None
    timeout: float = TOKEN_STORE_TIMEOUT
    builds: bool = True  # the first torchrun process (or a lone one)
    rank: int = 0

    @classmethod
    def from_flag(cls, value: str | None, timeout: float, builds: bool = True, rank: int = 0) -> StoreSettings:
        chosen = value or default_token_store()  # the flag, else the variable, else the cache folder
        return cls(None if chosen == TOKEN_STORE_IN_MEMORY else Path(chosen), timeout, builds, rank)


def tokenized_train_data(path: Path, kind: DataKind, text: TextSettings, store: StoreSettings) -> TokenizedData:
    """The training file at ``path`` as token ids: from its store (built first when absent or stale), or
    tokenized in memory when ``store.root`` is None."""
    rows = lambda: train_rows(path, kind)  # noqa: E731 (read afresh by each pass)
    if store.root is None:
        data = build_tokenized(rows, str(path), kind, text, Build(None))
        data.fingerprint = _fingerprint(path)
        return data
    key = {"format": FORMAT, "source": str(path.resolve()), "kind": kind.name, "text": text.key()}
    folder = store.root / f"{path.name}-{hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]}"
    if store.builds:
        meta = _build_or_open(path, folder, lambda target: _build(rows, path, kind, text, key, target))
    else:
        meta = _wait(path, folder, store)
    return _open(folder, meta, str(path))


def _stat(path: Path) -> dict:
    """The size and mtime of a file, or of a datasets folder's files (their sum and their latest)."""
    if path.is_file():
        facts = path.stat()
        return {"size": facts.st_size, "mtime_ns": facts.st_mtime_ns}
    files = [one.stat() for one in sorted(path.rglob("*")) if one.is_file()]
    return {"size": sum(one.st_size for one in files), "mtime_ns": max((one.st_mtime_ns for one in files), default=0)}


def _fingerprint(path: Path) -> str:
    if path.is_file():
        return file_fingerprint(path)
    digest = hashlib.sha256()
    for one in sorted(path.rglob("*")):
        if one.is_file():
            digest.update(f"{one.relative_to(path)}\0{file_fingerprint(one)}\0".encode())
    return digest.hexdigest()


def _read_meta(folder: Path) -> dict | None:
    try:
        return json.loads((folder / META_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _is_fresh(meta: dict | None, path: Path, folder: Path) -> bool:
    """Whether a store's meta.json was built from the file as it is (size and mtime, as recorded), its arrays
    whole."""
    return meta is not None and _same_source(meta, path) and _arrays_whole(meta, folder)


def _same_source(meta: dict, path: Path) -> bool:
    return {key: meta["source"][key] for key in ("size", "mtime_ns")} == _stat(path)


def _arrays_whole(meta: dict, folder: Path) -> bool:
    """Whether every array file meta.json lists is there with its full size (none deleted or cut short)."""
    for name, (dtype, count) in meta["arrays"].items():
        array = folder / name
        if not array.is_file() or array.stat().st_size != count * np.dtype(dtype).itemsize:
            return False
    return True


def _build_or_open(path: Path, folder: Path, build) -> dict:
    """The meta.json of the file's store, built first when absent, stale or damaged."""
    try:
        folder.parent.mkdir(parents=True, exist_ok=True)
        if not os.access(folder.parent, os.W_OK):
            raise PermissionError(errno.EACCES, "not writable")
    except OSError as err:
        raise OSError(
            f"{folder.parent}: cannot hold token stores ({err.strerror}); point --token_store (or "
            f"${TOKEN_STORE_VARIABLE}) at a folder you can write, or pass --token_store {TOKEN_STORE_IN_MEMORY}"
        ) from None
    if _is_fresh(meta := _read_meta(folder), path, folder):
        return meta
    with _locked(folder.with_name(folder.name + ".lock"), path):
        meta = _read_meta(folder)  # another run may have built it meanwhile
        whole = meta is not None and _arrays_whole(meta, folder)
        if whole and _same_source(meta, path):
            return meta
        if whole and meta["source"]["sha256"] == _fingerprint(path):
            meta["source"] |= _stat(path)  # touched, not changed: trusted from now on without hashing
            _write_meta(folder, meta)
            return meta
        if meta is not None:
            why = "changed since its token store was built" if whole else f"its token store {folder} lost an array"
            logger.warning("%s: %s; tokenizing it again", path, why)
        _replace(folder, build)
        meta = _read_meta(folder)
    print(
        f"token store of {path}: {folder} ({meta['summary']['rows']} examples in {meta['built']['seconds']} s)",
        flush=True,
    )
    return meta


class _locked:
    """An exclusive lock on ``lock_path`` (released by the OS if the process dies), waited for with a line a
    minute."""

    def __init__(self, lock_path: Path, source: Path):
        self.lock_path, self.source = lock_path, source

    def __enter__(self):
        self.file = open(self.lock_path, "a")  # closed in __exit__
        started = said = time.monotonic()
        while True:
            try:
                fcntl.flock(self.file, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return self
            except BlockingIOError:
                if time.monotonic() - said > WAIT_SAY_EVERY:
                    said = time.monotonic()
                    print(f"waiting for another run building the token store of {self.source} ({self.lock_path}); "
                          f"{said - started:.0f} s so far", flush=True)  # fmt: skip
                time.sleep(1)

    def __exit__(self, *exc) -> None:
        fcntl.flock(self.file, fcntl.LOCK_UN)
        self.file.close()


def _replace(folder: Path, build) -> None:
    """Build into a partial folder and move it into place; partial folders of builds that died are removed
    (their lock is free, so their builder is gone)."""
    for stale in folder.parent.glob(f"{folder.name}.partial-*"):
        shutil.rmtree(stale, ignore_errors=True)
    partial = folder.with_name(f"{folder.name}.partial-{os.getpid()}")
    partial.mkdir()
    try:
        build(partial)
    except BaseException as err:
        shutil.rmtree(partial, ignore_errors=True)
        if isinstance(err, OSError) and err.errno == errno.ENOSPC:
            raise OSError(
                f"no space left on the disk of {folder.parent} for a token store: free some, or point --token_store "
                f"(or ${TOKEN_STORE_VARIABLE}) at another disk"
            ) from None
        raise
    if folder.exists():
        old = folder.with_name(f"{folder.name}.old-{os.getpid()}")
        folder.rename(old)
        shutil.rmtree(old, ignore_errors=True)
    partial.rename(folder)


def _build(rows, path: Path, kind: DataKind, text: TextSettings, key: dict, folder: Path) -> None:
    before, started = _stat(path), time.perf_counter()
    sha256 = _fingerprint(path)
    plan = Build(folder, desc=f"token store of {path.name}")
    data = build_tokenized(rows, str(path), kind, text, plan)
    if _stat(path) != before:
        raise RuntimeError(f"{path} changed while it was being tokenized; run again once it is written")
    meta = {
        "format": FORMAT,
        "key": key,
        "source": {"path": str(path.resolve()), **before, "sha256": sha256},
        "kind": kind.name,
        "summary": asdict(data.summary),
        "arrays": plan.arrays,
        "built": {"seconds": round(time.perf_counter() - started, 1), "simcse": __version__},
    }
    _write_meta(folder, meta)


def _write_meta(folder: Path, meta: dict) -> None:
    """meta.json, replaced whole (written beside it, then renamed): its presence marks a complete store."""
    staging = folder / f"{META_NAME}.{os.getpid()}"
    staging.write_text(json.dumps(meta, indent=1, ensure_ascii=False), encoding="utf-8")
    os.replace(staging, folder / META_NAME)


def _wait(path: Path, folder: Path, store: StoreSettings) -> dict:
    """The meta.json of the file's store, once the first process has built (or checked) it; a line when the wait
    begins and each ``WAIT_SAY_EVERY`` seconds after."""
    started, said = time.monotonic(), -math.inf
    what = f"rank {store.rank}: waiting for rank 0 to tokenize {path} into {folder}"
    while not _is_fresh(meta := _read_meta(folder), path, folder):
        waited = time.monotonic() - started
        if time.monotonic() - said >= WAIT_SAY_EVERY:
            said = time.monotonic()
            print(f"{what} ({waited:.0f} s so far; --token_store_timeout {store.timeout:g})", flush=True)
        if waited > store.timeout:
            raise TimeoutError(
                f"{what}: not done after --token_store_timeout {store.timeout:g} s (a slow build: raise it, or build "
                "the store first with data/prepare.py; several machines: --token_store must be a folder they share)"
            )
        time.sleep(0.5)
    return meta


def _open(folder: Path, meta: dict, path: str) -> TokenizedData:
    """The store's arrays, memory-mapped read-only (``path``: the file as the run names it)."""
    arrays = {name: map_array(folder / name, dtype, count) for name, (dtype, count) in meta["arrays"].items()}

    def ragged(name: str) -> Ragged | None:
        return Ragged(arrays[f"{name}.values"], arrays[f"{name}.offsets"]) if f"{name}.values" in arrays else None

    columns = [ragged(f"column{i}") for i in range(3) if f"column{i}.values" in arrays]
    data = TokenizedData(path, meta["kind"], columns, RowSummary(**meta["summary"]))
    data.scores = arrays.get("scores")
    data.documents, data.positives, data.negatives = ragged("documents"), ragged("positives"), ragged("negatives")
    data.positive_scores, data.negative_scores = arrays.get("positive_scores"), arrays.get("negative_scores")
    data.fingerprint, data.store = meta["source"]["sha256"], str(folder)
    return data
