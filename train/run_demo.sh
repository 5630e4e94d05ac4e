#!/usr/bin/env bash
# The offline demo: no network, no GPU; 37 s on 2 idle CPU cores (median of 3 runs, README "Demo").
#  1. writes templated Korean sentences whose similarity is known by construction (data/make_demo_data.py);
#  2. builds a small BERT with random weights and a WordPiece tokenizer trained on those sentences;
#  3. trains supervised SimCSE on NLI-like triplets, evaluating on the dev pairs as it goes;
#  4. evaluates the best checkpoint on the dev and test pairs.
# Watch dev cosine Spearman climb from its value at step 0. Extra arguments go to train.py.
#
#   bash train/run_demo.sh                  # outputs/demo/
#   DEMO_DIR=/tmp/demo bash train/run_demo.sh --epochs 3
source "$(dirname "${BASH_SOURCE[0]}")/help.sh"
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DEMO_DIR=${DEMO_DIR:-$ROOT/outputs/demo}

python "$ROOT/data/make_demo_data.py" --output_dir "$DEMO_DIR/data"
python "$ROOT/train/build_random_model.py" --corpus "$DEMO_DIR/data/corpus.txt" --output_path "$DEMO_DIR/random-bert"
# A random encoder needs a larger learning rate and more passes than a pretrained one.
# The demo's model folder is the demo's own: a second demo run replaces the first.
python "$ROOT/train/train.py" \
  --model "$DEMO_DIR/random-bert" \
  --train_data "$DEMO_DIR/data/train.tsv" \
  --valid_data "$DEMO_DIR/data/dev.tsv" \
  --output_path "$DEMO_DIR/model" \
  --epochs 8 \
  --batch_size 64 \
  --max_length 32 \
  --learning_rate 1e-3 \
  --warmup_ratio 0.1 \
  --eval_steps 100 \
  --overwrite_output_path \
  "$@"
python "$ROOT/evaluation/eval.py" \
  --model "$DEMO_DIR/model" \
  --test_data "$DEMO_DIR/data/dev.tsv" "$DEMO_DIR/data/test.tsv" \
  --output_json "$DEMO_DIR/model/eval_results.json"
