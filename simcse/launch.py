"""torchrun with a short failure report: ``python -m simcse.launch ARGS`` runs ``torchrun ARGS`` (the same
``torch.distributed.run``, the same flags), except that when a process fails, torchrun's own traceback of its
launcher (``ChildFailedError``) becomes one line naming each failed process and how it ended. What the processes
printed stays above it as it was: the package's one ``error:`` line, or a real crash's traceback."""

from __future__ import annotations

import sys

from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
from torch.distributed.run import main as torchrun


def failure_line(err: ChildFailedError) -> str:
    """The launcher's line for failed processes: each rank's exit code, or the signal that ended it."""
    ended = [
        f"rank {rank}: signal {failure.signal_name()}"
        if failure.exitcode < 0
        else f"rank {rank}: exit code {failure.exitcode}"
        for rank, failure in sorted(err.failures.items())
    ]
    return f"torchrun: {err.name} failed ({'; '.join(ended)}); the processes' own output is above"


def main(argv: list[str] | None = None) -> None:
    try:
        torchrun(argv)
    except ChildFailedError as err:
        print(failure_line(err), file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
