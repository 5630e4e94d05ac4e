"""What the command-line scripts share: train.py's parser built from ``TrainConfig``, and one-line errors instead of
tracebacks."""

from __future__ import annotations

import argparse
import dataclasses
import errno
import os
import sys
import typing
from collections.abc import Callable
from pathlib import Path

from simcse.config import RENAMED_SETTINGS, ConfigError, TrainConfig, fields_by_group
from simcse.rules import non_empty_path
from simcse.text_files import is_number

# Failures a user causes and can fix (a bad file, flag or folder, a missing optional package): their message
# says what to fix, so it is the whole error line.
USER_ERRORS = (OSError, ValueError, ImportError)
MESSAGE_LIMIT = 1000  # characters of an error line
DEBUG_HINT = "SIMCSE_DEBUG=1 for the traceback"


PREPARE_DESCRIPTION = """Build the token store of every --train_data file ahead of training (on a cluster's login node,
say): each file tokenized as train.py with the same flags reads it (the model's tokenizer, --max_length,
--document_max_length, the prompts). Takes train.py's flags; those that only training reads are ignored."""
TRAIN_DESCRIPTION = r"""Train a SimCSE sentence encoder. Defaults are the reference recipe; see README.md for every
flag.

    python train/train.py --model klue/bert-base --train_data data/kornli/kornli_triplets.tsv \
        --valid_data korsts_dev --output_path outputs/sup-simcse-bert-base --amp
"""


def error_line(err: BaseException) -> str:
    """The one line a script prints for ``err``."""
    if isinstance(err, OSError) and err.errno == errno.ENOSPC:
        where = err.filename or "the device"
        message = f"no space left on {where}: free some space or choose another {getattr(err, 'flag', '--output_path')}"
    elif isinstance(err, USER_ERRORS):
        message = str(err) or type(err).__name__
    elif isinstance(err, RecursionError):
        message = f"an input is nested too deeply to read (a JSON file?) ({DEBUG_HINT})"
    else:
        message = f"unexpected {type(err).__name__}: {err} ({DEBUG_HINT})"
    message = " ".join(message.split())
    if len(message) > MESSAGE_LIMIT:
        message = message[:MESSAGE_LIMIT] + f"... ({DEBUG_HINT})"
    return f"error: {message}"


def run_main(main: Callable[[], object]) -> None:
    """Run a script's main; any failure ends it with one ``error:`` line and exit code 1 (130 when
    interrupted). A user error's line says what to fix; an unexpected one names its type and the way to get
    the traceback: set SIMCSE_DEBUG=1 to have it raised instead.
    """
    try:
        main()
    except KeyboardInterrupt:
        if os.environ.get("SIMCSE_DEBUG"):
            raise
        print("error: interrupted", file=sys.stderr)
        sys.exit(130)
    except Exception as err:
        if os.environ.get("SIMCSE_DEBUG"):
            raise
        # A bad flag is found alike by every torchrun process: the first one says it.
        if not (isinstance(err, ConfigError) and os.environ.get("RANK", "0") != "0"):
            print(error_line(err), file=sys.stderr)
        sys.exit(1)


def refuse_empty_paths(args, *names: str) -> None:
    """A script's path flags by train.py's rule: an empty one (an unset variable) would mean the current folder."""
    for name in names:
        values = getattr(args, name)
        for value in values if isinstance(values, list) else [values]:
            if message := non_empty_path(name, value):
                raise ValueError(message)


def check_writable_file(path: str | os.PathLike, flag: str) -> None:
    """Refuse, before any work, an output file that cannot be written: a folder, or a place without write
    permission (the nearest existing folder above it is the one that must be writable)."""
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"{flag} {path}: a folder; give the name of a file to write (inside it, or elsewhere)")
    folder = next(parent for parent in path.absolute().parents if parent.exists())
    if not folder.is_dir() or not _writable(folder) or (path.exists() and not _writable(path)):
        raise PermissionError(f"{flag} {path}: cannot be written ({folder} is not writable)")


def _writable(path: Path) -> bool:
    """Writable by this process, and meant to be written: root may write anywhere, but a folder or file without
    any write permission bit was made read-only on purpose."""
    return os.access(path, os.W_OK) and bool(path.stat().st_mode & 0o222)


def default_text(field: dataclasses.Field) -> str:
    """A default as the README and ``--help`` write it: on/off, the value, or what None stands for."""
    if field.default is None:
        return field.metadata["none_means"]
    if isinstance(field.default, bool):
        return "on" if field.default else "off"
    return str(field.default)


