"""Train a SimCSE sentence encoder. Defaults are the reference recipe; see README.md for every flag.

    python train/train.py --model klue/bert-base --train_data data/kornli/kornli_triplets.tsv \
        --valid_data korsts_dev --output_path outputs/sup-simcse-bert-base --amp
"""

import argparse

from simcse.cli import run_main
from simcse.distributed import cleanup
from simcse.model import POOLERS
from simcse.trainer import TrainConfig, train

DEFAULTS = TrainConfig()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)

    model = parser.add_argument_group("model")
    model.add_argument("--model", default=DEFAULTS.model, help="hub name or local folder (default: %(default)s)")
    model.add_argument("--tokenizer", default=None, help="hub name or folder (default: same as --model)")
    model.add_argument("--pooler", default=DEFAULTS.pooler, choices=POOLERS, help="default: %(default)s")
    model.add_argument(
        "--mlp_only_train", action="store_true", help="use the MLP head in training only (unsupervised recipe)"
    )
    model.add_argument("--dropout", type=float, default=DEFAULTS.dropout, help="hidden and attention dropout")
    model.add_argument(
        "--unpad", action=argparse.BooleanOptionalAction, default=DEFAULTS.unpad,
        help="run BERT/RoBERTa on real tokens only, no compute on padding (default: on)",
    )  # fmt: skip
    model.add_argument(
        "--trust_remote_code", action="store_true", help="allow code shipped with a hub model to run (off by default)"
    )

    data = parser.add_argument_group("data")
    data.add_argument(
        "--train_data", required=True, help=".txt (one sentence per line) or .tsv with sent0/sent1[/hard_neg] header"
    )
    data.add_argument("--valid_data", default=DEFAULTS.valid_data, help="dev set name or path (default: %(default)s)")
    data.add_argument("--data_dir", default=None, help="folder the dataset names resolve in (default: the repo's data/)")
    data.add_argument("--max_length", type=int, default=DEFAULTS.max_length, help="tokens per sentence, truncated")
    data.add_argument("--num_workers", type=int, default=DEFAULTS.num_workers, help="DataLoader worker processes")

    optim = parser.add_argument_group("optimisation")
    optim.add_argument(
        "--batch_size", type=int, default=DEFAULTS.batch_size,
        help="examples per optimizer step over all processes (each of N torchrun processes takes batch/N)",
    )  # fmt: skip
    optim.add_argument("--epochs", type=int, default=DEFAULTS.epochs)
    optim.add_argument("--max_steps", type=int, default=None, help="stop after this many steps (smoke runs)")
    optim.add_argument("--learning_rate", type=float, default=DEFAULTS.learning_rate, help="peak learning rate")
    optim.add_argument("--weight_decay", type=float, default=DEFAULTS.weight_decay, help="AdamW, not on biases/LayerNorm")
    optim.add_argument("--warmup_ratio", type=float, default=DEFAULTS.warmup_ratio, help="share of steps warming up")
    optim.add_argument("--max_grad_norm", type=float, default=DEFAULTS.max_grad_norm, help="clipping; 0 disables")
    optim.add_argument("--temp", type=float, default=DEFAULTS.temp, help="softmax temperature")
    optim.add_argument(
        "--hard_negative_weight", type=float, default=DEFAULTS.hard_negative_weight,
        help="log-space weight added to each anchor's own hard-negative logit",
    )  # fmt: skip
    optim.add_argument(
        "--mask_duplicate_negatives", action=argparse.BooleanOptionalAction, default=DEFAULTS.mask_duplicate_negatives,
        help="drop in-batch candidates whose token ids equal the anchor's positive (false negatives; default: on)",
    )  # fmt: skip
    optim.add_argument(
        "--grad_cache_chunk", type=int, default=None,
        help="GradCache: embed the batch in chunks of this many examples (must divide the per-process batch)",
    )  # fmt: skip
    optim.add_argument("--amp", action="store_true", help="bf16 (or fp16 with loss scaling) autocast on GPU")

    output = parser.add_argument_group("evaluation and output")
    output.add_argument("--output_path", default=DEFAULTS.output_path, help="where the best checkpoint goes")
    output.add_argument("--eval_strategy", default=DEFAULTS.eval_strategy, choices=("steps", "epoch"))
    output.add_argument("--eval_step", type=int, default=DEFAULTS.eval_step, help="evaluate every N steps")
    output.add_argument("--eval_batch_size", type=int, default=None, help="default: 32 on a CPU, 256 on a GPU")

    saving = parser.add_argument_group("checkpoints and the Hub")
    saving.add_argument("--save_steps", type=int, default=None, help="write checkpoint-STEP/ every N steps")
    saving.add_argument(
        "--save_total_limit", type=int, default=None, help="keep the newest N checkpoint-STEP/ (default: all)"
    )
    saving.add_argument(
        "--resume_from_checkpoint", default=None, metavar="DIR|latest", help="continue a run from a checkpoint"
    )
    saving.add_argument(
        "--push_to_hub", default=None, metavar="REPO_ID", help="upload the best checkpoint (token: HF_TOKEN or login)"
    )
    saving.add_argument("--hub_private", action="store_true", help="create the Hub repository as private")

    runtime = parser.add_argument_group("runtime")
    runtime.add_argument("--seed", type=int, default=DEFAULTS.seed)
    runtime.add_argument("--device", default=DEFAULTS.device, help="auto (CUDA if available), cpu, cuda, cuda:1, ...")
    return parser


def main() -> None:
    config = TrainConfig(**vars(build_parser().parse_args()))
    try:
        train(config)
    finally:
        cleanup()


if __name__ == "__main__":
    run_main(main)
