#!/usr/bin/env bash
# One command for a fresh RunPod GPU pod (A6000 48 GB, or several GPUs): set up, get ML-25M, train NCF and SS4Rec
# with the ML-25M configs, and pack the run directories and a log to bring back to the dashboard.
#
#   git clone <this repo> && cd <repo> && bash scripts/runpod/launch.sh [--gpus N] [--skip-ncf] [--skip-ss4rec]
#                                                                       [--out DIR] [--epochs N] [--smoke]
#
# Data, network last (scripts/runpod/plan.py source):
#   ZIP=/path/ml-25m.zip        a pre-downloaded archive: md5-checked against GroupLens' published one, unpacked
#                               with Python's zipfile into DIR/.data/; no network (DATA_DIR=/path/ml-25m.zip too)
#   DATA_DIR=/path/to/ml-25m    an unzipped release: used as is, no network
#   neither                     a copy downloaded earlier (~/.cache/ss4rec-workbench/movielens, $RECSYS_DATA_DIR),
#                               else downloaded from files.grouplens.org (the only step that needs that network)
#
# Preempted or restarted pod: run the same command again. Every run has a fixed folder DIR/<run>; one whose run.json
# says "complete" is skipped, one with a checkpointed epoch (resume/state.pt) is continued with
# `scripts/train.py --resume`, and one killed before its first checkpoint is removed and started again
# (scripts/runpod/plan.py prepare). A finished epoch is never lost.
#
# --out DIR (or OUT_DIR=DIR): where the runs, the log (DIR/runs-log.txt: GPU, torch/CUDA, mamba-ssm fast path,
#   data, each run's action and throughput) and the pack (DIR/ml25m-runs.tar.gz: the run directories without their
#   resume state, plus the log) go. Default checkpoints/, where the dashboard looks.
# --epochs N: the maximum epochs of every run this launch starts (default: the configs'; a resumed run keeps its own).
# --smoke: the same steps on the CPU in about a minute: tiny synthetic ML-25M-format files
#   (python -m recsys.data.synthetic --scale 0.001), --device cpu, 1 epoch per model (--epochs N to change), small
#   batches, no nvidia-smi/CUDA checks; default --out ${TMPDIR:-/tmp}/ss4rec-runpod-smoke. tests/test_runpod.py runs it.
# PYTHON=/path/to/python: use that interpreter and skip the set-up (no pip). Without it, --smoke uses an existing
#   .venv as is; the GPU run installs into .venv (once: .venv/.runpod-setup-done marks a finished set-up).
#
# Then, from your machine:  runpodctl receive <code>   (or scp root@<pod>:<repo>/checkpoints/ml25m-runs.tar.gz .)
#                           tar xzf ml25m-runs.tar.gz -C checkpoints/ && make app
set -euo pipefail
cd "$(dirname "$0")/../.."
REPO=$PWD
ARGS="$*"
GPUS=1; NCF=1; SS4REC=1; SMOKE=0; EPOCHS=""; OUT="${OUT_DIR:-}"
while [ $# -gt 0 ]; do
  case "$1" in
    --gpus) GPUS="$2"; shift 2;;
    --skip-ncf) NCF=0; shift;;
    --skip-ss4rec) SS4REC=0; shift;;
    --smoke) SMOKE=1; shift;;
    --out) OUT="$2"; shift 2;;
    --epochs) EPOCHS="$2"; shift 2;;
    *) echo "unknown option $1" >&2; exit 2;;
  esac
done
if [ "$SMOKE" = 1 ]; then
  OUT="${OUT:-${TMPDIR:-/tmp}/ss4rec-runpod-smoke}"; EPOCHS="${EPOCHS:-1}"; DEVICE=cpu
else
  OUT="${OUT:-checkpoints}"; DEVICE=cuda
fi
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
LOG="$OUT/runs-log.txt"
PACK="$OUT/ml25m-runs.tar.gz"
export PYTHONUNBUFFERED=1
export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"   # the recsys package, even where it is not pip-installed

die() { echo "error: $*" | tee -a "$LOG" >&2; exit 1; }
log() { echo "$*" | tee -a "$LOG"; }
section() { log ""; log "== $*"; }

if command -v flock >/dev/null; then   # one launcher per runs folder: a second one would train the same runs twice
  exec 9> "$OUT/.launch.lock"
  flock -n 9 || die "another launcher is already working in $OUT"
