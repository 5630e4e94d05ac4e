#!/usr/bin/env bash
# usage: bash benchmarks/gpu_check.sh [--out DIR] [--device cuda|cpu] [--smoke]
# The GPU check, for the rare session that is lent a GPU: one command, sized for under 8 minutes on one H100
# (not yet run on one).
#  1. the machine: GPU, driver, torch / transformers versions;
#  2. the CUDA tests (tests/test_cuda.py: unpadded vs padded forward and gradients in float32, bf16 and fp16,
#     the loss under autocast, GradCache's CUDA RNG replay, AMP training, K hard negatives under AMP,
#     512-token documents with variable-length attention, encode, exact resume, the retrieval recipe's terms
#     (distillation, false-negative guards, Matryoshka sizes) under autocast and in AMP training, a decoder with
#     LoRA and bf16 weights (--model_dtype), gradient checkpointing under AMP);
#  3. benchmarks/gpu_step.py: a klue/bert-base-shaped step, batch 256 triplets, bf16: padded against unpadded;
#  4. benchmarks/grad_cache_memory.py --device cuda: peak memory with and without GradCache.
# Every part runs even when one before it fails; each writes its full log beside one results file,
# gpu_check.md, in the folder it names. The exit status is 1 when a part failed.
#
#   bash benchmarks/gpu_check.sh                          # results in outputs/gpu-check/
#   bash benchmarks/gpu_check.sh --out "$OUT/gpu-check"   # on the lent machine: the folder that comes back
#   bash benchmarks/gpu_check.sh --smoke --device cpu     # its plumbing on any machine, in seconds
source "$(dirname "${BASH_SOURCE[0]}")/../train/help.sh"
set -uo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

usage=$(sed -n "s/^# \(usage: .*\)/\1/p" "$0")  # the header's usage line
out=$ROOT/outputs/gpu-check
device=cuda
smoke=0
while (($#)); do
  case $1 in
    --out)
      [[ $# -ge 2 && -n $2 ]] || { echo "gpu_check.sh: --out needs a folder; $usage" >&2; exit 2; }
      out=$2
      shift 2
      ;;
    --device)
      [[ ${2:-} == cuda || ${2:-} == cpu ]] || { echo "gpu_check.sh: --device takes cuda or cpu; $usage" >&2; exit 2; }
      device=$2
      shift 2
      ;;
    --smoke) smoke=1; shift ;;
    -h | --help) echo "$usage"; exit 0 ;;
    *) echo "gpu_check.sh: unknown argument '$1'; $usage" >&2; exit 2 ;;
  esac
done

PYTHON=${PYTHON:-python3}
export PYTHONUNBUFFERED=1
cd "$ROOT"
# A bare GPU machine has torch and transformers but not this package: install it in place, offline.
"$PYTHON" -c "import simcse" 2>/dev/null ||
  "$PYTHON" -m pip install --quiet --no-deps --no-build-isolation -e . ||
  { echo "gpu_check.sh: cannot import or install the simcse package" >&2; exit 1; }

mkdir -p "$out" || { echo "gpu_check.sh: cannot create $out" >&2; exit 2; }
results=$out/gpu_check.md
{
  echo "# GPU check, $(date -u '+%Y-%m-%d %H:%M UTC')"
  echo
  echo "commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown); device $device; smoke $smoke"
} >"$results"
summary=()
failed=0

# part NAME COMMAND...: runs the command with its output in NAME.log, then adds it to the results file.
part() {
  local name=$1 started status seconds
  shift
  echo "== $name: $*"
  started=$(date +%s)
  "$@" >"$out/$name.log" 2>&1
  status=$?
  seconds=$(($(date +%s) - started))
  {
    echo
    echo "## $name ($( ((status)) && echo "FAILED, exit $status" || echo ok), ${seconds} s)"
    echo
    echo "\`$*\`"
    echo
    # Tables and summary lines as they are; anything else of a failed part as its last lines.
    if ((status)); then
      echo '```'
      tail -n 30 "$out/$name.log"
      echo '```'
    else
      grep -E '^\||^[0-9]+ (passed|skipped|failed)|passed|skipped|^device|^matmul|/ padded' "$out/$name.log"
    fi
  } >>"$results"
  summary+=("| $name | $( ((status)) && echo FAILED || echo ok) | $seconds |")
  ((status)) && failed=1
  return 0
}

machine() {
  echo "| nvidia-smi | $(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>&1) |"
  "$PYTHON" - <<'EOF'
import torch, transformers
name = torch.cuda.get_device_name() if torch.cuda.is_available() else "none"
print(f"| torch {torch.__version__} | transformers {transformers.__version__} | CUDA {torch.version.cuda} | {name} |")
EOF
}

if ((smoke)); then
  step_flags=(--tiny --steps 2 --warmup 1 --batch_size 8)
  memory_flags=(--configs 8 8:4)
else
  step_flags=()
  memory_flags=()
fi
part machine machine
part cuda_tests "$PYTHON" -m pytest -q -m cuda -p no:cacheprovider tests/test_cuda.py
part gpu_step "$PYTHON" benchmarks/gpu_step.py --device "$device" "${step_flags[@]}"
part grad_cache_memory "$PYTHON" benchmarks/grad_cache_memory.py --device "$device" "${memory_flags[@]}"

{
  echo
  echo "## Summary"
  echo
  echo "| part | status | seconds |"
  echo "|---|---|---:|"
  printf '%s\n' "${summary[@]}"
} >>"$results"
echo "results: $results"
exit $failed
