#!/usr/bin/env bash
# KorSTS (Ham et al., 2020; CC BY-SA 4.0) from the GitHub repository kakaobrain/KorNLUDatasets,
# into data/korsts/, where the dataset names korsts_train, korsts_dev and korsts_test look.
source "$(dirname "${BASH_SOURCE[0]}")/download.sh"
BASE_URL=${KORNLU_URL:-https://raw.githubusercontent.com/kakaobrain/KorNLUDatasets/master}

for split in train dev test; do
  download "$BASE_URL/KorSTS/sts-$split.tsv" "$DATA_DIR/korsts/sts-$split.tsv"
done
