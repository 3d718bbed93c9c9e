#!/usr/bin/env bash
# Sensitivity of the fingerprint loss to lambda in protocol B of docs/RESULTS.md (run it after
# `TEACHER=fpkit/data/embedded_teacher.pt experiments/reduced_protocol.sh runs/small-emb`): fp-sample
# students (METHODS="fp-sample fp-class relational" for more) with LAMBDAS, seeds SEEDS, same recipe
# and file; each OUT/lam<L>/ links the ce students of runs/small-emb so that collect_results.py
# pairs them by seed.
# Usage: experiments/lambda_sweep.sh [OUT=runs/lambda] [LAMBDAS="1 10"] [SEEDS="0 1"]
set -euo pipefail
OUT=${1:-runs/lambda}
LAMBDAS=${2:-"1 10"}
SEEDS=${3:-"0 1"}
BASE=${BASE:-runs/small-emb}
METHODS=${METHODS:-fp-sample}
PY=${PY:-.venv/bin/python}
D="--data imagefolder:.data/c10-small --normalize cifar10 --epochs 15 --device cpu -q"
for lam in $LAMBDAS; do
  for s in $SEEDS; do
    mkdir -p "$OUT/lam$lam/s$s"
    [ -e "$OUT/lam$lam/s$s/ce" ] || ln -s "$(realpath "$BASE/s$s/ce")" "$OUT/lam$lam/s$s/ce"
    for m in $METHODS; do
      dir="$OUT/lam$lam/s$s/$m"
      [ -f "$dir/log.jsonl" ] && tail -1 "$dir/log.jsonl" | grep -q '"final"' && continue
      $PY experiments/train.py student --method "$m" --arch resnet8 $D --seed "$s" --lambda "$lam" \
          --fingerprints "$BASE/fp.h5" --out "$dir"
    done
  done
done
