"""The SimCSE training loop: AdamW, linear warmup and decay, AMP, periodic STS evaluation, the best
checkpoint, training-state checkpoints and exact resume."""

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
import torch.nn.functional as F
import transformers
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

import simcse
from simcse import checkpoint, distributed
from simcse.data import EpochBatchSampler, SimCSEDataset, load_sts, load_train_data
from simcse.evaluate import EVAL_RESULTS_NAME, METRIC_KEYS, evaluate_sts, write_eval_report
from simcse.grad_cache import chunked_backward
from simcse.hub import push_checkpoint
from simcse.loss import info_nce
from simcse.model import POOLERS, SimCSEModel, gpu_half_dtype

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
    unpad: bool = True
    trust_remote_code: bool = False
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
    mask_duplicate_negatives: bool = True
    grad_cache_chunk: int | None = None
    amp: bool = False
    # evaluation, checkpoints and output
    output_path: str = "outputs/simcse"
    eval_strategy: str = "steps"
    eval_step: int = 100
    eval_batch_size: int | None = None
    save_steps: int | None = None
    save_total_limit: int | None = None
    resume_from_checkpoint: str | None = None
    push_to_hub: str | None = None
    hub_private: bool = False
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
            (self.eval_batch_size is None or self.eval_batch_size >= 1,
             f"--eval_batch_size must be at least 1, got {self.eval_batch_size}"),
            (self.num_workers >= 0, f"--num_workers must be non-negative, got {self.num_workers}"),
            (self.save_steps is None or self.save_steps >= 1, f"--save_steps must be at least 1, got {self.save_steps}"),
            (self.grad_cache_chunk is None or self.grad_cache_chunk >= 1,
             f"--grad_cache_chunk must be at least 1, got {self.grad_cache_chunk}"),
            (self.save_total_limit is None or self.save_total_limit >= 1,
             f"--save_total_limit must be at least 1, got {self.save_total_limit}"),
        ]  # fmt: skip
        for ok, message in checks:
            if not ok:
                raise ValueError(message)


# Settings that change what a run computes: a resumed run must use the values it was started with.
RESUME_MUST_MATCH = (
    "model", "tokenizer", "pooler", "mlp_only_train", "dropout", "train_data", "valid_data", "data_dir",
    "max_length", "batch_size", "epochs", "max_steps", "learning_rate", "weight_decay", "warmup_ratio",
    "max_grad_norm", "temp", "hard_negative_weight", "mask_duplicate_negatives", "grad_cache_chunk", "amp",
    "eval_strategy", "eval_step", "seed",
)  # fmt: skip


class NonFiniteLossError(ValueError):
    """Training produced a NaN or infinite loss."""


@dataclass
class LoopState:
    """Where the loop stands; saved as JSON in every training checkpoint."""

    step: int = 0
    best_step: int = -1
    best_score: float = -math.inf
    window_loss_sum: float = 0.0  # losses since the last evaluation
    window_loss_count: int = 0
    total_loss: float = 0.0  # losses up to the last evaluation
    skipped_steps: int = 0  # fp16 steps the grad scaler skipped (gradient overflow)


@dataclass
class TrainResult:
    best_step: int
    best_score: float
    mean_train_loss: float
    total_seconds: float
    steps: int
    skipped_steps: int
    history: list[dict] = field(default_factory=list)


def learning_rate_at(step: int, total_steps: int, warmup_steps: int, peak: float) -> float:
    """Linear warmup from 0 to ``peak`` over ``warmup_steps``, then linear decay to 0 at ``total_steps``.

    ``step`` counts optimizer steps already taken, so the first update uses ``learning_rate_at(0, ...)``.
    The schedule is a function of the step alone: resuming needs nothing but the step.
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


def autocast_dtype(amp: bool, device: torch.device, quiet: bool = False) -> torch.dtype | None:
    """bf16 where the GPU supports it, else fp16; None (full precision) without --amp or on the CPU."""
    if not amp:
        return None
    if device.type != "cuda":
        if not quiet:
            logger.warning("--amp is ignored on the CPU (bf16 matmuls are slow there); training in float32")
        return None
    return gpu_half_dtype()


def set_seed(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def run_info(config: TrainConfig, device: torch.device, amp_dtype: torch.dtype | None, **extra) -> dict:
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
        **extra,
    }


def check_resumable(config: TrainConfig, saved_args: dict) -> None:
    """Refuse a resume whose settings differ from the run's, listing every difference."""
    differences = [
        f"--{name} {saved_args.get(name)!r} -> {getattr(config, name)!r}"
        for name in RESUME_MUST_MATCH
        if saved_args.get(name) != getattr(config, name)
    ]
    if differences:
        raise ValueError("cannot resume with settings that change the run: " + "; ".join(differences))


