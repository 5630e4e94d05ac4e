"""Reading text data files exactly: UTF-8 (a leading BOM removed) in Unicode NFC, lines split on "\\n" only, fields
on tabs with quoting disabled, sentences and scores checked; every problem a ``DataFormatError`` naming the file
and the 1-based line. ``simcse.data`` builds the formats on these."""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import re
import stat
import unicodedata
from collections.abc import Iterable, Iterator
from pathlib import Path

logger = logging.getLogger("simcse.data")  # the data readers' one log

MIN_SCORE, MAX_SCORE = 0.0, 5.0
QUOTE_LIMIT = 100  # characters of a file's text an error message quotes
# Characters that show nothing: Unicode controls and formats (zero-width space and joiners, BOM, direction
# marks) and the Hangul fillers, which are letters to Unicode but blank on screen and to a reader.
INVISIBLE_CATEGORIES = ("Cc", "Cf", "Zs", "Zl", "Zp")
HANGUL_FILLERS = "\u115f\u1160\u3164\uffa0"
# A decimal number as people write one: Python's float() would also take "0_5" (digit separators), " 5 " and
# "infinity".
NUMBER = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")


def quoted(text: object) -> str:
    """``repr(text)``, cut to about ``QUOTE_LIMIT`` characters: a file with no line breaks the reader knows
    (CR-only line endings) is one long line, and an error must not echo all of it."""
    shown = repr(text)
    return shown if len(shown) <= QUOTE_LIMIT else f"{shown[:QUOTE_LIMIT]}... ({len(str(text))} characters)"


def is_blank(text: str) -> bool:
    """True when ``text`` shows nothing: empty, whitespace, or only control, format and zero-width characters."""
    return all(unicodedata.category(char) in INVISIBLE_CATEGORIES or char in HANGUL_FILLERS for char in text)


def file_fingerprint(path: str | os.PathLike) -> str:
    """SHA-256 of a file's bytes: a resumed run checks that its data did not change in place."""
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        while chunk := file.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


class DataFormatError(ValueError):
    """A data file that cannot be read as its format says; the message names the file and where."""

    def __init__(self, path: str | os.PathLike, where: str | None, problem: str):
        self.path, self.where, self.problem = str(path), where, problem
        super().__init__(f"{path}, {where}: {problem}" if where else f"{path}: {problem}")


def check_is_file(path: Path) -> None:
    """A path to read data from must be a regular file: a folder, a pipe (``<(...)``, read only once, where the
    package reads its data twice) or a device is named for what it is."""
    if path.is_file():
        return
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file")
    if path.is_dir():
        raise IsADirectoryError(f"{path}: a folder, not a data file; give the file inside it")
    kind = "a pipe (<(...) or a FIFO)" if stat.S_ISFIFO(path.stat().st_mode) else "not a regular file"
    raise OSError(f"{path}: {kind}; the data is read more than once, so write it to a file first")


def read_text(path: Path) -> str:
    """A UTF-8 file's text (a leading BOM removed) in Unicode NFC; undecodable bytes are reported with their line.

    NFC is the one change made to the text: decomposed Hangul (NFD, as macOS and some web pages write it) is
    composed, so that a tokenizer sees the syllables it knows instead of jamo it maps to [UNK]."""
    check_is_file(path)
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        line = raw.count(b"\n", 0, err.start) + 1
        raise DataFormatError(
            path, f"line {line}", f"not valid UTF-8 (byte 0x{raw[err.start]:02x}); save the file as UTF-8"
        ) from None
    return composed(path, text.removeprefix("\ufeff"))


def composed(path: Path, text: str) -> str:
    """``text`` in NFC, with one log line counting the sentences (tab-separated fields) it changed."""
    if unicodedata.is_normalized("NFC", text):
        return text
    composed = unicodedata.normalize("NFC", text)
    changed = sum(
        before != after
        for line_before, line_after in zip(text.split("\n"), composed.split("\n"))
        if line_before != line_after
        for before, after in zip(line_before.split("\t"), line_after.split("\t"))
    )
    logger.warning("%s: %d sentence(s) normalised to Unicode NFC (decomposed Hangul composed)", path, changed)
    return composed


