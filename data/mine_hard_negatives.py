r"""Mine hard negatives for retrieval training: each query's nearest corpus documents that are not its positives,
written as the JSONL that train.py's --num_negatives reads ({"query", "pos", "neg", "pos_scores", "neg_scores"}).

    python data/mine_hard_negatives.py --model intfloat/multilingual-e5-small --query_prompt "query: " \
        --document_prompt "passage: " --pairs data/korquad/korquad_train_pairs.tsv --output korquad_train.jsonl

--pairs is a TSV of (query, positive) pairs with the header sent0<TAB>sent1 (a query on several lines has
several positives) or a .jsonl of {"query", "pos"}; --corpus (one document per line, or a BEIR corpus.jsonl or
folder) defaults to the pairs' distinct positives. Ranks by cosine similarity with the model's prompts; the
positives are removed, then the --skip_top nearest, then (--max_score_ratio) every candidate scoring above that
share of the query's lowest positive score.
"""

import argparse
from pathlib import Path

from simcse.cli import check_writable_file, refuse_empty_paths, run_main
from simcse.poolers import POOLERS


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="checkpoint folder or hub name")
    parser.add_argument("--pairs", required=True, help="(query, positive) pairs: a sent0/sent1 TSV or a .jsonl")
    parser.add_argument("--corpus", default=None, help="documents to mine from (default: the pairs' positives)")
    parser.add_argument("--output", required=True, help="the JSONL written")
    parser.add_argument("--num_negatives", type=int, default=8, help="negatives written per query (default: 8)")
    parser.add_argument("--skip_top", type=int, default=0, help="nearest non-positive candidates skipped (default: 0)")
    parser.add_argument(
        "--max_score_ratio",
        type=float,
        default=None,
        help="drop candidates scoring above this share of the query's lowest positive score, e.g. 0.95 (default: none)",
    )
    parser.add_argument("--candidates", type=int, default=100, help="ranks examined per query (default: 100)")
    parser.add_argument("--query_prompt", default=None, metavar="TEXT", help="default: the checkpoint's")
    parser.add_argument("--document_prompt", default=None, metavar="TEXT", help="default: the checkpoint's")
    parser.add_argument(
        "--document_max_length", type=int, default=None, help="tokens per document (default: the checkpoint's)"
    )
    parser.add_argument(
        "--pooler",
        default=None,
        choices=tuple(POOLERS),
        help="how a text's vector is taken (default: the checkpoint's)",
    )
    parser.add_argument("--batch_size", type=int, default=None, help="default: 32 on a CPU, 256 on a GPU")
    parser.add_argument("--device", default="auto", help="auto (CUDA if available, else CPU), cpu, cuda, ...")
    return parser


def main() -> None:
    args = build_parser().parse_args()
    refuse_empty_paths(args, "model", "pairs", "corpus", "output")
    from simcse.mining import MiningSettings

    settings = MiningSettings(args.num_negatives, args.skip_top, args.max_score_ratio, args.candidates)
    if problem := settings.problem():
        raise ValueError(problem)
    from simcse.mining import corpus_file, mine_hard_negatives, read_corpus, read_pairs, write_mined

    output = Path(args.output)
    for flag, source in (("--pairs", args.pairs), ("--corpus", args.corpus and corpus_file(args.corpus))):
        if source and output.exists() and output.resolve() == Path(source).resolve():
            raise ValueError(f"--output {output} is also an input ({flag}): writing it would replace {source}")
    check_writable_file(output, "--output")
    from simcse.device import resolve_device
    from simcse.model import SimCSEModel

    queries, positives = read_pairs(args.pairs)
    corpus = read_corpus(args.corpus) if args.corpus else list(dict.fromkeys(t for texts in positives for t in texts))
    model = SimCSEModel(
        args.model,
        pooler=args.pooler,
        query_prompt=args.query_prompt,
        document_prompt=args.document_prompt,
        document_max_length=args.document_max_length,
    ).to(resolve_device(args.device))
    print(
        f"mining {len(queries)} queries against {len(corpus)} documents with {args.model} (pooler {model.pooler}, "
        f"prompts {model.prompt_for('query')!r} / {model.prompt_for('document')!r}, documents up to "
        f"{model.document_max_length} tokens)"
    )
    mined = mine_hard_negatives(model, queries, positives, corpus, settings, args.batch_size)
    print(write_mined(mined, output, settings.num_negatives))


if __name__ == "__main__":
    run_main(main)
