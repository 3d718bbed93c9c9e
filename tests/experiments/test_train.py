"""experiments/train.py end to end on a tiny synthetic dataset: teacher, fingerprint build, five students.

Everything runs in-process on the CPU (one thread, see tests/conftest.py) with one epoch of
64 images, so the whole module takes a few seconds.
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
from pathlib import Path

import pytest
import torch

from fpkit.build import BuildOptions, build
from fpkit.teachers import load_teacher

ROOT = Path(__file__).resolve().parents[2]
DATA = "synthetic:64x4"
N = 64
VIEWS = 2
TINY = ["--data", DATA, "--epochs", "1", "--batch-size", "16", "--device", "cpu", "-q"]
EPOCH_KEYS = {"epoch", "lr", "train_loss", "parts", "train_top1", "test_top1", "seconds"}
FINAL_KEYS = {
    "final",
    "method",
    "test_top1",
    "best_top1",
    "teacher_forwards",
    "fingerprint_bytes",
    "wall_seconds",
    "epochs",
    "recipe",
    "seed",
}


def _load_script():
    spec = importlib.util.spec_from_file_location("fpkit_experiments_train", ROOT / "experiments" / "train.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


train = _load_script()


def _read_log(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("train")


@pytest.fixture(scope="module")
def teacher_ckpt(workdir: Path) -> Path:
    torch.set_num_threads(1)
    out = workdir / "teacher"
    assert train.main(["teacher", "--arch", "resnet8", "--out", str(out), *TINY]) == 0
    return out / "teacher.pt"


@pytest.fixture(scope="module")
def fp_file(workdir: Path, teacher_ckpt: Path) -> Path:
    torch.set_num_threads(1)
    out = workdir / "fp.h5"
    build(
        BuildOptions(
            teacher=str(teacher_ckpt),
            dataset=DATA,
            output=str(out),
            views=VIEWS,
            chunk_size=32,
            device="cpu",
            layers=("layer3", "layer2"),
        ),
        quiet=True,
    )
    return out


def _student(workdir: Path, method: str, *extra: str, name: str | None = None) -> tuple[list[dict], Path]:
    out = workdir / (name or f"student-{method}-{len(extra)}")
    code = train.main(["student", "--method", method, "--arch", "resnet8", "--out", str(out), *TINY, *extra])
    assert code == 0
    return _read_log(out / "log.jsonl"), out


def test_teacher_checkpoint_loads_safely(teacher_ckpt: Path):
    ckpt = torch.load(teacher_ckpt, weights_only=True)
    assert {"model", "arch", "epoch", "test_top1"} <= set(ckpt)
    assert ckpt["arch"] == "resnet8" and ckpt["epoch"] == 1
    assert 0.0 <= ckpt["test_top1"] <= 100.0
    teacher = load_teacher(teacher_ckpt)
    assert teacher.arch == "resnet8" and teacher.num_classes == 4 and teacher.source_kind == "state_dict"
    final = _read_log(teacher_ckpt.parent / "log.jsonl")[-1]
    assert final["final"] is True and final["method"] == "teacher" and final["teacher_forwards"] == 0


@pytest.mark.parametrize("method", ["ce", "kd", "fp-sample", "fp-class", "relational"])
def test_student_methods_write_valid_logs(method: str, workdir: Path, teacher_ckpt: Path, fp_file: Path, capsys):
    extra = {"kd": ["--teacher", str(teacher_ckpt)], "ce": []}.get(method, ["--fingerprints", str(fp_file)])
    records, out = _student(workdir, method, *extra)
    epochs, final = records[:-1], records[-1]
    assert len(epochs) == 1 and EPOCH_KEYS <= set(epochs[0]) and epochs[0]["epoch"] == 1
    assert "ce" in epochs[0]["parts"]
    assert FINAL_KEYS <= set(final) and final["final"] is True and final["method"] == method
    assert final["epochs"] == 1 and final["recipe"] == "seed" and final["seed"] == 0
    expected_forwards = {"ce": 0, "kd": N * 1}.get(method, N * VIEWS)
    assert final["teacher_forwards"] == expected_forwards
    expected_bytes = os.path.getsize(fp_file) if method not in ("ce", "kd") else 0
    assert final["fingerprint_bytes"] == expected_bytes
    if method in ("fp-sample", "fp-class", "relational"):
        parts = epochs[0]["parts"]
        assert {"lambda", "term/layer3", "term/layer2"} <= set(parts)
        assert parts["weighted/layer2"] == pytest.approx(0.2 * parts["lambda"] * parts["term/layer2"], rel=1e-6)
    # the final line is printed on stdout too
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1]) == final
    assert "model" in torch.load(out / "student.pt", weights_only=True)


def test_fingerprint_methods_never_load_the_teacher(workdir: Path, fp_file: Path, monkeypatch):
    def refuse(*a, **k):
        raise AssertionError("the teacher was loaded")

    monkeypatch.setattr(train, "load_teacher", refuse)
    records, _ = _student(workdir, "fp-sample", "--fingerprints", str(fp_file), "--layer-weights", "layer3=1.0")
    assert "term/layer2" not in records[0]["parts"]


def test_torch_loader_path(workdir: Path, fp_file: Path):
    records, _ = _student(workdir, "fp-class", "--fingerprints", str(fp_file), "--loader", "torch")
    assert records[-1]["teacher_forwards"] == N * VIEWS and records[0]["epoch"] == 1


def test_relational_on_a_redacted_file(workdir: Path, teacher_ckpt: Path):
    redacted = workdir / "redacted.h5"
    build(
        BuildOptions(
            teacher=str(teacher_ckpt),
            dataset=DATA,
            output=str(redacted),
            views=1,
            chunk_size=64,
            device="cpu",
            redact=True,
            tables=("sample",),
        ),
        quiet=True,
    )
    records, _ = _student(workdir, "relational", "--fingerprints", str(redacted))
    assert records[-1]["teacher_forwards"] == N
    assert (
        train.main(
            ["student", "--method", "fp-sample", "--fingerprints", str(redacted), "--out", str(workdir / "x"), *TINY]
        )
        == 1
    )


def test_mismatched_dataset_is_refused(workdir: Path, fp_file: Path, capsys):
    args = ["student", "--method", "fp-sample", "--fingerprints", str(fp_file), "--out", str(workdir / "bad"), *TINY]
    args[args.index(DATA)] = "synthetic:32x4"
    assert train.main(args) == 1
    assert "MismatchError" in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv, message",
    [
        (["student", "--method", "kd"], "--teacher"),
        (["student", "--method", "fp-sample"], "--fingerprints"),
        (["student", "--method", "relational"], "--fingerprints"),
        (["student", "--method", "ce", "--fingerprints", "x.h5"], "--fingerprints"),
        (["student", "--method", "fp-class", "--fingerprints", "x.h5", "--layer-weights", "layer3"], "--layer-weights"),
    ],
)
def test_usage_errors(argv, message, capsys):
    with pytest.raises(SystemExit) as exc:
        train.parse_args(argv)
    assert exc.value.code == 2
    assert message in capsys.readouterr().err


def test_recipes_scale_with_epochs():
    seed = train.RECIPES["seed"]
    assert (seed.epochs, seed.lr, seed.milestones, seed.gamma, seed.batch_size, seed.weight_decay) == (
        200,
        0.1,
        (60, 120, 160),
        0.2,
        128,
        5e-4,
    )
    short = seed.shortened(20)
    assert short.milestones == (6, 12, 16) and short.warmup == 4 and short.epochs == 20
    assert seed.shortened(1).milestones == () and seed.shortened(1).warmup == 0
    assert seed.shortened(3).milestones == (1, 2)
    rd = train.RECIPES["repdistiller"]
    assert (rd.epochs, rd.lr, rd.milestones, rd.gamma, rd.batch_size) == (240, 0.05, (150, 180, 210), 0.1, 64)
    assert rd.shortened(24).milestones == (15, 18, 21)


def test_layer_weights_parsing():
    assert train.parse_layer_weights("layer3=1.0,layer2=0.2") == {"layer3": 1.0, "layer2": 0.2}
    assert train.default_layer_weights(["layer2", "layer3"]) == {"layer2": 0.2, "layer3": 1.0}
    assert train.default_layer_weights(["layer1"]) == {"layer1": 1.0}


# --------------------------------------------------------------------------- stored-logit and replay methods


def _build(workdir: Path, teacher_ckpt: Path, name: str, **options) -> Path:
    out = workdir / name
    if not out.exists():
        base = dict(teacher=str(teacher_ckpt), dataset=DATA, output=str(out), views=VIEWS, chunk_size=32, device="cpu")
        build(BuildOptions(**{**base, **options}), quiet=True)
    return out


@pytest.fixture(scope="module")
def logit_files(workdir: Path, teacher_ckpt: Path) -> dict[str, Path]:
    torch.set_num_threads(1)
    return {
        "mean": _build(workdir, teacher_ckpt, "mean.h5", logits="mean"),
        "full": _build(workdir, teacher_ckpt, "full.h5", logits="full", replay=True, dtype="float32"),
        "topk": _build(workdir, teacher_ckpt, "topk.h5", logits="topk:2", replay=True),
    }


@pytest.mark.parametrize(
    "method, kind",
    [("file-kd", "mean"), ("file-kd", "full"), ("file-kd", "topk"), ("fp-replay", "full"), ("fp-kd", "mean")],
)
def test_file_methods_write_valid_logs(method: str, kind: str, workdir: Path, logit_files: dict[str, Path]):
    extra = ["--kd-T", "2", "--kd-weight", "0.7", "--kd-ce-weight", "0.3", "--lambda", "3", "--warmup", "0"]
    if method == "fp-replay":
        extra = extra[-4:]
    records, _ = _student(workdir, method, "--fingerprints", str(logit_files[kind]), *extra)
    parts, final = records[0]["parts"], records[-1]
    assert final["teacher_forwards"] == N * VIEWS
    assert final["fingerprint_bytes"] == os.path.getsize(logit_files[kind])
    if method != "fp-replay":
        assert final["hparams"]["kd_T"] == 2.0 and final["hparams"]["kd_weight"] == 0.7
        weighted_fp = sum(v for k, v in parts.items() if k.startswith("weighted/"))
        # averages over the epoch keep the linear relation of every batch
        assert parts["total"] == pytest.approx(0.3 * parts["ce"] + 0.7 * parts["kd"] + weighted_fp, rel=1e-5)
    if method != "file-kd":
        assert parts["lambda"] == 3.0 and "term/layer3" in parts


def test_replayed_views_carry_their_own_logits(logit_files: dict[str, Path], teacher_ckpt: Path):
    """The replay loader's stored logits equal the live teacher's on the very batch it yields."""
    args = train.parse_args(["student", "--method", "file-kd", "--fingerprints", str(logit_files["full"]), *TINY])
    device = torch.device("cpu")
    data = train.open_data(args, device)
    targets = train.FileTargets(str(logit_files["full"]), data.train, None, None, device, logits=True)
    assert targets.replay and targets.logit_kind == "full"
    recipe = train.make_recipe(args)
    loader = train.make_train_loader(args, data, recipe, device, targets)
    teacher = load_teacher(teacher_ckpt).model.eval()
    seen = 0
    with torch.no_grad():
        for x, y, batch in loader.epoch(3):
            assert batch.fp is None
            assert torch.allclose(teacher(x), batch.logits, atol=1e-4, rtol=1e-4)
            seen += len(y)
    assert seen == N


def test_file_method_errors(workdir: Path, fp_file: Path, logit_files: dict[str, Path], capsys):
    def run(method: str, path: Path) -> str:
        argv = ["student", "--method", method, "--fingerprints", str(path), "--out", str(workdir / "e"), *TINY]
        assert train.main(argv) == 1
        return capsys.readouterr().err

    assert "--logits" in run("file-kd", fp_file)  # no stored logits
    assert "--replay" in run("fp-replay", fp_file)  # no recorded views
    with pytest.raises(SystemExit):
        train.parse_args(["student", "--method", "fp-replay", "--fingerprints", "x.h5", "--loader", "torch"])


_TIMINGS = {"seconds", "wall_seconds", "checkpoint"}


def _run_for_repeat(workdir: Path, name: str, method: str, *extra: str) -> tuple[list[dict], dict]:
    records, out = _student(workdir, method, *extra, name=name)
    untimed = [{k: v for k, v in r.items() if k not in _TIMINGS} for r in records]
    return untimed, torch.load(out / "student.pt", weights_only=True)["model"]


@pytest.mark.parametrize("method", ["kd", "fp-sample", "fp-replay"])
def test_the_same_command_twice_gives_the_same_student(
    method: str, workdir: Path, teacher_ckpt: Path, fp_file: Path, logit_files: dict[str, Path]
):
    """What lets experiments/efficacy.py keep only logs: re-running a recorded command (cmd.txt)
    gives the same log and weights bit for bit, and another seed does not."""
    extra = {
        "kd": ["--teacher", str(teacher_ckpt)],
        "fp-sample": ["--fingerprints", str(fp_file), "--lambda", "30"],
        "fp-replay": ["--fingerprints", str(logit_files["full"]), "--lambda", "30"],
    }[method]
    first, w1 = _run_for_repeat(workdir, f"repeat-{method}-a", method, *extra)
    again, w2 = _run_for_repeat(workdir, f"repeat-{method}-b", method, *extra)
    assert first == again
    assert w1.keys() == w2.keys() and all(torch.equal(w1[k], w2[k]) for k in w1)
    other, w3 = _run_for_repeat(workdir, f"repeat-{method}-seed1", method, *extra, "--seed", "1")
    assert other[0]["train_loss"] != first[0]["train_loss"]
    assert not all(torch.equal(w1[k], w3[k]) for k in w1 if w1[k].is_floating_point())
