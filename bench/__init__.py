"""fpkit's benchmarks, run as modules from the checkout's root (not part of the fpkit package).

    python -m bench.build        # fpkit build vs bare teacher forward vs a PIL generator; peak RSS
    python -m bench.read         # FingerprintDataset in a DataLoader, row lookups, file open
    python -m bench.train_step   # fingerprint loss and live KD over cross-entropy
    python -m bench.storage      # sizes, fidelity, codecs, privacy of fingerprint tables
    python -m bench.codecs       # size and write/read speed of every codec x storage dtype

All of them share :mod:`bench.harness` (timing, machine description, raw JSON output under
bench/results/); bench/README.md says what each one measures.
"""
