"""The SimCSE training loop: AdamW, linear warmup and decay, AMP, periodic STS evaluation, the best
checkpoint, training-state checkpoints and exact resume."""

from __future__ import annotations

import logging
import os
import time
from contextlib import nullcontext
from pathlib import Path

import torch
from tqdm.auto import tqdm

from simcse import checkpoint, distributed, hub
from simcse.config import TrainConfig
from simcse.device import autocast_dtype
from simcse.grad_cache import chunked_backward
from simcse.guide import guide_embeddings, load_guide
from simcse.loader import LoaderSettings, batch_facts, build_loader
from simcse.loop_state import TrainResult, progress_bar, set_seed, start_loop_state
from simcse.objectives import OBJECTIVES
from simcse.optim import apply_gradient, build_optimizer_and_scaler, build_schedule
from simcse.rules import one_or_list
from simcse.run_folder import METRICS_NAME, append_metrics
from simcse.run_inputs import (
    build_model,
    check_tokenizer_covers,
    data_fingerprints,
    example_counts,
    read_inputs,
    tokenize_inputs,
)
from simcse.run_setup import (
    check_resumed_data,
    claim_output_folder,
    find_resume_point,
    prepare_output_folder,
    run_info,
    trainer_state,
)
from simcse.step_loss import StepLoss
from simcse.tasks import evaluate_dev
from simcse.tracking import check_ready, open_reporters
from simcse.unpad import attention_kernel

logger = logging.getLogger(__name__)

# A run whose first steps all had a non-finite gradient (every update skipped) is stopped: it trains nothing.
# Loss scaling (fp16) legitimately skips a few first steps while it finds its scale, hence more than one.
ALL_SKIPPED_LIMIT = 20


class NonFiniteLossError(ValueError):
    """Training produced a NaN or infinite loss."""


class NonFiniteGradientError(ValueError):
    """Every step so far had a NaN or infinite gradient, so none updated the model."""


