#!/usr/bin/env bash
# Supervised SimCSE on several GPUs of one machine with torchrun (DDP). --batch_size stays the global batch:
# each of the NPROC processes takes batch/NPROC examples of every batch, and every anchor is contrasted with
# the positives and hard negatives of all processes (gathered with their gradients), exactly as one GPU with
# the whole batch would do.
#
#   NPROC=4 bash train/run_train_ddp.sh                                  # 4 GPUs, global batch 256
#   NPROC=4 bash train/run_train_ddp.sh --batch_size 1024 --grad_cache_chunk 64   # a batch larger than memory
#
# Several machines: run on each (same command, same flags) with torchrun's rendezvous flags instead of
# --standalone, e.g. torchrun --nnodes 2 --nproc_per_node 8 --rdzv_backend c10d --rdzv_endpoint HOST:29400 ...
source "$(dirname "${BASH_SOURCE[0]}")/recipe.sh"
NPROC=${NPROC:-$(python -c "import torch; print(max(torch.cuda.device_count(), 1))")}
OUTPUT=${OUTPUT:-$ROOT/outputs/sup-simcse-$(basename "$MODEL")-ddp}

# torchrun, through simcse.launch: a failed process ends in its own error line, not torchrun's launcher traceback.
python -m simcse.launch --standalone --nproc_per_node "$NPROC" "$ROOT/train/train.py" "${RECIPE[@]}" \
  --train_data "$ROOT/data/kornli/kornli_triplets.tsv" \
  --output_path "$OUTPUT" \
  --eval_steps 125 \
  "$@"