fi
section "launch $(date -u +%Y-%m-%dT%H:%M:%SZ) on ${HOSTNAME:-$(uname -n)}: bash scripts/runpod/launch.sh $ARGS (runs in $OUT)"

# 1. machine and environment ---------------------------------------------------------------------------------------
section "environment"
if [ "$SMOKE" = 0 ]; then
  command -v nvidia-smi >/dev/null || die "no NVIDIA driver on this machine (nvidia-smi missing): start a GPU pod"
  nvidia-smi -L | grep -q GPU || die "nvidia-smi sees no GPU"
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>&1 | tee -a "$LOG"
  python3 -c 'import sys; sys.exit(sys.version_info < (3, 10))' || die "Python >= 3.10 needed"
fi
if [ -n "${PYTHON:-}" ]; then
  log "interpreter: $PYTHON (PYTHON set: no set-up)"
elif [ "$SMOKE" = 1 ] && [ -x .venv/bin/python ]; then
  PYTHON=.venv/bin/python
  log "interpreter: .venv/bin/python (smoke: the existing .venv as is, no pip)"
elif [ -f .venv/.runpod-setup-done ]; then
  PYTHON=.venv/bin/python
  log "interpreter: .venv/bin/python (set up by an earlier launch)"
else
  # the pinned requirements (a CUDA build of torch==2.13.0 from PyPI) + the GPU fast path
  python3 -m venv .venv
  .venv/bin/pip install -q -r requirements.txt
  .venv/bin/pip install -q --no-deps -r requirements-data.txt
  .venv/bin/pip install -q --no-deps --no-build-isolation -e .
  if [ "$SMOKE" = 0 ] && ! .venv/bin/pip install -q --no-build-isolation -r requirements-gpu.txt; then
    log "warning: mamba-ssm/causal-conv1d did not install; SS4Rec runs on the pure-PyTorch path (slower, same results)"
  fi
  touch .venv/.runpod-setup-done
  PYTHON=.venv/bin/python
  log "interpreter: .venv/bin/python (set up now)"
fi
PLAN=("$PYTHON" scripts/runpod/plan.py)
ENV_ARGS=(); [ "$SMOKE" = 0 ] && ENV_ARGS=(--require-cuda)
"${PLAN[@]}" env "${ENV_ARGS[@]}" 2>&1 | tee -a "$LOG" || die "environment check failed (above)"

# 2. data: local first; the network only when nothing local exists -------------------------------------------------
section "data"
SOURCE=$("${PLAN[@]}" source $([ "$SMOKE" = 1 ] && echo --smoke) --zip "${ZIP:-}" --data-dir "${DATA_DIR:-}") \
  || die "no usable data source (above)"
read -r KIND SRC <<< "$SOURCE"
DATA_ARGS=()
case "$KIND" in
  zip)
    MD5_ARGS=(); [ "$SMOKE" = 0 ] && MD5_ARGS=(--release ml-25m)   # GroupLens' published md5 (synthetic: none)
    DATA=$("${PLAN[@]}" unzip "$SRC" "$OUT/.data" "${MD5_ARGS[@]}") || die "cannot unpack $SRC (above)"
    log "data: $SRC unpacked to $DATA (no network)"
    DATA_ARGS=(--data-dir "$DATA");;
  dir)
    log "data: DATA_DIR=$SRC (no network)"
    DATA_ARGS=(--data-dir "$SRC");;
  synthetic)
    DATA="$OUT/.data/synthetic-ml25m-0.001"
    if [ ! -f "$DATA/ratings.csv" ] || [ ! -f "$DATA/movies.csv" ]; then
      "$PYTHON" -m recsys.data.synthetic --scale 0.001 --out "$DATA" --quiet > /dev/null \
        || die "could not write the synthetic data (above)"
    fi
    log "data: synthetic ML-25M-format files at scale 0.001 in $DATA (smoke; no network)"
    DATA_ARGS=(--data-dir "$DATA");;
  cached)
    log "data: the copy downloaded earlier, $SRC (no network)";;
  download)
    "${PLAN[@]}" online https://files.grouplens.org/datasets/movielens/ml-25m.zip.md5 \
      || die "no network to files.grouplens.org: copy ml-25m.zip to the pod and pass ZIP=/path/to/ml-25m.zip (or DATA_DIR=/path/to/unzipped/ml-25m)"
    log "data: downloading ml-25m from files.grouplens.org (md5-checked)";;
