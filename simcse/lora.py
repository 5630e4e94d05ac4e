"""LoRA adapters through ``peft`` (the optional extra ``lora``): injected in place into the transformers model, so
that the forward pass, DDP and GradCache see one ordinary module whose only trainable weights are the adapters.

A save writes the model **merged** (each adapted weight W + B A * alpha / r, computed beside the weights: the
training weights are never touched, so a run goes on exactly) as a plain transformers folder that loads without
peft, and the adapters beside it in ``lora_adapter/`` (peft's format: ``PeftModel.from_pretrained(base, folder)``).
A resumed run rebuilds the model from ``--model`` and loads the checkpoint's adapters: bit-exact, where the merged
weights would not be.

The unpadded forward pass computes BERT's projections from their weights directly, past the adapters: a model with
adapters takes the padded pass.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from simcse.model_config import LORA_ALL_LINEAR
from simcse.rules import as_list
from simcse.run_folder import LORA_ADAPTER_FOLDER

ADAPTER_NAME = "default"  # peft's name of a model's one adapter
PEFT_PREFIX = "base_model.model."  # the keys of PeftModel.save_pretrained's weights


@dataclass(frozen=True)
class LoraSettings:
    rank: int
    alpha: float
    dropout: float
    target_modules: str | list[str]  # names or name endings, or LORA_ALL_LINEAR

    @classmethod
    def of(cls, config) -> LoraSettings | None:
        """The settings of a run's ``--lora_*`` flags; None without ``--lora_rank``."""
        if config.lora_rank is None:
            return None
        targets = config.lora_target_modules
        targets = targets if targets == LORA_ALL_LINEAR else as_list(targets)
        alpha = config.lora_rank if config.lora_alpha is None else config.lora_alpha
        return cls(config.lora_rank, alpha, config.lora_dropout, targets)


def peft_module():
    """peft, or one ImportError naming the extra that installs it."""
    try:
        import peft
    except ImportError:
        raise ImportError('--lora_rank needs peft: pip install -e ".[lora]" (or pip install peft)') from None
    return peft


def target_problem(model: torch.nn.Module, targets: str | list[str], where: str) -> str | None:
    """Why ``--lora_target_modules`` names no module of ``model`` (built on the meta device: no weights), or None;
    a name matches a module whose name is it or ends in ``.name``, as peft matches."""
    if targets == LORA_ALL_LINEAR:
        return None
    names = [name for name, _ in model.named_modules()]
    missing = [t for t in as_list(targets) if not any(n == t or n.endswith(f".{t}") for n in names)]
    if not missing:
        return None
    linear = sorted({name.rsplit(".", 1)[-1] for name, m in model.named_modules() if isinstance(m, torch.nn.Linear)})
    return (
        f"--lora_target_modules {missing[0]}: no module of {where} is named so; its linear layers are "
        f"{', '.join(linear)} (or give {LORA_ALL_LINEAR})"
    )


def add_adapters(model, settings: LoraSettings) -> None:
    """Inject LoRA adapters into ``model.encoder`` (a SimCSEModel's): only they train from then on."""
    peft = peft_module()
    config = peft.LoraConfig(
        r=settings.rank,
        lora_alpha=settings.alpha,
        lora_dropout=settings.dropout,
        target_modules=settings.target_modules,
        bias="none",
    )
    base = str(model.config.name_or_path)  # a local folder by its name only: no path of this machine in a push
    config.base_model_name_or_path = Path(base).name if Path(base).is_dir() else base
    peft.inject_adapter_in_model(config, model.encoder, adapter_name=ADAPTER_NAME)
    for name, parameter in model.encoder.named_parameters():
        if ".lora_" in name:  # float32 adapters on bf16 weights (--model_dtype bf16), as peft's own models have
            parameter.data = parameter.data.float()
    model.lora_config = config
    model.unpad = False  # see the module's docstring


def load_adapters(model, folder: str | os.PathLike) -> None:
    """Set the adapters of ``model`` (injected by ``add_adapters``) to those saved in ``folder/lora_adapter/``."""
    peft = peft_module()
    path = Path(folder) / LORA_ADAPTER_FOLDER / peft.utils.SAFETENSORS_WEIGHTS_NAME
    if not path.is_file():
        raise FileNotFoundError(f"{path}: missing; a run with --lora_rank saves its adapters there")
    saved = {key.removeprefix(PEFT_PREFIX): tensor for key, tensor in load_file(path).items()}
    result = peft.set_peft_model_state_dict(model.encoder, saved, adapter_name=ADAPTER_NAME)
    if missing := [key for key in result.missing_keys if "lora_" in key]:
        raise ValueError(f"{path}: holds no weights for {len(missing)} adapter(s) of the model ({missing[0]}, ...)")


def merged_state_dict(encoder: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The weights of ``encoder`` with every adapter merged into the weight it adapts, under the plain model's
    names (no adapter weights, no ``base_layer``)."""
    from peft.tuners.lora import LoraLayer

    state = {
        key.replace(".base_layer.", "."): tensor.detach()
        for key, tensor in encoder.state_dict().items()
        if ".lora_" not in key
    }
    for name, module in encoder.named_modules():
        if isinstance(module, LoraLayer):
            weight = module.get_base_layer().weight
            state[f"{name}.weight"] = (weight + module.get_delta_weight(ADAPTER_NAME)).to(weight.dtype).detach()
    return state


def save_adapted(encoder: torch.nn.Module, lora_config, folder: Path) -> None:
    """The merged model into ``folder`` (a plain transformers save) and the adapters into ``folder/lora_adapter/``."""
    peft = peft_module()
    encoder.save_pretrained(folder, state_dict=merged_state_dict(encoder))
    # The adapters alone: embedding matrices are saved only where a vocabulary was resized, never here.
    adapters = peft.get_peft_model_state_dict(encoder, adapter_name=ADAPTER_NAME, save_embedding_layers=False)
    (folder / LORA_ADAPTER_FOLDER).mkdir(parents=True, exist_ok=True)
    lora_config.save_pretrained(folder / LORA_ADAPTER_FOLDER)
    weights = {PEFT_PREFIX + key: tensor.detach().cpu().contiguous() for key, tensor in adapters.items()}
    save_file(weights, folder / LORA_ADAPTER_FOLDER / peft.utils.SAFETENSORS_WEIGHTS_NAME)
