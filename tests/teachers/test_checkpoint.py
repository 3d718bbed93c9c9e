"""Checkpoint layouts: where the state_dict is, the architecture and classes they name, strict loading.

Checkpoints of other trainers (Lightning, timm with EMA, DataParallel/DDP, torch.compile, ``net``) must
load into the same model as the bare state_dict, with the same weights digest, and say in
``Teacher.notes`` what was chosen or stripped; ambiguous files must ask for a choice.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from _teacher_helpers import check_teacher, same_outputs

from fpkit.errors import ConfigError, FormatError, MismatchError
from fpkit.models import resnet8, resnet20
from fpkit.teachers import load_teacher, weights_sha256


def test_repdistiller_checkpoint_with_module_prefix_inferred_arch(tmp_path: Path, net: torch.nn.Module) -> None:
    path = tmp_path / "ckpt_epoch_240.pth"
    sd = {f"module.{k}": v for k, v in net.state_dict().items()}
    torch.save({"model": sd, "epoch": 240, "accuracy": 12.5}, path)
    t = load_teacher(path)  # arch inferred, num_classes from fc
    assert (t.arch, t.num_classes) == ("resnet8", 10)
    assert t.weights_sha256 == weights_sha256(net.state_dict())


@pytest.mark.parametrize("key", ["state_dict", "model_state_dict", "net"])
def test_other_checkpoint_keys(tmp_path: Path, net: torch.nn.Module, key: str) -> None:
    path = tmp_path / "t.pt"
    torch.save({key: net.state_dict(), "optimizer": {"lr": 0.1}}, path)
    assert load_teacher(path).arch == "resnet8"


def test_checkpoint_arch_entry_used(tmp_path: Path) -> None:
    model = resnet20(num_classes=10)
    sd = model.state_dict()
    path = tmp_path / "t.pt"
    torch.save({"model": sd, "arch": "resnet20"}, path)
    assert load_teacher(path).arch == "resnet20"


def test_checkpoint_arch_callable_not_imported(tmp_path: Path, net: torch.nn.Module) -> None:
    """A file must not choose code to import: a 'pkg:callable' arch entry is ignored."""
    path = tmp_path / "t.pt"
    torch.save({"model": net.state_dict(), "arch": "os:system"}, path)
    assert load_teacher(path).arch == "resnet8"


def test_dict_without_state_dict(tmp_path: Path) -> None:
    path = tmp_path / "t.pt"
    torch.save({"epoch": 3, "lr": 0.1}, path)
    with pytest.raises(FormatError, match="no state_dict"):
        load_teacher(path)


def test_unknown_arch_needs_flag(tmp_path: Path) -> None:
    path = tmp_path / "t.pt"
    torch.save(torch.nn.Linear(5, 3).state_dict(), path)
    with pytest.raises(ConfigError, match="--arch"):
        load_teacher(path)


def test_wrong_arch(tmp_path: Path, net: torch.nn.Module) -> None:
    path = tmp_path / "t.pt"
    torch.save(net.state_dict(), path)
    with pytest.raises(MismatchError, match="unexpected|missing") as info:
        load_teacher(path, arch="resnet20")
    assert "--arch" in str(info.value)
    with pytest.raises(MismatchError, match="shape"):
        load_teacher(path, arch="resnet8", num_classes=100)
    with pytest.raises(MismatchError, match="shape"):
        load_teacher(path, arch="resnet8", in_channels=1)


SD = dict[str, torch.Tensor]


def _prefixed(prefix: str, sd: SD) -> SD:
    return {prefix + k: v for k, v in sd.items()}


@pytest.fixture(scope="module")
def other() -> torch.nn.Module:
    """A second resnet8 with different weights (the non-chosen copy in a file holding two)."""
    torch.manual_seed(1)
    return resnet8(num_classes=10).eval()


# name -> (checkpoint built from (teacher sd, other sd), substrings each expected note holds)
LAYOUTS: dict[str, tuple[Callable[[SD, SD], object], list[list[str]]]] = {
    "lightning_model_prefix": (
        lambda sd, _: {
            "state_dict": _prefixed("model.", sd),
            "epoch": 3,
            "global_step": 120,
            "pytorch-lightning_version": "2.2.0",
            "hyper_parameters": {"lr": 0.1},
        },
        [["stripped the key prefix 'model.'", "56 keys", "fit resnet8"]],
    ),
    "lightning_net_prefix_with_loss_buffer": (
        lambda sd, _: {"state_dict": {**_prefixed("net.", sd), "criterion.weight": torch.ones(10)}},
        [["stripped the key prefix 'net.'"], ["ignored 1 key outside 'net.'", "'criterion.weight'"]],
    ),
    "timm_state_dict_ema": (
        lambda sd, o: {"state_dict": o, "state_dict_ema": sd, "epoch": 9, "arch": "resnet8"},
        [["EMA weights 'state_dict_ema'", "timm's default", "--checkpoint-key state_dict"]],
    ),
    "timm_model_ema": (
        lambda sd, o: {"model": o, "model_ema": _prefixed("module.", sd), "epoch": 9},
        [
            ["EMA weights 'model_ema'", "--checkpoint-key model ", "plain weights under 'model'"],
            ["stripped the key prefix 'module.'", "DataParallel/DistributedDataParallel"],
        ],
    ),
    "dataparallel": (
        lambda sd, _: _prefixed("module.", sd),
        [["stripped the key prefix 'module.'", "DataParallel/DistributedDataParallel"]],
    ),
    "nested_model_module": (
        lambda sd, _: {"state_dict": _prefixed("model.module.", sd)},
        [["stripped the key prefix 'model.module.'", "'module.' is left by DataParallel"]],
    ),
    "net_entry": (lambda sd, _: {"net": sd, "acc": 91.0}, []),
    "torch_compile": (
        lambda sd, _: _prefixed("_orig_mod.", sd),
        [["stripped the key prefix '_orig_mod.'", "torch.compile"]],
    ),
    "ddp_of_compiled": (
        lambda sd, _: {"model": _prefixed("module._orig_mod.", sd)},
        [["'module._orig_mod.'", "DataParallel", "torch.compile"]],
    ),
}


@pytest.mark.parametrize("arch", [None, "resnet8"])
@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_layout_loads_same_model(
    tmp_path: Path, net: torch.nn.Module, other: torch.nn.Module, layout: str, arch: str | None
) -> None:
    build, expected_notes = LAYOUTS[layout]
    path = tmp_path / f"{layout}.ckpt"
    torch.save(build(net.state_dict(), other.state_dict()), path)
    t = load_teacher(path, arch=arch)
    check_teacher(t)
    assert (t.arch, t.num_classes, t.source_kind, t.trusted_code) == ("resnet8", 10, "state_dict", False)
    assert t.weights_sha256 == weights_sha256(net.state_dict())  # one identity, whatever the layout
    same_outputs(t.model, net)
    assert len(t.notes) == len(expected_notes), t.notes
    for note, parts in zip(t.notes, expected_notes):
        for part in parts:
            assert part in note, (part, note)


def test_bare_state_dict_has_no_notes(tmp_path: Path, net: torch.nn.Module) -> None:
    path = tmp_path / "t.pt"
    torch.save(net.state_dict(), path)
    assert load_teacher(path).notes == ()
    torch.save({"model": net.state_dict(), "epoch": 240}, path)  # RepDistiller
    assert load_teacher(path).notes == ()


def test_safetensors_with_prefix(tmp_path: Path, net: torch.nn.Module) -> None:
    save_file = pytest.importorskip("safetensors.torch").save_file
    path = tmp_path / "t.safetensors"
    save_file({k: v.contiguous() for k, v in _prefixed("model.", net.state_dict()).items()}, str(path))
    t = load_teacher(path)
    assert t.weights_sha256 == weights_sha256(net.state_dict())
    assert t.notes and "'model.'" in t.notes[0]


def test_checkpoint_key_picks_plain_over_ema(tmp_path: Path, net: torch.nn.Module, other: torch.nn.Module) -> None:
    path = tmp_path / "last.pth.tar"
    torch.save({"state_dict": other.state_dict(), "state_dict_ema": net.state_dict()}, path)
    assert load_teacher(path).weights_sha256 == weights_sha256(net.state_dict())  # EMA by default
    t = load_teacher(path, checkpoint_key="state_dict")
    assert t.weights_sha256 == weights_sha256(other.state_dict())
    assert t.notes == ()  # asked for, nothing to say
    same_outputs(t.model, other)


def test_equal_ema_and_plain_need_no_note(tmp_path: Path, net: torch.nn.Module) -> None:
    path = tmp_path / "t.pt"
    copy = {k: v.clone() for k, v in net.state_dict().items()}
    torch.save({"state_dict": net.state_dict(), "state_dict_ema": copy}, path)
    assert load_teacher(path).notes == ()


def test_other_weights_in_the_file_are_named(tmp_path: Path, net: torch.nn.Module, other: torch.nn.Module) -> None:
    path = tmp_path / "t.pt"
    torch.save({"model": net.state_dict(), "teacher": other.state_dict()}, path)
    t = load_teacher(path)
    assert t.weights_sha256 == weights_sha256(net.state_dict())
    assert t.notes == (
        "the checkpoint also holds different weights under 'teacher'; using 'model' (the first of "
        "state_dict_ema, model_ema, model, state_dict, model_state_dict, net); pass --checkpoint-key teacher "
        "(checkpoint_key='teacher') for those",
    )


def test_student_and_teacher_of_one_arch_are_ambiguous(
    tmp_path: Path, net: torch.nn.Module, other: torch.nn.Module
) -> None:
    path = tmp_path / "kd.ckpt"
    sd = {**_prefixed("student.", other.state_dict()), **_prefixed("teacher.", net.state_dict())}
    torch.save({"state_dict": sd, "epoch": 1}, path)
    for arch in (None, "resnet8"):
        with pytest.raises(ConfigError, match="2 networks") as info:
            load_teacher(path, arch=arch)
        assert "--checkpoint-key" in str(info.value)
        assert "state_dict.student, state_dict.teacher" in str(info.value)
    t = load_teacher(path, checkpoint_key="state_dict.teacher")
    assert t.weights_sha256 == weights_sha256(net.state_dict())
    same_outputs(t.model, net)
    assert t.notes == ()
    assert load_teacher(path, checkpoint_key="state_dict.student.").weights_sha256 == weights_sha256(other.state_dict())


def test_arch_picks_the_network_that_fits(tmp_path: Path, net: torch.nn.Module) -> None:
    torch.manual_seed(2)
    big = resnet20(num_classes=10).eval()
    path = tmp_path / "kd.ckpt"
    torch.save(
        {"state_dict": {**_prefixed("student.", net.state_dict()), **_prefixed("teacher.", big.state_dict())}}, path
    )
    t = load_teacher(path, arch="resnet20")
    assert t.weights_sha256 == weights_sha256(big.state_dict())
    same_outputs(t.model, big)
    assert "stripped the key prefix 'teacher.'" in t.notes[0]
    assert t.notes[1].startswith("ignored 56 keys outside 'teacher.': 'student.conv1.weight'")


def test_prefix_kept_when_the_model_has_it(tmp_path: Path) -> None:
    """Keys are stripped only when that makes them fit: a model whose own keys start with model. keeps them."""
    from _teacher_helpers import Wrapped

    torch.manual_seed(3)
    wrapped = Wrapped().eval()
    path = tmp_path / "t.pt"
    torch.save(wrapped.state_dict(), path)
    t = load_teacher(path, arch="_teacher_helpers:Wrapped")
    assert t.notes == ()
    assert t.weights_sha256 == weights_sha256(wrapped.state_dict())
    assert next(iter(t.model.state_dict())).startswith("model.")


def test_unknown_entry_suggests_checkpoint_key(tmp_path: Path, net: torch.nn.Module) -> None:
    path = tmp_path / "t.pt"
    torch.save({"teacher": net.state_dict(), "epoch": 3}, path)
    with pytest.raises(FormatError, match="--checkpoint-key teacher"):
        load_teacher(path)
    assert load_teacher(path, checkpoint_key="teacher").weights_sha256 == weights_sha256(net.state_dict())


@pytest.mark.parametrize(
    ("key", "message"),
    [
        ("nope", "no entry 'nope'.*entries holding weights: 'state_dict'"),
        ("epoch", "entry 'epoch' .* holds a int, not weights"),
        ("state_dict.teacher", "no key of entry 'state_dict' .* starts with 'teacher.'.*56 keys, all under 'model.'"),
        (".", "must name an entry"),
    ],
)
def test_checkpoint_key_errors(tmp_path: Path, net: torch.nn.Module, key: str, message: str) -> None:
    path = tmp_path / "t.pt"
    torch.save({"state_dict": _prefixed("model.", net.state_dict()), "epoch": 3}, path)
    with pytest.raises(ConfigError, match=message):
        load_teacher(path, checkpoint_key=key)


def test_checkpoint_key_in_a_trusted_module(tmp_path: Path, net: torch.nn.Module) -> None:
    path = tmp_path / "t.pt"
    torch.save({"model": torch.nn.DataParallel(net)}, path)
    t = load_teacher(path, trust_code=True, arch="resnet8")  # the module's keys carry module.
    assert t.weights_sha256 == weights_sha256(net.state_dict())
    assert "'module.'" in t.notes[0]
    t = load_teacher(path, trust_code=True, checkpoint_key="model.module")  # the submodule, no arch
    assert (t.arch, t.source_kind) == ("resnet8", "pickled_module")
    assert t.weights_sha256 == weights_sha256(net.state_dict())


def test_wrong_arch_behind_a_prefix_gets_a_hint(tmp_path: Path, net: torch.nn.Module) -> None:
    """The issue's case: a Lightning checkpoint and the wrong --arch."""
    path = tmp_path / "t.ckpt"
    torch.save({"state_dict": _prefixed("model.", net.state_dict())}, path)
    with pytest.raises(MismatchError) as info:
        load_teacher(path, arch="resnet20")
    text = str(info.value)
    assert "keys compared after stripping 'model.'" in text
    assert "72 missing keys ['layer1.1.conv1.weight'" in text
    assert "0 unexpected keys" in text
    assert "the weights look like resnet8: pass --arch resnet8" in text
    assert "--checkpoint-key" in text


def test_foreign_keys_get_their_common_prefix(tmp_path: Path) -> None:
    path = tmp_path / "t.ckpt"
    torch.save({"state_dict": _prefixed("model.", torch.nn.Linear(4, 10).state_dict())}, path)
    with pytest.raises(MismatchError) as info:
        load_teacher(path, arch="resnet8", num_classes=10)
    text = str(info.value)
    assert "56 missing keys ['conv1.weight', 'bn1.weight'" in text
    assert "2 unexpected keys ['model.weight', 'model.bias']" in text
    assert "the unexpected keys all start with 'model.'" in text
    assert "--arch" in text
    with pytest.raises(ConfigError, match=r"cannot tell the architecture .*2 keys, all under 'model.'.*--arch"):
        load_teacher(path)
