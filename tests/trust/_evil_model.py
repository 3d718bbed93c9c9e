"""Objects whose unpickling runs code: what fpkit must refuse to load without --trust-teacher-code.

``EvilNet`` is an ordinary small nn.Module whose ``__setstate__`` (run by pickle when a whole
module saved with ``torch.save(model, path)`` is loaded) writes the file named by the
environment variable FPKIT_TEST_MARKER.  ``Payload.__reduce__`` makes pickle call ``exec`` on
a string that writes a marker file: the classic malicious checkpoint.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn


class EvilNet(nn.Module):
    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(4, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.pool(torch.relu(self.conv(x))), 1))

    def __setstate__(self, state):
        marker = os.environ.get("FPKIT_TEST_MARKER")
        if marker:
            Path(marker).write_text("EvilNet.__setstate__ ran")
        super().__setstate__(state)


class Payload:
    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (exec, (f"open({self.marker!r}, 'w').write('pwned')",))
