# The reference recipe shared by run_train_supervised.sh and run_train_unsupervised.sh (sourced by both):
# 1 epoch, batch 256, max length 64, lr 5e-5 (linear decay), dropout 0.1, temperature 0.05, CLS pooler,
# AMP, model selection on KorSTS dev by cosine Spearman. Edit here to change both; flags given to the run
# scripts come later on the command line and win.
source "$(dirname "${BASH_SOURCE[0]}")/help.sh"
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
MODEL=${MODEL:-klue/bert-base}
RECIPE=(
  --model "$MODEL"
  --valid_data korsts_dev
  --epochs 1
  --batch_size 256
  --max_length 64
  --learning_rate 5e-5
  --dropout 0.1
  --temp 0.05
  --pooler cls
  --amp
)
