#!/usr/bin/env bash
# The reduced CPU protocol of docs/RESULTS.md: CIFAR-10 (JPEG q75) subset of 500 train and 100 test
# images per class, resnet20 teacher -> resnet8 students, 15 epochs, seed recipe scaled, SEEDS seeds.
# Usage: experiments/reduced_protocol.sh [OUT=runs/small] [SEEDS="0 1"]
# TEACHER=path.pt skips training the teacher and distils that one instead (e.g. the embedded
# resnet8, trained on the full train split: fpkit/data/embedded_teacher.pt).
set -euo pipefail
OUT=${1:-runs/small}
SEEDS=${2:-"0 1"}
PY=${PY:-.venv/bin/python}
FPKIT=${FPKIT:-.venv/bin/fpkit}
[ -d .data/c10-small ] || $PY experiments/make_subset.py .data/cifar10-jpeg .data/c10-small --train-per-class 500 --test-per-class 100
D="--data imagefolder:.data/c10-small --normalize cifar10 --epochs 15 --device cpu -q"
mkdir -p "$OUT"
if [ -z "${TEACHER:-}" ]; then
  TEACHER="$OUT/teacher/teacher.pt"
  [ -f "$TEACHER" ] || $PY experiments/train.py teacher --arch resnet20 $D --seed 0 --out "$OUT/teacher"
fi
[ -f "$OUT/fp.h5" ] || { /usr/bin/time -v $FPKIT build "$TEACHER" imagefolder:.data/c10-small --normalize cifar10 \
    --views 8 --device cpu -q --json -o "$OUT/fp.h5" > "$OUT/build.json" 2> "$OUT/build.time"; }
# the teacher's accuracy on the un-augmented test subset, measured by a one-view build of it
[ -s "$OUT/teacher-test.json" ] || $FPKIT build "$TEACHER" imagefolder:.data/c10-small --split test --normalize cifar10 \
    --views 1 --padding 0 --no-flip --tables class --device cpu -q --json --force -o "$OUT/teacher-test.h5" > "$OUT/teacher-test.json"
for s in $SEEDS; do
  for m in ce kd fp-sample fp-class relational; do
    dir="$OUT/s$s/$m"
    [ -f "$dir/log.jsonl" ] && tail -1 "$dir/log.jsonl" | grep -q '"final"' && continue
    extra=""
    [ "$m" = kd ] && extra="--teacher $TEACHER"
    case $m in fp-*|relational) extra="--fingerprints $OUT/fp.h5";; esac
    $PY experiments/train.py student --method $m --arch resnet8 $D --seed "$s" --out "$dir" $extra
  done
done
