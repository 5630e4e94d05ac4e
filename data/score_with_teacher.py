r"""Score retrieval training data with a teacher, for distillation (train.py --distill_weight): each query's pos and
neg documents get the teacher's pos_scores / neg_scores (FlagEmbedding's format), written to --output.

    python data/score_with_teacher.py --teacher BAAI/bge-reranker-v2-m3 \
        --input data/korquad/korquad_train.jsonl --output data/korquad/korquad_train_scored.jsonl

--teacher is a cross-encoder (a ...ForSequenceClassification model with one logit per pair: the logit is the
score) or a bi-encoder the package loads (the cosine of query and document, with its saved pooler and prompts
unless --pooler / --query_prompt / --document_prompt say otherwise). Interrupted,
the same command goes on where it stopped: the queries already in --output are kept and skipped. --input is never
written.
"""

import argparse
from pathlib import Path

from simcse.cli import check_writable_file, refuse_empty_paths, run_main
from simcse.poolers import POOLERS


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--teacher", required=True, help="cross-encoder or bi-encoder: checkpoint folder or hub name")
    parser.add_argument("--input", required=True, help="retrieval .jsonl of {query, pos, neg}")
    parser.add_argument("--output", required=True, help="the .jsonl written: the input's lines with the scores")
    parser.add_argument("--batch_size", type=int, default=32, help="texts or pairs per forward pass (default: 32)")
    parser.add_argument(
        "--max_length",
        type=int,
        default=512,
        help="tokens per (query, document) pair of a cross-encoder, per document of a bi-encoder (default: 512)",
    )
    bi_encoder = parser.add_argument_group("a bi-encoder teacher (default: what its folder declares)")
    bi_encoder.add_argument("--pooler", default=None, choices=tuple(POOLERS), help="how a text's vector is taken")
    bi_encoder.add_argument("--query_prompt", default=None, metavar="TEXT", help="text put before every query")
    bi_encoder.add_argument("--document_prompt", default=None, metavar="TEXT", help="text put before every document")
    parser.add_argument("--device", default="auto", help="auto (CUDA if available, else CPU), cpu, cuda, ...")
    return parser


def main() -> None:
    args = build_parser().parse_args()
    refuse_empty_paths(args, "teacher", "input", "output")
    for flag in ("batch_size", "max_length"):
        if getattr(args, flag) < 1:
            raise ValueError(f"--{flag} must be at least 1, got {getattr(args, flag)}")
    output = Path(args.output)
    if output.exists() and output.resolve() == Path(args.input).resolve():
        raise ValueError(f"--output {output} is the --input: writing it would replace the input")
    check_writable_file(output, "--output")
    from simcse.device import resolve_device
    from simcse.teacher import load_teacher, score_file

    bi_encoder = {"pooler": args.pooler, "query_prompt": args.query_prompt, "document_prompt": args.document_prompt}
    teacher = load_teacher(args.teacher, resolve_device(args.device), args.max_length, args.batch_size, bi_encoder)
    scored, before = score_file(teacher, args.input, output)
    kept = f" ({before} scored before kept)" if before else ""
    print(f"scored {scored} queries with the {teacher.kind} {args.teacher}{kept}: {output}")


if __name__ == "__main__":
    run_main(main)
