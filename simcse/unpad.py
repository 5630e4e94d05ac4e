"""An unpadded forward pass for BERT, RoBERTa and XLM-RoBERTa encoders: no compute spent on padding tokens.

Pad tokens are removed once, before the embeddings; every token-wise operation (embedding layer norm,
Q/K/V and output projections, feed-forward, layer norms, dropout) then runs on the packed real tokens,
(T, H) instead of (N, L, H). Only the attention product is re-padded, per layer, in groups of sequences of
similar length so that little of it is padding either; on CUDA the attention runs on the packed tokens too,
as one variable-length kernel call (``attention_kernel``). The pass calls the Hugging Face model's own modules
and weights, so it has no parameters of its own and checkpoints stay plain transformers checkpoints.

With Korean sentences under a 64-token cap about a third of a dynamically padded batch is padding: that is
the share of the matmul work this saves.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

import torch
import torch.nn.functional as F
import torch.utils.checkpoint
from transformers import BertModel, RobertaModel, XLMRobertaModel

# How the attention of the packed tokens is computed: in groups of similar lengths, each padded to its longest
# (any device), or as one call of PyTorch's variable-length attention over a jagged batch (flash or
# memory-efficient kernels on CUDA; on a CPU only the slower reference path exists, used in tests).
ATTENTION_KERNELS = ("grouped", "varlen")

# A new attention group starts where a sequence is shorter than this share of the group's longest: the
# padding inside a group then costs at most 1 / 0.8^2 = 1.56x its attention work.
GROUP_LENGTH_RATIO = 0.8


@dataclass
class AttentionGroup:
    """Sequences of similar length whose attention is computed together, padded to their own longest."""

    start: int  # the group's tokens are packed[start:end]
    end: int
    batch: int  # sequences in the group
    length: int  # their longest
    rows: torch.Tensor  # (T_g,) each token's row in the (batch * length) grid
    sequence: torch.Tensor  # (T_g,) its sequence within the group
    position: torch.Tensor  # (T_g,) its position within that sequence
    key_mask: torch.Tensor  # (batch, 1, 1, length) real keys
    first_tokens: torch.Tensor  # (batch,) packed index of each of its sequences' first token


@dataclass
class Packing:
    """Where the real tokens of a padded (N, L) batch are, packed longest sequence first."""

    indices: torch.Tensor  # (T,) each packed token's position in the flattened (N * L) batch
    sequence: torch.Tensor  # (T,) which sequence (of the batch) it belongs to
    lengths: torch.Tensor  # (N,) real tokens per sequence
    rank: torch.Tensor  # (N,) each sequence's place in the packed order (longest first)
    shape: tuple[int, int]  # (N, L)
    kernel: str  # one of ATTENTION_KERNELS
    groups: list[AttentionGroup]  # consecutive runs of the packed tokens, for grouped attention
    offsets: torch.Tensor | None  # "varlen": (N + 1,) packed start of each sequence (longest first), then T
    longest: int  # real tokens of the longest sequence

    @classmethod
    def from_mask(cls, attention_mask: torch.Tensor, kernel: str = "grouped") -> Packing:
        if kernel not in ATTENTION_KERNELS:
            raise ValueError(f"attention kernel {kernel!r}: expected one of {', '.join(ATTENTION_KERNELS)}")
        mask = attention_mask.bool()  # (N, L)
        length = mask.shape[1]
        lengths = mask.sum(dim=1)  # (N,)
        if not bool((lengths > 0).all()):
            raise ValueError("every sequence needs at least one real token")
        order = torch.argsort(lengths, descending=True, stable=True)  # (N,) sequences, longest first
        in_order = mask[order].flatten().nonzero().squeeze(1)  # (T,) positions in the reordered batch
        rank = torch.div(in_order, length, rounding_mode="floor")  # (T,) the sequence's rank by length
        sequence = order[rank]  # (T,)
        sorted_lengths = lengths[order]  # (N,)
        starts = torch.cumsum(sorted_lengths, dim=0) - sorted_lengths  # (N,) packed start, by rank
        position = torch.arange(len(in_order), device=mask.device) - starts[rank]  # (T,) index within its sequence
        return cls(
            indices=sequence * length + in_order % length,
            sequence=sequence,
            lengths=lengths,
            rank=torch.argsort(order),
            shape=tuple(mask.shape),
            kernel=kernel,
            # The groups serve the grouped kernel and, with either kernel, the first-token-only last layer.
            groups=_attention_groups(sorted_lengths.tolist(), starts, rank, position),
            offsets=None if kernel == "grouped" else F.pad(torch.cumsum(sorted_lengths, dim=0), (1, 0)),
            longest=int(sorted_lengths[0]),
        )

    def pad(self, packed: torch.Tensor) -> torch.Tensor:
        """(T, ...) -> (N, L, ...) with zeros at the padding."""
        flat = packed.new_zeros((self.shape[0] * self.shape[1], *packed.shape[1:]))  # (N*L, ...)
        # In place into the fresh zeros: the out-of-place index_copy would copy them once more.
        return flat.index_copy_(0, self.indices, packed).view(*self.shape, *packed.shape[1:])

    def unpad(self, padded: torch.Tensor) -> torch.Tensor:
        """(N, L, ...) -> (T, ...)."""
        return padded.reshape(self.shape[0] * self.shape[1], *padded.shape[2:]).index_select(0, self.indices)

    def mean(self, packed: torch.Tensor) -> torch.Tensor:
        """Mean over each sequence's real tokens: (T, H) -> (N, H)."""
        sums = packed.new_zeros((self.shape[0], packed.shape[1])).index_add(0, self.sequence, packed)  # (N, H)
        return sums / self.lengths.unsqueeze(1).to(packed.dtype)


