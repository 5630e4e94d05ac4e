#!/usr/bin/env bash
# The multitask recipe: supervised SimCSE on KorNLI triplets and scored pairs of KorSTS train, in one of two ways.
#
#   MODE=joint (default): one run over both datasets at once, batches alternating round-robin between the
#     triplets (InfoNCE, batch 64) and KorSTS train (cosine_mse, sentence-transformers' CosineSimilarityLoss,
#     batch 8), mean pooling, 5 epochs each as long as twice the smaller dataset's batches, lr 2e-5, 10% warmup:
#     the published training_multi_task.py of jhgan/ko-sroberta-multitask and upskyy/kf-deberta-multitask, on this
#     package's reference encoders. Folder OUTPUT/joint. The default because it beat sequential on the same budget
#     (benchmarks/RESULTS.md, "Joint or sequential").
#   MODE=sequential: stage 1 is supervised SimCSE on the triplets (train/recipe.sh's reference recipe); stage 2
#     starts from stage 1's best checkpoint and trains CoSENT on KorSTS train (4 epochs, batch 32, lr 2e-5),
#     selected on KorSTS dev. Folders OUTPUT/stage1 and OUTPUT/stage2.
# KorSTS train is then part of the model's training data: report KorSTS test and KLUE-STS dev, never KorSTS
# train, and say that the model saw KorSTS train.
#
# Ingredients (once):
#   bash data/download_kornli.sh && python data/build_nli_triplets.py   # -> data/kornli/kornli_triplets.tsv
#   bash data/download_korsts.sh && bash data/download_klue_sts.sh      # KorSTS train/dev/test, KLUE-STS dev
#
#   bash train/run_train_multitask.sh                               # klue/bert-base -> outputs/multitask-bert-base
#   MODE=sequential bash train/run_train_multitask.sh               # the two-stage recipe
#   MODEL=klue/roberta-base bash train/run_train_multitask.sh       # another encoder
#   bash train/run_train_multitask.sh --seed 7                      # flags go to every run
#   bash train/run_train_multitask.sh --output_path X               # X/joint, or X/stage1 and X/stage2 (or OUTPUT=X)
# TRIPLETS, SCORED (a file or dataset name) and EVAL_DATA replace the triplets, the scored pairs and the final
# evaluation's sets. --output_path is never passed on as it is: each run writes its own folder under it, so that
# --overwrite_output_path clears only that run's earlier one, never stage 1's model that stage 2 reads.
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

MODE=${MODE:-joint}
case "$MODE" in
  joint)
    echo "joint: InfoNCE on $TRIPLETS and cosine_mse on $SCORED, round-robin -> $OUTPUT/joint"
    python "$ROOT/train/train.py" "${RECIPE[@]}" \
      --train_data "$TRIPLETS" "$SCORED" \
      --objective simcse cosine_mse \
      --batch_size 64 8 \
      --mixture round_robin \
      --pooler avg \
      --epochs 5 \
      --learning_rate 2e-5 \
      --warmup_ratio 0.1 \
      --eval_steps 250 \
      --output_path "$OUTPUT/joint" \
      "$@"
    FINAL=$OUTPUT/joint ;;
  sequential) FINAL=$OUTPUT/stage2 ;;
  *) echo "error: MODE must be joint or sequential, got '$MODE'" >&2; exit 2 ;;
esac

if [[ $MODE == sequential ]]; then
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

fi

python "$ROOT/evaluation/eval.py" \
  --model "$FINAL" \
  --test_data "${EVAL_DATA[@]}" \
  --output_json "$FINAL/eval_results.json"
