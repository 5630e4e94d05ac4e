"""Model cards and pushes to the Hugging Face Hub.

The token is never an argument here: ``huggingface_hub`` reads ``HF_TOKEN`` or the saved login itself, so
it never passes through this code, its logs or the files it writes.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from huggingface_hub import EvalResult, ModelCardData, create_repo, get_token, upload_folder, whoami
from huggingface_hub import constants as hub_constants

from simcse.config import CARD_SETTINGS, DEFAULT_MAX_LENGTH, upgrade_saved_settings
from simcse.objectives import OBJECTIVES
from simcse.poolers import DEFAULT_POOLER, POOLERS
from simcse.registry import KORNLI_HUB_ID, STS_DATASETS
from simcse.rules import as_list
from simcse.run_folder import (
    CARD_MARKER,
    CHECKPOINT_PREFIX,
    CONFIG_NAME,
    EVAL_RESULTS_NAME,
    LOCK_NAME,
    METRICS_NAME,
    MODEL_CARD_NAME,
    SIMCSE_CONFIG_NAME,
    STAGING_PREFIX,
    TENSORBOARD_FOLDER,
    TRAIN_ARGS_NAME,
    WANDB_FOLDER,
    WANDB_RUN_ID_NAME,
    best_line,
    read_json,
    read_metrics,
    write_together,
    written_by_a_run,
)
from simcse.tasks import TASKS, read_eval_report, task_selecting_by, write_eval_report
from simcse.train_data import DATA_KINDS

logger = logging.getLogger(__name__)

# The sentences of the model card's usage snippets.
USAGE_SENTENCES = ("한 남자가 기타를 치고 있다.", "남자가 악기를 연주하고 있다.")
USAGE_QUERY = "누가 기타를 치고 있나?"
# What is not part of a published checkpoint: training states, unfinished saves, the run's lock.
IGNORE_PATTERNS = [
    f"{CHECKPOINT_PREFIX}*",
    f"{CHECKPOINT_PREFIX}*/**",
    f"{STAGING_PREFIX}*",
    f"{STAGING_PREFIX}*/**",
    LOCK_NAME,
    f"{TENSORBOARD_FOLDER}/**",  # the training logs stay with the run
    f"{WANDB_FOLDER}/**",
    WANDB_RUN_ID_NAME,
]


def _dataset(name: str) -> tuple[str, str, str]:
    """(hub id, display name, split) of a dataset name, file or folder."""
    if name in STS_DATASETS:
        dataset = STS_DATASETS[name]
        return dataset.hub_id, dataset.display_name, dataset.hub_split
    shown = Path(name).stem if Path(name).suffix.lower() in (".tsv", ".json", ".jsonl", ".txt") else Path(name).name
    return shown, shown, "test"


def _usage(repo_id: str, settings: dict) -> str:
    """Usage snippets that compute ``SimCSEModel.encode``'s embedding: transformers with the pooler's own line
    (``simcse.poolers``), and sentence-transformers for the poolers it has."""
    pooler = POOLERS[settings.get("pooler", DEFAULT_POOLER)]
    head_file = settings.get("head_file")
    head_used = pooler.head and not settings.get("mlp_only_train")
    lines = [pooler.usage_helper, pooler.usage] if pooler.usage_helper else [pooler.usage]
    if head_used and head_file:
        lines += [
            f'head = load_file(hf_hub_download("{repo_id}", "{head_file}"))  # the SimCSE head, beside the encoder',
            "embeddings = torch.tanh(pooled @ head['dense.weight'].T + head['dense.bias'])",
        ]
    elif head_used:
        lines = ["embeddings = outputs.pooler_output  # the trained SimCSE head is this model's pooler"]
    else:
        lines.append("embeddings = pooled")
    if settings.get("normalize"):
        lines.append("embeddings = torch.nn.functional.normalize(embeddings, dim=-1)")
    max_length = settings.get("max_length", DEFAULT_MAX_LENGTH)
    prompt = settings.get("prompt") or ""
    imports = (
        "from huggingface_hub import hf_hub_download\nfrom safetensors.torch import load_file\n" if head_file else ""
    )
    forward = "model(**batch, output_hidden_states=True)" if pooler.hidden_states else "model(**batch)"
    embedding = "\n".join(lines)
    text = f"""```python
import torch
{imports}from transformers import AutoModel, AutoTokenizer

tokenizer = AutoTokenizer.from_pretrained("{repo_id}")
model = AutoModel.from_pretrained("{repo_id}").eval()
batch = tokenizer([{prompt + USAGE_SENTENCES[0]!r}, {prompt + USAGE_SENTENCES[1]!r}],
                  padding=True, truncation=True, max_length={max_length}, return_tensors="pt")
with torch.no_grad():
    outputs = {forward}
{embedding}
print(torch.nn.functional.cosine_similarity(embeddings[0], embeddings[1], dim=0))
```
"""
    return text + _sentence_transformers_usage(repo_id, settings)


def _sentence_transformers_usage(repo_id: str, settings: dict) -> str:
    """The sentence-transformers snippets, for the poolers it has: encode, and for a model with query/document
    prompts encode_query / encode_document."""
    if not POOLERS[settings.get("pooler", DEFAULT_POOLER)].st_mode:
        return ""
    text = f"""