def build_parser(description: str | None = None) -> argparse.ArgumentParser:
    """train.py's parser: one flag per ``TrainConfig`` field, grouped, with its default shown."""
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    groups = {}
    types = typing.get_type_hints(TrainConfig)
    old_names = {new: old for old, new in RENAMED_SETTINGS.items()}
    for field in fields_by_group():
        meta = field.metadata
        if meta["group"] not in groups:
            groups[meta["group"]] = parser.add_argument_group(meta["group"])
        shown = "required" if meta["required"] else f"default: {default_text(field)}"
        # argparse %-formats help texts
        kwargs: dict[str, typing.Any] = {
            "default": field.default,
            "help": f"{meta['help']} ({shown})".replace("%", "%%"),
        }
        if meta["required"]:
            kwargs["required"] = True
        if types[field.name] is bool:
            kwargs["action"] = SwitchAction
        else:
            kwargs |= {"type": _scalar_type(types[field.name]), "choices": meta["choices"], "metavar": meta["metavar"]}
            if list in map(typing.get_origin, typing.get_args(types[field.name])):  # a mixture's list
                kwargs["nargs"] = "+"
        groups[meta["group"]].add_argument(f"--{field.name}", **kwargs)
        if field.name in old_names:  # still accepted, no longer shown in --help or the README
            hidden = {key: value for key, value in kwargs.items() if key not in ("help", "default")}
            parser.add_argument(f"--{old_names[field.name]}", dest=field.name, help=argparse.SUPPRESS, **hidden)
    return parser


class SwitchAction(argparse.BooleanOptionalAction):
    """A switch: ``--flag`` and ``--no-flag``, and ``--flag false`` / ``--flag true`` as transformers'
    TrainingArguments write them."""

    WORDS = {"true": True, "1": True, "yes": True, "on": True, "false": False, "0": False, "no": False, "off": False}

    def __init__(self, option_strings, dest, **kwargs):
        super().__init__(option_strings, dest, **kwargs)
        self.nargs, self.metavar = "?", "true|false"

    def __call__(self, parser, namespace, values, option_string=None):
        if values is None:
            return super().__call__(parser, namespace, values, option_string)
        if option_string.startswith("--no-") or values.lower() not in self.WORDS:
            parser.error(f"{option_string} {values}: give --{self.dest} true or false, or --no-{self.dest}")
        setattr(namespace, self.dest, self.WORDS[values.lower()])


def _scalar_type(annotation: typing.Any) -> type:
    """int for ``int`` and ``int | None``, and so on."""
    options = [option for option in typing.get_args(annotation) if option is not type(None)] or [annotation]
    return options[0]


def attach_negative_numbers(argv: list[str]) -> list[str]:
    """``--flag -1e-3`` as ``--flag=-1e-3``: argparse takes "-1e-3" for a flag (it knows negative numbers only as -1
    and -0.5), and a negative value so read gets its own rule's message (``-inf``: must be finite)."""
    joined: list[str] = []
    for arg in argv:
        negative = arg.startswith("-") and (is_number(arg) or arg.lower() in ("-inf", "-nan"))
        if joined and negative and joined[-1].startswith("--") and "=" not in joined[-1]:
            joined[-1] = f"{joined[-1]}={arg}"
        else:
            joined.append(arg)
    return joined


def parse_args(argv: list[str] | None = None, description: str | None = None) -> TrainConfig:
    """train.py's flags as a validated ``TrainConfig`` (ConfigError names the first bad setting)."""
    argv = attach_negative_numbers(sys.argv[1:] if argv is None else list(argv))
    flags = vars(build_parser(description).parse_args(argv))
    # One value given to a list flag is that value: a run on one dataset is configured exactly as before mixtures.
    flags = {name: value[0] if isinstance(value, list) and len(value) == 1 else value for name, value in flags.items()}
    config = TrainConfig(**flags)
    config.validate()
    return config


def train_main() -> None:
    config = parse_args(description=TRAIN_DESCRIPTION)
    from simcse.distributed import cleanup  # torch loads after the flags are read: --help answers at once
    from simcse.trainer import train

    try:
        train(config)
    finally:
        cleanup()


def prepare_main() -> None:
    config = parse_args(description=PREPARE_DESCRIPTION)
    from simcse.run_inputs import prepare_token_stores  # torch loads after the flags are read

    prepare_token_stores(config)


def prepare_command() -> None:
    """The ``simcse-prepare`` entry point (data/prepare.py in a checkout)."""
    run_main(prepare_main)


def train_command() -> None:
    """The ``simcse-train`` entry point (train/train.py in a checkout)."""
    run_main(train_main)