def _attention_groups(
    sorted_lengths: list[int], starts: torch.Tensor, rank: torch.Tensor, position: torch.Tensor
) -> list[AttentionGroup]:
    groups, first, start_list = [], 0, starts.tolist()
    for last in range(1, len(sorted_lengths) + 1):
        if last < len(sorted_lengths) and sorted_lengths[last] >= GROUP_LENGTH_RATIO * sorted_lengths[first]:
            continue
        start, end = start_list[first], start_list[last - 1] + sorted_lengths[last - 1]
        batch, length = last - first, sorted_lengths[first]
        local_sequence = rank[start:end] - first  # (T_g,)
        group_lengths = torch.tensor(sorted_lengths[first:last], device=rank.device)  # (batch,)
        key_mask = torch.arange(length, device=rank.device) < group_lengths[:, None]  # (batch, length)
        groups.append(
            AttentionGroup(
                start,
                end,
                batch,
                length,
                local_sequence * length + position[start:end],
                local_sequence,
                position[start:end],
                key_mask[:, None, None, :],
                starts[first:last],
            )
        )
        first = last
    return groups


def attention_kernel(device: torch.device) -> str:
    """The attention kernel of the unpadded pass on ``device``: "varlen" on CUDA (no compute on padding at all,
    and no per-group kernel launches), "grouped" elsewhere (PyTorch has no fast variable-length attention on
    CPUs)."""
    return "varlen" if device.type == "cuda" else "grouped"


# The architectures this pass is written for, by model_type.
UNPADDED_MODEL_TYPES = ("bert", "roberta", "xlm-roberta")


def supports_unpadding(encoder: torch.nn.Module) -> bool:
    """BERT, RoBERTa and XLM-RoBERTa encoders (not decoders): ``UNPADDED_MODEL_TYPES``."""
    unpadded = isinstance(encoder, (BertModel, RobertaModel, XLMRobertaModel))
    return unpadded and encoder.config.model_type in UNPADDED_MODEL_TYPES and not encoder.config.is_decoder


# What this pass reads of a transformers BERT/RoBERTa. Nothing pins the transformers release, so a model load
# checks them (``unpadding_problem``) and falls back to the padded forward when a release has renamed one.
EMBEDDING_ATTRIBUTES = ("word_embeddings", "token_type_embeddings", "position_embeddings", "LayerNorm", "dropout.p")
LAYER_ATTRIBUTES = (
    "attention.self.query",
    "attention.self.key",
    "attention.self.value",
    "attention.self.num_attention_heads",
    "attention.self.attention_head_size",
    "attention.self.scaling",
    "attention.self.dropout.p",
    "attention.output.dense",
    "attention.output.dropout.p",
    "attention.output.LayerNorm",
    "intermediate",
    "output.dense",
    "output.dropout.p",
    "output.LayerNorm",
)
# Float32 differences between the two passes are about 1e-6; a wrong pass differs by far more.
PROBE_TOLERANCE = 1e-4


