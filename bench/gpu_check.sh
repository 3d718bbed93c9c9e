#!/usr/bin/env bash
# One GPU check of fpkit, about 4 minutes on one H200 (what it does: bench/gpu_check.py's docstring):
# (a) the CUDA-marked tests, (b) CPU/CUDA agreement of the same file, (c) build throughput over the
# bare teacher forward (resnet56 32 px, torchvision resnet50 224 px), (d) the student step ratios.
#
#   bash bench/gpu_check.sh [--out DIR] [--smoke] [--skip tests,agree,speed,student]
#
# Without CUDA it runs a quick CPU fallback ("no CUDA: skipped" for the GPU-only parts).  Figures go
# to --out, else $OUT, else bench/results/gpu_check-<UTC>/.  Python: $PYTHON, else .venv/bin/python,
# else python3.  Packages a machine's image lacks (zstandard on the H200 image) can travel as wheels
# in .whl/ (git-ignored): they are installed into /tmp/fpkit-site when fpkit's imports fail.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-}
if [ -z "$PY" ]; then
    if [ -x .venv/bin/python ]; then PY=.venv/bin/python; else PY=python3; fi
fi
if ! "$PY" -c "import zstandard, h5py, click" 2>/dev/null && compgen -G ".whl/*.whl" >/dev/null; then
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/fpkit-site .whl/*.whl
    export PYTHONPATH="/tmp/fpkit-site${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONUNBUFFERED=1
if command -v nvidia-smi >/dev/null 2>&1; then
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
fi
exec "$PY" -m bench.gpu_check "$@"
