"""The sentence encoder: a Hugging Face encoder or decoder (``simcse.families``), a pooler, and SimCSE's MLP head."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import AutoModel, AutoTokenizer, PreTrainedTokenizerBase

from simcse import st_format
from simcse.batching import SimCSECollator
from simcse.config import DEFAULT_DOCUMENT_MAX_LENGTH, DEFAULT_MAX_LENGTH
from simcse.device import default_encode_batch_size, gpu_half_dtype
from simcse.families import DROPOUT_SETTINGS, decoder_tokenizer, family_problem, is_decoder
from simcse.model_loading import (
    check_hub_access,
    check_location,
    check_weights_loaded,
    max_sequence_length,
    no_room_for_text,
    read_model_config,
    read_simcse_config,
    saved_file,
    saved_settings,
    tokenizer_problem,
    without_transformers_bars,
)
from simcse.poolers import DEFAULT_POOLER, POOLERS, POOLERS_WITH_HEAD
from simcse.progress import progress_bar
from simcse.run_folder import SIMCSE_CONFIG_NAME, SIMCSE_HEAD_NAME, write_json
from simcse.tokenized import tokenize_texts
from simcse.unpad import supports_unpadding, unpadded_forward, unpadding_problem

logger = logging.getLogger(__name__)
# encode's progress bar, when shown by default: inputs this long take seconds or more on a CPU.
PROGRESS_MIN_SENTENCES = 512


class SimCSEHead(nn.Module):
    """SimCSE's MLP head for an encoder without a pooling layer: dense + tanh, hidden to hidden, on the pooled
    vector; the computation of BERT's pooling layer, and with the same attribute names."""

    def __init__(self, hidden_size: int):
        super().__init__()
        self.dense = nn.Linear(hidden_size, hidden_size)
        self.activation = nn.Tanh()

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        return self.activation(self.dense(pooled))  # (N, H)


