"""Retrieval speed, side by side in one invocation:

1. encode throughput of a corpus's documents (up to 512 tokens, e5's "passage: " prompt): this package's
   ``encode_document`` against ``SentenceTransformer.encode`` on the same model, runs alternated (A B A B ...),
   with the embeddings' agreement;
2. the block search (``simcse.retrieval.search``) on a synthetic corpus of unit vectors: time and peak memory of
   the search over the corpus held in memory, each measured in a fresh process, against the size of the full
   queries x corpus score matrix a one-shot search would hold.

    python benchmarks/retrieval_speed.py --model /work/e5-small-ko --corpus /tmp/retrieval-recipe/korquad_heldout
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time

import numpy as np
import torch

from simcse.retrieval import SEARCH_DEPTH, load_retrieval_set, search


def encode_throughput(model_path: str, corpus: str, repeats: int, batch_size: int) -> dict:
    from sentence_transformers import SentenceTransformer

    from simcse.model import SimCSEModel

    documents = load_retrieval_set(corpus).corpus_texts
    ours = SimCSEModel(model_path, pooler="avg", document_prompt="passage: ", document_max_length=512)
    theirs = SentenceTransformer(model_path, device="cpu")  # a plain transformers folder: mean pooling
    theirs.max_seq_length = 512
    arms = {
        "simcse-ko encode_document": lambda: ours.encode_document(documents, batch_size=batch_size),
        "SentenceTransformer.encode": lambda: theirs.encode(
            ["passage: " + d for d in documents], batch_size=batch_size, convert_to_numpy=True
        ),
    }
    seconds: dict[str, list[float]] = {name: [] for name in arms}
    vectors = {}
    for _ in range(repeats):
        for name, run in arms.items():
            started = time.perf_counter()
            vectors[name] = run()
            seconds[name].append(time.perf_counter() - started)
    a, b = vectors.values()
    cosines = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    tokens = [
        len(ids)
        for ids in ours.tokenizer(["passage: " + d for d in documents], truncation=True, max_length=512)["input_ids"]
    ]
    return {
        "documents": len(documents),
        "tokens": {"mean": statistics.fmean(tokens), "max": max(tokens)},
        "seconds": seconds,
        "docs_per_second": {name: len(documents) / statistics.median(s) for name, s in seconds.items()},
        "min_cosine": float(cosines.min()),
    }


def search_once(documents: int, queries: int, hidden: int) -> dict:
    """In this (fresh) process: peak resident memory before and after the search, and its time."""
    generator = torch.Generator().manual_seed(0)
    corpus = torch.nn.functional.normalize(torch.randn(documents, hidden, generator=generator), dim=-1)
    query_rows = torch.nn.functional.normalize(torch.randn(queries, hidden, generator=generator), dim=-1)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.perf_counter()
    scores, rows = search(query_rows, corpus, SEARCH_DEPTH)
    seconds = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # The exact top-1 of a sample of queries, against the full scores of just those queries.
    sample = query_rows[:64] @ corpus.T
    agree = bool((sample.argmax(1) == rows[:64, 0]).all())
    return {"seconds": seconds, "peak_before_mib": before / 1024, "peak_after_mib": after / 1024, "top1_exact": agree}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True)
    parser.add_argument("--corpus", required=True, help="a BEIR-layout folder whose corpus is encoded")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--documents", type=int, default=200_000)
    parser.add_argument("--queries", type=int, default=5_000)
    parser.add_argument("--hidden", type=int, default=384)
    parser.add_argument("--search_only", action="store_true", help=argparse.SUPPRESS)  # the fresh process
    args = parser.parse_args()
    if args.search_only:
        print(json.dumps(search_once(args.documents, args.queries, args.hidden)))
        return
    encoding = encode_throughput(args.model, args.corpus, args.repeats, args.batch_size)
    command = [sys.executable, __file__, "--model", args.model, "--corpus", args.corpus, "--search_only"]
    command += ["--documents", str(args.documents), "--queries", str(args.queries), "--hidden", str(args.hidden)]
    searched = json.loads(subprocess.run(command, check=True, capture_output=True, text=True).stdout)
    full_matrix_mib = args.queries * args.documents * 4 / 2**20
    print(json.dumps({"encoding": encoding, "search": searched, "full_matrix_mib": full_matrix_mib}, indent=2))
    (ours, theirs) = encoding["docs_per_second"].values()
    print(
        f"\nencode: {encoding['documents']} documents (mean {encoding['tokens']['mean']:.0f} tokens, max "
        f"{encoding['tokens']['max']}): simcse-ko {ours:.2f} docs/s, sentence-transformers {theirs:.2f} docs/s, "
        f"ratio {ours / theirs:.2f}; embeddings agree to cosine {encoding['min_cosine']:.6f}"
        f"\nsearch: {args.queries} queries x {args.documents} documents (hidden {args.hidden}), top {SEARCH_DEPTH}: "
        f"{searched['seconds']:.1f} s, peak memory {searched['peak_before_mib']:.0f} MiB before (corpus and queries) "
        f"-> {searched['peak_after_mib']:.0f} MiB after; the full score matrix alone would be "
        f"{full_matrix_mib:.0f} MiB; exact top-1 on a sample: {searched['top1_exact']}"
    )


if __name__ == "__main__":
    main()
