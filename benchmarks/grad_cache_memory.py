"""Peak memory of one supervised training step, with and without GradCache (--grad_cache_chunk).

Each configuration runs in a fresh process that builds a small random BERT (4 layers, hidden 256, no
download), takes one step on a batch of triplets at full length (max length 64, no padding) and reports
its peak resident memory (CPU: ``ru_maxrss``) and, on a GPU, ``torch.cuda.max_memory_allocated``.

    python benchmarks/grad_cache_memory.py                    # CPU, the default configurations
    python benchmarks/grad_cache_memory.py --device cuda      # a GPU, when there is one
"""

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time

import torch

DEFAULT_CONFIGS = ["128", "256", "256:32", "512", "1024:64"]  # batch[:chunk]


def one_step(batch_size: int, chunk: int | None, device: str) -> dict:
    from transformers import BertConfig

    from simcse.grad_cache import chunked_backward
    from simcse.loss import duplicate_candidates, info_nce
    from simcse.model import SimCSEModel

    torch.manual_seed(0)
    folder = tempfile.mkdtemp()
    config = BertConfig(
        vocab_size=8000,
        hidden_size=256,
        num_hidden_layers=4,
        num_attention_heads=4,
        intermediate_size=1024,
        max_position_embeddings=128,
    )
    from transformers import AutoModel, BertTokenizerFast

    AutoModel.from_config(config).save_pretrained(folder)
    vocab = [f"[unused{i}]" for i in range(8000)]
    vocab[:5] = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    with open(f"{folder}/vocab.txt", "w") as file:
        file.write("\n".join(vocab))
    BertTokenizerFast(f"{folder}/vocab.txt").save_pretrained(folder)
    model = SimCSEModel(folder).to(device).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5)
    input_ids = torch.randint(5, 8000, (batch_size, 3, 64), device=device)
    batch = {"input_ids": input_ids, "attention_mask": torch.ones_like(input_ids)}

    def loss_of(embeddings):
        return info_nce(
            embeddings[:, 0],
            embeddings[:, 1],
            embeddings[:, 2],
            exclude=duplicate_candidates(input_ids[:, 0], input_ids[:, 1], input_ids[:, 2]),
        )

    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.perf_counter()
    if chunk:
        chunked_backward(lambda c: model(**c), batch, loss_of, chunk)
    else:
        loss_of(model(**batch)).backward()
    optimizer.step()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return {
        "batch_size": batch_size,
        "chunk": chunk,
        "seconds": round(time.perf_counter() - started, 1),
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "rss_before_step_mib": round(rss_before / 1024),
        "peak_cuda_allocated_mib": round(torch.cuda.max_memory_allocated() / 2**20)
        if device.startswith("cuda")
        else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--configs", nargs="+", default=DEFAULT_CONFIGS, help="batch or batch:chunk")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--one", default=None, help=argparse.SUPPRESS)  # internal: run one configuration
    args = parser.parse_args()
    if args.one:
        batch, _, chunk = args.one.partition(":")
        print(json.dumps(one_step(int(batch), int(chunk) if chunk else None, args.device)))
        return
    print("| batch | chunk | peak RSS (MiB) | RSS before the step (MiB) | peak CUDA allocated (MiB) | step (s) |")
    print("|---:|---:|---:|---:|---:|---:|")
    for config in args.configs:
        result = subprocess.run(
            [sys.executable, __file__, "--one", config, "--device", args.device],
            capture_output=True,
            text=True,
            check=True,
        )
        row = json.loads(result.stdout.strip().splitlines()[-1])
        print(
            f"| {row['batch_size']} | {row['chunk'] or '-'} | {row['peak_rss_mib']} | {row['rss_before_step_mib']} "
            f"| {row['peak_cuda_allocated_mib'] or '-'} | {row['seconds']} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
