"""CUDA-only checks (marked ``cuda``; skipped without a GPU; run by bench/gpu_check.sh).

The CPU suite tests the same code on the CPU; these check what only a GPU exercises: views cut on
the device (channels_last, non-blocking copies from pinned memory), the pipelined compute loop and
autocast, against the CPU.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from fpkit.augment import ViewPolicy
from fpkit.views import cut_views, views_for
from fpkit.views.resized_crop import ResizedCropPolicy

pytestmark = pytest.mark.cuda

MEAN = torch.tensor((0.4914, 0.4822, 0.4465))
STD = torch.tensor((0.247, 0.2435, 0.2616))


def _images(n: int, size: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8, generator=g)


@pytest.mark.parametrize("policy", [ViewPolicy(4, True), ResizedCropPolicy(24, (0.08, 1.0), (3 / 4, 4 / 3), True)])
def test_views_cut_on_cuda_match_the_cpu(policy):
    images = _images(16, 32)
    params = views_for(policy, np.arange(16), 4, 0, images)
    cpu = cut_views(policy, images, torch.from_numpy(params), MEAN, STD)
    gpu = cut_views(policy, images.cuda(), torch.from_numpy(params).cuda(), MEAN.cuda(), STD.cuda(), channels_last=True)
    assert gpu.is_contiguous(memory_format=torch.channels_last)
    # one uint8 level, normalised, at most (the resize rounds on each device); pad-crop is exact
    tol = 1e-6 if isinstance(policy, ViewPolicy) else 1.01 / 255 / float(STD.min())
    assert (gpu.cpu() - cpu).abs().max().item() <= tol


def _build(tmp: Path, name: str, **kw):
    from fpkit.build import BuildOptions, build
    from fpkit.format import open_fingerprints

    out = tmp / f"{name}.h5"
    o = BuildOptions(views=2, dtype="float32", replay=True, limit=96, batch_size=64, output=str(out), **kw)
    build(o, quiet=True)
    return open_fingerprints(out)


def _min_cos(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.reshape(-1, a.shape[-1]).astype(np.float64), b.reshape(-1, b.shape[-1]).astype(np.float64)
    return float(((a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))).min())


def test_cuda_build_matches_the_cpu_build(tmp_path: Path):
    old = torch.backends.cudnn.allow_tf32
    torch.backends.cudnn.allow_tf32 = False
    try:
        cpu = _build(tmp_path, "cpu", device="cpu")
        gpu = _build(tmp_path, "gpu", device="cuda")
    finally:
        torch.backends.cudnn.allow_tf32 = old
    bf16 = _build(tmp_path, "bf16", device="cuda", autocast="bfloat16")
    for f in (gpu, bf16):  # what identifies the samples and views does not depend on the device
        assert np.array_equal(f.sample_digests, cpu.sample_digests)
        assert np.array_equal(f.view_params, cpu.view_params)
        assert np.array_equal(f.labels, cpu.labels)
    assert gpu.metadata.compute.device.startswith("cuda")
    assert np.abs(gpu.table("views") - cpu.table("views")).max() < 1e-3
    assert _min_cos(gpu.table("views"), cpu.table("views")) > 0.99999
    assert _min_cos(bf16.table("sample"), cpu.table("sample")) > 0.99
