#!/usr/bin/env bash
# The one-shot GPU check, for a machine with a CUDA GPU:
#   `python -m experiments.bench_device --device cuda` (the deliverable, first), then the suite's device tests on CUDA.
# Run from the repository root; everything it writes goes under $OUT (default /tmp/gpu_check):
#   device.txt (GPU, torch, CUDA), pytest.log, bench_device.md + .json, bench.log.
# It uses the machine's own python3/torch (no install). `higher` (the second unroll backend) is pure
# Python; if it is missing there, carry its wheel in .whl/ (pip download higher==0.2.1 --no-deps -d .whl)
# and it is put on PYTHONPATH. Time: bench_device at most 430 s (its progress lines stay in bench.log if it is cut),
# pytest at most 140 s: together under the 600 s of one device call.
# DEVICE=cpu runs the same script here at smoke sizes (to check the script itself).
set -uo pipefail
OUT=${OUT:-/tmp/gpu_check}
DEVICE=${DEVICE:-cuda}
SMOKE=$([ "$DEVICE" = cpu ] && echo --smoke)
mkdir -p "$OUT"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
if ! python3 -c "import higher" 2>/dev/null && ls .whl/higher-*.whl >/dev/null 2>&1; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl \
        && export PYTHONPATH="$PYTHONPATH:/tmp/site"
fi
{
    date -u +%Y-%m-%dT%H:%M:%SZ
    [ "$DEVICE" = cpu ] || nvidia-smi -L
    python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda,
                torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'no GPU')"
} 2>&1 | tee "$OUT/device.txt"
timeout 430 python3 -m experiments.bench_device --device "$DEVICE" $SMOKE --out "$OUT/bench_device.md" 2>&1 | tee "$OUT/bench.log"
echo "bench_device rc=${PIPESTATUS[0]}" | tee -a "$OUT/device.txt"
CONDENSE_TEST_DEVICE=$DEVICE timeout 140 python3 -m pytest -q -p no:cacheprovider \
    tests/condense/test_bench_device.py tests/condense/test_unroll.py tests/condense/test_datadam.py 2>&1 | tee "$OUT/pytest.log"
echo "pytest rc=${PIPESTATUS[0]}" | tee -a "$OUT/device.txt"
