"""Evaluate a sentence encoder on STS sets: cosine, euclidean, manhattan and dot, Pearson and Spearman.

    python evaluation/eval.py --model outputs/sup-simcse-bert-base --test_data korsts_dev korsts_test klue_sts_dev

Prints the original project's README table (x100) per dataset; --output_path writes every metric as JSON.
"""

import argparse

from simcse.cli import resolve_device, run_main
from simcse.data import load_sts
from simcse.evaluate import evaluate_sts, format_sts_table, write_eval_report
from simcse.model import POOLERS, SimCSEModel, read_simcse_config

DEFAULT_MAX_LENGTH = 64


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="checkpoint folder or hub name")
    parser.add_argument(
        "--test_data", nargs="+", default=["korsts_test"], help="dataset names or paths (default: korsts_test)"
    )
    parser.add_argument("--data_dir", default=None, help="folder the dataset names resolve in (default: repo data/)")
    parser.add_argument("--pooler", choices=POOLERS, default=None, help="default: the checkpoint's, else cls")
    parser.add_argument("--batch_size", type=int, default=None, help="default: 32 on a CPU, 256 on a GPU")
    parser.add_argument(
        "--max_length", type=int, default=None, help=f"default: the checkpoint's training value, else {DEFAULT_MAX_LENGTH}"
    )
    parser.add_argument("--output_path", default=None, help="JSON file for every metric per dataset")
    parser.add_argument("--device", default="auto")
    parser.add_argument(
        "--unpad", action=argparse.BooleanOptionalAction, default=True, help="skip compute on padding (default: on)"
    )
    parser.add_argument("--trust_remote_code", action="store_true", help="allow code shipped with a hub model to run")
    args = parser.parse_args()

    saved = read_simcse_config(args.model) or {}
    max_length = args.max_length or saved.get("max_length", DEFAULT_MAX_LENGTH)
    datasets = {name: load_sts(name, args.data_dir) for name in args.test_data}  # fail fast on a bad file
    model = SimCSEModel(
        args.model, pooler=args.pooler, trust_remote_code=args.trust_remote_code, unpad=args.unpad
    ).to(resolve_device(args.device))
    print(f"model {args.model}: pooler {model.pooler}{' (mlp_only_train)' if model.mlp_only_train else ''}, "
          f"max_length {max_length}")  # fmt: skip

    results = {}
    for name, data in datasets.items():
        results[name] = evaluate_sts(model, data, batch_size=args.batch_size, max_length=max_length)
        print(f"\n{name} ({len(data)} pairs)\n{format_sts_table({args.model: results[name]})}")

    if args.output_path:
        write_eval_report(args.output_path, args.model, model, max_length, results)
        print(f"\nwrote {args.output_path}")

if __name__ == "__main__":
    run_main(main)
