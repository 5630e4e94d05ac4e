"""What the command-line scripts share: one-line errors instead of tracebacks."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable


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
