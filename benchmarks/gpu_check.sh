#!/usr/bin/env bash
# The GPU path, measured: one short script (< 5 minutes on one modern GPU).
#
#   bash benchmarks/gpu_check.sh [OUT_DIR]        (default OUT_DIR: $OUT, else /tmp/gpu_check)
#
# 1. the CUDA tests (tests/core/test_cuda.py, marked "cuda"; they skip without a GPU);
# 2. classify throughput: core vs a plain torchvision loop vs the bf16/fp16 matmul ceiling of
#    this card, with channels_last, bf16 autocast and torch.compile tried (benchmarks/gpu_bench.py);
# 3. the demo trained on the GPU (deparray-ctc demo --device cuda);
# 4. two-rank DistributedDataParallel training (NCCL) when the machine has two GPUs or more.
# Every step's output goes to OUT_DIR/*.log and OUT_DIR/gpu_bench.json; the last lines say
# which steps passed. Nothing in CI runs this: it needs a GPU.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT_DIR="${1:-${OUT:-/tmp/gpu_check}}"
mkdir -p "$OUT_DIR"
PY="${PYTHON:-python}"
if [ -x .venv/bin/python ] && [ -z "${PYTHON:-}" ]; then PY=.venv/bin/python; fi
export PYTHONUNBUFFERED=1 DEPARRAY_CTC_CACHE_DIR="$OUT_DIR/cache"
declare -A STATUS
step() {  # step NAME TIMEOUT_S COMMAND...
    local name="$1" limit="$2"; shift 2
    echo "== $name (limit ${limit} s): $*"
    local start=$SECONDS
    timeout "$limit" "$@" > "$OUT_DIR/$name.log" 2>&1
    local rc=$?
    tail -n 25 "$OUT_DIR/$name.log"
    STATUS[$name]="rc=$rc, $((SECONDS - start)) s"
    echo "== $name: ${STATUS[$name]}"
}

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT_DIR/gpus.txt"
NGPU=$(nvidia-smi -L 2>/dev/null | wc -l)
"$PY" -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'available', torch.cuda.is_available())"

step cuda_tests 120 "$PY" -m pytest tests/core/test_cuda.py -q -p no:cacheprovider -rs
step throughput 150 "$PY" benchmarks/gpu_bench.py --device cuda --json "$OUT_DIR/gpu_bench.json"
step demo 150 "$PY" -m napari_deparray_ctc demo --device cuda --threads 4 --out "$OUT_DIR/demo"
if [ "$NGPU" -ge 2 ] && [ -d "$OUT_DIR/demo" ]; then
    TRAIN_EXPORT="$OUT_DIR/demo/train_export"
    step ddp_2_gpus 120 "$PY" -m torch.distributed.run --nproc-per-node 2 -m napari_deparray_ctc \
        train "$TRAIN_EXPORT" --out "$OUT_DIR/ddp.pt" --device cuda --epochs 4
else
    STATUS[ddp_2_gpus]="skipped: $NGPU GPU(s)"
fi
echo
echo "== summary (logs in $OUT_DIR)"
for name in cuda_tests throughput demo ddp_2_gpus; do echo "  $name: ${STATUS[$name]:-not run}"; done
