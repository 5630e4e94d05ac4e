#!/usr/bin/env bash
# KLUE-STS v1.1 (Park et al., 2021; CC BY-SA 4.0) from the GitHub repository KLUE-benchmark/KLUE,
# into data/klue_sts/, where the dataset names klue_sts_train and klue_sts_dev look.
source "$(dirname "${BASH_SOURCE[0]}")/download.sh"
BASE_URL=${KLUE_URL:-https://raw.githubusercontent.com/KLUE-benchmark/KLUE/main/klue_benchmark/klue-sts-v1.1}

for split in train dev; do
  download "$BASE_URL/klue-sts-v1.1_$split.json" "$DATA_DIR/klue_sts/klue-sts-v1.1_$split.json"
done