class SimCSEModel(nn.Module):
    """A transformers encoder or decoder (a family of ``simcse.families``; hub name or local folder) that embeds
    sentences; ``dtype`` is its weights' (float32, or bf16 on a GPU: train.py's --model_dtype).

    Poolers: ``cls`` (CLS vector through the dense+tanh head, in training and evaluation),
    ``cls_before_pooler`` (CLS vector, no head), ``avg``, ``avg_first_last``, ``avg_top2`` (masked means),
    ``lasttoken`` (a decoder's: the end-of-sequence token ``simcse.families.decoder_tokenizer`` appends).
    ``mlp_only_train`` (``cls`` only) uses the head in training and skips it at evaluation, the
    unsupervised SimCSE recipe. ``dropout`` sets the encoder's hidden and attention dropout.
    ``pooler`` and ``mlp_only_train`` left as None are read from a checkpoint saved by this class
    (``simcse_config.json``), else default to ``cls`` and False. ``max_length`` (tokens per sentence) is the
    default of ``encode`` and what ``save_pretrained`` records; left as None it is the checkpoint's training
    value, else ``DEFAULT_MAX_LENGTH``. ``prompt`` (e5's ``"query: "``) is put before every sentence ``encode``
    embeds and saved; left as None it is the checkpoint's, else none. For retrieval, ``query_prompt`` and
    ``document_prompt`` (e5's ``"query: "`` / ``"passage: "``; None: the checkpoint's, else ``prompt``) and
    ``document_max_length`` (the checkpoint's, else 512, capped at the positions) are what ``encode_query`` and
    ``encode_document`` use; they are saved too, also as sentence-transformers' named prompts. Code shipped with a
    hub model runs only with ``trust_remote_code=True``.
    ``unpad`` runs BERT, RoBERTa and XLM-R encoders on their real tokens only (``simcse.unpad``); other encoders
    take the padded path, and so do those three when the transformers release fails ``unpadding_problem``'s check
    (with one warning).

    The head is the encoder's own pooling layer (dense+tanh on the first token), taken out of the
    encoder so that only SimCSE decides when it runs, and used as saved. ``fresh_head=True`` (the trainer, when
    a run starts) re-initialises it unless the folder is a SimCSE checkpoint (``simcse_config.json``), as the
    original SimCSE does for a pretrained model; ``save_pretrained`` writes it back as the encoder's pooler
    weights. Encoders without a pooling layer (ELECTRA, DeBERTa-v2, ModernBERT) get a ``SimCSEHead`` created
    here, saved beside them as ``simcse_head.safetensors`` and reloaded from there (``owns_head``). With
    another pooler the pretrained pooling layer is kept frozen, only to be saved back: a parameter that
    gets no gradient would make DDP fail.
    """

    def __init__(
        self,
        model_name_or_path: str | os.PathLike,
        *,
        pooler: str | None = None,
        mlp_only_train: bool | None = None,
        dropout: float = 0.1,
        tokenizer: str | os.PathLike | PreTrainedTokenizerBase | None = None,
        trust_remote_code: bool = False,
        unpad: bool = True,
        max_length: int | None = None,
        fresh_head: bool = False,
        prompt: str | None = None,
        normalize: bool | None = None,
        query_prompt: str | None = None,
        document_prompt: str | None = None,
        document_max_length: int | None = None,
        truncate_dim: int | None = None,
        dtype: torch.dtype = torch.float32,
    ):
        super().__init__()
        model_name_or_path = check_location(model_name_or_path)
        check_hub_access(model_name_or_path)
        saved = read_simcse_config(model_name_or_path)
        defaults, self.settings_source = saved_settings(model_name_or_path, saved)
        self.max_length = defaults.get("max_length", DEFAULT_MAX_LENGTH) if max_length is None else max_length
        if self.max_length < 2:
            raise ValueError(f"max_length must be at least 2 (room for [CLS] and [SEP]), got {self.max_length}")
        self.prompt = (defaults.get("prompt") or "") if prompt is None else prompt
        self.normalize = bool(defaults.get("normalize", False)) if normalize is None else normalize
        self.matryoshka_dims: list[int] | None = defaults.get("matryoshka_dims")  # the sizes it was trained at
        self.truncate_dim = truncate_dim  # encode's default: the first N dimensions (None: all)
        # Retrieval: what queries and documents get (None: the symmetric prompt), see prompt_for.
        self.query_prompt = defaults.get("query_prompt") if query_prompt is None else query_prompt
        self.document_prompt = defaults.get("document_prompt") if document_prompt is None else document_prompt
        self.pooler = pooler or defaults.get("pooler", DEFAULT_POOLER)
        if self.pooler not in POOLERS:
            raise ValueError(f"unknown pooler {self.pooler!r}; choose one of {', '.join(POOLERS)}")
        has_head = POOLERS[self.pooler].head
        if mlp_only_train is None:
            mlp_only_train = bool(defaults.get("mlp_only_train", False)) and has_head
        if mlp_only_train and not has_head:
            heads = " or ".join(map(repr, POOLERS_WITH_HEAD))
            raise ValueError(f"mlp_only_train needs pooler {heads} (the only one with a head), got {self.pooler!r}")
        self.mlp_only_train = mlp_only_train
        checkpoint_pooler = self._load_encoder(model_name_or_path, dropout, unpad, trust_remote_code, dtype)
        self.lora_config = None  # simcse.lora.add_adapters: the adapters' settings
        self._set_document_max_length(document_max_length, defaults.get("document_max_length"))
        self._load_tokenizer(tokenizer or model_name_or_path, model_name_or_path, trust_remote_code)
        self._check_room_for_text()
        self.head: nn.Module | None = None
        self.frozen_pooler: nn.Module | None = None
        if has_head:
            self.head = checkpoint_pooler if checkpoint_pooler is not None else SimCSEHead(self.config.hidden_size)
            self._load_head(model_name_or_path, defaults, fresh=fresh_head and saved is None, simcse_saved=saved)
        elif checkpoint_pooler is not None and not self.pooler_is_random:  # kept to be saved back, as it came
            self.frozen_pooler = checkpoint_pooler.requires_grad_(False)

    def _load_encoder(
        self, name_or_path, dropout: float, unpad: bool, trust_remote_code: bool, dtype: torch.dtype
    ) -> nn.Module | None:
        """The transformers model (its weights in ``dtype``) with ``dropout`` set under its architecture's names, its
        weights checked, and its pooling layer taken out (returned, None when it has none: the head is then the
        package's)."""
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must lie in [0, 1), got {dropout}")
        encoder_config = read_model_config(name_or_path, trust_remote_code)
        if problem := family_problem(encoder_config.model_type, self.pooler, str(name_or_path)):
            raise ValueError(problem)
        for name in DROPOUT_SETTINGS:
            if hasattr(encoder_config, name):
                setattr(encoder_config, name, dropout)
        encoder_config.use_cache = False  # a decoder embeds here, it does not generate: no key/value cache
        with without_transformers_bars():
            self.encoder, loading = AutoModel.from_pretrained(
                name_or_path,
                config=encoder_config,
                trust_remote_code=trust_remote_code,
                output_loading_info=True,
                dtype=dtype,
            )
        check_weights_loaded(name_or_path, self.encoder, loading)
        # A pooling layer the checkpoint has no weights for (e5, bge) is transformers' random initialisation.
        self.pooler_is_random = any(key.startswith("pooler.") for key in loading["missing_keys"])
        checkpoint_pooler = getattr(self.encoder, "pooler", None)
        self.owns_head = checkpoint_pooler is None
        if checkpoint_pooler is not None:
            self.encoder.pooler = None
        self.unpad = unpad and supports_unpadding(self.encoder)
        if self.unpad and (problem := unpadding_problem(self.encoder)):
            logger.warning("%s: unpadded forward unavailable (%s); using the padded forward", name_or_path, problem)
            self.unpad = False
        self.max_positions = max_sequence_length(self.encoder)
        self.check_max_length(self.max_length)
        return checkpoint_pooler

    def _set_document_max_length(self, given: int | None, saved: int | None) -> None:
        """Tokens per document: given, saved, else ``DEFAULT_DOCUMENT_MAX_LENGTH``; capped at the positions."""
        length = given or saved or DEFAULT_DOCUMENT_MAX_LENGTH
        if length < 2:
            raise ValueError(f"document_max_length must be at least 2 (room for [CLS] and [SEP]), got {length}")
        if self.max_positions is not None and length > self.max_positions:
            # The default is meant to be capped; a length someone chose is told (train_args.json records both).
            say = logger.warning if given and given != DEFAULT_DOCUMENT_MAX_LENGTH else logger.info
            name = self.config.name_or_path
            say("document_max_length %d capped at the %d positions of %s", length, self.max_positions, name)
            length = self.max_positions
        self.document_max_length = length

    def _check_room_for_text(self) -> None:
        """Refuse lengths that the special tokens and a prompt fill: every sentence, query or document would
        come out as the same token ids."""
        checks = [("--max_length", self.max_length, prompt) for prompt in (self.prompt, self.prompt_for("query"))]
        checks.append(("--document_max_length", self.document_max_length, self.prompt_for("document")))
        for flag, length, prompt in checks:
            if problem := no_room_for_text(self.tokenizer, flag, length, prompt):
                raise ValueError(problem)

    def prompt_for(self, role: str) -> str:
        """The prompt of a ``"query"`` or a ``"document"``: the model's for that role, else its symmetric one."""
        own = {"query": self.query_prompt, "document": self.document_prompt}[role]
        return self.prompt if own is None else own

    @property
    def is_asymmetric(self) -> bool:
        """Whether queries or documents have a prompt of their own (a retrieval model)."""
        return self.query_prompt is not None or self.document_prompt is not None

    def _load_tokenizer(self, tokenizer, model_name_or_path, trust_remote_code: bool) -> None:
        """A fast tokenizer (given, or loaded from a folder or the Hub) that fits the encoder's embeddings."""
        if not isinstance(tokenizer, PreTrainedTokenizerBase):
            if tokenizer is not model_name_or_path:
                check_location(tokenizer, "tokenizer")
            tokenizer = AutoTokenizer.from_pretrained(tokenizer, use_fast=True, trust_remote_code=trust_remote_code)
        if is_decoder(self.config.model_type):
            tokenizer = decoder_tokenizer(tokenizer)
        if problem := tokenizer_problem(tokenizer, self.encoder.get_input_embeddings().num_embeddings):
            raise ValueError(f"{tokenizer.name_or_path or model_name_or_path}: {problem}")
        self.tokenizer = tokenizer
        self.collator = SimCSECollator.for_model(tokenizer, self.encoder.config)

    def _load_head(self, name_or_path, defaults: dict, fresh: bool, simcse_saved: dict | None) -> None:
        """The head's weights: the package's saved head, a sentence-transformers Dense module, the encoder's
        pooling layer as saved, or (a run starting from a pretrained model, or no saved head) new ones."""
        saved_head = saved_file(name_or_path, SIMCSE_HEAD_NAME) if self.owns_head else None
        st_head = saved_file(name_or_path, defaults["dense_weights"]) if defaults.get("dense_weights") else None
        if saved_head:
            self.head.load_state_dict(load_file(saved_head))
        elif st_head and not fresh:  # a sentence-transformers Dense module: linear.weight, linear.bias
            self.head.dense.load_state_dict({k.removeprefix("linear."): v for k, v in load_file(st_head).items()})
        elif self.owns_head or fresh:
            if self.owns_head and simcse_saved is not None:
                logger.warning("%s: no trained head (%s); using a new one", name_or_path, SIMCSE_HEAD_NAME)
            nn.init.normal_(self.head.dense.weight, std=getattr(self.config, "initializer_range", 0.02))
            nn.init.zeros_(self.head.dense.bias)
        elif self.pooler_is_random and not self.mlp_only_train:  # e5: no pooler weights, the head is noise
            logger.warning(
                "%s: its pooling layer has no weights (transformers drew them at random) and pooler %s embeds with "
                "it; train it first, or use --pooler cls_before_pooler",
                name_or_path,
                self.pooler,
            )

    def check_max_length(self, max_length: int) -> None:
        """Refuse a max_length the position embeddings do not cover: it would fail at the first long sentence."""
        if self.max_positions is not None and max_length > self.max_positions:
            raise ValueError(
                f"max_length {max_length} exceeds the {self.max_positions} positions of {self.config.name_or_path} "
                f"({self.config.model_type}); use {self.max_positions} or less"
            )

    def check_truncate_dim(self, dim: int | None) -> int:
        """The embedding size ``encode`` gives for ``truncate_dim`` ``dim``; refused outside 1 .. the hidden size."""
        hidden = self.config.hidden_size
        if dim is not None and not 1 <= dim <= hidden:
            raise ValueError(f"truncate_dim {dim} must lie between 1 and the model's {hidden} dimensions")
        return hidden if dim is None else dim

    def save_pretrained(self, folder: str | os.PathLike) -> None:
        """Write a plain transformers checkpoint (safetensors), ``simcse_config.json`` and the
        sentence-transformers files into ``folder``.

        With pooler ``cls`` the trained head is saved as the encoder's pooler weights, so that
        ``AutoModel.from_pretrained(folder)(**inputs).pooler_output`` is the sentence embedding. The model's
        ``max_length`` (the training value) is recorded for eval.py and sentence-transformers. Use
        ``simcse.checkpoint.save_model`` for a save that a crash cannot leave half-written.
        """
        folder = Path(folder)
        with without_transformers_bars():
            self._save_encoder(folder)
        self.tokenizer.save_pretrained(folder)
        settings = {
            "pooler": self.pooler,
            "mlp_only_train": self.mlp_only_train,
            "max_length": self.max_length,
            "prompt": self.prompt,
            "normalize": self.normalize,
            "query_prompt": self.query_prompt,
            "document_prompt": self.document_prompt,
            "document_max_length": self.document_max_length,
            "matryoshka_dims": self.matryoshka_dims,
            "head_file": SIMCSE_HEAD_NAME if self.owns_head and self.head is not None else None,
        }
        write_json(folder / SIMCSE_CONFIG_NAME, settings)
        if POOLERS[self.pooler].st_mode:
            head_used_at_evaluation = self.head is not None and not self.mlp_only_train
            # Every role's prompt, the symmetric one too: sentence-transformers gives encode_query and
            # encode_document empty prompts of their own otherwise, which win over the default prompt.
            roles = {"query": self.prompt_for("query"), "document": self.prompt_for("document")}
            st_format.write_sentence_transformers_files(
                folder,
                self.pooler,
                self.config.hidden_size,
                # sentence-transformers keeps one length: documents are cut where eval.py cuts them (queries and
                # sentences longer than max_length are cut later there than here; docs/evaluation.md)
                self.document_max_length,
                self.head.dense if head_used_at_evaluation else None,
                self.prompt,
                self.normalize,
                roles,
            )

    def _save_encoder(self, folder: Path) -> None:
        """The encoder's weights, the head among them: as the encoder's pooler, or beside it when it has none."""
        if self.owns_head:
            self._save_weights(folder)
            if self.head is not None:
                save_file(
                    {name: t.detach().cpu().contiguous() for name, t in self.head.state_dict().items()},
                    folder / SIMCSE_HEAD_NAME,
                )
        else:
            self.encoder.pooler = self.head if self.head is not None else self.frozen_pooler
            try:
                self._save_weights(folder)
            finally:
                self.encoder.pooler = None

    def _save_weights(self, folder: Path) -> None:
        if self.lora_config is None:
            self.encoder.save_pretrained(folder)
        else:  # merged, the adapters beside
            from simcse.lora import save_adapted

            save_adapted(self.encoder, self.lora_config, folder)

    @property
    def config(self):
        return self.encoder.config

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        token_type_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Sentence embeddings for token ids shaped (..., seq_len); returns (..., hidden). Training batches are
        (batch, num_sent, seq_len): every sentence of every example goes through the encoder in one call."""
        leading_shape = input_ids.shape[:-1]
        seq_len = input_ids.shape[-1]
        input_ids = input_ids.reshape(-1, seq_len)  # (N, L)
        attention_mask = attention_mask.reshape(-1, seq_len)  # (N, L)
        token_type_ids = None if token_type_ids is None else token_type_ids.reshape(-1, seq_len)  # (N, L)
        pooler = POOLERS[self.pooler]
        if self.unpad and pooler.first_token_only:
            _, embeddings, _ = unpadded_forward(
                self.encoder, input_ids, attention_mask, token_type_ids, first_tokens_only=True
            )  # (N, H)
        elif self.unpad:
            packing, last, hidden_states = unpadded_forward(
                self.encoder, input_ids, attention_mask, token_type_ids, output_hidden_states=pooler.hidden_states
            )  # last: (T, H)
            embeddings = pooler.pool_packed(packing, attention_mask, last, hidden_states)  # (N, H)
        else:
            # Token type ids only for the models that have them (not every forward takes the argument).
            types = {} if token_type_ids is None else {"token_type_ids": token_type_ids}
            output = self.encoder(
                input_ids=input_ids, attention_mask=attention_mask, output_hidden_states=pooler.hidden_states, **types
            )
            embeddings = pooler.padded(attention_mask, output.last_hidden_state, output.hidden_states)  # (N, H)
        if self.head is not None and (self.training or not self.mlp_only_train):
            embeddings = self.head.activation(self.head.dense(embeddings))  # (N, H)
        return embeddings.reshape(*leading_shape, -1)  # (..., H)

    def encode_query(self, queries: Sequence[str], **kwargs) -> np.ndarray:
        """``encode`` with the query prompt (``prompt_for("query")``)."""
        return self.encode(queries, prompt=self.prompt_for("query"), **kwargs)

    def encode_document(self, documents: Sequence[str], **kwargs) -> np.ndarray:
        """``encode`` with the document prompt and ``document_max_length`` (either overridable)."""
        kwargs = {"prompt": self.prompt_for("document"), "max_length": self.document_max_length} | kwargs
        return self.encode(documents, **kwargs)

    def encode(
        self,
        sentences: Sequence[str],
        batch_size: int | None = None,
        max_length: int | None = None,
        show_progress_bar: bool | None = None,
        prompt: str | None = None,
        description: str = "encoding",
        truncate_dim: int | None = None,
    ) -> np.ndarray:
        """Embeddings (len(sentences), hidden) as float32, in the order of ``sentences``: their first ``truncate_dim``
        dimensions (None: the model's ``truncate_dim``, else all), as sentence-transformers' ``truncate_dim`` cuts.

        ``batch_size`` defaults to 32 sentences on a CPU and 256 on a GPU; ``max_length`` to the model's
        (the checkpoint's training value); ``prompt`` to the model's (e5's ``"passage: "`` for documents).
        ``show_progress_bar`` None: a bar (labelled ``description``, cleared when done) on inputs of
        ``PROGRESS_MIN_SENTENCES`` or more when stderr is a terminal.

        Runs in eval mode under ``torch.inference_mode`` (autocast to bf16/fp16 on a GPU); batches are
        formed longest-first so that each batch holds sentences of similar length (less padding, and an
        out-of-memory error shows at once).
        """
        if isinstance(sentences, str):
            raise TypeError("encode takes a list of sentences, not a single string")
        device = next(self.parameters()).device
        if batch_size is None:
            batch_size = default_encode_batch_size(device)
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        max_length = self.max_length if max_length is None else max_length
        self.check_max_length(max_length)
        prompt = self.prompt if prompt is None else prompt
        tokenized = tokenize_texts(sentences, self.tokenizer, max_length, prompt)
        order = np.argsort(-tokenized.lengths, kind="stable")
        dim = self.check_truncate_dim(self.truncate_dim if truncate_dim is None else truncate_dim)
        embeddings = np.zeros((len(tokenized), dim), dtype=np.float32)
        # Half precision on GPUs (fast and accurate enough for ranking); the CPU stays in float32.
        autocast = torch.autocast("cuda", dtype=gpu_half_dtype()) if device.type == "cuda" else nullcontext()
        if show_progress_bar is None:
            show_progress_bar = len(order) >= PROGRESS_MIN_SENTENCES
        bar = progress_bar(
            total=len(order), desc=description, unit="sentence", leave=False, disable=not show_progress_bar
        )
        was_training = self.training
        self.eval()
        try:
            with torch.inference_mode(), autocast, bar:
                for start in range(0, len(order), batch_size):
                    indices = order[start : start + batch_size]
                    batch = self.collator([(tokenized[i],) for i in indices])  # each (B, 1, L)
                    batch = {key: value.to(device) for key, value in batch.items()}
                    vectors = self(**batch)[:, 0].float()  # (B, H)
                    if self.normalize:  # the model declares unit-length embeddings (sentence-transformers' Normalize)
                        vectors = torch.nn.functional.normalize(vectors, dim=-1)
                    embeddings[indices] = vectors[:, :dim].cpu().numpy()
                    bar.update(len(indices))
        finally:
            self.train(was_training)
        return embeddings