def read_lines(path: Path) -> list[tuple[int, str]]:
    """(1-based line number, line) for every line of a UTF-8 file, line endings removed."""
    return list(stream_lines(path))


def stream_lines(path: Path) -> Iterator[tuple[int, str]]:
    """``read_lines``, one line at a time: the file is never held whole. Lines split on "\\n" only (str.splitlines
    would also split on characters such as U+2028 inside a sentence); each is in NFC, as ``read_text`` makes it."""
    check_is_file(path)
    changed = 0  # sentences (tab-separated fields) that NFC changed
    with open(path, "rb") as file:
        for number, raw in enumerate(file, start=1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as err:
                raise DataFormatError(
                    path, f"line {number}", f"not valid UTF-8 (byte 0x{raw[err.start]:02x}); save the file as UTF-8"
                ) from None
            line = line.removesuffix("\n").removesuffix("\r")
            if number == 1:
                line = line.removeprefix("\ufeff")
            if not unicodedata.is_normalized("NFC", line):
                composed = unicodedata.normalize("NFC", line)
                changed += sum(a != b for a, b in zip(line.split("\t"), composed.split("\t")))
                line = composed
            yield number, line
    if changed:
        logger.warning("%s: %d sentence(s) normalised to Unicode NFC (decomposed Hangul composed)", path, changed)


def drop_blank_lines(path: Path, lines: Iterable[tuple[int, str]]) -> Iterator[tuple[int, str]]:
    """The non-blank lines, one log line counting the blank ones once all are read."""
    blank = 0
    for number, line in lines:
        if line.strip():
            yield number, line
        else:
            blank += 1
    if blank:
        logger.warning("%s: skipped %d blank line(s)", path, blank)


def check_sentence(path: Path, where: str, text: str, column: str) -> str:
    if not text.strip():
        raise DataFormatError(path, where, f"empty sentence in column {column!r}")
    if is_blank(text):
        raise DataFormatError(
            path,
            where,
            f"sentence {quoted(text)} in column {column!r} has only invisible (control or zero-width) characters",
        )
    return text


def is_number(text: str) -> bool:
    return bool(NUMBER.fullmatch(text))


def parse_score(path: Path, where: str, text: str | float) -> float:
    if isinstance(text, str) and not is_number(text):
        raise DataFormatError(path, where, f"score {quoted(text)} is not a number")
    try:
        score = float(text)
    except (TypeError, ValueError):
        raise DataFormatError(path, where, f"score {quoted(text)} is not a number") from None
    if not (math.isfinite(score) and MIN_SCORE <= score <= MAX_SCORE):
        raise DataFormatError(path, where, f"score {quoted(text)} is outside [{MIN_SCORE:g}, {MAX_SCORE:g}]")
    return score


def split_row(path: Path, number: int, line: str, expected: int, what: str) -> list[str]:
    fields = line.split("\t")
    if len(fields) != expected:
        hint = " (a tab inside a sentence is not allowed)" if len(fields) > expected else ""
        raise DataFormatError(
            path, f"line {number}", f"expected {expected} tab-separated columns ({what}), found {len(fields)}{hint}"
        )
    return fields


def json_objects(
    path: Path, lines: Iterable[tuple[int, str]], required: tuple[str, ...] = ()
) -> Iterator[tuple[int, dict]]:
    """(line number, object) for every non-blank line of a JSONL file's ``lines``, each a JSON object whose
    ``required`` keys hold text."""
    for number, line in drop_blank_lines(path, lines):
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise DataFormatError(path, f"line {number}", f"not valid JSON ({err.msg})") from None
        if not isinstance(row, dict):
            raise DataFormatError(path, f"line {number}", "expected a JSON object")
        for key in required:
            if not isinstance(row.get(key), str):
                raise DataFormatError(path, f"line {number}", f"missing or non-string {key!r}")
        yield number, row
