"""eval.py's command (``simcse-eval`` once installed; ``evaluation/eval.py`` in a checkout): its flags, and the
evaluation of one model on sets of every task of ``simcse.tasks``, printed as tables."""

import argparse

from simcse.cli import check_writable_file, refuse_empty_paths, run_main
from simcse.config import DEFAULT_DOCUMENT_MAX_LENGTH, DEFAULT_MAX_LENGTH
from simcse.poolers import DEFAULT_POOLER, POOLERS
from simcse.registry import DATA_DIR_HELP, RETRIEVAL_SETS, STS_DATASETS
from simcse.run_folder import EVAL_RESULTS_NAME
from simcse.tasks import REPORTS_HELP, SETS_HELP

EVAL_DESCRIPTION = f"""Evaluate a sentence encoder on sets of every evaluation task, each recognised from its name, file
or folder:
{REPORTS_HELP}

    python evaluation/eval.py --model outputs/sup-simcse-bert-base --test_data korsts_dev korsts_test klue_sts_dev
    python evaluation/eval.py --model outputs/sup-simcse-bert-base --test_data korsts_test data/my_beir_set

Prints a table (x100) per set; --output_json writes every metric as JSON.
"""


def add_retrieval_flags(parser: argparse.ArgumentParser) -> None:
    """The flags of retrieval sets: the qrels split, documents' length, the query and document prompts."""
    parser.add_argument("--split", default="test", help="the qrels/<split>.tsv of a retrieval set (default: test)")
    parser.add_argument(
        "--document_max_length",
        type=int,
        default=None,
        help="tokens per document of a retrieval set, capped at the model's positions (default: the checkpoint's, a "
        f"sentence-transformers folder's max_seq_length, else {DEFAULT_DOCUMENT_MAX_LENGTH})",
    )
    parser.add_argument(
        "--query_prompt",
        default=None,
        metavar="TEXT",
        help="before each query of a retrieval set (default: the checkpoint's query prompt, else --prompt)",
    )
    parser.add_argument(
        "--document_prompt",
        default=None,
        metavar="TEXT",
        help="before each document of a retrieval set (default: the checkpoint's document prompt, else --prompt; "
        "e5: 'passage: ')",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=EVAL_DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="checkpoint folder or hub name")
    parser.add_argument(
        "--test_data",
        nargs="+",
        default=["korsts_test"],
        help=f"sets of any evaluation task, in any order: {SETS_HELP}; names: {', '.join(STS_DATASETS)}, "
        f"{', '.join(RETRIEVAL_SETS)} (default: korsts_test)",
    )
    add_retrieval_flags(parser)
    parser.add_argument("--data_dir", default=None, help=DATA_DIR_HELP)
    parser.add_argument(
        "--pooler", choices=tuple(POOLERS), default=None, help=f"default: the checkpoint's, else {DEFAULT_POOLER}"
    )
    parser.add_argument(
        "--prompt",
        default=None,
        metavar="TEXT",
        help="text put before every sentence (default: the checkpoint's, else none)",
    )
    parser.add_argument("--batch_size", type=int, default=None, help="default: 32 on a CPU, 256 on a GPU")
    parser.add_argument(
        "--max_length",
        type=int,
        default=None,
        help=f"tokens per sentence (default: the checkpoint's training value, else {DEFAULT_MAX_LENGTH})",
    )
    parser.add_argument(
        "--truncate_dim",
        type=int,
        default=None,
        metavar="N",
        help="evaluate the first N dimensions of each embedding, a size it was trained at (--matryoshka_dims; "
        "default: all)",
    )
    parser.add_argument(
        "--output_json",
        "--output_path",
        default=None,
        metavar="FILE",
        help=f"JSON file for every metric per dataset, e.g. MODEL/{EVAL_RESULTS_NAME} (--output_path: old name)",
    )
    parser.add_argument("--device", default="auto", help="auto (CUDA if available, else CPU), cpu, cuda, cuda:1, ...")
    parser.add_argument(
        "--unpad", action=argparse.BooleanOptionalAction, default=True, help="skip compute on padding (default: on)"
    )
    parser.add_argument("--trust_remote_code", action="store_true", help="allow code shipped with a hub model to run")
    return parser


def evaluate_main() -> None:
    args = build_parser().parse_args()
    refuse_empty_paths(args, "model", "test_data", "data_dir", "output_json")
    if args.document_max_length is not None and args.document_max_length < 2:
        raise ValueError(
            f"--document_max_length must be at least 2 (room for [CLS] and [SEP]), got {args.document_max_length}"
        )
    if args.truncate_dim is not None and args.truncate_dim < 1:
        raise ValueError(f"--truncate_dim must be at least 1, got {args.truncate_dim}")
    if args.output_json:
        check_writable_file(args.output_json, "--output_json")  # before minutes of evaluation, not after
    # torch loads after the flags are read: --help and flag errors answer at once.
    from simcse.device import resolve_device
    from simcse.model import SimCSEModel
    from simcse.tasks import load_set, write_eval_report

    device = resolve_device(args.device)
    # Read everything first: a bad file fails in seconds, not after the sets before it were evaluated.
    sets = [load_set(name, args.split, args.data_dir) for name in args.test_data]
    model = SimCSEModel(
        args.model,
        pooler=args.pooler,
        prompt=args.prompt,
        trust_remote_code=args.trust_remote_code,
        unpad=args.unpad,
        max_length=args.max_length,
        query_prompt=args.query_prompt,
        document_prompt=args.document_prompt,
        document_max_length=args.document_max_length,
        truncate_dim=args.truncate_dim,
    ).to(device)
    model.check_truncate_dim(args.truncate_dim)
    print(
        f"model {args.model}: pooler {model.pooler}{' (mlp_only_train)' if model.mlp_only_train else ''}, "
        f"max_length {model.max_length}"
        + (f", prompt {model.prompt!r}" if model.prompt else "")
        + (", unit-length embeddings" if model.normalize else "")
        + (f", first {args.truncate_dim} dimensions" if args.truncate_dim else "")
        + f" (from {model.settings_source}; flags given override it)"
    )

    results = evaluate_sets(model, sets, args)
    if args.output_json:
        write_eval_report(args.output_json, args.model, model, results)
        print(f"\nwrote {args.output_json}")


# Each set's line is printed before its (long) encoding and its table after: a wait never passes in silence.


def evaluate_sets(model, sets: list, args: argparse.Namespace) -> dict[str, dict[str, dict]]:
    """Each set's metrics (``simcse.tasks.EvalSet``), by task then set name, each set's table printed."""
    results: dict[str, dict[str, dict]] = {}
    for one in sets:
        print(f"\n{one.task.code.describe(one.name, one.data, model)}", flush=True)
        metrics = one.evaluate(model, args.batch_size)
        print(one.task.code.format_table({args.model: metrics}))
        results.setdefault(one.task.name, {})[one.name] = metrics
    return results


def eval_command() -> None:
    """The ``simcse-eval`` entry point."""
    run_main(evaluate_main)
