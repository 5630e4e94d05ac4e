"""The poolers: how a sentence vector is taken from an encoder's token states. One entry each, in ``POOLERS``.

An entry holds its padded function (token states (N, L, H) and the attention mask (N, L) -> (N, H)), optionally
a fast path on the packed tokens of the unpadded forward pass (else those are padded back and the padded function
runs), what it reads (the last layer's first token alone, or inner layers' states), whether SimCSE's MLP head
follows it, its sentence-transformers pooling mode (if it has one) and the line of the model card's usage snippet
that computes it. ``simcse.config`` (the flag's choices), ``simcse.model``, ``simcse.st_format`` and ``simcse.hub``
read it; a new pooler is one entry here.

This module imports no torch: the functions only call tensor methods, and train.py's ``--help`` answers at once.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

Tensor = Any  # torch.Tensor, not imported here


def masked_mean(attention_mask: Tensor, tokens: Tensor) -> Tensor:
    """Mean over each sequence's real tokens: (N, L, H) and mask (N, L) -> (N, H)."""
    mask = attention_mask.unsqueeze(-1).to(tokens.dtype)  # (N, L, 1)
    return (tokens * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1)


@dataclass(frozen=True)
class Pooler:
    name: str
    help: str
    # (attention_mask (N, L), last_hidden_state (N, L, H), hidden_states: embeddings output, then each layer's)
    # -> (N, H)
    padded: Callable[[Tensor, Tensor, Sequence[Tensor] | None], Tensor]
    usage: str  # the snippet line computing `pooled` from `outputs`
    # (packing, last_hidden_state (T, H), hidden_states (T, H) each) -> (N, H); None: pad, then ``padded``
    packed: Callable[[Any, Tensor, Sequence[Tensor] | None], Tensor] | None = None
    first_token_only: bool = False  # reads the last layer's first token alone: the unpadded pass computes only it
    hidden_states: bool = False  # reads inner layers' states
    head: bool = False  # SimCSE's MLP head (dense + tanh) follows it
    st_mode: str | None = None  # sentence-transformers' pooling mode, when it has this pooler
    usage_helper: str = ""  # the snippet lines defining what ``usage`` calls, before it

    def pool_packed(self, packing, attention_mask: Tensor, last: Tensor, hidden_states) -> Tensor:
        """The pooled vectors (N, H) from the unpadded pass's packed states (T, H)."""
        if self.packed is not None:
            return self.packed(packing, last, hidden_states)
        padded_states = None if hidden_states is None else [packing.pad(states) for states in hidden_states]
        return self.padded(attention_mask, packing.pad(last), padded_states)


def first_token(attention_mask: Tensor, last: Tensor, hidden_states) -> Tensor:
    return last[:, 0]  # (N, H)


def last_token(attention_mask: Tensor, last: Tensor, hidden_states) -> Tensor:
    """Each sequence's last real token, whichever side it is padded on: where the mask's running sum peaks first."""
    index = attention_mask.cumsum(dim=1).argmax(dim=1)  # (N,)
    return last.gather(1, index.view(-1, 1, 1).expand(-1, 1, last.shape[-1]))[:, 0]  # (N, H)


def mean_of_layers(first: int, second: int) -> tuple[Callable, Callable]:
    """The padded and packed functions of the mean over real tokens of two layers' average."""

    def padded(attention_mask, last, hidden_states):
        return masked_mean(attention_mask, (hidden_states[first] + hidden_states[second]) / 2)

    def packed(packing, last, hidden_states):
        return packing.mean((hidden_states[first] + hidden_states[second]) / 2)

    return padded, packed


# The snippets' masked mean over real tokens, for the poolers that call ``mean``.
MEAN_HELPER = "mask = batch['attention_mask'].unsqueeze(-1)\nmean = lambda states: (states * mask).sum(1) / mask.sum(1)"
_first_last, _first_last_packed = mean_of_layers(1, -1)
_top2, _top2_packed = mean_of_layers(-2, -1)

POOLERS: dict[str, Pooler] = {
    pooler.name: pooler
    for pooler in (
        Pooler(
            "cls",
            "the [CLS] vector through SimCSE's MLP head (dense + tanh)",
            first_token,
            "pooled = outputs.last_hidden_state[:, 0]  # the [CLS] vector",
            first_token_only=True,
            head=True,
            st_mode="cls_token",
        ),
        Pooler(
            "cls_before_pooler",
            "the [CLS] vector, no head",
            first_token,
            "pooled = outputs.last_hidden_state[:, 0]  # the [CLS] vector",
            first_token_only=True,
            st_mode="cls_token",
        ),
        Pooler(
            "avg",
            "mean of the last layer over real tokens",
            lambda mask, last, hidden_states: masked_mean(mask, last),
            "pooled = mean(outputs.last_hidden_state)  # mean over real tokens",
            packed=lambda packing, last, hidden_states: packing.mean(last),
            st_mode="mean_tokens",
            usage_helper=MEAN_HELPER,
        ),
        Pooler(
            "avg_first_last",
            "mean over real tokens of the first and last layers' average",
            _first_last,
            "pooled = mean((outputs.hidden_states[1] + outputs.hidden_states[-1]) / 2)  # first and last layers",
            packed=_first_last_packed,
            hidden_states=True,
            usage_helper=MEAN_HELPER,
        ),
        Pooler(
            "avg_top2",
            "mean over real tokens of the last two layers' average",
            _top2,
            "pooled = mean((outputs.hidden_states[-2] + outputs.hidden_states[-1]) / 2)  # last two layers",
            packed=_top2_packed,
            hidden_states=True,
            usage_helper=MEAN_HELPER,
        ),
        Pooler(
            "lasttoken",
            "the last real token's vector (decoders: the end-of-sequence token, which has seen the whole text)",
            last_token,
            "pooled = outputs.last_hidden_state[torch.arange(len(batch['input_ids'])), "
            "batch['attention_mask'].cumsum(1).argmax(1)]  # the last real token, either padding side",
            st_mode="lasttoken",
        ),
    )
}
POOLERS_WITH_HEAD = tuple(name for name, pooler in POOLERS.items() if pooler.head)
DEFAULT_POOLER = next(iter(POOLERS))  # the first entry: the reference recipe's
