"""GradCache (Gao et al., 2021): the gradient of a batch too large for memory, computed chunk by chunk.

1. Embed every chunk without keeping the graph (memory of one chunk), saving the RNG state first.
2. Compute the loss on all embeddings and its gradient with respect to them.
3. Embed every chunk again, with the graph and the same RNG state (the same dropout masks: in
   unsupervised SimCSE dropout *is* the augmentation), and back-propagate the cached gradient into it.

The parameter gradients equal those of one backward pass through the whole batch with those masks.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext

import torch


def _rng_state(device: torch.device) -> tuple[torch.Tensor, torch.Tensor | None]:
    cuda = torch.cuda.get_rng_state(device) if device.type == "cuda" else None
    return torch.get_rng_state(), cuda


def _set_rng_state(state: tuple[torch.Tensor, torch.Tensor | None], device: torch.device) -> None:
    cpu, cuda = state
    torch.set_rng_state(cpu)
    if cuda is not None:
        torch.cuda.set_rng_state(cuda, device)


def chunked_backward(
    embed: Callable[[dict[str, torch.Tensor]], torch.Tensor],
    batch: dict[str, torch.Tensor],
    loss_of: Callable[[torch.Tensor], torch.Tensor],
    chunk_size: int,
    scale: Callable[[torch.Tensor], torch.Tensor] = lambda loss: loss,
    no_sync: Callable[[], AbstractContextManager] = nullcontext,
) -> torch.Tensor:
    """Back-propagate ``loss_of(embed(batch))`` chunk by chunk; returns the (unscaled) loss, detached.

    Args:
        embed: examples (chunk, num_sent, L) -> embeddings (chunk, num_sent, H), with the graph when
            gradients are enabled.
        loss_of: all embeddings (B, num_sent, H) -> scalar loss.
        chunk_size: examples per chunk; the last chunk may be smaller.
        scale: applied to the loss before backward (a GradScaler's ``scale``), so the cached gradients
            and hence the parameter gradients carry the loss scale.
        no_sync: a context in which gradients are not synchronised across processes (DDP's
            ``no_sync``); every chunk's backward but the last runs in it.
    """
    chunks = [
        dict(zip(batch, values)) for values in zip(*(value.split(chunk_size) for value in batch.values()))
    ]  # each (chunk, num_sent, L)
    device = batch["input_ids"].device
    rng_states = []
    with torch.no_grad():
        embeddings = []
        for chunk in chunks:
            rng_states.append(_rng_state(device))
            embeddings.append(embed(chunk))  # (chunk, num_sent, H)
    cached = torch.cat(embeddings).detach().requires_grad_()  # (B, num_sent, H)
    loss = loss_of(cached)
    scale(loss).backward()  # fills cached.grad only: nothing upstream has a graph
    start = 0
    for index, (chunk, state) in enumerate(zip(chunks, rng_states)):
        rows = len(chunk["input_ids"])
        _set_rng_state(state, device)
        with no_sync() if index < len(chunks) - 1 else nullcontext():
            embed(chunk).backward(cached.grad[start : start + rows])  # (chunk, num_sent, H)
        start += rows
    return loss.detach()
