"""Peak memory and step time of a small random decoder (Qwen3, 4 layers, hidden 256) with and without LoRA and
gradient checkpointing, side by side, and the parameters each trains.

Each configuration runs in a fresh process: it builds the model through the package (``SimCSEModel``,
``simcse.lora.add_adapters``, ``enable_gradient_checkpointing``), takes ``--warmup`` steps, then ``--steps`` timed
steps (forward, InfoNCE, backward, AdamW) on pairs of full-length texts, and reports how far its peak resident
memory (CPU: ``ru_maxrss``) rose above what the built model held before the first step, or
``torch.cuda.max_memory_allocated`` on a GPU.

    python benchmarks/decoder_memory.py                  # CPU, the four configurations
    python benchmarks/decoder_memory.py --device cuda    # a GPU, when there is one
"""

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time

import torch

CONFIGS = {
    "full fine-tuning": dict(lora=False, checkpointing=False),
    "full, gradient checkpointing": dict(lora=False, checkpointing=True),
    "LoRA rank 16": dict(lora=True, checkpointing=False),
    "LoRA rank 16, gradient checkpointing": dict(lora=True, checkpointing=True),
}


def build_decoder(folder: str, layers: int, hidden: int) -> None:
    from simcse.random_encoder import build_random_encoder

    corpus = [f"문장 {i}: 서울의 날씨는 오늘 {i % 7}도이고 바람이 분다" for i in range(400)]
    build_random_encoder(folder, corpus, model_type="qwen3", vocab_size=2000, hidden_size=hidden,
                         num_hidden_layers=layers, num_attention_heads=4, intermediate_size=4 * hidden,
                         max_length=512)  # fmt: skip


def run(args, lora: bool, checkpointing: bool) -> dict:
    from simcse.lora import LoraSettings, add_adapters
    from simcse.loss import info_nce
    from simcse.model import SimCSEModel
    from simcse.run_inputs import enable_gradient_checkpointing

    folder = tempfile.mkdtemp()
    build_decoder(folder, args.layers, args.hidden)
    torch.manual_seed(0)
    model = SimCSEModel(folder, pooler="lasttoken", max_length=args.length)
    if lora:
        add_adapters(model, LoraSettings(rank=16, alpha=32.0, dropout=0.0, target_modules="all-linear"))
    if checkpointing:
        enable_gradient_checkpointing(model)
    model = model.to(args.device).train()
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=1e-5)
    vocabulary = model.config.vocab_size
    input_ids = torch.randint(10, vocabulary, (args.batch_size, 2, args.length), device=args.device)
    batch = {"input_ids": input_ids, "attention_mask": torch.ones_like(input_ids)}

    def step():
        optimizer.zero_grad(set_to_none=True)
        embeddings = model(**batch)
        info_nce(embeddings[:, 0], embeddings[:, 1]).backward()
        optimizer.step()

    cuda = args.device.startswith("cuda")
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # the model built, no step taken
    for _ in range(args.warmup):
        step()
    if cuda:
        torch.cuda.synchronize()
    started = time.perf_counter()
    for _ in range(args.steps):
        step()
    if cuda:
        torch.cuda.synchronize()
    return {
        "seconds_per_step": (time.perf_counter() - started) / args.steps,
        "peak_increase_mib": (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before) / 1024,
        "peak_cuda_mib": torch.cuda.max_memory_allocated() / 2**20 if cuda else None,
        "trainable": sum(p.numel() for p in trainable),
        "total": sum(p.numel() for p in model.parameters()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--length", type=int, default=256, help="tokens per text")
    parser.add_argument("--batch_size", type=int, default=16, help="pairs per step")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--config", help=argparse.SUPPRESS)  # the child process's configuration
    args = parser.parse_args()
    if args.config:
        print(json.dumps(run(args, **CONFIGS[args.config])))
        return
    results = {}
    for name in CONFIGS:
        child = subprocess.run(
            [sys.executable, __file__, *sys.argv[1:], "--config", name], capture_output=True, text=True
        )
        if child.returncode:
            sys.exit(f"{name}: failed\n{child.stderr}")
        results[name] = json.loads(child.stdout.strip().splitlines()[-1])
    print(f"qwen3 decoder, {args.layers} layers, hidden {args.hidden}; batch {args.batch_size} pairs of {args.length} "
          f"tokens; {args.steps} steps after {args.warmup} warm-up; device {args.device}\n")  # fmt: skip
    memory = "peak CUDA MiB" if args.device.startswith("cuda") else "peak RSS above the built model, MiB"
    print(f"| configuration | trainable parameters | s / step | {memory} |\n|---|---:|---:|---:|")
    for name, r in results.items():
        peak = r["peak_cuda_mib"] if r["peak_cuda_mib"] is not None else r["peak_increase_mib"]
        share = f"{r['trainable']:,} ({r['trainable'] / r['total']:.1%})"
        print(f"| {name} | {share} | {r['seconds_per_step']:.3f} | {peak:.0f} |")
    full = results["full fine-tuning"]
    for name, r in list(results.items())[1:]:
        print(f"{name} / full fine-tuning: time {r['seconds_per_step'] / full['seconds_per_step']:.2f}x")


if __name__ == "__main__":
    main()
