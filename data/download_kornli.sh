#!/usr/bin/env bash
# KorNLI (Ham et al., 2020; CC BY-SA 4.0) from the GitHub repository kakaobrain/KorNLUDatasets, into
# data/kornli/. The SNLI and MNLI train files feed data/build_nli_triplets.py (supervised SimCSE).
source "$(dirname "${BASH_SOURCE[0]}")/download.sh"
BASE_URL=${KORNLU_URL:-https://raw.githubusercontent.com/kakaobrain/KorNLUDatasets/master}

for file in snli_1.0_train.ko.tsv multinli.train.ko.tsv xnli.dev.ko.tsv xnli.test.ko.tsv; do
  download "$BASE_URL/KorNLI/$file" "$DATA_DIR/kornli/$file"
done
