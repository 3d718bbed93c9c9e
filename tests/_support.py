"""Helpers shared by test modules (imported as ``_support``; fixtures live in conftest.py)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PYTHON = sys.executable


def subprocess_env() -> dict:
    """Environment for `python -m fpkit ...` subprocesses: this checkout first, one thread."""
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env["OMP_NUM_THREADS"] = "1"
    return env
