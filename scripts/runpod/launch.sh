#!/usr/bin/env bash
# One command for a fresh RunPod GPU pod (A6000 48 GB, or several GPUs): set up, download and verify ML-25M,
# train NCF and SS4Rec with the ML-25M configs, and pack the run directories to bring back to the dashboard.
#
#   git clone <this repo> && cd <repo> && bash scripts/runpod/launch.sh [--gpus N] [--skip-ncf] [--skip-ss4rec]
#
# Then, from your machine:  runpodctl receive <code>   (or scp root@<pod>:<repo>/ml25m-runs.tar.gz .)
#                           tar xzf ml25m-runs.tar.gz -C checkpoints/ && make app
set -euo pipefail
cd "$(dirname "$0")/../.."
GPUS=1; NCF=1; SS4REC=1
while [ $# -gt 0 ]; do
  case "$1" in
    --gpus) GPUS="$2"; shift 2;;
    --skip-ncf) NCF=0; shift;;
    --skip-ss4rec) SS4REC=0; shift;;
    *) echo "unknown option $1" >&2; exit 2;;
  esac
done

die() { echo "error: $*" >&2; exit 1; }
command -v nvidia-smi >/dev/null || die "no NVIDIA driver on this machine (nvidia-smi missing): start a GPU pod"
nvidia-smi -L | grep -q GPU || die "nvidia-smi sees no GPU"
nvidia-smi --query-gpu=name,memory.total --format=csv
python3 -c 'import sys; sys.exit(sys.version_info < (3, 10))' || die "Python >= 3.10 needed"
curl -sSfI https://files.grouplens.org/datasets/movielens/ml-25m.zip.md5 >/dev/null \
  || die "no network to files.grouplens.org: copy ml-25m.zip to the pod and pass DATA_DIR=/path/to/ml-25m"

# 1. environment: the pinned requirements (a CUDA build of torch==2.13.0 from PyPI) + the GPU fast path
python3 -m venv .venv
.venv/bin/pip install -q -r requirements.txt
.venv/bin/pip install -q --no-deps -r requirements-data.txt
.venv/bin/pip install -q --no-deps --no-build-isolation -e .   # the recsys package (scripts/ import it)
.venv/bin/python -c 'import torch; assert torch.cuda.is_available(), "torch sees no CUDA"; print("torch", torch.__version__, "CUDA", torch.version.cuda, torch.cuda.get_device_name())' \
  || die "this torch build cannot use the GPU"
if ! .venv/bin/pip install -q --no-build-isolation -r requirements-gpu.txt; then
  echo "warning: mamba-ssm/causal-conv1d did not install; SS4Rec runs on the pure-PyTorch path (slower, same results)"
fi
.venv/bin/python -c 'from recsys.models.mamba import fast_path_available as f; print("mamba-ssm fast path:", f())'

# 2. data: download + md5 check (GroupLens publishes the checksum), validate and cache
DATA_ARGS=()
if [ -n "${DATA_DIR:-}" ]; then DATA_ARGS=(--data-dir "$DATA_DIR"); fi
.venv/bin/python -m recsys.data info ml-25m "${DATA_ARGS[@]}"

# 3. training (torchrun for several GPUs; each run writes checkpoints/<run>/ and can be resumed with --resume)
if [ "$GPUS" -gt 1 ]; then LAUNCH=(.venv/bin/torchrun --nproc_per_node "$GPUS"); else LAUNCH=(.venv/bin/python); fi
if [ "$NCF" = 1 ]; then
  "${LAUNCH[@]}" scripts/train.py --model popular --dataset ml-25m "${DATA_ARGS[@]}" --device cuda
  "${LAUNCH[@]}" scripts/train.py --model ncf --config configs/ml25m/ncf-ranking.yaml "${DATA_ARGS[@]}"
  "${LAUNCH[@]}" scripts/train.py --model bias --objective rating --split random --dataset ml-25m "${DATA_ARGS[@]}" --device cuda
  "${LAUNCH[@]}" scripts/train.py --model ncf --config configs/ml25m/ncf-rating.yaml "${DATA_ARGS[@]}"
fi
if [ "$SS4REC" = 1 ]; then
  "${LAUNCH[@]}" scripts/train.py --model ss4rec --config configs/ml25m/ss4rec.yaml "${DATA_ARGS[@]}"
fi

# 4. bring back: run directories without their resume state
tar czf ml25m-runs.tar.gz --exclude='*/resume' -C checkpoints $(cd checkpoints && ls -d *ml-25m*)
echo "packed: $(pwd)/ml25m-runs.tar.gz"
