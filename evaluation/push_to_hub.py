r"""Push a finished checkpoint folder to the Hugging Face Hub, with a model card.

    python evaluation/eval.py --model outputs/sup-simcse-bert-base --test_data korsts_dev korsts_test \
        --output_json outputs/sup-simcse-bert-base/eval_results.json
    python evaluation/push_to_hub.py outputs/sup-simcse-bert-base your-name/sup-simcse-bert-base

The card's results come from FOLDER/eval_results.json (what eval.py wrote), its recipe from train_args.json.
The token is read by huggingface_hub from HF_TOKEN or `hf auth login`; it is never a flag.
"""

import argparse

from simcse.cli import refuse_empty_paths, run_main
from simcse.hub import check_push_access, push_checkpoint


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", help="checkpoint folder written by train.py")
    parser.add_argument("repo_id", help="user-or-org/name on the Hub")
    parser.add_argument("--private", action="store_true", help="create the repository as private")
    args = parser.parse_args()
    refuse_empty_paths(args, "folder")
    check_push_access(args.repo_id, "pushing to")  # offline, no token, no network: one line before anything is written
    print(f"pushed {args.folder} to {push_checkpoint(args.folder, args.repo_id, private=args.private)}")


if __name__ == "__main__":
    run_main(main)
