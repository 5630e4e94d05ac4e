"""Loading a model folder or Hub model: where its files are, what it declares about itself, and the checks that
refuse a folder, weights or tokenizer that cannot be what the run needs, in one line that names them."""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlparse

import huggingface_hub
import huggingface_hub.utils
import numpy as np
from huggingface_hub import constants as hub_constants
from torch import nn
from transformers import PreTrainedTokenizerBase
from transformers.utils import cached_file
from transformers.utils import logging as transformers_logging

from simcse import st_format
from simcse.checkpoint import finished_move_view, interrupted_move, verify_folder
from simcse.run_folder import CONFIG_NAME, SIMCSE_CONFIG_NAME, WEIGHTS_NAME, is_run_folder, lock_holder, read_json

logger = logging.getLogger(__name__)

# A real tokenizer has thousands of tokens; transformers builds one of a few special tokens for a model folder
# that has no tokenizer files, and it maps every word to the unknown token.
MIN_VOCABULARY = 100


@contextmanager
def without_transformers_bars() -> Iterator[None]:
    """transformers' own progress bars ("Loading weights", "Writing model shards") off for the package's loads and
    saves, which would print them on every save, interleaved with the training bar; the Hub's download bars stay
    as they were (a first download is a long wait), and everything is restored after."""
    was_enabled = transformers_logging.is_progress_bar_enabled()
    hub_bars_off = huggingface_hub.utils.are_progress_bars_disabled()
    transformers_logging.disable_progress_bar()  # turns the Hub's off too
    if not hub_bars_off:
        huggingface_hub.utils.enable_progress_bars()
    try:
        yield
    finally:
        if was_enabled:
            transformers_logging.enable_progress_bar()
        if hub_bars_off:
            huggingface_hub.utils.disable_progress_bars()


def saved_file(model_name_or_path: str | os.PathLike, name: str) -> str | None:
    """The path of a file saved beside a checkpoint (local or on the Hub), or None when it has none."""
    return cached_file(
        model_name_or_path,
        name,
        _raise_exceptions_for_missing_entries=False,
        _raise_exceptions_for_connection_errors=False,
    )


def read_simcse_config(model_name_or_path: str | os.PathLike) -> dict | None:
    """The pooler settings saved beside a checkpoint by ``SimCSEModel.save_pretrained``, if any."""
    path = saved_file(model_name_or_path, SIMCSE_CONFIG_NAME)
    return read_json(path) if path else None


def saved_settings(model_name_or_path: str | os.PathLike, saved: dict | None) -> tuple[dict, str]:
    """The settings a model folder declares (pooler, max length, prompt, normalisation) and where they come
    from: ``simcse_config.json``, else the sentence-transformers files, else none (the defaults)."""
    if saved is not None:
        return saved, SIMCSE_CONFIG_NAME
    declared = st_format.read_settings(lambda name: saved_file(model_name_or_path, name))
    if declared is None:
        return {}, "the defaults (no simcse_config.json or sentence-transformers files)"
    source = declared.pop("source")
    return declared, source


# Seconds to wait for the Hub's host before a Hub model is loaded: huggingface_hub retries for over a minute.
HUB_PROBE_SECONDS = 3.0


def _hub_unreachable() -> str | None:
    """Why the Hub's host takes no connection now (its address unknown, refused, timed out), or None."""
    address = urlparse(hub_constants.ENDPOINT)
    try:
        socket.create_connection((address.hostname, address.port or 443), timeout=HUB_PROBE_SECONDS).close()
    except OSError as err:
        return err.strerror or str(err) or type(err).__name__
    return None


def check_hub_access(name_or_path: str | os.PathLike) -> None:
    """Before a Hub model loads, spare the user huggingface_hub's minute of retries when the Hub cannot be
    reached: the cached copy is used (this process goes offline, with a warning) when there is one, else one
    error says what to do."""
    if Path(name_or_path).is_dir() or hub_constants.HF_HUB_OFFLINE or not (problem := _hub_unreachable()):
        return
    if huggingface_hub.try_to_load_from_cache(str(name_or_path), CONFIG_NAME) is None:
        raise OSError(
            f"{name_or_path}: the Hub cannot be reached ({problem}) and the model is not in the cache "
            f"({hub_constants.HF_HUB_CACHE}); pass a local folder, or fill the cache where there is a network "
            f"(hf download {name_or_path}) and run with HF_HUB_OFFLINE=1"
        )
    logger.warning("%s: the Hub cannot be reached (%s); working offline from the cached copy", name_or_path, problem)
    hub_constants.HF_HUB_OFFLINE = True  # read at each request: none is tried, so none is retried


def check_location(name_or_path: str | os.PathLike, what: str = "model") -> str | os.PathLike:
    """A local folder (its saved files checked for damage) or a well-formed Hub repo id; else one clear error
    at once, rather than a Hub lookup of a mistyped path that ends in a network error after retries. Returns
    where to load from: the folder given, or a view of the complete save a crash cut short while moving it into
    that folder (nothing on disk changes: the run that claims the folder finishes the move)."""
    text = str(name_or_path)
    if not text.strip():
        raise ValueError(f"the {what} path is empty: give a folder or a Hub name (an unset variable in a script?)")
    path = Path(text).expanduser()
    if path.is_dir():
        if interrupted_move(path):
            logger.warning("%s: a best-model save was cut short while moving in; loading the model it saved", path)
            path = name_or_path = finished_move_view(path)
        if what == "model" and not (path / CONFIG_NAME).is_file():
            raise FileNotFoundError(f"{text}: {_why_no_model(path)}")
        verify_folder(path, f"the {what} folder {path}")
        return name_or_path
    if path.exists():
        raise ValueError(f"{text}: a file, not a {what} folder")
    first = Path(path.parts[0]) if path.parts else path
    if (
        text.startswith(("/", ".", "~"))
        or "\\" in text
        or text.count("/") > 1
        or (len(path.parts) > 1 and first.is_dir())
    ):
        raise FileNotFoundError(f"{text}: no such folder")
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(text)
    except HFValidationError:
        raise FileNotFoundError(f"{text}: no such folder, and not a Hub repo id") from None
    return name_or_path