def _missing(module: torch.nn.Module, dotted_names: tuple[str, ...]) -> list[str]:
    missing = []
    for dotted in dotted_names:
        target = module
        for name in dotted.split("."):
            target = getattr(target, name, None)
        if target is None:
            missing.append(dotted)
    return missing


def unpadding_problem(encoder: torch.nn.Module) -> str | None:
    """Why the unpadded pass cannot stand in for ``encoder``'s own forward, or None when it can.

    Checks that every attribute it reads exists, then runs both passes on a small padded batch (eval mode,
    fixed token ids: no random numbers drawn) and compares the real tokens' states.
    """
    if not supports_unpadding(encoder):
        return f"{type(encoder).__name__} is not a BERT, RoBERTa or XLM-RoBERTa encoder"
    layers = getattr(getattr(encoder, "encoder", None), "layer", None)
    if not layers:
        return "no encoder.layer list"
    missing = [f"embeddings.{name}" for name in _missing(encoder.embeddings, EMBEDDING_ATTRIBUTES)]
    missing += [f"encoder.layer[i].{name}" for name in _missing(layers[0], LAYER_ATTRIBUTES)]
    if isinstance(encoder, (RobertaModel, XLMRobertaModel)) and not hasattr(
        encoder.embeddings, "create_position_ids_from_input_ids"
    ):
        missing.append("embeddings.create_position_ids_from_input_ids")
    if missing:
        return "this transformers release has no " + ", ".join(missing)
    config = encoder.config
    pad_id = config.pad_token_id if config.pad_token_id is not None else 0
    real_ids = [i for i in range(min(config.vocab_size, 16)) if i != pad_id][:6]
    input_ids = torch.full((2, 6), pad_id, dtype=torch.long)
    input_ids[0], input_ids[1, :3] = torch.tensor(real_ids), torch.tensor(real_ids[:3])
    attention_mask = (torch.arange(6) < torch.tensor([[6], [3]])).long()
    device = next(encoder.parameters()).device
    input_ids, attention_mask = input_ids.to(device), attention_mask.to(device)
    was_training = encoder.training
    encoder.eval()
    try:
        with torch.no_grad():
            expected = encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state  # (2, 6, H)
            packing, got, _ = unpadded_forward(encoder, input_ids, attention_mask)  # (9, H)
    except Exception as err:  # a release that changed a module's signature or semantics
        return f"the unpadded pass failed: {type(err).__name__}: {err}"
    finally:
        encoder.train(was_training)
    difference = (packing.unpad(expected) - got).abs().max().item()
    if not difference <= PROBE_TOLERANCE:
        return f"the unpadded pass differs from the model's own forward by {difference:.2e}"
    return None


