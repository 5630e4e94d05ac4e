"""A training step's loss as the trainer asks for it: the batch's dataset's objective (at each Matryoshka size) on
its embeddings, with its token ids padded to one width on every process and the values the batch carries (gold or
a teacher's scores, a guide's embeddings); and what the masks removed: the share of candidates, summed per
evaluation window with a false-negative guard on, and a warning when a corpus repeats itself."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from simcse import distributed
from simcse.loop_state import LoopState
from simcse.objectives import LossInputs, LossSettings, Objective, matryoshka

logger = logging.getLogger("simcse.trainer")

# Above this share of masked (duplicate) candidates in a batch, the run warns: the corpus repeats itself.
MASKED_SHARE_WARNING = 0.1


class StepLoss:
    """``objectives``: each training dataset's; ``width``: the token width every process pads to (None: one
    process, no padding); ``guarded``: a false-negative guard is on, so the masked share is counted."""

    def __init__(
        self,
        objectives: Sequence[Objective],
        settings: LossSettings,
        pad_token_id: int,
        width: int | None,
        guarded: bool,
    ):
        self.objectives, self.settings, self.pad_token_id = list(objectives), settings, pad_token_id
        self.width, self.guarded = width, guarded
        self.last_masked: torch.Tensor | None = None  # the last step's masked share, with a guard on
        self.warned_about_duplicates = False

    def __call__(
        self,
        part: int,
        embeddings: torch.Tensor,
        input_ids: torch.Tensor,
        values: dict,
        state: LoopState,
        check_repeats_of: str | None = None,
    ) -> torch.Tensor:
        """The loss of dataset ``part``'s objective on a batch's embeddings (B, num_sent, H), masks included;
        ``values`` are ``LossInputs``' optional fields. ``check_repeats_of`` names the dataset when this step is
        to check how many negatives repeat an anchor's text (a host sync: once an evaluation window)."""
        ids = input_ids
        if self.width and self.width > input_ids.shape[-1]:  # gathered and compared over the processes
            ids = F.pad(input_ids, (0, self.width - input_ids.shape[-1]), value=self.pad_token_id)
        inputs = LossInputs(embeddings, ids, **values)
        output = matryoshka(self.objectives[part].loss, inputs, self.settings, distributed.gather)
        if output.masked is not None:
            masked = output.masked
            share = masked.sum() / (masked.shape[0] * (masked.shape[1] - 1))  # the own positives aside
            if self.guarded:
                state.window_masked_sum += share
                state.window_masked_steps += 1
                self.last_masked = share
            elif check_repeats_of is not None:
                self.warn_about_duplicates(share.item(), check_repeats_of, state.step + 1)
        return output.loss

    def warn_about_duplicates(self, share: float, train_data: str, step: int) -> None:
        """Warn once when more than ``MASKED_SHARE_WARNING`` of a batch's negatives repeat an anchor's text."""
        if share > MASKED_SHARE_WARNING and not self.warned_about_duplicates:
            self.warned_about_duplicates = True
            logger.warning(
                "step %d: %.0f%% of the batch's negatives repeat the text of an anchor or its positive and were "
                "masked; %s repeats sentences (deduplicate it)",
                step,
                100 * share,
                train_data,
            )
