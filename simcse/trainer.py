"""The SimCSE training loop: AdamW, linear warmup and decay, AMP, periodic STS evaluation, best checkpoint."""

from __future__ import annotations

import json
import logging
import math
import platform
import random
import sys
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import transformers
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

import simcse
from simcse.cli import resolve_device
from simcse.data import SimCSEDataset, load_sts, load_train_data
from simcse.evaluate import evaluate_sts
from simcse.loss import info_nce
from simcse.model import POOLERS, SimCSEModel

logger = logging.getLogger(__name__)


@dataclass
class TrainConfig:
    """Every setting of a run; the defaults are the reference recipe. train/train.py exposes each as a flag."""

    # model
    model: str = "klue/bert-base"
    tokenizer: str | None = None
    pooler: str = "cls"
    mlp_only_train: bool = False
    dropout: float = 0.1
    # data
    train_data: str = ""
    valid_data: str = "korsts_dev"
    data_dir: str | None = None
    max_length: int = 64
    num_workers: int = 0
    # optimisation
    batch_size: int = 256
    epochs: int = 1
    max_steps: int | None = None
    learning_rate: float = 5e-5
    weight_decay: float = 0.01
    warmup_ratio: float = 0.0
    max_grad_norm: float = 1.0
    temp: float = 0.05
    hard_negative_weight: float = 0.0
    amp: bool = False
    # evaluation and output
    output_path: str = "outputs/simcse"
    eval_strategy: str = "steps"
    eval_step: int = 100
    eval_batch_size: int = 128
    # runtime
    seed: int = 42
    device: str = "auto"

    def validate(self) -> None:
        """Raise ValueError naming the first bad setting."""
        checks = [
            (bool(self.train_data), "--train_data is required"),
            (self.batch_size >= 2, f"--batch_size {self.batch_size}: each anchor needs in-batch negatives, use 2 or more"),
            (self.epochs >= 1, f"--epochs must be at least 1, got {self.epochs}"),
            (self.max_steps is None or self.max_steps >= 1, f"--max_steps must be at least 1, got {self.max_steps}"),
            (self.learning_rate > 0, f"--learning_rate must be positive, got {self.learning_rate}"),
            (self.weight_decay >= 0, f"--weight_decay must be non-negative, got {self.weight_decay}"),
            (0 <= self.warmup_ratio < 1, f"--warmup_ratio must lie in [0, 1), got {self.warmup_ratio}"),
            (self.max_grad_norm >= 0, f"--max_grad_norm must be non-negative (0 disables), got {self.max_grad_norm}"),
            (self.temp > 0, f"--temp must be positive, got {self.temp}"),
            (0 <= self.dropout < 1, f"--dropout must lie in [0, 1), got {self.dropout}"),
            (self.pooler in POOLERS, f"--pooler {self.pooler!r}: choose one of {', '.join(POOLERS)}"),
            (not self.mlp_only_train or self.pooler == "cls", "--mlp_only_train needs --pooler cls"),
            (self.max_length >= 2, f"--max_length must be at least 2, got {self.max_length}"),
            (self.eval_strategy in ("steps", "epoch"), f"--eval_strategy must be steps or epoch, got {self.eval_strategy!r}"),
            (self.eval_step >= 1, f"--eval_step must be at least 1, got {self.eval_step}"),
            (self.eval_batch_size >= 1, f"--eval_batch_size must be at least 1, got {self.eval_batch_size}"),
            (self.num_workers >= 0, f"--num_workers must be non-negative, got {self.num_workers}"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)


@dataclass
class TrainResult:
    best_step: int
    best_score: float
    mean_train_loss: float
    total_seconds: float
    steps: int
    history: list[dict] = field(default_factory=list)


def learning_rate_at(step: int, total_steps: int, warmup_steps: int, peak: float) -> float:
    """Linear warmup from 0 to ``peak`` over ``warmup_steps``, then linear decay to 0 at ``total_steps``.

    ``step`` counts optimizer steps already taken, so the first update uses ``learning_rate_at(0, ...)``.
    """
    if step < warmup_steps:
        return peak * (step + 1) / (warmup_steps + 1)
    return peak * max(0.0, (total_steps - step) / max(1, total_steps - warmup_steps))


def parameter_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    """AdamW groups: no weight decay on biases and LayerNorm weights (the 1-D parameters)."""
    trainable = [p for p in model.parameters() if p.requires_grad]
    return [
        {"params": [p for p in trainable if p.ndim >= 2], "weight_decay": weight_decay},
        {"params": [p for p in trainable if p.ndim < 2], "weight_decay": 0.0},
    ]


def autocast_dtype(amp: bool, device: torch.device) -> torch.dtype | None:
    """bf16 where the GPU supports it, else fp16; None (full precision) without --amp or on the CPU."""
    if not amp:
        return None
    if device.type != "cuda":
        logger.warning("--amp is ignored on the CPU (bf16 matmuls are slow there); training in float32")
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def set_seed(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def run_info(config: TrainConfig, device: torch.device, amp_dtype: torch.dtype | None, **counts) -> dict:
    """What train_args.json records: the flags, the library versions, the device and the data sizes."""
    return {
        "args": asdict(config),
        "versions": {
            "simcse": simcse.__version__,
            "python": sys.version.split()[0],
            "torch": torch.__version__,
            "transformers": transformers.__version__,
        },
        "device": {
            "type": device.type,
            "name": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
            "amp_dtype": str(amp_dtype).removeprefix("torch.") if amp_dtype else None,
        },
        **counts,
    }


def train(config: TrainConfig) -> TrainResult:
    """Train, evaluating on the dev set before training, every ``eval_step`` steps (or epoch) and at the end.

    ``output_path`` receives the best checkpoint (by dev cosine Spearman), train_args.json and
    metrics.jsonl (one line per evaluation).
    """
    config.validate()
    started = time.perf_counter()
    set_seed(config.seed)
    device = resolve_device(config.device)
    amp_dtype = autocast_dtype(config.amp, device)
    output = Path(config.output_path)

    # Read every input before building anything, so that a bad file fails in seconds.
    valid_data = load_sts(config.valid_data, config.data_dir)
    train_data = load_train_data(config.train_data)
    if len(train_data) < 2:
        raise ValueError(f"{config.train_data}: {len(train_data)} training example; in-batch negatives need 2 or more")
    model = SimCSEModel(
        config.model,
        pooler=config.pooler,
        mlp_only_train=config.mlp_only_train,
        dropout=config.dropout,
        tokenizer=config.tokenizer,
    ).to(device)
    dataset = SimCSEDataset(train_data, model.tokenizer, config.max_length)
    loader = DataLoader(
        dataset,
        batch_size=config.batch_size,
        shuffle=True,
        generator=torch.Generator().manual_seed(config.seed),
        collate_fn=model.collator,
        num_workers=config.num_workers,
        pin_memory=device.type == "cuda",
    )
    steps_per_epoch = len(loader)
    total_steps = config.epochs * steps_per_epoch
    if config.max_steps is not None:
        total_steps = min(total_steps, config.max_steps)
    warmup_steps = math.floor(config.warmup_ratio * total_steps)

    optimizer = torch.optim.AdamW(parameter_groups(model, config.weight_decay), lr=config.learning_rate)
    scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)
    autocast = torch.autocast(device.type, dtype=amp_dtype) if amp_dtype else nullcontext()

    output.mkdir(parents=True, exist_ok=True)
    info = run_info(
        config, device, amp_dtype, num_train_examples=len(dataset), steps_per_epoch=steps_per_epoch, total_steps=total_steps
    )
    (output / "train_args.json").write_text(json.dumps(info, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    metrics_file = output / "metrics.jsonl"
    metrics_file.write_text("", encoding="utf-8")

    result = TrainResult(best_step=-1, best_score=-math.inf, mean_train_loss=math.nan, total_seconds=0.0, steps=0)
    loss_sum = torch.zeros((), device=device)  # since the last evaluation; summed on the device, read rarely
    loss_count, total_loss, lr = 0, 0.0, learning_rate_at(0, total_steps, warmup_steps, config.learning_rate)
    # Redrawn at most once a second when the output is a log file rather than a terminal.
    progress = tqdm(
        total=total_steps, desc="training", unit="step", dynamic_ncols=True, mininterval=0.1 if sys.stderr.isatty() else 1.0
    )

    def evaluate(step: int) -> None:
        nonlocal loss_sum, loss_count, total_loss
        window_loss = loss_sum.item() / loss_count if loss_count else None
        total_loss += loss_sum.item()
        loss_sum, loss_count = torch.zeros((), device=device), 0
        metrics = evaluate_sts(model, valid_data, batch_size=config.eval_batch_size, max_length=config.max_length)
        line = {
            "step": step,
            "epoch": round(step / steps_per_epoch, 4),
            "train_loss": window_loss,
            "learning_rate": lr if step else None,
            **metrics,
        }
        result.history.append(line)
        with metrics_file.open("a", encoding="utf-8") as file:
            file.write(json.dumps(line) + "\n")
        improved = metrics["cosine_spearman"] > result.best_score
        if improved:
            result.best_step, result.best_score = step, metrics["cosine_spearman"]
            model.save_pretrained(output, max_length=config.max_length)
        progress.write(
            f"step {step} (epoch {line['epoch']:.2f}): dev cosine Pearson {metrics['cosine_pearson']:.4f}, "
            f"cosine Spearman {metrics['cosine_spearman']:.4f}"
            + (" (best, saved)" if improved else f" (best {result.best_score:.4f} at step {result.best_step})")
        )

    evaluate(0)
    model.train()
    step, window_start, window_sentences = 0, time.perf_counter(), 0
    for epoch in range(config.epochs):
        for batch in loader:
            lr = learning_rate_at(step, total_steps, warmup_steps, config.learning_rate)
            for group in optimizer.param_groups:
                group["lr"] = lr
            batch = {key: value.to(device, non_blocking=True) for key, value in batch.items()}
            with autocast:
                embeddings = model(**batch)  # (B, num_sent, H)
            loss = info_nce(
                embeddings[:, 0],
                embeddings[:, 1],
                embeddings[:, 2] if embeddings.shape[1] == 3 else None,
                temperature=config.temp,
                hard_negative_weight=config.hard_negative_weight,
            )
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            if config.max_grad_norm > 0:
                scaler.unscale_(optimizer)
                torch.nn.utils.clip_grad_norm_(model.parameters(), config.max_grad_norm)
            scaler.step(optimizer)
            scaler.update()
            step += 1
            loss_sum += loss.detach()
            loss_count += 1
            window_sentences += batch["input_ids"].shape[0] * batch["input_ids"].shape[1]
            progress.update()
            if step % 10 == 0 or step == total_steps:
                elapsed = time.perf_counter() - window_start
                progress.set_postfix(
                    loss=f"{loss.item():.4f}", lr=f"{lr:.2e}", sent_per_s=f"{window_sentences / elapsed:.1f}"
                )
                window_start, window_sentences = time.perf_counter(), 0
            if (config.eval_strategy == "steps" and step % config.eval_step == 0) or step == total_steps:
                evaluate(step)
                model.train()
                window_start, window_sentences = time.perf_counter(), 0
            if step == total_steps:
                break
        if step == total_steps:
            break
        if config.eval_strategy == "epoch":
            evaluate(step)
            model.train()
    progress.close()

    result.steps = step
    result.mean_train_loss = total_loss / step
    result.total_seconds = time.perf_counter() - started
    print(
        f"done: dev cosine Spearman {result.history[0]['cosine_spearman']:.4f} before training, "
        f"best {result.best_score:.4f} at step {result.best_step}; "
        f"mean training loss {result.mean_train_loss:.4f} over {step} steps; "
        f"total time {result.total_seconds:.1f} s; best checkpoint in {output}"
    )
    return result
