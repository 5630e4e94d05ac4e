"""Build supervised SimCSE triplets (sent0, sent1, hard_neg) from KorNLI training files.

One triplet per premise that has both an entailment and a contradiction hypothesis; sentences verbatim.

    bash data/download_kornli.sh
    python data/build_nli_triplets.py      # -> data/kornli/kornli_triplets.tsv
"""

import argparse
from pathlib import Path

from simcse.cli import check_writable_file, refuse_empty_paths, run_main
from simcse.nli import NLI_LABELS, nli_triplets
from simcse.registry import KORNLI_DOWNLOAD_SCRIPT
from simcse.train_data import write_train_tsv

KORNLI = Path(__file__).resolve().parent / "kornli"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--input",
        nargs="+",
        default=[str(KORNLI / "snli_1.0_train.ko.tsv"), str(KORNLI / "multinli.train.ko.tsv")],
        help="NLI TSVs with the header sentence1, sentence2, gold_label (default: the KorNLI train files)",
    )
    parser.add_argument(
        "--output",
        default=str(KORNLI / "kornli_triplets.tsv"),
        help="the triplet TSV written (header sent0, sent1, hard_neg; default: data/kornli/kornli_triplets.tsv)",
    )
    args = parser.parse_args()
    refuse_empty_paths(args, "input", "output")
    output = Path(args.output)
    for path in map(Path, args.input):
        if not path.exists():
            raise FileNotFoundError(f"{path}: no such file; run `bash {KORNLI_DOWNLOAD_SCRIPT}` or pass --input")
        if output.exists() and output.resolve() == path.resolve():
            raise ValueError(f"--output {output} is also an --input: writing it would replace the NLI file")
    check_writable_file(output, "--output")
    triplets, report = nli_triplets(args.input)
    if not len(triplets):
        print(report)  # why every row went unused
        raise ValueError(
            f"no premise in {', '.join(args.input)} has both an entailment and a contradiction (see the skip "
            f"report above; labels must be {', '.join(NLI_LABELS)})"
        )
    write_train_tsv(triplets, args.output)
    print(f"{report}\nwrote {args.output}")


if __name__ == "__main__":
    run_main(main)
