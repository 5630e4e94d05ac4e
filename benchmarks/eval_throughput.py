"""Evaluation throughput, side by side in one run: encoding KorSTS dev (3,000 sentences) with this package's
``encode`` (length-sorted batches, unpadded forward, inference mode) against the plain computation (the
baseline: batches of 256 in file order, each padded to its longest sentence, ``torch.no_grad``), each also at
the smaller batch size that suits this CPU's caches.

Same model (all-MiniLM-L6-v2), CLS vectors, max length 64, fp32, 2 threads; the two alternate, and the
reported time is the median of the repeats. The vectors must agree (max abs difference printed).

    python benchmarks/eval_throughput.py --repeats 5
"""

from __future__ import annotations

import argparse
import time
from statistics import median

import numpy as np
import torch
from common import SHARED_DATA, forward_flops, matmul_peak_flops, minilm_path
from transformers import AutoModel, AutoTokenizer

from simcse.data import load_sts
from simcse.model import SimCSEModel


def plain_encode(model, tokenizer, sentences, batch_size, max_length):
    vectors, real, padded = [], 0, 0
    with torch.no_grad():
        for start in range(0, len(sentences), batch_size):
            batch = tokenizer(
                sentences[start : start + batch_size],
                padding=True,
                truncation=True,
                max_length=max_length,
                return_tensors="pt",
            )
            vectors.append(model(**batch).last_hidden_state[:, 0])
            real += int(batch["attention_mask"].sum())
            padded += batch["attention_mask"].numel()
    return torch.cat(vectors).numpy(), real, padded


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--batch_size", type=int, default=256, help="the baseline's batches")
    parser.add_argument("--our_batch_sizes", type=int, nargs="+", default=[32, 256])
    parser.add_argument("--max_length", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    dev = load_sts(SHARED_DATA / "korsts" / "sts-dev.tsv")
    sentences = dev.sentences1 + dev.sentences2
    path = minilm_path()
    ours = SimCSEModel(path, pooler="cls_before_pooler")
    plain = AutoModel.from_pretrained(path).eval()
    tokenizer = AutoTokenizer.from_pretrained(path)

    runs = {f"simcse-ko encode, batch {b}": ("ours", b) for b in args.our_batch_sizes}
    runs |= {f"plain, file order, batch {b}": ("plain", b) for b in (args.batch_size, *args.our_batch_sizes)}
    times = {name: [] for name in runs}
    vectors = {}
    for repeat in range(args.repeats + 1):  # the first round warms up
        for name, (kind, batch_size) in runs.items():
            started = time.perf_counter()
            if kind == "ours":
                vectors[name] = ours.encode(sentences, batch_size=batch_size, max_length=args.max_length)
            else:
                vectors[name], real, padded = plain_encode(plain, tokenizer, sentences, batch_size, args.max_length)
                if batch_size == args.batch_size:
                    baseline_real, baseline_padded = real, padded
            if repeat:
                times[name].append(time.perf_counter() - started)
        print(f"round {repeat}: " + ", ".join(f"{n} {t[-1]:.2f} s" for n, t in times.items() if t), flush=True)
    real, padded = baseline_real, baseline_padded
    baseline = f"plain, file order, batch {args.batch_size}"

    lengths = [len(ids) for ids in tokenizer(sentences, truncation=True, max_length=args.max_length)["input_ids"]]
    flops = forward_flops(ours.config, lengths)
    peak = matmul_peak_flops()
    print(
        f"\n{len(sentences)} sentences, {real} real tokens; file-order batches of {args.batch_size} hold {padded} "
        f"token slots ({1 - real / padded:.1%} padding)"
    )
    differences = max(float(np.abs(v - vectors[baseline]).max()) for v in vectors.values())
    print(f"max abs difference of any vectors from the baseline's: {differences:.2e}")
    print(f"matmul peak (fp32, {args.threads} threads): {peak / 1e9:.1f} GFLOP/s\n")
    print("| implementation | median time (s) | sentences/s | real tokens/s | MFU (real tokens) | vs baseline |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, measured in times.items():
        seconds = median(measured)
        print(
            f"| {name} | {seconds:.2f} | {len(sentences) / seconds:.0f} | {real / seconds:.0f} "
            f"| {flops / seconds / peak:.1%} | {median(times[baseline]) / seconds:.2f}x |"
        )


if __name__ == "__main__":
    main()
