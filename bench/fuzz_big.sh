#!/usr/bin/env bash
# Larger settings of the trust tests (tests/trust, SECURITY.md): run before a release or after
# changing fpkit/format/reader.py or codecs.py, fpkit/build/ or fpkit/teachers/.
#
#   bench/fuzz_big.sh                 # ~5,300 fuzz cases + 30 kills (~10-20 min on 2 cores)
#   FUZZ_CASES=20000 SEED=7 bench/fuzz_big.sh
#
# Every case runs in its own forked process; a failure prints the case (file, mutation, offset)
# so that it can be replayed with the same seed.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
SEED=${SEED:-1}
FPKIT_FUZZ_CASES=${FUZZ_CASES:-5000} FPKIT_FUZZ_SEED=$SEED FPKIT_FUZZ_CLI_EVERY=${CLI_EVERY:-100} \
    FPKIT_FUZZ_WORKERS=${WORKERS:-$(nproc)} \
    "$PY" -m pytest tests/trust/test_fuzz.py -q -s -p no:cacheprovider
FPKIT_KILL_CASES=${KILL_CASES:-30} FPKIT_KILL_SEED=$SEED FPKIT_KILL_PARALLEL=${WORKERS:-2} \
    "$PY" -m pytest tests/trust/test_kill.py -q -s -p no:cacheprovider
