r"""Retrieval metrics of simcse-ko against sentence-transformers' InformationRetrievalEvaluator, same model and prompts.

The set is KorQuAD 1.0 dev as a retrieval set (question -> its paragraph), built from ../shared/data/korquad with
data/build_korquad.py. simcse-ko: SimCSEModel.encode (length-sorted, unpadded) and the exact block search of
simcse.retrieval; sentence-transformers: SentenceTransformer on the same folder (mean pooling, its own batching)
and its evaluator. Both with the same max length for queries and documents and the same prompts.

    python benchmarks/retrieval_check.py --model e5-small-ko --pooler avg --query_prompt "query: " \
        --document_prompt "passage: " --max_length 512
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

from common import REPO_ROOT, SHARED_DATA

from simcse.model import SimCSEModel
from simcse.retrieval import RETRIEVAL_KEYS, evaluate_retrieval, format_retrieval_table, load_retrieval_set


def build_korquad_dev(folder: Path, limit_articles: int | None) -> Path:
    source = SHARED_DATA / "korquad" / "KorQuAD_v1.0_dev.json"
    if limit_articles:  # smoke runs: the first articles only
        import json

        content = json.loads(source.read_text(encoding="utf-8"))
        content["data"] = content["data"][:limit_articles]
        source = folder / "korquad_small.json"
        source.write_text(json.dumps(content, ensure_ascii=False), encoding="utf-8")
    command = [sys.executable, str(REPO_ROOT / "data" / "build_korquad.py"), "--input", str(source)]
    subprocess.run([*command, "--beir_dir", str(folder / "korquad_dev")], check=True, stdout=subprocess.DEVNULL)
    return folder / "korquad_dev"


def sentence_transformers_metrics(model_path: str, data, args) -> dict[str, float]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from sentence_transformers import SentenceTransformer
        from sentence_transformers.evaluation import InformationRetrievalEvaluator

    model = SentenceTransformer(model_path, device="cpu")
    model.max_seq_length = args.max_length
    evaluator = InformationRetrievalEvaluator(
        dict(zip(data.query_ids, data.query_texts)),
        dict(zip(data.corpus_ids, data.corpus_texts)),
        {query: set(documents) for query, documents in data.qrels.items()},
        ndcg_at_k=[10],
        mrr_at_k=[10],
        map_at_k=[100],
        accuracy_at_k=[1],
        precision_recall_at_k=[1, 5, 10, 100],
        query_prompt=args.query_prompt,
        corpus_prompt=args.document_prompt,
        batch_size=args.batch_size,
        show_progress_bar=False,
    )
    found = evaluator(model)
    return {
        key: found[f"{evaluator.name}_cosine_{key}" if evaluator.name else f"cosine_{key}"] for key in RETRIEVAL_KEYS
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="a model folder with sentence-transformers files or none")
    parser.add_argument("--pooler", default="avg")
    parser.add_argument("--query_prompt", default="")
    parser.add_argument("--document_prompt", default="")
    parser.add_argument("--max_length", type=int, default=512, help="tokens per query and per document, both sides")
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--limit_articles", type=int, default=None, help="smoke runs: the first N articles")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        data = load_retrieval_set(build_korquad_dev(Path(scratch), args.limit_articles))
    print(f"KorQuAD 1.0 dev: {len(data.query_ids)} questions over {len(data.corpus_ids)} paragraphs")
    model = SimCSEModel(args.model, pooler=args.pooler, max_length=args.max_length, prompt="")
    started = time.perf_counter()
    ours = evaluate_retrieval(model, data, args.batch_size, args.max_length, args.query_prompt, args.document_prompt)
    ours_seconds = time.perf_counter() - started
    started = time.perf_counter()
    theirs = sentence_transformers_metrics(args.model, data, args)
    theirs_seconds = time.perf_counter() - started
    print(format_retrieval_table({"simcse-ko eval": ours, "sentence-transformers evaluator": theirs}))
    difference = max(abs(ours[key] - theirs[key]) for key in RETRIEVAL_KEYS)
    print(f"max abs difference: {difference:.2e}; wall time {ours_seconds:.1f} s vs {theirs_seconds:.1f} s")


if __name__ == "__main__":
    main()
