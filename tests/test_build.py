"""fpkit build: exact fingerprints, resumability, sharding, and its error paths."""

from __future__ import annotations

import itertools
import re
import subprocess
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision.transforms.functional as TF
from _support import PYTHON, SYNTHETIC_DATA, build_options, subprocess_env, write_tiny_teacher

from fpkit.build import BuildInterrupted, BuildOptions, build, workstore
from fpkit.datasets import open_source
from fpkit.errors import ConfigError, MismatchError, NonFiniteError, OutputExistsError
from fpkit.format import open_fingerprints, verify_fingerprints
from fpkit.projection import make_projection
from fpkit.teachers import load_teacher

DATA = SYNTHETIC_DATA


def opts(tmp_path, teacher, **kw) -> BuildOptions:
    return build_options(tmp_path, teacher, **kw)


def independent_fingerprints(teacher_path, params_per_sample, layer="layer3", seed=0, r=128, data=DATA):
    """Straightforward reference: per image, per view, torchvision transforms on PIL, hook on layer."""
    src = open_source(data)
    ds = src.torch_dataset()
    model = load_teacher(teacher_path).model
    got = {}
    model.get_submodule(layer).register_forward_hook(lambda m, i, o: got.__setitem__("f", o))
    R = None
    out = []
    for i in range(len(ds)):
        img, _ = ds[i]
        views = []
        for top, left, flip in params_per_sample[i]:
            x = TF.crop(TF.pad(img, 4, fill=0), int(top), int(left), 32, 32)
            if flip:
                x = TF.hflip(x)
            views.append(TF.normalize(TF.to_tensor(x), src.mean, src.std))
        phis = []
        for v in views:
            with torch.no_grad():
                model(v[None])
            f = got["f"].mean(dim=(2, 3))[0].double()
            if R is None:
                R = torch.from_numpy(make_projection(f.shape[0], r, seed)).double()
            phis.append((f / f.norm()) @ R)
        out.append(torch.stack(phis).mean(0).numpy())
    return np.stack(out)


def test_k_views_match_independent_computation(tmp_path, tiny_teacher):
    res = build(opts(tmp_path, tiny_teacher, replay=True), quiet=True)
    fp = open_fingerprints(res.path)
    params = fp.view_params
    assert params.shape == (24, 3, 3)
    ref = independent_fingerprints(tiny_teacher, params)
    np.testing.assert_allclose(fp.table("sample"), ref, atol=2e-6)
    # per-class = mean of per-sample fingerprints of the class
    lab = fp.labels
    cls = np.stack([ref[lab == c].mean(0) for c in range(10)])
    np.testing.assert_allclose(fp.table("class"), cls, atol=2e-6)
    # per-view table averages to the per-sample one
    np.testing.assert_allclose(fp.table("views").mean(1), fp.table("sample"), atol=1e-6)
    assert fp.metadata.views.per_sample == 3 and fp.metadata.teacher.accuracy.count == 72


def test_all_views_is_the_exact_expectation(tmp_path, tiny_teacher):
    res = build(opts(tmp_path, tiny_teacher, dataset="synthetic:3x10", views="all", batch_size=200), quiet=True)
    fp = open_fingerprints(res.path)
    assert fp.metadata.views.count == "all" and fp.metadata.views.per_sample == 162
    every = list(itertools.product(range(9), range(9), range(2)))
    ref = independent_fingerprints(tiny_teacher, [every] * 3, data="synthetic:3x10")
    np.testing.assert_allclose(fp.table("sample"), ref, atol=2e-6)


def test_two_layers_and_identity_metadata(tmp_path, tiny_teacher):
    res = build(opts(tmp_path, tiny_teacher, layers=("layer2", "layer3"), r=16, seed=5), quiet=True)
    fp = open_fingerprints(res.path)
    assert [(lay.name, lay.d, lay.r, lay.seed) for lay in fp.layers] == [("layer2", 32, 16, 5), ("layer3", 64, 16, 6)]
    assert np.array_equal(fp.projection("layer2"), make_projection(32, 16, 5))
    t = load_teacher(tiny_teacher)
    m = fp.metadata
    assert m.teacher.weights_sha256 == t.weights_sha256 and m.teacher.num_params == t.num_params
    assert m.dataset.name == DATA and m.dataset.normalize.mean == (0.5, 0.5, 0.5)
    assert verify_fingerprints(res.path) == []