With sentence-transformers:

```python
from sentence_transformers import SentenceTransformer

model = SentenceTransformer("{repo_id}")
embeddings = model.encode({list(USAGE_SENTENCES)!r})
print(model.similarity(embeddings[0], embeddings[1]))
```
"""
    own = {role: settings.get(f"{role}_prompt") for role in ("query", "document")}
    if all(prompt is None for prompt in own.values()):
        return text
    shown = {role: settings.get("prompt") or "" if prompt is None else prompt for role, prompt in own.items()}
    return (
        text
        + f"""
For search, queries and documents get their own prompts ({shown["query"]!r} / {shown["document"]!r}), which
sentence-transformers applies unasked:

```python
queries = model.encode_query([{USAGE_QUERY!r}])
documents = model.encode_document([{USAGE_SENTENCES[0]!r}, {USAGE_SENTENCES[1]!r}])
print(model.similarity(queries, documents))
```
"""
    )


def _eval_results(report: dict) -> list[EvalResult]:
    """The model-index entries of eval_results.json: every metric of every set of each task."""
    eval_results = []
    for task in TASKS.values():
        task_type, task_name = task.card_task
        for name, metrics in report.get(task.report_key, {}).items():
            hub_id, display, split = _dataset(name)
            eval_results += [
                EvalResult(
                    task_type=task_type,
                    task_name=task_name,
                    dataset_type=hub_id,
                    dataset_name=display,
                    dataset_split=split,
                    metric_type=key,
                    metric_name=key,
                    metric_value=metrics[key],
                )
                for key in task.metric_keys
            ]
    return eval_results


def _results_sections(report: dict, repo_id: str) -> list[str]:
    """The card's result tables, each task's in table order."""
    return [
        section
        for task in TASKS.values()
        for section in task.code.card_sections(report.get(task.report_key, {}), repo_id)
    ]


def _kind_of_earlier_release(train_data: str) -> str:
    """The data kind of a run whose train_args.json names none (releases before data kinds): its file's kind by
    the file name (a .txt file is one sentence per line), else triplets, the supervised recipe's."""
    found = (kind.name for kind in DATA_KINDS.values() if kind.matches(Path(str(train_data)), ()))
    return next(found, DATA_KINDS["triplets"].name)


def _objectives(args: dict, kinds: list[str]) -> list[str]:
    """Each dataset's objective; train_args.json of releases before --objective named none: each kind was trained
    with the first objective that takes it (CoSENT for scored pairs)."""
    if "objective" in args:
        objectives = as_list(args["objective"])
        return objectives * len(kinds) if len(objectives) == 1 else objectives
    return [next(name for name, objective in OBJECTIVES.items() if kind in objective.data_kinds) for kind in kinds]


def _training_kind(info: dict, args: dict) -> str:
    """How the card names the training: each dataset's objective and kind of data (their table entries' names)."""
    files = as_list(args.get("train_data", ""))
    # train_args.json of earlier releases names no data kind: a .txt file is one sentence per line
    kinds = as_list(info.get("data_kind") or _kind_of_earlier_release(files[0]))
    names = [
        f"{OBJECTIVES[objective].card_name} on {DATA_KINDS[kind].card_name}"
        for objective, kind in zip(_objectives(args, kinds), kinds)
    ]
    if len(names) == 1:
        return names[0]
    parts = " and ".join(f"{name} (`{Path(file).name}`)" for name, file in zip(names, files))
    return f"a mixture of {parts} (one dataset per batch, {args.get('mixture')})"


