#!/usr/bin/env bash
# The multitask recipe of the best public Korean models: stage 1 is supervised SimCSE on KorNLI triplets (the
# reference recipe of train/recipe.sh); stage 2 starts from stage 1's best checkpoint and trains CoSENT on the
# scored pairs of KorSTS train, selected on KorSTS dev. Both stages keep the CLS pooler and its head.
# KorSTS train is then part of the model's training data: report KorSTS test and KLUE-STS dev, never KorSTS
# train, and say that the model saw KorSTS train.
#
# Ingredients (once):
#   bash data/download_kornli.sh && python data/build_nli_triplets.py   # -> data/kornli/kornli_triplets.tsv
#   bash data/download_korsts.sh && bash data/download_klue_sts.sh      # KorSTS train/dev/test, KLUE-STS dev
#
#   bash train/run_train_multitask.sh                               # klue/bert-base -> outputs/multitask-bert-base
#   MODEL=klue/roberta-base bash train/run_train_multitask.sh       # another encoder
#   bash train/run_train_multitask.sh --seed 7                      # flags go to both stages
#   bash train/run_train_multitask.sh --output_path X               # X/stage1 and X/stage2 (or OUTPUT=X)
# TRIPLETS, SCORED (a file or dataset name) and EVAL_DATA replace the data of stage 1, stage 2 and the final
# evaluation. --output_path is never passed on as it is: each stage writes its own folder under it, so that
# --overwrite_output_path clears only that stage's earlier run, never stage 1's model that stage 2 reads.
source "$(dirname "${BASH_SOURCE[0]}")/recipe.sh"
OUTPUT=${OUTPUT:-$ROOT/outputs/multitask-$(basename "$MODEL")}
FLAGS=()
while (($#)); do
  case "$1" in
    --output_path) [[ $# -ge 2 ]] || { echo "error: --output_path needs a folder" >&2; exit 2; }
                   OUTPUT=$2; shift 2 ;;
    --output_path=*) OUTPUT=${1#--output_path=}; shift ;;
    *) FLAGS+=("$1"); shift ;;
  esac
done
[[ -n "$OUTPUT" ]] || { echo "error: --output_path is empty: give a folder (an unset variable?)" >&2; exit 2; }
set -- "${FLAGS[@]}"
TRIPLETS=${TRIPLETS:-$ROOT/data/kornli/kornli_triplets.tsv}
SCORED=${SCORED:-korsts_train}
read -r -a EVAL_DATA <<< "${EVAL_DATA:-korsts_dev korsts_test klue_sts_dev}"

echo "stage 1: supervised SimCSE on $TRIPLETS -> $OUTPUT/stage1"
python "$ROOT/train/train.py" "${RECIPE[@]}" \
  --train_data "$TRIPLETS" \
  --output_path "$OUTPUT/stage1" \
  --eval_steps 125 \
  "$@"

# Stage 2: a few epochs of small batches on 5,749 pairs, as sentence-transformers fine-tunes on STS; the CoSENT
# scale is 1/--temp (20).
echo "stage 2: CoSENT on $SCORED from $OUTPUT/stage1 -> $OUTPUT/stage2"
python "$ROOT/train/train.py" "${RECIPE[@]}" \
  --model "$OUTPUT/stage1" \
  --objective cosent \
  --train_data "$SCORED" \
  --output_path "$OUTPUT/stage2" \
  --epochs 4 \
  --batch_size 32 \
  --learning_rate 2e-5 \
  --warmup_ratio 0.1 \
  --eval_steps 50 \
  "$@"

python "$ROOT/evaluation/eval.py" \
  --model "$OUTPUT/stage2" \
  --test_data "${EVAL_DATA[@]}" \
  --output_json "$OUTPUT/stage2/eval_results.json"
