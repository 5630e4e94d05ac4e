"""Helpers shared by the command-line scripts: device choice and one-line errors."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable

import torch


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` picks CUDA when available, else the CPU; any other name is passed to torch."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {name}: CUDA is not available on this machine")
    return device


def run_main(main: Callable[[], object]) -> None:
    """Run a script's main; a user error (bad file, bad value, a missing optional package) ends it with one
    line and exit code 1.

    Set SIMCSE_DEBUG=1 to get the full traceback instead.
    """
    try:
        main()
    except (OSError, ValueError, ImportError) as err:
        if os.environ.get("SIMCSE_DEBUG"):
            raise
        message = " ".join(str(err).split())
        print(f"error: {message}", file=sys.stderr)
        sys.exit(1)
