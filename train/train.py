r"""Train a SimCSE sentence encoder. Defaults are the reference recipe; see README.md for every flag.

    python train/train.py --model klue/bert-base --train_data data/kornli/kornli_triplets.tsv \
        --valid_data korsts_dev --output_path outputs/sup-simcse-bert-base --amp
"""

from simcse.cli import parse_args, run_main


def main() -> None:
    config = parse_args(description=__doc__)
    from simcse.distributed import cleanup  # torch loads after the flags are read: --help answers at once
    from simcse.trainer import train

    try:
        train(config)
    finally:
        cleanup()


if __name__ == "__main__":
    run_main(main)