def _why_no_model(folder: Path) -> str:
    if holder := lock_holder(folder):
        return f"no model saved in it yet (a run, pid {holder}, is writing to it; its first save is still to come)"
    if is_run_folder(folder) and any((folder / name).is_file() for name in (WEIGHTS_NAME, SIMCSE_CONFIG_NAME)):
        return f"a run folder whose saved model lacks its {CONFIG_NAME} (deleted or moved?): restore it from a copy"
    if is_run_folder(folder):
        return "no model saved in it yet (a run folder whose first save did not finish)"
    return f"not a model folder (no {CONFIG_NAME})"


def read_model_config(name_or_path: str | os.PathLike, trust_remote_code: bool = False):
    """The transformers config of a model folder or Hub model (checked with ``check_hub_access`` first); an error
    that does not name the model is made to."""
    from transformers import AutoConfig

    check_hub_access(name_or_path)
    try:
        return AutoConfig.from_pretrained(name_or_path, trust_remote_code=trust_remote_code)
    except OSError as err:
        if str(name_or_path) in str(err):
            raise
        raise OSError(f"{name_or_path}: {err}") from err


def check_weights_loaded(model_name_or_path: str | os.PathLike, encoder: nn.Module, loading: dict) -> None:
    """Refuse weights that leave part of the encoder at its random initialisation (an empty or foreign
    model.safetensors), or that hold encoder weights it has no place for. A pooling layer is aside: some
    encoders save none, and some checkpoints carry one the encoder lacks; pretraining heads are not the encoder's."""
    parts = {name for name, _ in encoder.named_children()} - {"pooler"}
    missing = [key for key in loading["missing_keys"] if not key.startswith("pooler.")]
    unexpected = [key for key in loading["unexpected_keys"] if key.split(".")[0] in parts]
    for keys, what in ((missing, "missing from"), (unexpected, "unexpected in")):
        if keys:
            raise ValueError(
                f"{model_name_or_path}: {len(keys)} encoder weight(s) {what} its saved weights ({', '.join(keys[:3])}"
                f"{', ...' if len(keys) > 3 else ''}); the weights file is empty, damaged or of another model"
            )


def tokenizer_problem(tokenizer: PreTrainedTokenizerBase, num_embeddings: int) -> str | None:
    """Why ``tokenizer`` cannot feed an encoder with ``num_embeddings`` token embeddings, or None."""
    size = len(tokenizer)
    if size < MIN_VOCABULARY:
        return f"the tokenizer has only {size} tokens (a model folder without its tokenizer files?)"
    if size > num_embeddings:
        return (
            f"the tokenizer has {size} tokens but the model embeds only {num_embeddings}: ids from {num_embeddings} "
            "up cannot be looked up; use the tokenizer the model was trained with"
        )
    return None


def prompt_length(tokenizer: PreTrainedTokenizerBase, prompt: str) -> int:
    """The tokens ``prompt`` takes before a text (no special tokens)."""
    return len(tokenizer(prompt, add_special_tokens=False)["input_ids"]) if prompt else 0


def no_room_for_text(tokenizer: PreTrainedTokenizerBase, flag: str, length: int, prompt: str) -> str | None:
    """Why ``length`` tokens leave no room for text once the special tokens and ``prompt`` are in (every text
    would embed the same, and a retrieval set would rank by id), or None."""
    special, prompt_tokens = tokenizer.num_special_tokens_to_add(), prompt_length(tokenizer, prompt)
    if length > special + prompt_tokens:
        return None
    taken = f"the special tokens ({special})" + (f" and the prompt {prompt!r} ({prompt_tokens})" if prompt else "")
    return (
        f"{flag} {length} leaves no room for text: {taken} fill it, so every text would embed the same; "
        f"use at least {special + prompt_tokens + 1}"
    )


def unknown_token_share(tokenizer: PreTrainedTokenizerBase, id_rows: Sequence[Sequence[int]]) -> float:
    """The share of the tokens of ``id_rows`` (special tokens aside) that are ``tokenizer``'s unknown token."""
    if tokenizer.unk_token_id is None or not len(id_rows):
        return 0.0
    ids = np.concatenate([np.asarray(row, dtype=np.int64) for row in id_rows])
    ids = ids[~np.isin(ids, [i for i in tokenizer.all_special_ids if i != tokenizer.unk_token_id])]
    return float((ids == tokenizer.unk_token_id).mean()) if len(ids) else 0.0


def max_sequence_length(encoder: nn.Module) -> int | None:
    """Tokens per sequence the encoder's position embeddings cover (RoBERTa's start after the padding index),
    or None when it has no absolute positions."""
    positions = getattr(encoder.config, "max_position_embeddings", None)
    if positions is None or getattr(encoder.config, "position_biased_input", True) is False:
        return None  # DeBERTa's relative positions have no such bound
    padding_idx = getattr(getattr(encoder, "embeddings", None), "padding_idx", None)
    return positions - (padding_idx + 1) if padding_idx is not None else positions
