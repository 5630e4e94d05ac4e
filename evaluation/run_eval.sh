#!/usr/bin/env bash
# Evaluate a checkpoint on KorSTS dev and test and KLUE-STS dev (downloaded by data/download_korsts.sh
# and data/download_klue_sts.sh); the pooler and max length come from the checkpoint.
#
#   bash evaluation/run_eval.sh                                       # outputs/sup-simcse-bert-base
#   MODEL=outputs/unsup-simcse-roberta-base bash evaluation/run_eval.sh
#   bash evaluation/run_eval.sh --test_data korsts_test               # any eval.py flag overrides
source "$(dirname "${BASH_SOURCE[0]}")/../train/help.sh"
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
MODEL=${MODEL:-$ROOT/outputs/sup-simcse-bert-base}

python "$ROOT/evaluation/eval.py" \
  --model "$MODEL" \
  --test_data korsts_dev korsts_test klue_sts_dev \
  --output_json "$MODEL/eval_results.json" \
  "$@"
