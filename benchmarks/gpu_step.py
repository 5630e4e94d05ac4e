"""One supervised SimCSE training step of a klue/bert-base-shaped model on a GPU: the padded forward against the
unpadded one with each attention kernel (per-length groups; one variable-length call, the GPU's default).

Random weights (vocab 32,000, 12 layers, hidden 768: no download), batch 256 triplets, max length 64, bf16
autocast (fp16 where bf16 is missing), AdamW. Sentence lengths are drawn from LENGTH_HISTOGRAM, the token
lengths of the 21,995 sentences of KorSTS train+dev and the xnli triplets under a WordPiece tokenizer
(vocabulary 4,000) trained on them: mean 19.3 tokens, 69 of them cut at 64. Reports steps/s, real tokens/s,
model FLOP utilisation against a measured bf16 matmul peak, and peak memory.

    python benchmarks/gpu_step.py                 # about a minute on an H100
    python benchmarks/gpu_step.py --tiny --device cpu --steps 2 --warmup 1   # a smoke run anywhere
"""

from __future__ import annotations

import argparse
import tempfile
import time
from statistics import median
from unittest import mock

import torch
from common import matmul_peak_flops, training_flops
from transformers import AutoModel, BertConfig, BertTokenizerFast

import simcse.unpad
from simcse.device import fused_adamw, gpu_half_dtype
from simcse.loss import duplicate_candidates, info_nce
from simcse.model import SimCSEModel
from simcse.optim import parameter_groups

# Sentences per token length 0..64 (see the module docstring).
LENGTH_HISTOGRAM = [
    0,
    0,
    0,
    0,
    6,
    8,
    68,
    398,
    691,
    964,
    1201,
    1415,
    1468,
    1508,
    1468,
    1214,
    1197,
    1078,
    898,
    809,
    712,
    605,
    519,
    441,
    451,
    340,
    367,
    291,
    281,
    263,
    247,
    234,
    219,
    198,
    197,
    161,
    189,
    149,
    153,
    153,
    138,
    124,
    132,
    105,
    105,
    87,
    82,
    85,
    62,
    55,
    61,
    57,
    48,
    37,
    35,
    34,
    27,
    16,
    18,
    15,
    16,
    12,
    3,
    11,
    69,
]


# The forwards compared: name -> the unpadded pass's attention kernel (None: the model's own padded forward).
FORWARDS = {"padded": None, "unpadded, grouped attention": "grouped", "unpadded, varlen attention": "varlen"}


def build_model(folder: str, tiny: bool) -> None:
    shape = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=2, intermediate_size=128) if tiny else {}
    config = BertConfig(vocab_size=32000, max_position_embeddings=512, **shape)  # bert-base defaults otherwise
    torch.manual_seed(0)
    AutoModel.from_config(config).save_pretrained(folder)
    with open(f"{folder}/vocab.txt", "w") as file:
        file.write("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + [f"[unused{i}]" for i in range(31995)]))
    BertTokenizerFast(f"{folder}/vocab.txt").save_pretrained(folder)


def random_batch(batch_size: int, generator: torch.Generator, device: torch.device) -> dict[str, torch.Tensor]:
    weights = torch.tensor(LENGTH_HISTOGRAM, dtype=torch.float)
    lengths = torch.multinomial(weights, batch_size * 3, replacement=True, generator=generator).view(batch_size, 3)
    width = int(lengths.max())
    attention_mask = (torch.arange(width) < lengths[..., None]).long()  # (B, 3, L)
    input_ids = torch.randint(5, 32000, (batch_size, 3, width), generator=generator) * attention_mask
    input_ids[..., 0] = 2
    return {"input_ids": input_ids.to(device), "attention_mask": attention_mask.to(device)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--batch_size", type=int, default=256)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--tiny", action="store_true", help="a 2-layer model, for a smoke run")
    args = parser.parse_args()
    device = torch.device(args.device)
    cuda = device.type == "cuda"
    dtype = gpu_half_dtype() if cuda else torch.bfloat16
    folder = tempfile.mkdtemp()
    build_model(folder, args.tiny)
    generator = torch.Generator().manual_seed(0)
    batches = [random_batch(args.batch_size, generator, device) for _ in range(args.warmup + args.steps)]
    peak = matmul_peak_flops(dtype, 1024 if args.tiny else 8192, device=device)
    print(
        f"device: {torch.cuda.get_device_name(device) if cuda else 'cpu'}; autocast {dtype}; "
        f"matmul peak {peak / 1e12:.1f} TFLOP/s"
    )

    columns = (
        "median step (ms)",
        "steps/s",
        "real tokens/s",
        "padded tokens/s",
        "MFU (real tokens)",
        "peak memory (GiB)",
    )
    print("| forward | " + " | ".join(columns) + " |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    rates = {}
    for forward, kernel in FORWARDS.items():
        unpad = kernel is not None
        # The kernel is otherwise the device's choice (simcse.unpad.attention_kernel).
        chosen = mock.patch.object(simcse.unpad, "attention_kernel", lambda device, kernel=kernel: kernel)
        chosen.start()
        model = SimCSEModel(folder, unpad=unpad).to(device).train()
        optimizer = torch.optim.AdamW(parameter_groups(model, 0.01), lr=5e-5, fused=fused_adamw(device))
        scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)
        if cuda:
            torch.cuda.reset_peak_memory_stats(device)
        times, flops = [], []
        for index, batch in enumerate(batches):
            if cuda:
                torch.cuda.synchronize()
            started = time.perf_counter()
            with torch.autocast(device.type, dtype=dtype):
                embeddings = model(**batch)  # (B, 3, H)
            loss = info_nce(
                embeddings[:, 0],
                embeddings[:, 1],
                embeddings[:, 2],
                exclude=duplicate_candidates(
                    batch["input_ids"][:, 0], batch["input_ids"][:, 1], batch["input_ids"][:, 2]
                ),
            )
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            if cuda:
                torch.cuda.synchronize()
            if index >= args.warmup:
                times.append(time.perf_counter() - started)
                flops.append(training_flops(model.config, batch["attention_mask"].flatten(0, 1).sum(1).tolist()))
        step = median(times)
        real = sum(int(b["attention_mask"].sum()) for b in batches[args.warmup :]) / len(times)
        padded = sum(b["attention_mask"].numel() for b in batches[args.warmup :]) / len(times)
        memory = torch.cuda.max_memory_allocated(device) / 2**30 if cuda else float("nan")
        print(
            f"| {forward} | {step * 1000:.0f} | {1 / step:.2f} | {real / step:.0f} "
            f"| {padded / step:.0f} | {median(flops) / step / peak:.1%} | {memory:.1f} |",
            flush=True,
        )
        rates[forward] = 1 / step
        chosen.stop()
        del model, optimizer
    for forward in list(FORWARDS)[1:]:
        print(f"{forward} / padded: {rates[forward] / rates['padded']:.2f}x sentences/s")


if __name__ == "__main__":
    main()