def shown(value):
    """A setting as a published card shows it: a path of this machine (absolute, or found here) by its base name,
    a hub name or any other value as it is; lists item by item."""
    if isinstance(value, list):
        return [shown(item) for item in value]
    if isinstance(value, str) and value and (os.path.isabs(value) or Path(value).exists()):
        return Path(value).name
    return value


def _recipe(args: dict, document_max_length_used: int | None, title: str = "## Training recipe") -> str:
    """The card's table of training settings (paths by their base names), with the document length the run used
    when the positions capped the one given."""
    values = {key: f"`{shown(args[key])}`" for key in CARD_SETTINGS if key in args}
    given = args.get("document_max_length")
    if document_max_length_used is not None and given is not None and document_max_length_used != given:
        values["document_max_length"] = f"`{document_max_length_used}` (capped at the model's positions; given {given})"
    rows = "\n".join(f"| `{key}` | {value} |" for key, value in values.items())
    return f"{title}\n\n| setting | value |\n|---|---|\n{rows}"


def _stage_one(args: dict) -> list[str]:
    """For a run that started from another run's folder (the sequential recipe's stage 2): that run's recipe."""
    start = args.get("model")
    earlier = read_json(Path(start) / TRAIN_ARGS_NAME) if start and Path(start).is_dir() else None
    if not isinstance(earlier, dict):
        return []
    earlier_args = upgrade_saved_settings(earlier.get("args", {}))
    title = f"## Stage 1: `{shown(start)}`\n\nTrained with {_training_kind(earlier, earlier_args)}" + (
        f" from `{shown(earlier_args['model'])}`." if earlier_args.get("model") else "."
    )
    return [_recipe(earlier_args, earlier.get("document_max_length_used"), title)]


def _with_best_dev(report: dict, folder: Path, info: dict) -> dict:
    """eval_results.json's results, with the run's best dev evaluation from metrics.jsonl when eval.py has not
    measured the dev set: a card written at a save shows what the run measured so far."""
    metric, dev = info.get("selection_metric"), info.get("args", {}).get("valid_data")
    path = folder / METRICS_NAME
    if not metric or not dev or not path.is_file():
        return report
    task = task_selecting_by(metric)
    best = best_line(read_metrics(path), metric)
    if best is None or dev in report.get(task.report_key, {}):
        return report
    results = {dev: {key: best[key] for key in task.metric_keys}} | report.get(task.report_key, {})
    return report | {task.report_key: results}


def _card_report(folder: Path, info: dict) -> dict:
    """The results a card shows, each set named as a published card names it (no path of this machine)."""
    report = _with_best_dev(read_eval_report(folder / EVAL_RESULTS_NAME) or {"results": {}}, folder, info)
    keys = {task.report_key for task in TASKS.values()}
    return {key: {shown(n): m for n, m in value.items()} if key in keys else value for key, value in report.items()}


def _card_metadata(args: dict, report: dict, repo_id: str) -> str:
    """The card's YAML: the Hub's model-index of the results, its tags, base model and datasets."""
    train_data = str(args.get("train_data", ""))
    datasets = [KORNLI_HUB_ID] if "kornli" in train_data.lower() else []
    datasets += sorted({_dataset(name)[0] for name in report["results"] if name in STS_DATASETS})
    eval_results = _eval_results(report)
    data = ModelCardData(
        language="ko",
        library_name="sentence-transformers",
        pipeline_tag="sentence-similarity",
        tags=["sentence-transformers", "transformers", "sentence-similarity", "feature-extraction", "simcse"],
        # A local folder is no Hub model: leave it out of the metadata, the recipe still names it.
        base_model=args.get("model") if args.get("model") and shown(args["model"]) == args["model"] else None,
        datasets=datasets or None,
        model_name=repo_id,
        eval_results=eval_results or None,
    )
    return f"---\n{data.to_yaml()}\n---"