def _interrupt_after(monkeypatch, chunks: int):
    real = workstore.WorkStore.mark_done
    calls = {"n": 0}

    def mark(self, c, correct, count):
        real(self, c, correct, count)
        calls["n"] += 1
        if calls["n"] == chunks:
            raise KeyboardInterrupt

    monkeypatch.setattr(workstore.WorkStore, "mark_done", mark)


def test_interrupt_then_resume_equals_uninterrupted(tmp_path, tiny_teacher, monkeypatch):
    ref = build(opts(tmp_path, tiny_teacher, output=str(tmp_path / "ref.h5")), quiet=True)
    _interrupt_after(monkeypatch, 2)
    o = opts(tmp_path, tiny_teacher)
    with pytest.raises(BuildInterrupted, match="--resume"):
        build(o, quiet=True)
    assert not Path(o.output).exists()
    assert (tmp_path / ".fp.h5.partial").is_dir()
    monkeypatch.undo()
    with pytest.raises(OutputExistsError, match="--resume"):
        build(o, quiet=True)
    o.resume = True
    res = build(o, quiet=True)
    assert res.chunks_resumed == 2
    a, b = open_fingerprints(ref.path), open_fingerprints(res.path)
    for kind in ("sample", "class"):
        assert np.array_equal(a.table(kind), b.table(kind))
    assert a.metadata.teacher == b.metadata.teacher
    assert a.metadata.datasets == b.metadata.datasets
    assert not (tmp_path / ".fp.h5.partial").exists()


def test_resume_with_other_settings_is_refused(tmp_path, tiny_teacher, monkeypatch):
    _interrupt_after(monkeypatch, 1)
    with pytest.raises(BuildInterrupted):
        build(opts(tmp_path, tiny_teacher), quiet=True)
    monkeypatch.undo()
    with pytest.raises(MismatchError, match=r"--layer/--r.*r=128.*now layer3 \(avg, d=64, r=64"):
        build(opts(tmp_path, tiny_teacher, r=64, resume=True), quiet=True)
    # the message names the options that changed, with both values, and nothing else
    with pytest.raises(MismatchError) as e:
        build(opts(tmp_path, tiny_teacher, views=2, resume=True), quiet=True)
    assert "--views was 3, now 2" in str(e.value) and "batch" not in str(e.value)
    with pytest.raises(MismatchError, match=r"samples per teacher step \(--batch-size // views\) was 4, now 2"):
        build(opts(tmp_path, tiny_teacher, batch_size=6, resume=True), quiet=True)
    with pytest.raises(MismatchError, match="--view-seed was 0, now 5"):
        build(opts(tmp_path, tiny_teacher, view_seed=5, resume=True), quiet=True)
    res = build(opts(tmp_path, tiny_teacher, r=64, force=True), quiet=True)
    assert open_fingerprints(res.path).layers[0].r == 64


def test_errors_remove_fresh_work_folder(tmp_path, tiny_teacher, monkeypatch):
    def boom(*a, **k):
        raise ConfigError("synthetic failure")

    monkeypatch.setattr(workstore.WorkStore, "mark_done", boom)
    with pytest.raises(ConfigError):
        build(opts(tmp_path, tiny_teacher), quiet=True)
    assert list(tmp_path.iterdir()) == [tmp_path / "teacher.pt"]


def test_output_exists_and_force(tmp_path, tiny_teacher):
    build(opts(tmp_path, tiny_teacher), quiet=True)
    with pytest.raises(OutputExistsError, match="--force"):
        build(opts(tmp_path, tiny_teacher), quiet=True)
    build(opts(tmp_path, tiny_teacher, force=True, seed=3), quiet=True)
    assert open_fingerprints(tmp_path / "fp.h5").layers[0].seed == 3
    res = build(opts(tmp_path, tiny_teacher, resume=True, seed=3), quiet=True)  # complete: nothing to do
    assert res.teacher_forwards == 0


