"""Make tests/trust/_trust_helpers.py importable as ``_trust_helpers``."""

import sys
from pathlib import Path

_HERE = str(Path(__file__).resolve().parent)
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)