esac
INFO_ARGS=(); [ "$KIND" != download ] && INFO_ARGS=(--no-download)
"$PYTHON" -m recsys.data info ml-25m "${DATA_ARGS[@]}" "${INFO_ARGS[@]}" 2>&1 | tee -a "$LOG" \
  || die "the data did not load (above)"

# 3. training: one fixed folder per run; skip finished, resume checkpointed, restart the rest ------------------------
section "runs"
if [ "$GPUS" -gt 1 ]; then LAUNCH=("$PYTHON" -m torch.distributed.run --nproc_per_node "$GPUS"); else LAUNCH=("$PYTHON"); fi
COMMON=(--dataset ml-25m "${DATA_ARGS[@]}" --device "$DEVICE")
[ -n "$EPOCHS" ] && COMMON+=(--epochs "$EPOCHS")
NCF_SMALL=(); SS4REC_SMALL=(); QUIET=()
if [ "$SMOKE" = 1 ]; then
  NCF_SMALL=(--set batch_size=4096)
  SS4REC_SMALL=(--set batch_size=32 --set eval_batch_size=64 --set logits_chunk=1024)
  QUIET=(--quiet)
fi
RUNS=(); FAILED=()
train() {   # train NAME ARGS...: the run in $OUT/NAME, started, continued or skipped
  local name=$1; shift
  local dir="$OUT/$name" action rc=0 t0=$SECONDS
  RUNS+=("$name")
  action=$("${PLAN[@]}" prepare "$dir")
  case "$action" in
    skip) log "$name: complete, skipped"; return 0;;
    resume) log "$name: resuming from its last finished epoch"
            mkdir -p "$dir"
            "${LAUNCH[@]}" scripts/train.py --resume "$dir" "${QUIET[@]}" 2>&1 | tee -a "$dir/train.log" || rc=$?;;
    fresh) log "$name: starting"
           mkdir -p "$dir"
           "${LAUNCH[@]}" scripts/train.py "$@" "${COMMON[@]}" --out "$dir" "${QUIET[@]}" 2>&1 \
             | tee -a "$dir/train.log" || rc=$?;;
    *) die "plan.py prepare $dir said '$action'";;
  esac
  if [ "$rc" -eq 0 ]; then
    log "$name: $action -> exit 0 in $((SECONDS - t0)) s"
  else
    log "$name: $action -> FAILED (exit $rc) after $((SECONDS - t0)) s; run the launcher again to continue it"
    FAILED+=("$name")
  fi
}
if [ "$NCF" = 1 ]; then
  train popular-ranking-ml-25m-seed0 --model popular
  train ncf-ranking-ml-25m-seed0 --model ncf --config configs/ml25m/ncf-ranking.yaml "${NCF_SMALL[@]}"
  train bias-rating-ml-25m-random-seed0 --model bias --objective rating --split random
  train ncf-rating-ml-25m-random-seed0 --model ncf --config configs/ml25m/ncf-rating.yaml "${NCF_SMALL[@]}"
fi
if [ "$SS4REC" = 1 ]; then
  train ss4rec-ranking-ml-25m-len200-seed0 --model ss4rec --config configs/ml25m/ss4rec.yaml "${SS4REC_SMALL[@]}"
fi

# 4. throughput of every run, then the pack: run directories without their resume state, and this log -------------
section "throughput (samples/s of each run's last epoch, history.jsonl; train seconds from run.json)"
"${PLAN[@]}" report "$OUT" "${RUNS[@]}" | tee -a "$LOG"
section "pack"
PRESENT=()
for name in "${RUNS[@]}"; do [ -d "$OUT/$name" ] && PRESENT+=("$name"); done
log "packing ${#PRESENT[@]} run(s) and runs-log.txt into $PACK"
tar czf "$PACK.tmp" --exclude='*/resume' -C "$OUT" "${PRESENT[@]}" runs-log.txt
mv "$PACK.tmp" "$PACK"
echo "packed: $PACK"
if [ ${#FAILED[@]} -gt 0 ]; then
  echo "error: ${#FAILED[@]} run(s) did not finish: ${FAILED[*]}; run the launcher again to continue them" >&2
  exit 1
fi
