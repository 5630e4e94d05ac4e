"""How a setting of ``TrainConfig`` is declared (``setting``: its flag's help, group, roles and rule) and the rules a
setting's value must follow: each maps (flag name, value) to the one-line refusal, or None when the value is
fine."""

from __future__ import annotations

import dataclasses
import math
import typing
from collections.abc import Callable

# A rule maps (flag name, value) to an error message, or None when the value is fine.
Rule = Callable[[str, typing.Any], "str | None"]


def at_least(low: float) -> Rule:
    return lambda name, value: (
        None if value is None or value >= low else f"--{name} must be at least {low}, got {value}"
    )


def in_unit_interval(name: str, value: float) -> str | None:
    return None if 0 <= value < 1 else f"--{name} must lie in [0, 1), got {value}"


def between(low: float, high: float, why: str) -> Rule:
    return lambda name, value: (
        None if low <= value <= high else f"--{name} must lie in [{low}, {high}] ({why}), got {value}"
    )


# The largest magnitude a float32 holds: a value beyond it becomes infinite inside the loss.
FLOAT32_MAX = 3.4028234663852886e38


def finite(name: str, value: float) -> str | None:
    if not math.isfinite(value) or abs(value) > FLOAT32_MAX:
        return f"--{name} must be a finite number within float32's range, got {value}"
    return None


def non_empty_path(name: str, value: str | None) -> str | None:
    """An empty path (an unset variable in a script) would mean the current folder: never what was meant."""
    if value is not None and not str(value).strip():
        return f"--{name} is empty: give a file or folder (an unset variable in a script?)"
    return None


def positive(name: str, value: float) -> str | None:
    return None if 0 < value < math.inf else f"--{name} must be positive and finite, got {value}"


def non_negative(name: str, value: float) -> str | None:
    return None if 0 <= value < math.inf else f"--{name} must be non-negative and finite, got {value}"


def hub_repo_id(name: str, value: str | None) -> str | None:
    if value is None:
        return None
    from huggingface_hub.utils import HFValidationError, validate_repo_id  # only runs that push pay its import

    try:
        validate_repo_id(value)
    except HFValidationError as err:
        return f"--{name} {value!r} is not a valid Hub repo id (user/name): {str(err).splitlines()[0]}"
    return None


def one_of(choices: tuple[str, ...]) -> Rule:
    return lambda name, value: None if value in choices else f"--{name} {value!r}: choose one of {', '.join(choices)}"


def setting(
    default: typing.Any,
    help: str,
    group: str,
    *,
    required: bool = False,
    resume: bool = False,
    card: bool = False,
    rule: Rule | None = None,
    choices: tuple[str, ...] | None = None,
    none_means: str | None = None,
    metavar: str | None = None,
    path: bool = False,
) -> typing.Any:
    """A ``TrainConfig`` field with what its flag needs: ``none_means`` says what a default of None stands for;
    ``path`` marks a value that may name a local file or folder (compared after resolving it on resume)."""
    if choices and rule is None:
        rule = one_of(choices)
    if path and rule is None:
        rule = non_empty_path
    metadata = dict(
        help=help,
        group=group,
        required=required,
        resume=resume,
        card=card,
        rule=rule,
        choices=choices,
        none_means=none_means,
        metavar=metavar,
        path=path,
    )
    return dataclasses.field(default=default, metadata=metadata)


def as_list(value) -> list:
    """A mixture setting's values: a list as it is, one value as a list of one."""
    return value if isinstance(value, list) else [value]


def one_or_list(values: list):
    """Values per training dataset as the run files record them: one value for a run on one dataset (as before
    mixtures), else the list."""
    return values[0] if len(values) == 1 else values
