"""Where a training loop stands (what a training checkpoint saves of it) and what a finished run returns."""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field, fields

import numpy as np
import torch
from tqdm.auto import tqdm

from simcse import progress


@dataclass
class LoopState:
    """Where the loop stands: every counter the loop keeps, and what a training checkpoint saves of it."""

    step: int = 0
    best_step: int = -1
    best_score: float = -math.inf
    # Losses since the last evaluation per training dataset, summed on the device: adding a loss needs no host
    # sync. (D,) and D counts, for the D datasets of the mixture.
    window_loss_sum: torch.Tensor = field(default_factory=lambda: torch.zeros(1))
    window_loss_count: list[int] = field(default_factory=lambda: [0])
    total_loss: float = 0.0  # losses up to the last evaluation
    # With a false-negative guard: the share of each step's candidates masked, summed since the last evaluation
    # (on the device, as the losses), and the steps it sums.
    window_masked_sum: torch.Tensor = field(default_factory=lambda: torch.zeros(1))
    window_masked_steps: int = 0
    skipped_steps: int = 0  # steps whose gradient was not finite, so the optimizer did not step

    def to_json(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self)} | {
            "window_loss_sum": self.window_loss_sum.tolist(),
            "window_masked_sum": self.window_masked_sum.tolist(),
        }

    @classmethod
    def from_json(cls, saved: dict, device: torch.device) -> LoopState:
        """A saved state; one of a release before mixtures holds one number for its one dataset."""
        sums, counts = saved["window_loss_sum"], saved["window_loss_count"]
        return cls(
            **saved
            | {
                "window_loss_sum": torch.tensor(sums if isinstance(sums, list) else [sums], device=device),
                "window_loss_count": counts if isinstance(counts, list) else [counts],
                "window_masked_sum": torch.tensor(saved.get("window_masked_sum", [0.0]), device=device),
            }
        )


@dataclass
class TrainResult:
    best_step: int
    best_score: float
    mean_train_loss: float
    total_seconds: float
    steps: int
    skipped_steps: int
    history: list[dict] = field(default_factory=list)

    def done_line(self, dev: str, start_score: float | None, output) -> str:
        """The run's last line: the ``dev`` score (label and metric, e.g. "dev cosine Spearman") before training
        (None: not evaluated) and at its best, the mean loss, the time and where the model is. A best at step 0
        says that the saved model is the one training started from."""
        if self.best_step < 0:
            best = "no finite dev score (the final model is saved)"
        elif self.best_step == 0:
            best = "no step improved on it, so the saved model is the one training started from"
        else:
            best = f"best {self.best_score:.4f} at step {self.best_step}"
        skipped = f" ({self.skipped_steps} skipped: gradient not finite)" if self.skipped_steps else ""
        start = "not evaluated before training" if start_score is None else f"{start_score:.4f} before training"
        return (
            f"done: {dev} {start}, {best}; mean training loss "
            f"{self.mean_train_loss:.4f} over {self.steps} steps{skipped}; total time {self.total_seconds:.1f} s; "
            f"model in {output}"
        )


def set_seed(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def start_loop_state(saved: dict | None, device: torch.device, datasets: int) -> LoopState:
    """A fresh loop state for ``datasets`` training datasets, or a checkpoint's (``saved``, as ``to_json`` wrote
    it)."""
    if saved:
        return LoopState.from_json(saved, device)
    return LoopState(
        window_loss_sum=torch.zeros(datasets, device=device),
        window_loss_count=[0] * datasets,
        window_masked_sum=torch.zeros(1, device=device),
    )


def progress_bar(total_steps: int, state: LoopState, is_main: bool) -> tqdm:
    """The training bar, from the step the loop stands at; shown by the first process only."""
    return progress.progress_bar(
        total=total_steps, initial=state.step, desc="training", unit="step", dynamic_ncols=True, disable=not is_main
    )
