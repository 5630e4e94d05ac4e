"""Why the token store is numpy memmaps and not an Arrow dataset: the time to read a training step's rows of token
ids at random (what the sampler does), from the store's flat ids and offsets, and from a ``datasets`` Dataset of
the same ids saved with ``save_to_disk`` and loaded back (memory-mapped Arrow), as plain rows and with its numpy
format. Both are read in the same run, alternately.

    python benchmarks/store_reads.py --rows 200000 --steps 300
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from simcse.tokenized import Build, RaggedWriter


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=200_000, help="documents of about 180 tokens")
    parser.add_argument("--steps", type=int, default=300, help="steps of 4 queries x 7 texts read")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    import datasets

    draw = np.random.default_rng(0)
    lengths = draw.integers(120, 256, args.rows)
    ids = draw.integers(5, 250_000, int(lengths.sum()), dtype=np.int32)
    with tempfile.TemporaryDirectory() as folder:
        writer = RaggedWriter(Path(folder), "documents", np.int32, Build(Path(folder)).arrays)
        writer.append(ids, lengths)
        store = writer.finish()
        offsets = np.concatenate([[0], np.cumsum(lengths)])
        rows = [ids[offsets[i] : offsets[i + 1]] for i in range(args.rows)]
        datasets.Dataset.from_dict({"input_ids": rows}).save_to_disk(f"{folder}/arrow")
        arrow = datasets.load_from_disk(f"{folder}/arrow")
        arrow_numpy = arrow.with_format("numpy")
        readers = {
            "token store (memmap slices)": lambda batch: [store[i] for i in batch],
            "datasets, rows": lambda batch: arrow[batch]["input_ids"],
            "datasets, numpy format": lambda batch: arrow_numpy[batch]["input_ids"],
        }
        batches = [draw.integers(0, args.rows, 28).tolist() for _ in range(args.steps)]
        best = dict.fromkeys(readers, float("inf"))
        for _ in range(args.repeats):
            for name, read in readers.items():  # alternately, so that a busy moment hits every reader
                started = time.perf_counter()
                for batch in batches:
                    read(batch)
                best[name] = min(best[name], (time.perf_counter() - started) / args.steps)
        for name, seconds in best.items():
            ratio = seconds / best["token store (memmap slices)"]
            print(f"| {name} | {seconds * 1e6:.0f} µs | {ratio:.1f}x |")


if __name__ == "__main__":
    main()
