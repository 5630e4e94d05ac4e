#!/usr/bin/env bash
# Train once per seed, then report mean ± std over the seeds: SimCSE results move by a point or two with the
# seed alone, so report several.
#
#   bash train/run_seeds.sh 42 43 44 -- --train_data data/kornli/kornli_triplets.tsv \
#       --output_path outputs/sup-seeds --amp
#
# Each seed trains into OUTPUT/seed-N/ (OUTPUT: the --output_path among the flags). With EVAL_DATA set
# (e.g. EVAL_DATA="korsts_dev korsts_test klue_sts_dev") each best checkpoint is also evaluated on those sets.
# Then evaluation/summarize.py prints the table with mean ± std and writes OUTPUT/summary.json.
source "$(dirname "${BASH_SOURCE[0]}")/help.sh"
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

seeds=()
while [ $# -gt 0 ] && [ "$1" != "--" ]; do seeds+=("$1"); shift; done
[ $# -gt 0 ] && shift  # the --
[ ${#seeds[@]} -gt 0 ] || { echo "usage: run_seeds.sh SEED [SEED ...] -- TRAIN_FLAGS" >&2; exit 2; }

flags=() output=""
while [ $# -gt 0 ]; do
  case "$1" in
    --output_path) output=${2:?--output_path needs a value}; shift 2 ;;
    --output_path=*) output=${1#--output_path=}; shift ;;
    --seed|--seed=*) echo "error: give the seeds before --, not as --seed" >&2; exit 2 ;;
    *) flags+=("$1"); shift ;;
  esac
done
[ -n "$output" ] || { echo "error: --output_path is required among the train flags" >&2; exit 2; }

for seed in "${seeds[@]}"; do
  echo "=== seed $seed -> $output/seed-$seed"
  python "$ROOT/train/train.py" "${flags[@]}" --seed "$seed" --output_path "$output/seed-$seed"
  if [ -n "${EVAL_DATA:-}" ]; then
    # shellcheck disable=SC2086  # EVAL_DATA is a list of dataset names
    python "$ROOT/evaluation/eval.py" --model "$output/seed-$seed" --test_data $EVAL_DATA \
      --output_json "$output/seed-$seed/eval_results.json"
  fi
done
python "$ROOT/evaluation/summarize.py" "$output"