def _read_metrics(path: Path, up_to_step: int) -> list[dict]:
    lines = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return [line for line in lines if line["step"] <= up_to_step]


class Trainer:
    """One training run. ``__init__`` reads the inputs and builds the model, loader and optimizer (restoring
    them from a checkpoint when resuming); ``fit`` runs the loop. Under torchrun every process holds one and
    trains on its slice of each batch; only the first evaluates, logs and saves."""

    def __init__(self, config: TrainConfig):
        config.validate()
        self.config = config
        self.started = time.perf_counter()
        self.process, self.device = distributed.setup(config.device)
        self.is_main = self.process.is_main
        set_seed(config.seed)
        self.amp_dtype = autocast_dtype(config.amp, self.device, quiet=not self.is_main)
        self.output = Path(config.output_path)
        self.metrics_file = self.output / "metrics.jsonl"
        self.resume_from, saved = self._find_resume_point()

        # Read every input before building anything, so that a bad file fails in seconds.
        self.valid_data = load_sts(config.valid_data, config.data_dir)
        train_data = load_train_data(config.train_data)
        if len(train_data) < 2:
            raise ValueError(
                f"{config.train_data}: {len(train_data)} training example; in-batch negatives need 2 or more"
            )
        if saved and saved["num_train_examples"] != len(train_data):
            raise ValueError(
                f"cannot resume: {config.train_data} now holds {len(train_data)} examples, "
                f"the run was started on {saved['num_train_examples']}"
            )
        self.num_sent = train_data.num_sent
        local_batch = config.batch_size // self.process.world_size
        self.sampler = EpochBatchSampler(
            len(train_data), config.batch_size, config.seed, self.process.rank, self.process.world_size
        )
        if config.grad_cache_chunk and local_batch % config.grad_cache_chunk:
            raise ValueError(
                f"--grad_cache_chunk {config.grad_cache_chunk} does not divide the per-process batch {local_batch}"
            )

        self.model = SimCSEModel(
            self.resume_from or config.model,
            pooler=config.pooler,
            mlp_only_train=config.mlp_only_train,
            dropout=config.dropout,
            tokenizer=None if self.resume_from else config.tokenizer,
            trust_remote_code=config.trust_remote_code,
            unpad=config.unpad,
        ).to(self.device)
        dataset = SimCSEDataset(train_data, self.model.tokenizer, config.max_length)
        self.loader = DataLoader(
            dataset,
            batch_sampler=self.sampler,
            collate_fn=self.model.collator,
            num_workers=config.num_workers,
            pin_memory=self.device.type == "cuda",
            generator=torch.Generator(),  # its seed draw must not consume the global RNG that drives dropout
        )
        self.steps_per_epoch = self.sampler.batches_per_epoch
        self.total_steps = config.epochs * self.steps_per_epoch
        if config.max_steps is not None:
            self.total_steps = min(self.total_steps, config.max_steps)
        self.warmup_steps = math.floor(config.warmup_ratio * self.total_steps)
        if self.sampler.dropped_per_epoch and self.is_main:
            logger.warning(
                "the last batch of each epoch leaves out %d example(s): a batch must split evenly over %d processes",
                self.sampler.dropped_per_epoch, self.process.world_size,
            )  # fmt: skip

        # DDP averages the gradients; every parameter gets one (the frozen pooler has none to average).
        self.ddp = DistributedDataParallel(
            self.model, device_ids=[self.device.index] if self.device.type == "cuda" else None
        ) if self.process.is_distributed else None  # fmt: skip
        self.train_model = self.ddp or self.model
        set_seed(config.seed + self.process.rank)  # each process its own dropout masks
        self.optimizer = torch.optim.AdamW(parameter_groups(self.model, config.weight_decay), lr=config.learning_rate)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.amp_dtype == torch.float16)
        self.autocast = torch.autocast(self.device.type, dtype=self.amp_dtype) if self.amp_dtype else nullcontext()

        self.state = LoopState()
        self.history: list[dict] = []  # one line per evaluation, as in metrics.jsonl (first process only)
        self.resume_rng = None
        if self.is_main:
            self.output.mkdir(parents=True, exist_ok=True)
            checkpoint.recover(self.output)
            info = run_info(
                config, self.device, self.amp_dtype, num_train_examples=len(dataset),
                steps_per_epoch=self.steps_per_epoch, total_steps=self.total_steps,
                world_size=self.process.world_size, per_process_batch=local_batch,
                grad_cache_chunk=config.grad_cache_chunk,
                negatives_per_anchor=config.batch_size - 1 + (config.batch_size if self.num_sent == 3 else 0),
                dropped_examples_per_epoch=self.sampler.dropped_per_epoch,
                resumed_from=str(self.resume_from) if self.resume_from else None,
            )  # fmt: skip
            text = json.dumps(info, indent=2, ensure_ascii=False) + "\n"
            (self.output / "train_args.json").write_text(text, encoding="utf-8")
        if saved:
            self._restore(saved)
        elif self.is_main:
            self.metrics_file.write_text("", encoding="utf-8")
        self.loss_sum = torch.tensor(self.state.window_loss_sum, device=self.device)  # summed on the device
        self.lr: float | None = None  # of the last step taken
        self.progress: tqdm | None = None

    def _find_resume_point(self) -> tuple[Path | None, dict | None]:
        """The checkpoint to resume from and its trainer state, after checking that the run can go on from it."""
        if not self.config.resume_from_checkpoint:
            return None, None
        checkpoint.recover(self.output)
        path = checkpoint.resolve_checkpoint(self.config.resume_from_checkpoint, self.output)
        saved = checkpoint.read_trainer_state(path)
        check_resumable(self.config, saved["config"])
        if saved["world_size"] != self.process.world_size:
            raise ValueError(f"cannot resume a run of {saved['world_size']} processes with {self.process.world_size}")
        return path, saved

    def _restore(self, saved: dict) -> None:
        """The loop state, optimizer and grad scaler of the checkpoint; metrics.jsonl cut back to its step."""
        self.state = LoopState(**saved["loop"])
        training_state = checkpoint.read_training_state(self.resume_from)
        self.optimizer.load_state_dict(training_state["optimizer"])
        self.scaler.load_state_dict(training_state["grad_scaler"])
        self.resume_rng = training_state["rng"][self.process.rank]  # set as the loop starts
        if self.is_main:
            self.history = _read_metrics(self.metrics_file, self.state.step)
            lines = "".join(json.dumps(line) + "\n" for line in self.history)
            self.metrics_file.write_text(lines, encoding="utf-8")
            print(f"resuming from {self.resume_from} at step {self.state.step}")

    def embed(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        with self.autocast:
            return self.train_model(**batch)  # (B, num_sent, H)

    def loss(self, embeddings: torch.Tensor, input_ids: torch.Tensor) -> torch.Tensor:
        """InfoNCE of a batch's embeddings (B, num_sent, H), with negatives gathered over the processes."""
        config, ids = self.config, None
        if config.mask_duplicate_negatives:
            # Every process pads to the same width, so that token ids can be gathered and compared.
            width = config.max_length if self.process.is_distributed else input_ids.shape[-1]
            ids = F.pad(input_ids, (0, width - input_ids.shape[-1]), value=self.model.collator.pad_token_id)
        return info_nce(
            embeddings[:, 0],
            embeddings[:, 1],
            embeddings[:, 2] if self.num_sent == 3 else None,
            temperature=config.temp,
            hard_negative_weight=config.hard_negative_weight,
            gather=distributed.gather,
            positive_ids=None if ids is None else ids[:, 1],
            hard_negative_ids=None if ids is None or self.num_sent < 3 else ids[:, 2],
        )

    def training_step(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """One optimizer step on a batch (of this process); returns its loss, detached."""
        config, state, scaler = self.config, self.state, self.scaler
        self.lr = learning_rate_at(state.step, self.total_steps, self.warmup_steps, config.learning_rate)
        for group in self.optimizer.param_groups:
            group["lr"] = self.lr
        batch = {key: value.to(self.device, non_blocking=True) for key, value in batch.items()}
        self.optimizer.zero_grad(set_to_none=True)
        if config.grad_cache_chunk:
            loss = chunked_backward(
                self.embed,
                batch,
                lambda embeddings: self.loss(embeddings, batch["input_ids"]),
                config.grad_cache_chunk,
                scale=scaler.scale,
                no_sync=self.ddp.no_sync if self.ddp else nullcontext,
            )
        else:
            loss = self.loss(self.embed(batch), batch["input_ids"])
            scaler.scale(loss).backward()
        # With fp16 loss scaling an overflow is expected now and then: the scaler skips that step.
        if not scaler.is_enabled() and not distributed.all_true(bool(torch.isfinite(loss)), self.device):
            last = checkpoint.list_checkpoints(self.output)
            raise NonFiniteLossError(
                f"training loss is {loss.item()} at step {state.step + 1}; last good checkpoint: "
                + (str(last[-1]) if last else f"none saved (--save_steps); best model in {self.output}")
            )
        if config.max_grad_norm > 0:
            scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), config.max_grad_norm)
        scale_before = scaler.get_scale() if scaler.is_enabled() else None
        scaler.step(self.optimizer)
        scaler.update()
        if scale_before is not None and scaler.get_scale() < scale_before:
            state.skipped_steps += 1
        state.step += 1
        self.loss_sum += loss.detach()
        state.window_loss_count += 1
        return loss.detach()

    def evaluate(self) -> None:
        """Log the training loss since the last evaluation and the dev metrics; save the model if it is the best."""
        state = self.state
        window = distributed.mean_over_processes(self.loss_sum).item()
        state.total_loss += window
        line = {
            "step": state.step,
            "epoch": round(state.step / self.steps_per_epoch, 4),
            "train_loss": window / state.window_loss_count if state.window_loss_count else None,
            "learning_rate": self.lr,
            "skipped_steps": state.skipped_steps,
        }
        self.loss_sum.zero_()
        state.window_loss_count = 0
        if self.is_main:
            line |= evaluate_sts(
                self.model, self.valid_data, batch_size=self.config.eval_batch_size, max_length=self.config.max_length
            )
            self.history.append(line)
            with self.metrics_file.open("a", encoding="utf-8") as file:
                file.write(json.dumps(line) + "\n")
            improved = line["cosine_spearman"] > state.best_score
            if improved:
                state.best_step, state.best_score = state.step, line["cosine_spearman"]
                checkpoint.save_model(self.model, self.output, self.config.max_length)
            self.progress.write(
                f"step {state.step} (epoch {line['epoch']:.2f}): dev cosine Pearson {line['cosine_pearson']:.4f}, "
                f"cosine Spearman {line['cosine_spearman']:.4f}"
                + (" (best, saved)" if improved else f" (best {state.best_score:.4f} at step {state.best_step})")
            )
        distributed.barrier()
        self.train_model.train()

    def save_training_checkpoint(self) -> None:
        """checkpoint-STEP/: the model, optimizer, grad scaler, every process's RNG state and the loop state."""
        state = self.state
        rng_states = distributed.all_objects(checkpoint.rng_state())
        state.window_loss_sum = distributed.mean_over_processes(self.loss_sum).item()
        if self.is_main:
            trainer_state = {
                "step": state.step,
                "epoch": state.step // self.steps_per_epoch,
                "batch_in_epoch": state.step % self.steps_per_epoch,
                "num_train_examples": len(self.loader.dataset),
                "world_size": self.process.world_size,
                "loop": asdict(state),
                "config": asdict(self.config),
            }
            training_state = {
                "optimizer": self.optimizer.state_dict(),
                "grad_scaler": self.scaler.state_dict(),
                "rng": rng_states,  # one per process
            }
            path = checkpoint.save_training_checkpoint(
                self.model, self.output, self.config.max_length, training_state, trainer_state
            )
            checkpoint.rotate_checkpoints(self.output, self.config.save_total_limit)
            self.progress.write(f"step {state.step}: saved {path}")
        distributed.barrier()

    def remaining_batches(self):
        """The batches of this process from the step the run stands at to the end of the last epoch."""
        start_epoch = self.state.step // self.steps_per_epoch
        for epoch in range(start_epoch, self.config.epochs):
            skip = self.state.step - epoch * self.steps_per_epoch if epoch == start_epoch else 0
            self.sampler.set_epoch(epoch, start_batch=skip)
            yield from self.loader

    def fit(self) -> TrainResult:
        """Evaluate before training (unless resuming), then train to ``total_steps``, evaluating every
        ``eval_step`` steps (or epoch) and at the end, and saving training checkpoints every ``save_steps``."""
        config, state = self.config, self.state
        # Redrawn at most once a second when the output is a log file rather than a terminal.
        self.progress = tqdm(
            total=self.total_steps, initial=state.step, desc="training", unit="step", dynamic_ncols=True,
            mininterval=0.1 if sys.stderr.isatty() else 1.0, disable=not self.is_main,
        )  # fmt: skip
        if self.resume_rng is not None:
            checkpoint.set_rng_state(self.resume_rng)
        else:
            self.evaluate()
        self.train_model.train()
        window_start, window_sentences = time.perf_counter(), 0
        for batch in self.remaining_batches():
            loss = self.training_step(batch)
            window_sentences += batch["input_ids"].shape[0] * batch["input_ids"].shape[1] * self.process.world_size
            self.progress.update()
            if self.is_main and (state.step % 10 == 0 or state.step == self.total_steps):
                elapsed = time.perf_counter() - window_start
                self.progress.set_postfix(
                    loss=f"{loss.item():.4f}", lr=f"{self.lr:.2e}", sent_per_s=f"{window_sentences / elapsed:.1f}"
                )
                window_start, window_sentences = time.perf_counter(), 0
            if (
                state.step == self.total_steps
                or (config.eval_strategy == "steps" and state.step % config.eval_step == 0)
                or (config.eval_strategy == "epoch" and state.step % self.steps_per_epoch == 0)
            ):
                self.evaluate()
                window_start, window_sentences = time.perf_counter(), 0
            if config.save_steps and state.step % config.save_steps == 0:
                self.save_training_checkpoint()
            if state.step == self.total_steps:
                break
        self.progress.close()
        return self._finish()

    def _finish(self) -> TrainResult:
        state = self.state
        result = TrainResult(
            best_step=state.best_step,
            best_score=state.best_score,
            mean_train_loss=state.total_loss / state.step,
            total_seconds=time.perf_counter() - self.started,
            steps=state.step,
            skipped_steps=state.skipped_steps,
            history=self.history,
        )
        if self.is_main:
            print(
                f"done: dev cosine Spearman {self.history[0]['cosine_spearman']:.4f} before training, "
                f"best {result.best_score:.4f} at step {result.best_step}; "
                f"mean training loss {result.mean_train_loss:.4f} over {state.step} steps"
                + (f" ({state.skipped_steps} skipped by the fp16 grad scaler)" if state.skipped_steps else "")
                + f"; total time {result.total_seconds:.1f} s; best checkpoint in {self.output}"
            )
        if self.is_main and self.config.push_to_hub:
            best = next(line for line in self.history if line["step"] == result.best_step)
            results = {self.config.valid_data: {key: best[key] for key in METRIC_KEYS}}
            report = self.output / EVAL_RESULTS_NAME
            write_eval_report(report, self.config.model, self.model, self.config.max_length, results)
            url = push_checkpoint(self.output, self.config.push_to_hub, private=self.config.hub_private)
            print(f"pushed {self.output} to {url}")
        distributed.barrier()
        return result


def train(config: TrainConfig) -> TrainResult:
    """Train, evaluating on the dev set before training, every ``eval_step`` steps (or epoch) and at the end.

    ``output_path`` receives the best checkpoint (by dev cosine Spearman), train_args.json, metrics.jsonl
    (one line per evaluation) and, with ``save_steps``, training checkpoints ``checkpoint-STEP/``. Under
    torchrun every process trains on its slice of each batch; only the first evaluates, logs and saves.
    """
    return Trainer(config).fit()
