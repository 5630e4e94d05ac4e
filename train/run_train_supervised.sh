#!/usr/bin/env bash
# Supervised SimCSE: KorNLI triplets (premise, entailment as positive, contradiction as hard negative),
# with the reference recipe of train/recipe.sh; the MLP head is used in training and evaluation.
#
# Ingredients (once):
#   bash data/download_kornli.sh && python data/build_nli_triplets.py   # -> data/kornli/kornli_triplets.tsv
#   bash data/download_korsts.sh                                        # dev set for model selection
#
#   bash train/run_train_supervised.sh                            # klue/bert-base
#   MODEL=klue/roberta-base bash train/run_train_supervised.sh    # another encoder
#   bash train/run_train_supervised.sh --batch_size 128 --seed 7  # any train.py flag overrides
source "$(dirname "${BASH_SOURCE[0]}")/recipe.sh"
OUTPUT=${OUTPUT:-$ROOT/outputs/sup-simcse-$(basename "$MODEL")}

python "$ROOT/train/train.py" "${RECIPE[@]}" \
  --train_data "$ROOT/data/kornli/kornli_triplets.tsv" \
  --output_path "$OUTPUT" \
  --eval_steps 125 \
  "$@"
