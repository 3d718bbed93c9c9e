"""torchvision teachers (``--arch torchvision:NAME``): weights from a state_dict or safetensors, the
default layer and pooling of the architecture table, ``fpkit layers``, ImageNet statistics, a build.

Random-init models with 10 classes; each architecture is built and saved once per module.  vit_b_16
is the heaviest (86 M parameters, 224-pixel input, about 5 s here in all)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from _teacher_helpers import check_teacher
from click.testing import CliRunner

from fpkit.cli import main
from fpkit.features import LayerTap, layer_pooling, list_layers, pool_features
from fpkit.normalization import NORMALIZE, choose_normalization
from fpkit.teachers import load_teacher
from fpkit.teachers.architectures import TORCHVISION_DEFAULTS, arch_default, arch_normalization

tv = pytest.importorskip("torchvision")

# name: (default layer, pooling, input size, classifier module)
CASES = {
    "resnet18": ("layer4", "avg", 32, "fc"),
    "resnet50": ("layer4", "avg", 32, "fc"),
    "convnext_tiny": ("classifier.0", "avg", 32, "classifier.2"),
    "vit_b_16": ("encoder", "token_cls", 224, "heads.head"),
}


NAMES = [pytest.param(name, marks=pytest.mark.heavy) if name == "vit_b_16" else name for name in CASES]


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """``saved(name, "pt" | "safetensors")``: the path of that architecture, seeded random init with 10
    classes, saved in that form; each is written once per module (and per test process), when asked."""
    from safetensors.torch import save_file

    folder = tmp_path_factory.mktemp("torchvision")
    states: dict[str, dict[str, torch.Tensor]] = {}

    def save(name: str, form: str) -> Path:
        path = folder / f"{name}.{form}"
        if not path.exists():
            if name not in states:
                torch.manual_seed(0)
                states[name] = tv.models.get_model(name, weights=None, num_classes=10).state_dict()
            if form == "pt":
                torch.save(states[name], path)
            else:
                save_file({k: v.contiguous() for k, v in states[name].items()}, str(path))
        return path

    yield save
    states.clear()


@pytest.mark.parametrize("name", NAMES)
def test_state_dict_loads_and_its_default_layer_feeds_the_classifier(saved, name):
    """Strict load, classes from the classifier's rows, the table's layer and pooling; the pooled
    tap of one image is exactly what the classifier classifies."""
    layer, pooling, size, classifier = CASES[name]
    t = load_teacher(saved(name, "pt"), arch=f"torchvision:{name}")
    check_teacher(t)
    assert (t.arch, t.num_classes, t.source_kind) == (f"torchvision:{name}", 10, "state_dict")
    assert (t.default_layer, t.default_pooling) == (layer, pooling)
    assert t.arch_normalize == (
        NORMALIZE["imagenet"],
        f"torchvision:{name} is a torchvision ImageNet architecture: ImageNet's statistics",
    )
    x = torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(0))
    with LayerTap(t.model, [t.default_layer], repeated="error") as tap, torch.no_grad():
        logits, feats = tap(x)
    f = feats[layer]
    assert layer_pooling(t.model, layer, f.ndim) == pooling  # what a build's "auto" pooling records
    explicit = "avg" if f.ndim == 4 else "token_mean"
    assert layer_pooling(t.model, layer, f.ndim, explicit) == explicit  # --pooling given: as asked
    with torch.no_grad():
        again = t.model.get_submodule(classifier)(pool_features(f, pooling))
    torch.testing.assert_close(again, logits)


@pytest.mark.parametrize("name", NAMES)
def test_layers_command_marks_the_default_of_a_safetensors_teacher(saved, name):
    """`fpkit layers` loads the safetensors weights and lists what can be tapped, the default marked."""
    layer, pooling, _, _ = CASES[name]
    r = CliRunner().invoke(main, ["layers", str(saved(name, "safetensors")), "--arch", f"torchvision:{name}"])
    assert r.exit_code == 0, r.output
    assert f"torchvision:{name} (as --arch names), 10 classes" in r.stderr
    marked = [line for line in r.stdout.splitlines() if line.startswith("*")]
    assert len(marked) == 1 and marked[0].startswith(f"* {layer}  ") and f"(default, {pooling} pooling)" in marked[0]
    assert len(r.stdout.splitlines()) > 20


def test_the_table_names_a_module_of_every_listed_model():
    """Every entry of the table (not only the four tested above) names a module of its model, built on
    the meta device (no memory, no weights)."""
    for name, entry in TORCHVISION_DEFAULTS.items():
        with torch.device("meta"):
            model = tv.models.get_model(name, weights=None, num_classes=10)
        assert entry.layer in dict(list_layers(model)), name
    assert arch_default("torchvision:resnet18") is TORCHVISION_DEFAULTS["resnet18"]
    assert arch_default("resnet8") is None and arch_default("torchvision:alexnet") is None


def test_imagenet_statistics_only_where_the_architecture_says_so():
    """torchvision classifiers imply ImageNet's statistics, below a recorded normalisation and the
    dataset's own; other architectures (and torchvision's non-classifiers) imply none."""
    implied = arch_normalization("torchvision:efficientnet_b0")
    assert implied is not None and implied[0] == NORMALIZE["imagenet"]
    assert arch_normalization("resnet56") is None and arch_normalization("mypkg.nets:build") is None
    assert arch_normalization("torchvision:fasterrcnn_resnet50_fpn") is None
    stats, notes, warnings = choose_normalization(None, None, None, "imagefolder:x", 3, implied)
    assert stats == NORMALIZE["imagenet"] and not warnings
    assert notes == [f"normalisation: {implied[1]} (mean [0.485, 0.456, 0.406], std [0.229, 0.224, 0.225])"]
    cifar = NORMALIZE["cifar10"]
    assert choose_normalization(None, None, cifar, "cifar10", 3, implied)[0] == cifar
    assert choose_normalization(None, cifar, None, "imagefolder:x", 3, implied)[0] == cifar
    _, _, warnings = choose_normalization(None, None, None, "imagefolder:x", 3)
    assert warnings and "neither" in warnings[0]


def _build(args: list[str]):
    return CliRunner().invoke(main, ["build", *args, "--views", "1", "--device", "cpu", "--json"])


def test_build_with_a_torchvision_resnet18(tmp_path, saved):
    """End to end at 32x32: the table's layer4 with avg pooling is recorded; on a synthetic dataset
    its own statistics, on an image folder ImageNet's with a note and no warning."""
    import json

    from fpkit.format import open_fingerprints

    pt = str(saved("resnet18", "pt"))
    r = _build([pt, "synthetic:16x10", "--arch", "torchvision:resnet18", "-o", str(tmp_path / "s.h5")])
    assert r.exit_code == 0, r.output
    assert "normalisation: synthetic:16x10's own statistics" in r.stderr and "warning: neither" not in r.stderr
    assert json.loads(r.stdout)["num_samples"] == 16
    fp = open_fingerprints(tmp_path / "s.h5")
    assert [(lay.name, lay.pooling, lay.d) for lay in fp.layers] == [("layer4", "avg", 512)]
    assert fp.metadata.teacher.arch == "torchvision:resnet18"

    from PIL import Image

    rng = np.random.default_rng(0)
    for c in range(10):
        (tmp_path / "img" / f"c{c}").mkdir(parents=True)
        Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(tmp_path / "img" / f"c{c}" / "0.png")
    r = _build([pt, f"imagefolder:{tmp_path / 'img'}", "--arch", "torchvision:resnet18", "-o", str(tmp_path / "i.h5")])
    assert r.exit_code == 0, r.output
    assert "normalisation: torchvision:resnet18 is a torchvision ImageNet architecture" in r.stderr
    assert "warning: neither" not in r.stderr, r.stderr


def test_a_pickled_torchvision_module_gets_the_same_defaults(tmp_path):
    """A whole pickled ResNet (trusted) is named by its class and takes the table's layer and
    ImageNet's statistics; torchvision's non-classifier classes imply none."""
    torch.save(tv.models.resnet18(num_classes=10), tmp_path / "m.pt")
    t = load_teacher(tmp_path / "m.pt", trust_code=True)
    assert (t.arch, t.default_layer, t.default_pooling) == ("torchvision.models.resnet:ResNet", "layer4", "avg")
    assert t.arch_normalize is not None and t.arch_normalize[0] == NORMALIZE["imagenet"]
    assert arch_default("torchvision.models.vision_transformer:VisionTransformer") is TORCHVISION_DEFAULTS["vit_b_16"]
    assert arch_normalization("torchvision.models.detection.faster_rcnn:FasterRCNN") is None
    assert arch_normalization("torchvision.models.quantization.resnet:QuantizableResNet") is None