class Trainer:
    """One training run. ``__init__`` reads the inputs and builds the model, loader, schedule, optimizer and
    progress bar (restoring them from a checkpoint when resuming); ``fit`` runs the loop. Under torchrun every
    process holds one and trains on its slice of each batch; only the first evaluates, logs and saves."""

    def __init__(self, config: TrainConfig):
        config.validate()
        check_ready(config.report_to)
        self.config = config
        self.started = time.perf_counter()
        self.process, self.device = distributed.setup(config.device)
        self.is_main = self.process.is_main
        if config.push_to_hub and self.is_main:
            hub.check_push_access(config.push_to_hub)
        self.output = Path(config.output_path)
        self.lock = claim_output_folder(config, self.process)
        try:
            self.build(config)
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        """End the progress bar's line and release the run folder's lock (the OS does so too when the process
        ends)."""
        if hasattr(self, "progress"):
            self.progress.close()
        for reporter in getattr(self, "reporters", []):
            reporter.close()
        if self.lock:
            self.lock.release()

    def build(self, config: TrainConfig) -> None:
        set_seed(config.seed)
        self.parts = config.parts()  # the training datasets, each with its objective and batch size
        self.objectives = [OBJECTIVES[part.objective] for part in self.parts]
        self.amp_dtype = autocast_dtype(config.amp, self.device, quiet=not self.is_main)
        self.valid_data, sources = read_inputs(config)
        self.selection_metric = self.valid_data.task.selection_metric
        self.loss_settings = config.loss_settings()
        self.resume = find_resume_point(config, self.output, self.process)
        self.model = build_model(config, self.resume, self.device)
        self.guide = load_guide(config.guide_model, self.model, self.device) if config.guide_model else None
        self.train_data = tokenize_inputs(config, sources, self.model, self.process)
        check_tokenizer_covers(self.model, self.train_data, self.valid_data, config)
        self.data_fingerprints = data_fingerprints(config, self.train_data)
        check_resumed_data(config, self.resume, self.train_data, self.data_fingerprints)
        settings = LoaderSettings(
            self.parts,
            config.max_length,
            config.num_negatives,
            config.seed,
            config.mixture,
            config.num_workers,
            distill=config.distill_weight > 0,
        )
        self.sampler, self.loader = build_loader(settings, self.train_data, self.model, self.process, self.device)
        self.schedule = build_schedule(
            self.sampler.batches_per_epoch, config.epochs, config.max_steps, config.warmup_ratio, config.learning_rate
        )
        self.train_model = distributed.wrap_for_processes(self.model, self.process, self.device)
        set_seed(config.seed + self.process.rank)  # each process its own dropout masks
        training_state = self.resume.training_state if self.resume else None
        self.optimizer, self.scaler = build_optimizer_and_scaler(
            self.model, config.learning_rate, config.weight_decay, self.amp_dtype, training_state
        )
        self.autocast = torch.autocast(self.device.type, dtype=self.amp_dtype) if self.amp_dtype else nullcontext()
        saved_loop = self.resume.trainer_state["loop"] if self.resume else None
        self.state = start_loop_state(saved_loop, self.device, len(self.parts))
        self.history = (
            prepare_output_folder(config, self.output, self.run_info(), self.model, self.resume, self.state)
            if self.is_main
            else []
        )
        resumed_step = self.resume.trainer_state["step"] if self.resume else None
        self.reporters = open_reporters(config.report_to, self.output, config, resumed_step) if self.is_main else []
        self.lr: float | None = None  # of the last step taken
        width = self.loader.dataset.longest if self.process.is_distributed else None
        guarded = config.false_negative_margin is not None or self.guide is not None
        self.step_loss = StepLoss(self.objectives, self.loss_settings, self.model.collator.pad_token_id, width, guarded)
        self.last_losses: dict[int, torch.Tensor] = {}  # each dataset's latest step loss, for the progress bar
        self.progress = progress_bar(self.schedule.total_steps, self.state, self.is_main)

    def run_info(self) -> dict:
        """train_args.json: the settings, the versions, the device and what the run is made of."""
        model, world_size = self.model, self.process.world_size
        return run_info(
            self.config,
            self.device,
            self.amp_dtype,
            num_train_examples=example_counts(self.train_data),
            steps_per_epoch=self.schedule.steps_per_epoch,
            total_steps=self.schedule.total_steps,
            world_size=world_size,
            grad_cache_chunk=self.config.grad_cache_chunk,
            data_kind=one_or_list([data.kind for data in self.train_data]),
            selection_metric=self.selection_metric,
            dev_split=self.valid_data.split,
            resumed_from=str(self.resume.path) if self.resume else None,
            forward=f"unpadded, {attention_kernel(self.device)} attention" if model.unpad else "padded",
            trainable_parameters=sum(p.numel() for p in model.parameters() if p.requires_grad),
            document_max_length_used=model.document_max_length,  # --document_max_length, capped at the positions
            **batch_facts(self.sampler, self.loader.dataset.datasets, self.objectives, world_size),
        )

    @property
    def metrics_file(self) -> Path:
        return self.output / METRICS_NAME

    # -----------------------------------------------------------------------------------------------
    # One step

    def embed(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        with self.autocast:
            return self.train_model(**batch).float()  # (B, num_sent, H); the loss in float32 (--model_dtype bf16)

    def loss(self, part: int, embeddings: torch.Tensor, input_ids: torch.Tensor, values: dict) -> torch.Tensor:
        """The step's loss (``StepLoss``), the first step of an evaluation window checking for repeated texts."""
        warn = self.is_main and self.state.step % self.config.eval_steps == 0  # a host sync: once a window
        return self.step_loss(
            part, embeddings, input_ids, values, self.state, self.parts[part].train_data if warn else None
        )

    def training_step(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """One optimizer step on a batch (of this process, from one dataset); returns its loss, detached."""
        config, state, scaler = self.config, self.state, self.scaler
        self.lr = self.schedule.learning_rate(state.step)
        for group in self.optimizer.param_groups:
            group["lr"] = self.lr
        part = int(batch.pop("part"))  # the dataset the batch is from (a CPU tensor: no sync)
        batch = {key: value.to(self.device, non_blocking=True) for key, value in batch.items()}
        # (B,) gold scores of scored pairs; (B, 1 + K) a teacher's of retrieval data; the guide's embeddings
        values = {name: batch.pop(name, None) for name in ("scores", "teacher_scores")}
        if self.guide is not None:
            values["guide_embeddings"] = guide_embeddings(self.guide, batch, config.grad_cache_chunk, self.autocast)
        self.optimizer.zero_grad(set_to_none=True)
        if config.grad_cache_chunk:
            loss = chunked_backward(
                self.embed,
                batch,
                lambda embeddings: self.loss(part, embeddings, batch["input_ids"], values),
                config.grad_cache_chunk,
                scale=scaler.scale,
                no_sync=self.train_model.no_sync if self.process.is_distributed else nullcontext,
            )
        else:
            loss = self.loss(part, self.embed(batch), batch["input_ids"], values)
            scaler.scale(loss).backward()
        # With fp16 loss scaling an overflow is expected now and then: the scaler skips that step.
        if not scaler.is_enabled() and not distributed.all_true(bool(torch.isfinite(loss)), self.device):
            raise NonFiniteLossError(
                f"training loss is {loss.item()} at step {state.step + 1}; {self.last_good_save()}"
            )
        state.skipped_steps += apply_gradient(self.optimizer, scaler, self.model, config.max_grad_norm)
        state.step += 1
        if state.skipped_steps == state.step and state.step >= min(ALL_SKIPPED_LIMIT, self.schedule.total_steps):
            raise NonFiniteGradientError(
                f"the gradient was not finite at each of the {state.step} steps so far, so none updated the model: "
                f"check --learning_rate, --temp and the data; {self.last_good_save()}"
            )
        state.window_loss_sum[part] += loss.detach()
        state.window_loss_count[part] += 1
        self.last_losses[part] = loss.detach()
        return loss.detach()

    def shown_losses(self, loss: torch.Tensor) -> dict[str, str]:
        """The progress bar's losses: the last step's, and with several datasets each one's latest, named by its
        file (the whole path where two files share a name)."""
        last = self.step_loss.last_masked
        masked = {} if last is None else {"masked": f"{last.item():.1%}"}
        if len(self.parts) == 1:
            return {"loss": f"{loss.item():.4f}"} | masked
        names = [os.path.basename(part.label) for part in self.parts]
        names = names if len(set(names)) == len(names) else [part.label for part in self.parts]
        losses = {f"loss {names[part]}": f"{value.item():.4f}" for part, value in sorted(self.last_losses.items())}
        return losses | masked

    # -----------------------------------------------------------------------------------------------
    # Evaluation and saves

    def evaluate(self) -> dict | None:
        """This step's metrics.jsonl line, appended to the file: the mean training loss since the last
        evaluation (over all processes), the learning rate and the dev metrics. The first process returns
        it; the others only take part in the mean and return None."""
        state = self.state
        sums, counts = distributed.mean_over_processes(state.window_loss_sum).tolist(), state.window_loss_count
        state.total_loss += sum(sums)
        line = {
            "step": state.step,
            "epoch": round(state.step / self.schedule.steps_per_epoch, 4),
            "train_loss": sum(sums) / sum(counts) if sum(counts) else None,
            "learning_rate": self.lr,
            "skipped_steps": state.skipped_steps,
        }
        if len(self.parts) > 1:  # each dataset's mean loss since the last evaluation
            line["train_loss_by_dataset"] = {
                part.label: total / count if count else None for part, total, count in zip(self.parts, sums, counts)
            }
        state.window_loss_sum.zero_()
        state.window_loss_count = [0] * len(self.parts)
        if state.window_masked_steps:  # the mean share of candidates the masks removed, with a guard on
            masked = distributed.mean_over_processes(state.window_masked_sum).item()
            line["masked_share"] = masked / state.window_masked_steps
            state.window_masked_sum.zero_()
            state.window_masked_steps = 0
        if not self.is_main:
            return None
        shown = self.progress.postfix
        self.progress.set_postfix_str("evaluating on the dev set")
        line |= evaluate_dev(self.model, self.valid_data, batch_size=self.config.eval_batch_size)
        self.progress.set_postfix_str(shown or "", refresh=False)
        self.history.append(line)
        append_metrics(self.metrics_file, line)
        for reporter in self.reporters:
            reporter.log(line)
        return line

    def last_good_save(self) -> str:
        last = checkpoint.list_checkpoints(self.output)
        return "last good checkpoint: " + (
            str(last[-1]) if last else f"none saved (--save_steps); best model in {self.output}"
        )

    def save_model_if_best(self, line: dict) -> bool:
        """Save the model as the run's best when ``line``'s dev score beats every earlier one (NaN never does)."""
        state = self.state
        score = line[self.selection_metric]
        if not score > state.best_score:
            return False
        state.best_step, state.best_score = state.step, score
        self.save_model()
        return True

    def save_model(self) -> None:
        """The model into the run folder, with its card (README.md) written anew."""
        checkpoint.save_model(self.model, self.output)
        hub.write_run_card(self.output, self.config.push_to_hub or self.output.resolve().name)

    def evaluate_and_save_best(self) -> None:
        line = self.evaluate()
        if line is not None:
            saved = self.save_model_if_best(line)
            state = self.state
            tqdm.write(
                f"step {state.step} (epoch {line['epoch']:.2f}): {self.valid_data.dev_label} "
                + self.valid_data.task.short_line(line)
                + (" (best, saved)" if saved else f" (best {state.best_score:.4f} at step {state.best_step})")
            )
        distributed.barrier()

    def save_training_checkpoint(self) -> None:
        """checkpoint-STEP/: the model, optimizer, grad scaler, every process's RNG state and the loop state."""
        state = self.state
        rng_states = distributed.all_objects(checkpoint.rng_state())
        # Every process keeps the mean, so that the run goes on exactly as a run resumed from here does.
        state.window_loss_sum = distributed.mean_over_processes(state.window_loss_sum)
        state.window_masked_sum = distributed.mean_over_processes(state.window_masked_sum)
        if self.is_main:
            training_state = {
                "optimizer": self.optimizer.state_dict(),
                "grad_scaler": self.scaler.state_dict(),
                "rng": rng_states,  # one per process
            }
            saved = trainer_state(
                self.config,
                state,
                self.schedule.steps_per_epoch,
                self.train_data,
                self.process.world_size,
                self.data_fingerprints,
            )
            path = checkpoint.save_training_checkpoint(self.model, self.output, training_state, saved)
            checkpoint.rotate_checkpoints(self.output, self.config.save_total_limit)
            tqdm.write(f"step {state.step}: saved {path}")
        distributed.barrier()

    # -----------------------------------------------------------------------------------------------
    # The loop

    def remaining_batches(self):
        """The batches of this process from the step the run stands at to the end of the last epoch."""
        steps_per_epoch = self.schedule.steps_per_epoch
        start_epoch = self.state.step // steps_per_epoch
        for epoch in range(start_epoch, self.config.epochs):
            skip = self.state.step - epoch * steps_per_epoch if epoch == start_epoch else 0
            self.sampler.set_epoch(epoch, start_batch=skip)
            self.loader.dataset.set_epoch(epoch)  # retrieval data draws its examples' documents each epoch
            yield from self.loader

    def evaluation_due(self) -> bool:
        step, config = self.state.step, self.config
        if step == self.schedule.total_steps:
            return True
        if config.eval_strategy == "epoch":
            return step % self.schedule.steps_per_epoch == 0
        return step % config.eval_steps == 0

    def fit(self) -> TrainResult:
        """Evaluate before training (unless resuming), then train to the schedule's last step, evaluating every
        ``eval_steps`` steps (or epoch) and at the end, and saving training checkpoints every ``save_steps``."""
        config, state = self.config, self.state
        if self.resume:
            checkpoint.set_rng_state(self.resume.training_state["rng"][self.process.rank])
            if state.step >= self.schedule.total_steps:
                if self.is_main:
                    print(f"the run already reached its last step ({state.step}): nothing left to train")
                self.progress.close()
                return self.final_result()
        elif config.eval_at_start:
            self.evaluate_and_save_best()
        self.train_model.train()
        window_start, window_sentences = time.perf_counter(), 0  # for the sentences/s shown
        for batch in self.remaining_batches():
            loss = self.training_step(batch)
            window_sentences += batch["input_ids"].shape[0] * batch["input_ids"].shape[1] * self.process.world_size
            self.progress.update()
            if self.is_main and (state.step % 10 == 0 or state.step == self.schedule.total_steps):
                elapsed = time.perf_counter() - window_start
                self.progress.set_postfix(
                    self.shown_losses(loss), lr=f"{self.lr:.2e}", sent_per_s=f"{window_sentences / elapsed:.1f}"
                )
                window_start, window_sentences = time.perf_counter(), 0
            if self.evaluation_due():
                self.evaluate_and_save_best()
                window_start, window_sentences = time.perf_counter(), 0
            if config.save_steps and state.step % config.save_steps == 0:
                self.save_training_checkpoint()
            if state.step == self.schedule.total_steps:
                break
        self.progress.close()
        if self.is_main and state.best_step < 0:
            # Every dev score was NaN (degenerate embeddings): no "best", but the trained model must not be lost.
            logger.warning("no evaluation gave a finite dev score; saving the final model (step %d)", state.step)
            self.save_model()
        distributed.barrier()
        return self.final_result()

    def final_result(self) -> TrainResult:
        """The run's result, printed by the first process."""
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
            dev = f"{self.valid_data.dev_label} {self.valid_data.task.selection_label}"
            start = next((line[self.selection_metric] for line in self.history if line["step"] == 0), None)
            print(result.done_line(dev, start, self.output))
        return result


def train(config: TrainConfig) -> TrainResult:
    """Train, evaluating on the dev set before training, every ``eval_steps`` steps (or epoch) and at the end;
    then push the best checkpoint to the Hub if ``push_to_hub`` names a repository.

    ``output_path`` receives the best checkpoint (by dev cosine Spearman; nDCG@10 on a retrieval set),
    train_args.json, metrics.jsonl (one line per evaluation) and, with ``save_steps``, training checkpoints
    ``checkpoint-STEP/``. Under torchrun every process trains on its slice of each batch; only the first evaluates,
    logs and saves.
    """
    trainer = Trainer(config)
    try:
        result = trainer.fit()
        if config.push_to_hub and trainer.is_main:
            # The best evaluation's line, or the last one's when no dev score was finite (the final model).
            history, best_step = trainer.history, trainer.state.best_step
            best = next((line for line in history if line["step"] == best_step), history[-1])
            hub.push_run(
                trainer.output,
                config.push_to_hub,
                config.hub_private,
                config.model,
                config.valid_data,
                trainer.model,
                best,
            )
        distributed.barrier()
    finally:
        trainer.close()
    return result
