"""The optimisation of a run: its schedule (linear warmup, then linear decay, per optimizer step), AdamW's
parameter groups, and the optimizer and fp16 grad scaler, restored when resuming."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from simcse.device import fused_adamw


@dataclass(frozen=True)
class Schedule:
    """The run's length in optimizer steps and its learning rate at each."""

    steps_per_epoch: int
    total_steps: int
    warmup_steps: int
    peak_learning_rate: float

    def learning_rate(self, step: int) -> float:
        return learning_rate_at(step, self.total_steps, self.warmup_steps, self.peak_learning_rate)


def learning_rate_at(step: int, total_steps: int, warmup_steps: int, peak: float) -> float:
    """Linear warmup from 0 to ``peak`` over ``warmup_steps``, then linear decay to 0 at ``total_steps``.

    ``step`` counts optimizer steps already taken, so the first update uses ``learning_rate_at(0, ...)``.
    The schedule is a function of the step alone: resuming needs nothing but the step.
    """
    if step < warmup_steps:
        return peak * (step + 1) / (warmup_steps + 1)
    return peak * max(0.0, (total_steps - step) / max(1, total_steps - warmup_steps))


def build_schedule(
    steps_per_epoch: int, epochs: int, max_steps: int | None, warmup_ratio: float, learning_rate: float
) -> Schedule:
    total_steps = epochs * steps_per_epoch
    if max_steps is not None:
        total_steps = min(total_steps, max_steps)
    warmup_steps = math.floor(warmup_ratio * total_steps)
    return Schedule(steps_per_epoch, total_steps, warmup_steps, learning_rate)


def parameter_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    """AdamW groups: no weight decay on biases and LayerNorm weights (the 1-D parameters)."""
    trainable = [p for p in model.parameters() if p.requires_grad]
    return [
        {"params": [p for p in trainable if p.ndim >= 2], "weight_decay": weight_decay},
        {"params": [p for p in trainable if p.ndim < 2], "weight_decay": 0.0},
    ]


def build_optimizer_and_scaler(
    model: torch.nn.Module,
    learning_rate: float,
    weight_decay: float,
    amp_dtype: torch.dtype | None,
    training_state: dict | None,
) -> tuple[torch.optim.AdamW, torch.amp.GradScaler]:
    """AdamW and the fp16 grad scaler (disabled unless fp16), restored from a checkpoint's ``training_state``."""
    device = next(model.parameters()).device
    groups = parameter_groups(model, weight_decay)
    optimizer = torch.optim.AdamW(groups, lr=learning_rate, fused=fused_adamw(device))
    scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)
    if training_state:
        optimizer.load_state_dict(training_state["optimizer"])
        scaler.load_state_dict(training_state["grad_scaler"])
    return optimizer, scaler


def apply_gradient(
    optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler, model: torch.nn.Module, max_norm: float
) -> bool:
    """Clip and apply the gradient; returns whether the step was skipped (a gradient that is not finite)."""
    if scaler.is_enabled():
        if max_norm > 0:
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm)
        scale_before = scaler.get_scale()
        scaler.step(optimizer)  # skipped by the scaler when the gradient overflowed
        scaler.update()
        return scaler.get_scale() < scale_before
    # Every process holds the same averaged gradient, so all take the same decision.
    parameters = [p for p in model.parameters() if p.grad is not None]
    if max_norm > 0:
        norm = torch.nn.utils.clip_grad_norm_(parameters, max_norm)
    else:
        norm = torch.nn.utils.get_total_norm([p.grad for p in parameters])
    if not torch.isfinite(norm):
        return True
    optimizer.step()
    return False
