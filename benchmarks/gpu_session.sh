#!/usr/bin/env bash
# One lent-GPU session (the device tool; not in CI), as one command of under 10 minutes:
#   1. a pipeline on the GPU: by default the report's configuration, `--preset seed` (issue 3
#      asks for its wall time and kNN accuracy; its summaries record peak GPU memory), or
#      $PIPE_PRESET (the third session: gpu) with $PIPE_EXTRA added to its command;
#   2. beside it, benchmarks/gpu_sweep.py: a job set (--set, $SWEEP_SET) of short reprlab runs
#      at batch 256 -- "recipes" (the first session's variants at CPU iteration counts) or
#      "ceiling" (the second's: 2x the triplet steps, the wide encoder, supervised baselines)
#      or "wide" (the third's: airbench_wide variants beside `--preset gpu`).
# Needs the data in .gpudata/ and the wheels of torchinfo and openTSNE in .whl/ (both ignored
# by git, carried by the device tool). Results land in $OUT (tarballs + results.jsonl).
set -u
T0=$(date +%s)
PY=${PY:-python3}
OUT=${OUT:-/tmp/gpu-out}
BUDGET=${BUDGET:-540}        # seconds until everything is stopped and packed
SWEEP_WORKERS=${SWEEP_WORKERS:-7}
SWEEP_SET=${SWEEP_SET:-ceiling}
# "recipes" held its variants back until the seed cont_rep stage was done, to time that stage
# alone; "ceiling" starts every job at once (the seed stages' times are then shared ones)
GATE=""
if [ "$SWEEP_SET" = recipes ]; then
  GATE="--workers_before 1 --early c0 --wait_for runs/seed/cont_rep/summary.json --wait_max 300"
  PIPE_PRESET=seed
fi
D=.gpudata/cifar10_train.tar.xz
TD=.gpudata/cifar10_test_images.npz
mkdir -p "$OUT" runs
elapsed() { echo $(( $(date +%s) - T0 )); }

if [ -d .whl ] && [ -z "${NO_WHEELS:-}" ]; then
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site:$PWD/src
else
  export PYTHONPATH=$PWD/src
fi
export PYTHONUNBUFFERED=1 TQDM_MININTERVAL=30
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv; nproc;
  $PY -c "import torch, numpy, sklearn, openTSNE, torchinfo; print('torch', torch.__version__,
'cuda', torch.cuda.is_available(), 'numpy', numpy.__version__, 'sklearn', sklearn.__version__,
'openTSNE', openTSNE.__version__)"; } > "$OUT/env.txt" 2>&1
$PY -c "from reprlab.data import load_images; load_images('$D')" > "$OUT/warm.log" 2>&1
echo "setup done at $(elapsed)s" | tee -a "$OUT/env.txt"

# 1. the pipeline (SIGINT at the budget: the running stage checkpoints and stops)
PIPE_PRESET=${PIPE_PRESET:-seed}
P=runs/$PIPE_PRESET
timeout --signal=INT $(( BUDGET - $(elapsed) - 10 )) \
  $PY -m reprlab pipeline --preset "$PIPE_PRESET" --data "$D" --test_data "$TD" --out "$P" \
  ${PIPE_EXTRA:-} > "$OUT/$PIPE_PRESET.log" 2>&1 &
SEED=$!
# 2. the sweep, beside it
$PY benchmarks/gpu_sweep.py --data "$D" --out runs/sweep --device "${DEVICE:-cuda}" \
  --set "$SWEEP_SET" --workers "$SWEEP_WORKERS" $GATE \
  --deadline $(( BUDGET - $(elapsed) - 15 )) ${SWEEP_EXTRA:-} > "$OUT/sweep.log" 2>&1
wait $SEED; echo "$PIPE_PRESET pipeline rc=$? at $(elapsed)s" | tee -a "$OUT/env.txt"

tar czf "$OUT/$PIPE_PRESET.tgz" --exclude='*.pt' --exclude='*.npy' "$P" 2>/dev/null
tar czf "$OUT/sweep_logs.tgz" runs/sweep/*.log runs/sweep/*/summary.json \
  runs/sweep/*/config.json runs/sweep/*/metrics.jsonl 2>/dev/null
cp runs/sweep/results.jsonl "$OUT/" 2>/dev/null
echo "packed at $(elapsed)s" | tee -a "$OUT/env.txt"
