"""The settings of the model (train.py's "model" flags): which model, its pooler and prompts, and how it trains in
memory: LoRA adapters (``simcse.lora``), gradient checkpointing and the weights' dtype. The run's settings
(``simcse.config``) take them as a base class.

Like ``simcse.config`` this module imports no torch.
"""

from __future__ import annotations

from dataclasses import dataclass

from simcse.families import DECODER_NAMES, ENCODER_NAMES
from simcse.poolers import DEFAULT_POOLER, POOLERS, POOLERS_WITH_HEAD
from simcse.rules import at_least, in_unit_interval, positive, setting

MODEL_GROUP = "model"
MODEL_DTYPES = ("fp32", "bf16")  # --model_dtype: the weights' own dtype (AMP computes in half either way)
LORA_ALL_LINEAR = "all-linear"  # peft's name for every linear layer of the model (its output layer aside)


@dataclass
class ModelConfig:
    """The model's settings; the defaults are the reference recipe's (klue/bert-base, CLS pooler, every weight
    trained in float32)."""

    model: str = setting(
        "klue/bert-base",
        f"hub name or local folder: an encoder ({', '.join(ENCODER_NAMES.values())}) or a decoder "
        f"({', '.join(DECODER_NAMES.values())}; --pooler lasttoken)",
        MODEL_GROUP,
        resume=True,
        card=True,
        path=True,
    )
    tokenizer: str | None = setting(
        None,
        "hub name or folder of a fast tokenizer",
        MODEL_GROUP,
        resume=True,
        none_means="same as --model",
        path=True,
    )
    pooler: str = setting(
        DEFAULT_POOLER, "how a sentence vector is taken", MODEL_GROUP, resume=True, card=True, choices=tuple(POOLERS)
    )
    mlp_only_train: bool = setting(
        False, "use the MLP head in training only (unsupervised recipe; cls only)", MODEL_GROUP, resume=True, card=True
    )
    dropout: float = setting(
        0.1, "hidden and attention dropout of the encoder", MODEL_GROUP, resume=True, card=True, rule=in_unit_interval
    )
    unpad: bool = setting(
        True, "compute on real tokens only (BERT, RoBERTa, XLM-R), no compute on padding", MODEL_GROUP, resume=True
    )
    trust_remote_code: bool = setting(False, "allow code shipped with a hub model to run", MODEL_GROUP)
    prompt: str | None = setting(
        None,
        "text put before every sentence, in training, evaluation and the saved model (e5: 'query: ')",
        MODEL_GROUP,
        resume=True,
        card=True,
        none_means="none",
        metavar="TEXT",
    )
    query_prompt: str | None = setting(
        None,
        "text put before every query (of retrieval data and retrieval dev sets), saved as the model's 'query' prompt",
        MODEL_GROUP,
        resume=True,
        card=True,
        none_means="--prompt",
        metavar="TEXT",
    )
    document_prompt: str | None = setting(
        None,
        "text put before every document (positives and negatives of retrieval data, a retrieval set's corpus), "
        "saved as the 'document' prompt (e5: 'passage: ')",
        MODEL_GROUP,
        resume=True,
        card=True,
        none_means="--prompt",
        metavar="TEXT",
    )
    lora_rank: int | None = setting(
        None,
        'train LoRA adapters of this rank (peft; pip install -e ".[lora]") instead of the model\'s weights, saved '
        "merged into a plain model folder, the adapters beside it in lora_adapter/",
        MODEL_GROUP,
        resume=True,
        card=True,
        rule=at_least(1),
        none_means="no adapters: every weight trains",
    )
    lora_alpha: float | None = setting(
        None, "LoRA's scale is alpha / rank", MODEL_GROUP, resume=True, card=True, rule=positive,
        none_means="--lora_rank (scale 1)",
    )  # fmt: skip
    lora_dropout: float = setting(
        0.0, "dropout on the adapters' input", MODEL_GROUP, resume=True, card=True, rule=in_unit_interval
    )
    lora_target_modules: str | list[str] = setting(
        LORA_ALL_LINEAR,
        "the modules that get adapters, by name or name ending (q_proj k_proj v_proj o_proj; BERT: query key "
        f"value), or {LORA_ALL_LINEAR}: every linear layer",
        MODEL_GROUP,
        resume=True,
        card=True,
        metavar="NAME",
    )
    gradient_checkpointing: bool = setting(
        False,
        "recompute each layer's activations in the backward pass: less memory, about a third more compute, the "
        "same gradients",
        MODEL_GROUP,
    )
    model_dtype: str = setting(
        MODEL_DTYPES[0],
        "the weights' dtype: bf16 halves their memory (and the optimizer's) where --amp alone is not enough; GPU only",
        MODEL_GROUP,
        resume=True,
        card=True,
        choices=MODEL_DTYPES,
    )

    def model_problem(self) -> str | None:
        """Why two model settings do not go together, or None."""
        if self.mlp_only_train and not POOLERS[self.pooler].head:
            return f"--mlp_only_train needs --pooler {' or '.join(POOLERS_WITH_HEAD)}"
        lora_flags = {"lora_alpha": None, "lora_dropout": 0.0, "lora_target_modules": LORA_ALL_LINEAR}
        if self.lora_rank is None:
            given = [name for name, default in lora_flags.items() if getattr(self, name) != default]
            return f"--{given[0]} sets the LoRA adapters of --lora_rank: give --lora_rank too" if given else None
        if POOLERS[self.pooler].head:
            return (
                f"--pooler {self.pooler} trains SimCSE's new MLP head, which LoRA would leave at its random start: "
                "use --pooler cls_before_pooler, avg or lasttoken with --lora_rank"
            )
        return None
