#!/usr/bin/env bash
# Every GPU check of the project in one run, sized for a 15-minute device lease (issue 6; docs/benchmarks.md).
#
#   bash scripts/gpu_checks.sh [OUTDIR]          on a CUDA machine: every step (may exceed one 10-minute call)
#   STEPS="1 2 3" bash scripts/gpu_checks.sh     only these steps: split the work over two device calls, e.g.
#                                                STEPS="1 2 3" then STEPS="4" (each step has its own time limit)
#   QUICK=1 bash scripts/gpu_checks.sh [OUTDIR]  the same steps with tiny sizes on whatever is there (CPU included):
#                                                checks the plumbing before spending device time
#
# Writes one log per step into OUTDIR (default: $OUT when set, else ./gpu-checks) and a summary.txt that says which
# steps passed. A failing step does not stop the others. Steps:
#   1. environment: nvidia-smi, torch/CUDA versions, whether mamba_ssm imports (the fused path) or not (our pure path)
#   2. CUDA tests: tests/test_mamba.py (fast path vs pure path, CUDA pure path vs CPU), tests/test_s5.py,
#      tests/test_ss4rec.py, tests/test_native.py (the CPU kernels must not be picked for CUDA tensors)
#   3. scripts/bench_ss4rec.py --device cuda: ours vs the s5-pytorch layout at batch 1024, lengths 50 and 200
#   4. scripts/bench_throughput.py --device cuda: NCF and SS4Rec on synthetic ML-25M-size data (target: an SS4Rec
#      epoch within 10 minutes, peak under 40 GB)
#   5. (only when asked: STEPS="... 5") scripts/bench_models.py --device cuda: one training step of SS4Rec, SASRec
#      and GRU4Rec side by side at lengths 50 and 200 (not in the default list: steps 1-4 already fill a 15-minute
#      device budget; a session that has run them can ask for STEPS="1 5")
#
# On the lent device machine (no network) s5-pytorch is not installed: carry it as a wheel. In the repository root
# here, once: echo /.whl/ >> .git/info/exclude; python3 -m pip download --no-deps --only-binary=:all:
#   --python-version 3.12 -d .whl s5-pytorch==0.2.1   (pure Python; einops, numpy, pandas, pyarrow, pyyaml, tqdm,
# safetensors and scikit-learn are already there). Then run with carry [".whl"]:
#   python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site;
#   bash scripts/gpu_checks.sh
set -uo pipefail
cd "$(dirname "$0")/.."
OUTDIR="${1:-${OUT:-gpu-checks}}"
mkdir -p "$OUTDIR"
PY="${PYTHON:-python3}"
[ -x .venv/bin/python ] && [ -z "${PYTHON:-}" ] && PY=.venv/bin/python
export PYTHONUNBUFFERED=1
# the scripts import the recsys package: installed (pip install -e .) in a `make` set-up, else from this checkout
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
SUMMARY="$OUTDIR/summary.txt"
: > "$SUMMARY"

if [ "${QUICK:-0}" = "1" ]; then
  DEV=$("$PY" -c "import torch; print('cuda' if torch.cuda.is_available() else 'cpu')")
  SS4REC_ARGS=(--device "$DEV" --batch 8 --lengths 12 --repeats 1 --check-batch 4 --skip-pure)
  TP_ARGS=(--device "$DEV" --scale 0.002 --steps 1 --warmup 1)
  TEST_ARGS=(-q -x tests/test_mamba.py -k "gpu or cuda or fast_path")
  MODELS_ARGS=(--device "$DEV" --quick)
else
  DEV=cuda
  SS4REC_ARGS=(--device cuda --batch 1024 --lengths 50 200 --repeats 3)
  TP_ARGS=(--device cuda)
  TEST_ARGS=(-q tests/test_mamba.py tests/test_s5.py tests/test_ss4rec.py tests/test_native.py)
  MODELS_ARGS=(--device cuda --repeats 3)
fi

STEPS="${STEPS:-1 2 3 4}"
step() {   # step NAME SECONDS CMD...: run with a time limit, log to OUTDIR/NAME.txt, one line in the summary
  local name=$1 limit=$2; shift 2
  case " $STEPS " in *" ${name%%-*} "*) ;; *) return 0 ;; esac
  local t0=$SECONDS
  echo "== $name: $*" | tee "$OUTDIR/$name.txt"
  timeout "$limit" "$@" >> "$OUTDIR/$name.txt" 2>&1
  local rc=$?
  local verdict=PASS
  [ $rc -ne 0 ] && verdict="FAIL (exit $rc)"
  [ $rc -eq 124 ] && verdict="TIMEOUT after ${limit} s"
  echo "$name: $verdict in $((SECONDS - t0)) s" | tee -a "$SUMMARY"
}

step 1-environment 60 bash -c "nvidia-smi || true; $PY - <<'EOF'
import importlib.util, platform, torch
print('python', platform.python_version(), 'torch', torch.__version__, 'cuda', torch.version.cuda,
      'available', torch.cuda.is_available())
if torch.cuda.is_available():
    print('device', torch.cuda.get_device_name(0), round(torch.cuda.get_device_properties(0).total_memory / 2**30, 1), 'GiB')
print('mamba_ssm importable:', importlib.util.find_spec('mamba_ssm') is not None)
print('s5-pytorch importable:', importlib.util.find_spec('s5') is not None)
from recsys.models import native, mamba
print('CPU kernels:', native.status(), '| mamba_ssm fast path:', mamba.fast_path_available())
EOF"
step 2-tests 150 "$PY" -m pytest "${TEST_ARGS[@]}" -p no:cacheprovider
step 3-bench-ss4rec 300 "$PY" scripts/bench_ss4rec.py "${SS4REC_ARGS[@]}"
step 4-bench-throughput 330 "$PY" scripts/bench_throughput.py "${TP_ARGS[@]}"
step 5-bench-models 150 "$PY" scripts/bench_models.py "${MODELS_ARGS[@]}"

echo "logs in $OUTDIR/"
cat "$SUMMARY"
! grep -qv ": PASS" "$SUMMARY"
