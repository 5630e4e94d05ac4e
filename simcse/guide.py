"""The frozen guide model of GIST's false-negative guard (``--guide_model``): it reads the batch's token ids, so it
must share the trained model's tokenizer, and embeds them without gradient, chunk by chunk as GradCache does."""

from __future__ import annotations

import os
from contextlib import AbstractContextManager

import torch

from simcse.model import SimCSEModel
from simcse.tokenized import tokenizer_fingerprint


def load_guide(name_or_path: str | os.PathLike, model: SimCSEModel, device: torch.device) -> SimCSEModel:
    """The guide (its own saved pooler and head), frozen in eval mode on ``device``; refused in one line when its
    tokenizer makes other ids than ``model``'s."""
    guide = SimCSEModel(name_or_path, unpad=model.unpad, max_length=model.max_length)
    if tokenizer_fingerprint(guide.tokenizer) != tokenizer_fingerprint(model.tokenizer):
        raise ValueError(
            f"--guide_model {name_or_path}: its tokenizer ({guide.tokenizer.name_or_path}) differs from the model's "
            f"({model.tokenizer.name_or_path}); the guide reads the batch's token ids, so it needs the same tokenizer"
        )
    return guide.to(device).eval().requires_grad_(False)


def guide_embeddings(
    guide: SimCSEModel, batch: dict[str, torch.Tensor], chunk_size: int | None, autocast: AbstractContextManager
) -> torch.Tensor:
    """The guide's embeddings (B, S, H') of a batch's (B, S, L) ids, ``chunk_size`` examples at a time (None: all
    at once), without gradient."""
    rows = len(batch["input_ids"])
    chunks = zip(*(value.split(chunk_size or rows) for value in batch.values()))
    with torch.no_grad(), autocast:
        return torch.cat([guide(**dict(zip(batch, chunk))) for chunk in chunks])
