r"""KorQuAD 1.0 -> a retrieval set (BEIR layout: question -> the paragraph that answers it) and question/paragraph
training pairs, split by article so that the two never share a paragraph.

    bash data/download_korquad.sh
    python data/build_korquad.py              # dev -> data/korquad/korquad_dev (the retrieval set korquad_dev)
    python data/build_korquad.py --input data/korquad/KorQuAD_v1.0_train.json --heldout_share 0 \
        --pairs data/korquad/korquad_train_pairs.tsv          # train articles -> pairs (sent0 = question)
    python data/build_korquad.py --heldout_share 0.5 --pairs dev_pairs.tsv --beir_dir dev_heldout  # one file, split
    python data/build_korquad.py --heldout_share 0.3 --dev_share 0.1 --dev_dir dev_select --pairs pairs.tsv \
        --beir_dir test_heldout     # a third set of articles for --valid_data (qrels/dev.tsv)
"""

import argparse
from pathlib import Path

from simcse.cli import check_writable_file, refuse_empty_paths, run_main
from simcse.korquad import question_paragraph_pairs, read_korquad_files, split_articles, write_retrieval_set
from simcse.registry import RETRIEVAL_SETS, default_data_dir
from simcse.train_data import write_train_tsv

KORQUAD_DEV = RETRIEVAL_SETS["korquad_dev"]


def check_distinct_paths(args: argparse.Namespace) -> None:
    """Refuse a file read twice, or an output that is an input or another output: one would replace the other."""
    inputs = [Path(path).resolve() for path in args.input]
    if len(set(inputs)) < len(inputs):
        raise ValueError(f"--input names a file twice ({' '.join(args.input)}): its articles would be counted twice")
    if args.pairs and Path(args.pairs).resolve() in inputs:
        raise ValueError(f"--pairs {args.pairs} is also an --input: writing it would replace the KorQuAD file")
    folders = {"--beir_dir": args.beir_dir, "--dev_dir": args.dev_dir}
    for flag, folder in folders.items():
        if folder and any(path.is_relative_to(Path(folder).resolve()) for path in inputs):
            raise ValueError(f"{flag} {folder} holds an --input file: writing the set there could replace it")
    if args.dev_dir and Path(args.dev_dir).resolve() == Path(args.beir_dir).resolve() and args.heldout_share > 0:
        raise ValueError(
            f"--dev_dir and --beir_dir are the same folder ({args.dev_dir}): one set would replace the other"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--input", nargs="+", default=[str(default_data_dir() / KORQUAD_DEV.source)], help="KorQuAD 1.0 JSON files"
    )
    parser.add_argument(
        "--beir_dir", default=str(default_data_dir() / KORQUAD_DEV.folder), help="the held-out retrieval set"
    )
    parser.add_argument("--pairs", default=None, help="TSV of (question, paragraph) pairs of the other articles")
    parser.add_argument(
        "--heldout_share", type=float, default=1.0, help="share of the articles held out (default: 1, all)"
    )
    parser.add_argument(
        "--dev_share",
        type=float,
        default=0.0,
        help="share of the articles held out again as a dev retrieval set for train.py --valid_data (default: 0)",
    )
    parser.add_argument("--dev_dir", default=None, help="the dev retrieval set's folder (qrels/dev.tsv)")
    parser.add_argument("--seed", type=int, default=42, help="the draw of the held-out articles")
    args = parser.parse_args()
    refuse_empty_paths(args, "input", "beir_dir", "pairs", "dev_dir")
    if not 0 <= args.heldout_share <= 1:
        raise ValueError(f"--heldout_share must lie in [0, 1], got {args.heldout_share}")
    if bool(args.dev_share) != bool(args.dev_dir):
        raise ValueError("--dev_share and --dev_dir go together: give both or neither")
    if not 0 <= args.dev_share <= 1 - args.heldout_share:
        raise ValueError(f"--dev_share must lie in [0, 1 - --heldout_share], got {args.dev_share}")
    for path in map(Path, args.input):
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no such file; run `bash {KORQUAD_DEV.download_script}` or pass --input")
    check_distinct_paths(args)
    if args.pairs:
        check_writable_file(args.pairs, "--pairs")
    articles = read_korquad_files(args.input)
    training, heldout = split_articles(articles, args.heldout_share, args.seed)
    if args.dev_share:  # of all the articles, drawn from those not held out
        training, dev = split_articles(training, args.dev_share * len(articles) / len(training), args.seed)
        counts = write_retrieval_set(dev, args.dev_dir, split="dev", flag="--dev_dir")
        print(f"wrote {args.dev_dir}: {counts['articles']} articles, {counts['documents']} paragraphs (dev)")
    if heldout:
        counts = write_retrieval_set(heldout, args.beir_dir)
        print(
            f"wrote {args.beir_dir}: {counts['articles']} articles, {counts['documents']} paragraphs, "
            f"{counts['queries']} questions"
        )
    if training and args.pairs:
        pairs = question_paragraph_pairs(training)
        write_train_tsv(pairs, args.pairs, "--pairs")
        print(f"wrote {args.pairs}: {len(pairs)} (question, paragraph) pairs from {len(training)} articles")
    elif training:
        print(f"{len(training)} articles not held out and no --pairs: nothing written for them")


if __name__ == "__main__":
    run_main(main)