def dropout(x: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """Inverted dropout. On the CPU the mask comes from ``rand >= p``, twice as fast there as the
    ``bernoulli_`` behind ``F.dropout``; on GPUs ``F.dropout``'s fused kernel is used."""
    if not training or p == 0.0:
        return x
    if x.is_cuda:
        return F.dropout(x, p, training=True)
    return x * torch.rand_like(x).ge_(p).mul_(1.0 / (1.0 - p))


def _packed_embeddings(
    embeddings: torch.nn.Module, input_ids: torch.Tensor, token_type_ids: torch.Tensor | None, packing: Packing
) -> torch.Tensor:
    """The embedding layer's sum, layer norm and dropout, on the real tokens only: (T, H)."""
    if hasattr(embeddings, "create_position_ids_from_input_ids"):  # RoBERTa numbers positions after padding_idx
        position_ids = embeddings.create_position_ids_from_input_ids(input_ids, embeddings.padding_idx)  # (N, L)
    else:
        position_ids = torch.arange(input_ids.shape[1], device=input_ids.device).expand_as(input_ids)  # (N, L)
    if token_type_ids is None:
        token_type_ids = torch.zeros_like(input_ids)  # (N, L)
    summed = (
        embeddings.word_embeddings(packing.unpad(input_ids))
        + embeddings.token_type_embeddings(packing.unpad(token_type_ids))
        + embeddings.position_embeddings(packing.unpad(position_ids))
    )  # (T, H)
    return dropout(embeddings.LayerNorm(summed), embeddings.dropout.p, embeddings.training)


def _attention(layer: torch.nn.Module, hidden: torch.Tensor, packing: Packing) -> torch.Tensor:
    """Self-attention of one layer on packed tokens: (T, H) -> (T, H), before the output projection.

    Computed group by group, each group of similar lengths padded to its own longest sequence.
    """
    attention = layer.attention.self
    heads, head_size = attention.num_attention_heads, attention.attention_head_size
    # One projection for Q, K and V (the module's own weights, concatenated; the attention scale folded
    # into the query's).
    scale = attention.scaling
    weight = torch.cat([attention.query.weight * scale, attention.key.weight, attention.value.weight])  # (3H, H)
    bias = torch.cat([attention.query.bias * scale, attention.key.bias, attention.value.bias])  # (3H,)
    qkv = F.linear(hidden, weight, bias)  # (T, 3H)
    p = attention.dropout.p if attention.training else 0.0
    if packing.kernel == "varlen":
        return _varlen_attention(qkv.view(-1, 3, heads, head_size), packing, p)
    contexts = []
    # split, not slicing: the backward of a slice would fill a zero (T, 3H) gradient for every group.
    for group, rows in zip(packing.groups, qkv.split([g.end - g.start for g in packing.groups])):  # (T_g, 3H)
        # In place into fresh zeros: the out-of-place index_copy would copy them once more.
        padded = rows.new_zeros((group.batch * group.length, rows.shape[1])).index_copy_(0, group.rows, rows)
        grid = padded.view(group.batch, group.length, 3, heads, head_size)  # (g, L_g, 3, heads, d)
        query, key, value = grid.permute(2, 0, 3, 1, 4)  # each (g, heads, L_g, d)
        context = _attend(query, key, value, group.key_mask, p)  # (g, heads, L_g, d)
        by_token = context.transpose(1, 2)  # (g, L_g, heads, d)
        contexts.append(by_token[group.sequence, group.position].reshape(-1, heads * head_size))  # (T_g, H)
    return torch.cat(contexts)  # (T, H)


def _attend(
    query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, key_mask: torch.Tensor, p: float
) -> torch.Tensor:
    """Scaled (the scale already in the query) dot-product attention of (g, heads, Q, d) queries over (g, heads, K,
    d) keys and values where ``key_mask`` (g, 1, 1, K) is True, with attention dropout ``p``: (g, heads, Q, d)."""
    if p > 0.0 and not query.is_cuda:
        # The CPU's fused attention does not take dropout; spelled out, with the faster dropout mask.
        scores = query @ key.transpose(-1, -2)  # (g, heads, Q, K)
        scores = scores.masked_fill(~key_mask, torch.finfo(scores.dtype).min)  # (g, heads, Q, K)
        return dropout(scores.softmax(dim=-1), p, training=True) @ value  # (g, heads, Q, d)
    return F.scaled_dot_product_attention(query, key, value, attn_mask=key_mask, dropout_p=p, scale=1.0)


def _first_token_layer(layer: torch.nn.Module, hidden: torch.Tensor, packing: Packing) -> torch.Tensor:
    """A layer computed for each sequence's first token only: packed (T, H) -> (N, H), in the batch's order.

    Keys and values still come from every token, but the query, the attention's output block and the
    feed-forward run on the N first tokens alone: as the last layer, this is all that the poolers reading
    [CLS] use, and it spares the other tokens three quarters of the layer's matmuls.
    """
    attention = layer.attention.self
    heads, head_size = attention.num_attention_heads, attention.attention_head_size
    key_value = F.linear(
        hidden,
        torch.cat([attention.key.weight, attention.value.weight]),
        torch.cat([attention.key.bias, attention.value.bias]),
    )  # (T, 2H)
    first = torch.cat([group.first_tokens for group in packing.groups])  # (N,) packed order
    query = F.linear(
        hidden[first], attention.query.weight * attention.scaling, attention.query.bias * attention.scaling
    )  # (N, H)
    p = attention.dropout.p if attention.training else 0.0
    contexts = []
    # split, not slicing, for the same reason as in _attention.
    for group, rows, queries in zip(
        packing.groups,
        key_value.split([g.end - g.start for g in packing.groups]),  # each (T_g, 2H)
        query.split([g.batch for g in packing.groups]),  # each (g, H)
    ):
        padded = rows.new_zeros((group.batch * group.length, rows.shape[1])).index_copy_(0, group.rows, rows)
        grid = padded.view(group.batch, group.length, 2, heads, head_size)  # (g, L_g, 2, heads, d)
        key, value = grid.permute(2, 0, 3, 1, 4)  # each (g, heads, L_g, d)
        group_query = queries.view(group.batch, heads, 1, head_size)  # (g, heads, 1, d)
        context = _attend(group_query, key, value, group.key_mask, p)  # (g, heads, 1, d)
        contexts.append(context.reshape(group.batch, heads * head_size))  # (g, H)
    attended = _output(layer.attention.output, torch.cat(contexts), hidden[first])  # (N, H)
    return _output(layer.output, layer.intermediate(attended), attended)[packing.rank]  # (N, H) batch order


def _varlen_attention(qkv: torch.Tensor, packing: Packing, p: float) -> torch.Tensor:
    """Attention over the packed tokens as one jagged batch: (T, 3, heads, d) -> (T, heads * d).

    The nested (jagged) tensors are views of the packed rows; ``scaled_dot_product_attention`` hands their
    offsets to the flash or memory-efficient variable-length kernel, attention dropout included.
    """

    def jagged(rows: torch.Tensor) -> torch.Tensor:  # (T, heads, d) -> (N, heads, j, d)
        nested = torch.nested.nested_tensor_from_jagged(rows.contiguous(), packing.offsets, max_seqlen=packing.longest)
        return nested.transpose(1, 2)

    query, key, value = (jagged(rows) for rows in qkv.unbind(1))  # each (N, heads, j, d)
    context = F.scaled_dot_product_attention(query, key, value, dropout_p=p, scale=1.0)  # (N, heads, j, d)
    return context.transpose(1, 2).values().flatten(1)  # (T, heads * d)


def _layer(layer: torch.nn.Module, hidden: torch.Tensor, packing: Packing) -> torch.Tensor:
    """One BERT layer on packed tokens: (T, H) -> (T, H)."""
    attended = _output(layer.attention.output, _attention(layer, hidden, packing), hidden)  # (T, H)
    return _output(layer.output, layer.intermediate(attended), attended)  # (T, H)


def _call(function, *args):
    return function(*args)


def _output(module: torch.nn.Module, x: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
    """A BERT output block (dense, dropout, residual, layer norm) on packed tokens."""
    return module.LayerNorm(dropout(module.dense(x), module.dropout.p, module.training) + residual)


def unpadded_forward(
    encoder: torch.nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    token_type_ids: torch.Tensor | None = None,
    output_hidden_states: bool = False,
    kernel: str | None = None,
    first_tokens_only: bool = False,
) -> tuple[Packing, torch.Tensor, list[torch.Tensor] | None]:
    """Run ``encoder`` (BERT, RoBERTa or XLM-RoBERTa) on the real tokens of (N, L) inputs.

    ``kernel`` (one of ``ATTENTION_KERNELS``) defaults to ``attention_kernel`` of the inputs' device.
    Returns the packing, the last layer's packed states (T, H) and, with ``output_hidden_states``, the
    packed states after the embeddings and after each layer (as ``hidden_states`` of transformers).
    With ``first_tokens_only`` the last layer runs for each sequence's first token alone (the CLS poolers need
    nothing else) and its states come back as (N, H), one row per sequence in the batch's order.
    """
    if first_tokens_only and output_hidden_states:
        raise ValueError("first_tokens_only leaves the last layer's other tokens out: no hidden_states")
    packing = Packing.from_mask(attention_mask, kernel or attention_kernel(input_ids.device))
    hidden = _packed_embeddings(encoder.embeddings, input_ids, token_type_ids, packing)  # (T, H)
    all_states = [hidden] if output_hidden_states else None
    layers = encoder.encoder.layer
    # --gradient_checkpointing: each layer's activations recomputed in the backward pass (its dropout masks too)
    checkpointed = any(getattr(layer, "gradient_checkpointing", False) for layer in layers)
    if checkpointed and encoder.training and torch.is_grad_enabled():
        run = partial(torch.utils.checkpoint.checkpoint, use_reentrant=False)
    else:
        run = _call
    for index, layer in enumerate(layers):
        if first_tokens_only and index == len(layers) - 1:
            return packing, run(_first_token_layer, layer, hidden, packing), None  # (N, H)
        hidden = run(_layer, layer, hidden, packing)  # (T, H)
        if all_states is not None:
            all_states.append(hidden)
    return packing, hidden, all_states
