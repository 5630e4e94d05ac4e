"""Devices: which one to run on, its half precision, and the batch sizes that suit it."""

from __future__ import annotations

import logging

import torch

from simcse.config import ConfigError

logger = logging.getLogger(__name__)

SUPPORTED_DEVICE_TYPES = ("cpu", "cuda", "mps")


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` picks CUDA when available, else the CPU; any other name is passed to torch."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        device = None
    if device is None or device.type not in SUPPORTED_DEVICE_TYPES:
        raise ValueError(f"--device {name}: not a device this package runs on (auto, cpu, cuda, cuda:N, mps)")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {name}: CUDA is not available on this machine")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"--device {name}: MPS is not available on this machine")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise ValueError(f"--device {name}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    return device


def gpu_half_dtype() -> torch.dtype:
    """The GPU's half precision for autocast: bf16 where supported (no loss scaling needed), else fp16."""
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def autocast_dtype(amp: bool, device: torch.device, quiet: bool = False) -> torch.dtype | None:
    """bf16 where the GPU supports it, else fp16; None (full precision) without --amp or on the CPU."""
    if not amp:
        return None
    if device.type != "cuda":
        if not quiet:
            logger.warning("--amp is ignored on the CPU (bf16 matmuls are slow there); training in float32")
        return None
    return gpu_half_dtype()


def weights_dtype(model_dtype: str, device: torch.device) -> torch.dtype:
    """The dtype of the model's weights for ``--model_dtype`` on ``device``: bf16 only on a GPU that has it."""
    if model_dtype == "fp32":
        return torch.float32
    if device.type != "cuda":
        raise ConfigError(
            f"--model_dtype {model_dtype} is for GPUs, and this run's device is {device.type} (bf16 matmuls are slow "
            "there): leave it out"
        )
    if not torch.cuda.is_bf16_supported():
        raise ConfigError(f"--model_dtype {model_dtype}: this GPU has no bf16; leave it out and use --amp (fp16)")
    return torch.bfloat16


def fused_adamw(device: torch.device) -> bool:
    """Whether AdamW takes its fused kernel on ``device``: one pass over each parameter instead of a dozen
    element-wise ops (on a 2-core CPU 24 ms against 134 ms a step for all-MiniLM-L6-v2, benchmarks/RESULTS.md)."""
    return device.type in ("cpu", "cuda")


def default_encode_batch_size(device: torch.device) -> int:
    """Sentences per batch when encoding: small batches keep a CPU's activations in cache (measured in
    benchmarks/RESULTS.md); GPUs want big ones."""
    return 256 if device.type == "cuda" else 32
