#!/usr/bin/env bash
# Unsupervised SimCSE: each Korean Wikipedia sentence is its own positive; the two dropout masks of its two
# encodings are the only augmentation. Reference recipe of train/recipe.sh, and, as in the SimCSE paper's
# unsupervised models, the MLP head is used in training only (--mlp_only_train): evaluation and the saved
# embedding take the CLS vector before the head.
#
# Ingredients (once):
#   bash data/download_korean_wiki_1m.sh    # -> data/korean_wiki_1m.txt
#   bash data/download_korsts.sh            # dev set for model selection
#
#   bash train/run_train_unsupervised.sh
#   MODEL=klue/roberta-base bash train/run_train_unsupervised.sh --seed 7
source "$(dirname "${BASH_SOURCE[0]}")/recipe.sh"
OUTPUT=${OUTPUT:-$ROOT/outputs/unsup-simcse-$(basename "$MODEL")}

python "$ROOT/train/train.py" "${RECIPE[@]}" \
  --train_data "$ROOT/data/korean_wiki_1m.txt" \
  --output_path "$OUTPUT" \
  --mlp_only_train \
  --eval_steps 250 \
  "$@"