def render_model_card(folder: str | os.PathLike, repo_id: str) -> str:
    """README.md for a checkpoint folder: YAML metadata with a model-index of the results (eval_results.json,
    else the run's best dev evaluation), the training recipe from train_args.json (and stage 1's), the results
    tables and usage snippets. No path of this machine appears: a path is shown by its base name."""
    folder = Path(folder)
    settings = read_json(folder / SIMCSE_CONFIG_NAME) or {}
    info = read_json(folder / TRAIN_ARGS_NAME) or {}
    args = upgrade_saved_settings(info.get("args", {}))
    report = _card_report(folder, info)
    lines = [
        _card_metadata(args, report, repo_id),
        f"# {repo_id}",
        f"A Korean sentence encoder trained with {_training_kind(info, args)}"
        + (f" from `{shown(args['model'])}`" if args.get("model") else "")
        + f" with simcse-ko. Pooler: `{settings.get('pooler', DEFAULT_POOLER)}`"
        + (" (MLP head in training only)" if settings.get("mlp_only_train") else "")
        + ".",
    ]
    if info.get("selection_metric"):
        dev = f"`{shown(args.get('valid_data'))}`" + (
            f" (qrels/{info['dev_split']}.tsv)" if info.get("dev_split") else ""
        )
        dev += f" ({args['valid_samples']} sampled with seed {args.get('seed')})" if args.get("valid_samples") else ""
        lines.append(f"The checkpoint is the run's best by dev {info['selection_metric']} on {dev}.")
    lines += _results_sections(report, repo_id)
    if args:
        lines += [_recipe(args, info.get("document_max_length_used")), *_stage_one(args)]
    lines.append("## Usage\n\n" + _usage(repo_id, settings))
    lines.append(CARD_MARKER)
    return "\n\n".join(lines) + "\n"


def write_model_card(folder: str | os.PathLike, repo_id: str) -> bool:
    """Write README.md, the model card, into ``folder``, unless it holds a README.md the package did not write
    (the user's: kept). Returns whether it wrote it."""
    card = Path(folder) / MODEL_CARD_NAME
    if card.exists() and not written_by_a_run(card):
        return False
    write_together({card: render_model_card(folder, repo_id)}, "--output_path")
    return True


def write_run_card(output: Path, repo_id: str) -> None:
    """A training run's card, at each save of its best model: one that cannot be rendered (an eval_results.json
    that is not eval.py's) is said in a warning, never the end of the run."""
    try:
        write_model_card(output, repo_id)
    except ValueError as err:
        logger.warning("%s: model card not written (%s)", output / MODEL_CARD_NAME, err)


def check_push_access(repo_id: str, pushing: str = "--push_to_hub") -> None:
    """Refuse, before a run trains for hours, a push that cannot happen: Hub offline, no token, no network or a
    token the Hub refuses. The token is only passed on to huggingface_hub, never shown."""
    if hub_constants.HF_HUB_OFFLINE:
        raise OSError(
            f"{pushing} {repo_id}: HF_HUB_OFFLINE is set, so nothing can be pushed; unset it"
            + (" or drop the flag" if pushing.startswith("--") else "")
        )
    token = get_token()
    if token is None:
        raise OSError(f"{pushing} {repo_id}: no Hub token; set HF_TOKEN or run `hf auth login`")
    try:
        whoami(token=token)
    except Exception as err:  # no network, a refused token: what the Hub answers is the reason
        raise OSError(
            f"{pushing} {repo_id}: the Hub cannot be reached or refuses the token ({type(err).__name__})"
        ) from None


def push_checkpoint(folder: str | os.PathLike, repo_id: str, private: bool = False) -> str:
    """Write the model card into ``folder`` (unless the folder holds a README.md the package did not write,
    which is kept and uploaded as it is) and upload the folder (without training checkpoints)."""
    folder = Path(folder)
    if not (folder / CONFIG_NAME).is_file():
        raise FileNotFoundError(f"{folder}: no checkpoint here ({CONFIG_NAME} missing)")
    if not write_model_card(folder, repo_id):
        card = folder / MODEL_CARD_NAME
        print(f"{card}: not written by simcse-ko, so it is kept and uploaded as it is (delete it for a new card)")
    repo_url = create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
    upload_folder(
        repo_id=repo_id,
        folder_path=folder,
        repo_type="model",
        ignore_patterns=IGNORE_PATTERNS,
        commit_message="Upload SimCSE checkpoint (simcse-ko)",
    )
    return str(repo_url)


def push_run(output: Path, repo_id: str, private: bool, model_name: str, valid_data: str, model, best: dict) -> None:
    """After training: add the best evaluation's dev results (``best``, its metrics.jsonl line) to the run's
    eval_results.json in ``output`` (what eval.py wrote there is kept) and push the folder with its model card."""
    task = task_selecting_by(best["selection_metric"])
    results = {task.name: {valid_data: {key: best[key] for key in task.metric_keys}}}
    write_eval_report(output / EVAL_RESULTS_NAME, model_name, model, results, merge=True)
    print(f"pushed {output} to {push_checkpoint(output, repo_id, private=private)}")