@pytest.mark.parametrize(
    "kw,match",
    [
        (dict(r=0), "--r"),
        (dict(views=0), "--views"),
        (dict(layers=("layer9",)), "layer9"),
        (dict(tables=("pixels",)), "--tables"),
        (dict(force=True, resume=True), "only one"),
        (dict(dataset="nope"), "unknown dataset"),
        (dict(output="/nonexistent-dir/x.h5"), "does not exist"),
    ],
)
def test_bad_options(tmp_path, tiny_teacher, kw, match):
    with pytest.raises(ConfigError if "does not exist" not in match else FileNotFoundError, match=match):
        build(opts(tmp_path, tiny_teacher, **kw), quiet=True)


def test_teacher_class_count_must_match_dataset(tmp_path, tiny_teacher):
    with pytest.raises(MismatchError, match="10 outputs"):
        build(opts(tmp_path, tiny_teacher, dataset="synthetic:12x4"), quiet=True)


def test_nonfinite_features_name_the_samples(tmp_path, monkeypatch):
    mod = tmp_path / "nanmodel.py"
    mod.write_text(
        textwrap.dedent("""
        import torch
        from fpkit.models.cifar_resnet import resnet8
        class Poison(torch.nn.Module):
            def forward(self, x):
                bad = (x[:, 0, 16, 16] > 1.2)[:, None, None, None]
                return torch.where(bad, torch.full_like(x, float('nan')), x)
        def build(num_classes=10, in_channels=3):
            torch.manual_seed(0)
            m = resnet8(num_classes=num_classes)
            m.conv1 = torch.nn.Sequential(Poison(), m.conv1)
            return m
    """)
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    torch.save(__import__("nanmodel").build().state_dict(), tmp_path / "nan.pt")
    with pytest.raises(NonFiniteError, match=r"samples \[") as e:
        build(opts(tmp_path, tmp_path / "nan.pt", arch="nanmodel:build", views=1, padding=0, flip=False), quiet=True)
    assert not (tmp_path / "fp.h5").exists() and not (tmp_path / ".fp.h5.partial").exists()
    # the named samples are exactly those whose centre pixel trips the poison
    src = open_source(DATA)
    x = (src.get_batch(range(24))[:, 0, 16, 16].float() / 255 - 0.5) / 0.25
    expected = sorted(np.nonzero((x > 1.2).numpy())[0].tolist())
    assert expected and f"{len(expected)} samples {expected[:20]}" in str(e.value)


def test_torchrun_two_ranks_equal_single_process(tmp_path, tiny_teacher):
    single = build(opts(tmp_path, tiny_teacher, output=str(tmp_path / "one.h5")), quiet=True)
    cmd = [
        PYTHON,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc-per-node",
        "2",
        "-m",
        "fpkit",
        "build",
        str(tiny_teacher),
        DATA,
        "-o",
        str(tmp_path / "two.h5"),
        "--views",
        "3",
        "--dtype",
        "float32",
        "--chunk-size",
        "8",
        "--batch-size",
        "12",
        "--device",
        "cpu",
        "-q",
    ]
    p = subprocess.run(cmd, env=subprocess_env(), capture_output=True, text=True, timeout=240)
    assert p.returncode == 0, p.stderr[-2000:]
    a, b = open_fingerprints(single.path), open_fingerprints(tmp_path / "two.h5")
    for kind in ("sample", "class"):
        assert np.array_equal(a.table(kind), b.table(kind))
    assert b.metadata.compute.world_size == 2
    assert a.metadata.teacher.accuracy == b.metadata.teacher.accuracy


def test_redacted_build_uses_a_secret_seed(tmp_path, tiny_teacher, monkeypatch):
    a = build(opts(tmp_path, tiny_teacher, output=str(tmp_path / "a.h5"), redact=True), quiet=True)
    b = build(opts(tmp_path, tiny_teacher, output=str(tmp_path / "b.h5"), redact=True), quiet=True)
    la, lb = open_fingerprints(a.path).layers[0], open_fingerprints(b.path).layers[0]
    assert la.seed is None and not la.projection_stored
    assert la.projection_sha256 != lb.projection_sha256  # not seed 0, not repeatable
    assert (
        la.projection_sha256
        != open_fingerprints(build(opts(tmp_path, tiny_teacher, output=str(tmp_path / "c.h5")), quiet=True).path)
        .layers[0]
        .projection_sha256
    )
    # an interrupted redacted build resumes with its own secret seed
    _interrupt_after(monkeypatch, 1)
    o = opts(tmp_path, tiny_teacher, output=str(tmp_path / "r.h5"), redact=True)
    with pytest.raises(BuildInterrupted):
        build(o, quiet=True)
    monkeypatch.undo()
    o.resume = True
    assert build(o, quiet=True).chunks_resumed == 1


def test_resume_of_a_complete_file_checks_its_settings(tmp_path, tiny_teacher):
    build(opts(tmp_path, tiny_teacher), quiet=True)
    assert build(opts(tmp_path, tiny_teacher, resume=True), quiet=True).teacher_forwards == 0
    with pytest.raises(OutputExistsError, match="other settings"):
        build(opts(tmp_path, tiny_teacher, r=64, resume=True), quiet=True)


def test_full_disk_before_work_starts(tmp_path, tiny_teacher, monkeypatch):
    import errno
    import os

    from fpkit.errors import StorageError

    def full(fd, offset, length):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "posix_fallocate", full)
    with pytest.raises(StorageError, match="not enough disk space"):
        build(opts(tmp_path, tiny_teacher), quiet=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["teacher.pt"]


@pytest.mark.parametrize(
    "kw, message",
    [
        (dict(views=200), "more views than the policy has distinct ones \\(162\\).*--views all"),
        (dict(redact=True, seed=3), "anyone who guesses --seed 3 recovers R"),
        (dict(r=4), "--r 4 keeps very few dimensions"),
        (dict(r=257), r"--r 257 is more than 4x the width d=64 of layer layer3: .* MB in the file.*r >= d"),
    ],
)
def test_valid_but_suspicious_options_warn(tmp_path, tiny_teacher, kw, message):
    logged: list[str] = []
    build(opts(tmp_path, tiny_teacher, dataset="synthetic:4x10", **kw), log=logged.append)
    assert any(re.search(message, line) and "warning" in line for line in logged), logged


def test_embedded_has_only_a_test_split(tmp_path):
    res = build(BuildOptions(output=str(tmp_path / "e.h5"), views=1, device="cpu"), quiet=True)  # the default
    assert open_fingerprints(res.path).metadata.dataset.split == "test"
    with pytest.raises(ConfigError, match="only a test split.*--split test"):
        build(BuildOptions(split="train", output=str(tmp_path / "t.h5"), device="cpu"), quiet=True)


def test_build_refuses_a_module_called_twice_per_forward(tmp_path, tiny_teacher):
    """--layer layer3.0.relu: the BasicBlock calls its relu twice; the build names the block instead
    and leaves nothing behind."""
    with pytest.raises(ConfigError, match=r"'layer3.0.relu' runs 2 times.*'layer3.0'"):
        build(opts(tmp_path, tiny_teacher, layers=["layer3.0.relu"]), quiet=True)
    assert list(tmp_path.iterdir()) == [tmp_path / "teacher.pt"]


def test_random_teacher_warns_near_chance_and_collapsed(tmp_path, tiny_teacher):
    """The tiny teacher is random-init: on the 500 embedded CIFAR-10 images its top-1 is at chance and
    its class fingerprints all point one way; the trained embedded teacher gets neither warning."""
    logged: list[str] = []
    kw = dict(dataset="embedded", views=1, chunk_size=None, batch_size=250)
    build(opts(tmp_path, tiny_teacher, **kw), log=logged.append)
    warnings = [line for line in logged if line.startswith("[fpkit build] warning: ")]
    assert any(re.search(r"top-1 on the built views is 0\.\d+, near chance \(1/10", w) for w in warnings), logged
    assert any(re.search(r"class fingerprints of layer layer3 have collapsed.*cosine is 0\.99", w) for w in warnings)
    logged.clear()
    build(opts(tmp_path, "embedded", output=str(tmp_path / "e.h5"), **kw), log=logged.append)
    assert not [line for line in logged if "warning" in line], logged


def test_diagnosis_rules():
    from fpkit.diagnose import chance_threshold, collapse_warning, mean_pairwise_cosine, near_chance_warning

    assert chance_threshold(10, 50_000) == pytest.approx(0.15)  # 1.5 x chance dominates for large N
    assert chance_threshold(10, 100) == pytest.approx(0.1 + 3 * 0.03)  # 3 standard errors for small N
    assert near_chance_warning(0.14, 10, 500) and not near_chance_warning(0.16, 10, 500)
    assert near_chance_warning(None, 10, 500) is None
    rows = np.random.default_rng(0).normal(size=(7, 5))
    rows[3] = 0  # an empty class is left out
    unit = rows[[0, 1, 2, 4, 5, 6]] / np.linalg.norm(rows[[0, 1, 2, 4, 5, 6]], axis=1, keepdims=True)
    brute = (unit @ unit.T)[~np.eye(6, dtype=bool)].mean()
    assert mean_pairwise_cosine(rows) == pytest.approx(brute)
    assert collapse_warning(np.ones((3, 4)) + 1e-3 * np.eye(3, 4), "x") and not collapse_warning(np.eye(3), "x")


def test_default_chunks_keep_work_of_small_builds(tmp_path, tiny_teacher, monkeypatch):
    """24 samples: the default chunk is ceil(24/8) = 3 (it was 1,024: one chunk, nothing kept on
    Ctrl-C).  An interrupted build says how much it kept; the resume continues with the chunk size it
    started with and equals an uninterrupted build, which equals one with other chunks (8)."""
    ref = build(opts(tmp_path, tiny_teacher, output=str(tmp_path / "ref.h5")), quiet=True)  # chunk_size=8
    _interrupt_after(monkeypatch, 2)
    o = opts(tmp_path, tiny_teacher, chunk_size=None)
    with pytest.raises(BuildInterrupted, match=r"2 of 8 chunks \(3 samples each\) are finished and kept.*--resume"):
        build(o, quiet=True)
    monkeypatch.undo()
    o.resume = True
    res = build(o, quiet=True)
    assert res.chunks_resumed == 2
    a, b = open_fingerprints(ref.path), open_fingerprints(res.path)
    for kind in ("sample", "class"):
        assert np.array_equal(a.table(kind), b.table(kind))
    assert a.metadata.datasets == b.metadata.datasets  # the same bytes in every table (SPEC section 6 digests)


def test_resume_keeps_the_chunk_size_it_started_with(tmp_path, tiny_teacher, monkeypatch):
    """A build started with chunks of 8 (e.g. by an fpkit whose default was other) resumes with
    them when --chunk-size is left out."""
    _interrupt_after(monkeypatch, 1)
    with pytest.raises(BuildInterrupted, match="1 of 3 chunks"):
        build(opts(tmp_path, tiny_teacher, chunk_size=8), quiet=True)
    monkeypatch.undo()
    res = build(opts(tmp_path, tiny_teacher, chunk_size=None, resume=True), quiet=True)
    assert res.chunks_resumed == 1


def test_interrupt_before_any_chunk_says_nothing_is_kept(tmp_path, tiny_teacher, monkeypatch):
    def stop(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(workstore.WorkStore, "mark_done", stop)
    with pytest.raises(BuildInterrupted, match="before any chunk was finished; nothing to resume") as e:
        build(opts(tmp_path, tiny_teacher, chunk_size=64), quiet=True)
    assert "kept" not in str(e.value)
    assert list(tmp_path.iterdir()) == [tmp_path / "teacher.pt"]  # so a plain rerun starts


def test_speed_figures_name_their_unit_and_share_one_span(tmp_path, tiny_teacher):
    import io

    from fpkit.build.progress import Progress

    res = build(opts(tmp_path, tiny_teacher), quiet=True)
    assert 0 < res.compute_seconds <= res.seconds
    assert res.views_per_second == pytest.approx(24 * 3 / res.compute_seconds)
    assert res.images_per_second == pytest.approx(24 / res.compute_seconds)
    out = io.StringIO()
    p = Progress(10, quiet=False, stream=out)
    p.start -= 2.0  # 2 s ago: 10 images x 4 views in 2 s
    p.update(10, 4)
    assert re.search(r"10/10 samples  5(\.\d+)? images/s \(2\d views/s\)", out.getvalue()), out.getvalue()


# ------------------------------------------------------------ issue 11 items 1-3: normalisation, names, datasets
def _norm(path) -> tuple[list[float], list[float]]:
    n = open_fingerprints(path).metadata.dataset.normalize.to_json()
    return [round(x, 6) for x in n["mean"]], [round(x, 6) for x in n["std"]]


def _image_folder(path: Path, classes: int = 10) -> Path:
    """PATH/<class>/0.png, one random 32x32 image per class (no split folders inside)."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for c in range(classes):
        (path / f"c{c}").mkdir(parents=True)
        Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(path / f"c{c}" / "0.png")
    return path


def test_the_checkpoints_recorded_normalization_is_used_unless_overridden(tmp_path):
    """Item 1: a checkpoint recording mean/std is built with them (the dataset's own are ignored);
    --normalize overrides with a warning that the two differ."""
    sd = torch.load(write_tiny_teacher(tmp_path / "plain.pt"), weights_only=True)["model"]
    t = tmp_path / "rec.pt"
    torch.save({"model": sd, "normalize": {"mean": [0.1, 0.2, 0.3], "std": [0.3, 0.4, 0.5]}}, t)
    logged: list[str] = []
    res = build(opts(tmp_path, t, output=str(tmp_path / "a.h5")), log=logged.append)
    assert _norm(res.path) == ([0.1, 0.2, 0.3], [0.3, 0.4, 0.5])
    assert any("normalisation: recorded in the teacher's checkpoint" in line for line in logged), logged
    logged.clear()
    res = build(opts(tmp_path, t, output=str(tmp_path / "b.h5"), normalize="cifar10"), log=logged.append)
    assert _norm(res.path)[0] == [0.4914, 0.4822, 0.4465]
    assert any("warning: --normalize cifar10" in line and "differs from" in line for line in logged), logged


def test_embedded_teacher_on_an_image_folder_uses_its_recorded_statistics(tmp_path):
    """Item 1, the issue's case: `fpkit build embedded imagefolder:PATH/test` used ImageNet's statistics
    although the embedded checkpoint records CIFAR-10's."""
    folder = _image_folder(tmp_path / "cifar" / "test")
    logged: list[str] = []
    o = BuildOptions(dataset=f"imagefolder:{folder}", output=str(tmp_path / "e.h5"), views=1, device="cpu")
    res = build(o, log=logged.append)
    assert _norm(res.path) == ([0.4914, 0.4822, 0.4465], [0.247, 0.2435, 0.2616])
    assert not any("warning: neither" in line or "differs from" in line for line in logged), logged


def test_unknown_statistics_are_said_loudly_and_known_ones_named(tmp_path, tiny_teacher):
    """Item 1: a plain state_dict on an image folder: a warning names the statistics used; on a dataset
    with its own statistics, a note names them."""
    folder = _image_folder(tmp_path / "imgs")
    logged: list[str] = []
    res = build(opts(tmp_path, tiny_teacher, dataset=f"imagefolder:{folder}"), log=logged.append)
    assert _norm(res.path)[0] == [0.485, 0.456, 0.406]
    assert any("warning: neither" in line and "ImageNet's statistics" in line for line in logged), logged
    logged.clear()
    build(opts(tmp_path, tiny_teacher, output=str(tmp_path / "s.h5")), log=logged.append)
    assert any(f"normalisation: {DATA}'s own statistics" in line for line in logged), logged


def test_image_folder_output_name_and_split_are_true(tmp_path, tiny_teacher, monkeypatch):
    """Item 2: imagefolder:D/test is split 'test' of D, written as TEACHER-D-test.h5 (was ...-test-train.h5)."""
    folder = _image_folder(tmp_path / "cifar" / "test")
    monkeypatch.chdir(tmp_path)
    res = build(opts(tmp_path, tiny_teacher, dataset=f"imagefolder:{folder}", output=None), quiet=True)
    assert res.path == Path("teacher-cifar-test.h5")
    d = open_fingerprints(res.path).metadata.dataset
    assert (d.name, d.split) == (f"imagefolder:{tmp_path / 'cifar'}", "test")
    flat = _image_folder(tmp_path / "pics")
    res = build(opts(tmp_path, tiny_teacher, dataset=f"imagefolder:{flat}", output=None), quiet=True)
    assert res.path == Path("teacher-pics-all.h5")
    assert verify_fingerprints(res.path) == []


def test_a_users_teacher_needs_a_dataset(tmp_path, tiny_teacher, monkeypatch):
    """Item 3: a user's teacher without DATASET fingerprinted the 500 embedded images; now an error
    naming the fix, and nothing written.  A missing teacher is reported before the dataset is touched."""
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match=r"no DATASET given for teacher .*teacher\.pt cifar10"):
        build(BuildOptions(teacher=str(tiny_teacher), views=1, device="cpu"), quiet=True)
    with pytest.raises(FileNotFoundError, match="teacher file missing.pt does not exist"):
        build(BuildOptions(teacher="missing.pt", dataset="cifar10", views=1, device="cpu"), quiet=True)
    with pytest.raises(ConfigError, match="TEACHER is missing: 'imagefolder:/x' is a dataset"):
        build(BuildOptions(teacher="imagefolder:/x"), quiet=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["teacher.pt"]  # no data/ folder, no output


# ------------------------------------------------------------ issue 11 item 7: the default batch per device


def test_default_batch_is_chosen_per_device_and_recorded(tmp_path, tiny_teacher):
    """Without --batch-size a CPU build runs the CPU default (views per forward, rounded down to
    whole samples); an explicit --batch-size is kept; the compute record holds the real batch."""
    from fpkit.build.job import DEFAULT_BATCH_SIZE, default_batch_size

    assert default_batch_size("cpu") == DEFAULT_BATCH_SIZE["cpu"] < DEFAULT_BATCH_SIZE["cuda"] == 512
    assert default_batch_size(torch.device("cuda", 1)) == 512  # by device type; no GPU needed to ask
    res = build(opts(tmp_path, tiny_teacher, batch_size=None, device="cpu"), quiet=True)
    assert open_fingerprints(res.path).metadata.compute.batch_size == DEFAULT_BATCH_SIZE["cpu"] // 3 * 3
    res = build(opts(tmp_path, tiny_teacher, batch_size=12, device="cpu", force=True), quiet=True)
    assert open_fingerprints(res.path).metadata.compute.batch_size == 12


def test_samples_per_step_rule():
    from fpkit.build.job import DEFAULT_BATCH_SIZE, samples_per_step

    assert samples_per_step(BuildOptions(batch_size=None), 8, "cpu") == DEFAULT_BATCH_SIZE["cpu"] // 8
    assert samples_per_step(BuildOptions(batch_size=None), 8, torch.device("cuda")) == 512 // 8
    assert samples_per_step(BuildOptions(batch_size=100), 8, "cuda") == 12  # explicit: on any device
    assert samples_per_step(BuildOptions(batch_size=2), 8, "cpu") == 1  # at least one sample per step


def test_resume_keeps_the_batch_it_started_with(tmp_path, tiny_teacher, monkeypatch):
    """A build started with --batch-size 6 (e.g. on another device, or by an fpkit whose default
    was other) resumes with it when --batch-size is left out, and records it; an explicit other
    batch is still refused."""
    _interrupt_after(monkeypatch, 1)
    with pytest.raises(BuildInterrupted):
        build(opts(tmp_path, tiny_teacher, batch_size=6), quiet=True)
    monkeypatch.undo()
    with pytest.raises(MismatchError, match=r"--batch-size // views\) was 2, now 4"):
        build(opts(tmp_path, tiny_teacher, batch_size=12, resume=True), quiet=True)
    res = build(opts(tmp_path, tiny_teacher, batch_size=None, resume=True), quiet=True)
    assert res.chunks_resumed == 1
    assert open_fingerprints(res.path).metadata.compute.batch_size == 6
