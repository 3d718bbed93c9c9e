"""examples/train_ddp.py under torchrun: 2 CPU processes (gloo) on the embedded demo file."""

from __future__ import annotations

import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch.distributed as dist

from fpkit.build import BuildOptions, build

ROOT = Path(__file__).resolve().parents[2]


needs_gloo = pytest.mark.skipif(
    not dist.is_available() or not dist.is_gloo_available(), reason="needs torch.distributed with gloo"
)

# One DDP step of the distiller over 2 ranks against one single-process step on the same global
# batch (BatchNorm in eval mode: per-rank batch statistics are the one thing that differs on a CPU).
EQUIVALENCE = """
import sys, torch, torch.distributed as dist, torchvision.transforms as T
from torch.nn.parallel import DistributedDataParallel as DDP
import fpkit
from fpkit.models import get_cifar_resnet

dist.init_process_group("gloo")
rank, world = dist.get_rank(), dist.get_world_size()
src = fpkit.open_source("embedded")
data = fpkit.FingerprintDataset(sys.argv[1], src.torch_dataset(), layer="all",
                                transform=T.Compose([T.ToTensor(), T.Normalize(src.mean, src.std)]))
batch = torch.utils.data.default_collate([data[i] for i in range(16)])

def model():
    torch.manual_seed(0)
    student = get_cifar_resnet("resnet8", 10).eval()
    return student, fpkit.FingerprintDistiller(student, data, lam=10.0)

def step(distiller, module, x, y, t):
    opt = torch.optim.SGD(distiller.parameters(), lr=0.1)
    loss, _ = module(x, y, t, epoch=0.0)
    loss.backward()
    opt.step()
    return loss.detach()

student, distiller = model()
part = slice(rank * 8, rank * 8 + 8)
loss = step(distiller, DDP(distiller), batch[0][part], batch[1][part], {k: v[part] for k, v in batch[2].items()})
dist.all_reduce(loss)
if rank == 0:
    ref_student, ref = model()
    ref_loss = step(ref, ref, *batch)
    diff = max((a - b).abs().max().item() for a, b in zip(student.parameters(), ref_student.parameters()))
    print(f"EQUIV loss {loss.item() / world:.7f} single {ref_loss.item():.7f} max weight diff {diff:.3g}")
dist.destroy_process_group()
"""


@pytest.fixture(scope="module")
def embedded_file(tmp_path_factory) -> Path:
    fp = tmp_path_factory.mktemp("ddp") / "embedded.h5"
    build(BuildOptions(output=str(fp), views=1, device="cpu"), quiet=True)  # the embedded teacher and images
    return fp


def _torchrun(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", *args]
    env = dict(os.environ, OMP_NUM_THREADS="1", CUDA_VISIBLE_DEVICES="")
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    return proc


@needs_gloo
def test_two_ranks_end_with_identical_weights(embedded_file: Path, tmp_path: Path):
    args = [str(ROOT / "examples" / "train_ddp.py"), str(embedded_file), "--epochs", "1", "--max-steps", "3"]
    args += ["--batch-size", "32", "--num-workers", "0", "--out", str(tmp_path / "student.pt")]
    proc = _torchrun(args, tmp_path)
    found = re.findall(r"rank (\d): loss (\S+) weights sha256 ([0-9a-f]{64})", proc.stdout)
    ranks = {r: (float(loss), digest) for r, loss, digest in found}
    assert set(ranks) == {"0", "1"}, proc.stdout
    assert ranks["0"][1] == ranks["1"][1]  # the same weights after 3 DDP steps
    assert ranks["0"][0] == ranks["1"][0] and math.isfinite(ranks["0"][0])  # the all-reduced global loss
    assert (tmp_path / "student.pt").exists()


@needs_gloo
def test_a_ddp_step_is_the_single_process_step_on_the_global_batch(embedded_file: Path, tmp_path: Path):
    script = tmp_path / "equivalence.py"
    script.write_text(EQUIVALENCE)
    out = _torchrun([str(script), str(embedded_file)], tmp_path).stdout
    m = re.search(r"EQUIV loss (\S+) single (\S+) max weight diff (\S+)", out)
    assert m, out
    loss, single, diff = (float(g) for g in m.groups())
    assert math.isfinite(loss) and abs(loss - single) < 1e-5 * max(1.0, abs(single))
    assert diff < 1e-5
