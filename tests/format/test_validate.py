"""The metadata schema and fpkit's own validator, cross-checked with the jsonschema package."""

from __future__ import annotations

import copy
import json

import _helpers as H
import pytest

from fpkit.format._validate import SchemaViolation, load_schema, validate

jsonschema = pytest.importorskip("jsonschema")
SCHEMA_BYTES = (H.REPO / "fpkit" / "schema" / "fingerprint-v1.schema.json").read_bytes()
GOLDEN_META = {
    name: H.get_metadata(H.GOLDEN / name)
    for name in ("v1-float16-none.h5", "v1-int8-zstd.h5", "v1-float32-gzip-replay-redacted.h5")
}


def test_one_schema_file_shipped_in_the_package_and_linked_from_the_spec():
    """The schema exists once, as package data (setup.cfg ships it in the wheel); the spec links to it."""
    assert not (H.REPO / "formats" / "fingerprint-v1.schema.json").exists()
    spec = (H.REPO / "formats" / "SPEC.md").read_text(encoding="utf-8")
    assert "(../fpkit/schema/fingerprint-v1.schema.json)" in spec
    assert "schema/*.json" in (H.REPO / "setup.cfg").read_text(encoding="utf-8")


def test_schema_is_valid_draft_2020_12():
    schema = json.loads(SCHEMA_BYTES)
    assert schema == load_schema()
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    jsonschema.Draft202012Validator.check_schema(schema)


def _fpkit_ok(doc) -> bool:
    try:
        validate(doc)
        return True
    except SchemaViolation:
        return False


def _js_ok(doc) -> bool:
    return jsonschema.Draft202012Validator(load_schema()).is_valid(doc)


@pytest.mark.parametrize("name", sorted(GOLDEN_META))
def test_golden_metadata_valid_for_both(name):
    assert _fpkit_ok(GOLDEN_META[name]) and _js_ok(GOLDEN_META[name])


def _set(path: str, value):
    def mutate(doc):
        *parents, last = path.split("/")
        node = doc
        for p in parents:
            node = node[int(p)] if isinstance(node, list) else node[p]
        if value is DELETE:
            del node[last]
        elif isinstance(node, list):
            node[int(last)] = value
        else:
            node[last] = value

    return mutate


DELETE = object()
IGNORABLE = {"must_understand": False, "anything": [1, {"x": None}]}

# (mutation, valid?, unknown_field?) on the float16 golden file's metadata
MUTATIONS = {
    "missing fpkit_version": (_set("fpkit_version", DELETE), False, False),
    "empty fpkit_version": (_set("fpkit_version", ""), False, False),
    "created not UTC Z": (_set("created", "2026-01-01 00:00:00"), False, False),
    "library version not a string": (_set("libraries/torch", 2), False, False),
    "weights digest upper case": (_set("teacher/weights_sha256", "A" * 64), False, False),
    "negative num_params": (_set("teacher/num_params", -1), False, False),
    "unknown source_kind": (_set("teacher/source_kind", "onnx"), False, False),
    "accuracy null": (_set("teacher/accuracy", None), True, False),
    "accuracy above 1": (_set("teacher/accuracy/top1", 1.5), False, False),
    "accuracy unknown field": (_set("teacher/accuracy/extra", 3), False, True),
    "accuracy ignorable field": (_set("teacher/accuracy/extra", IGNORABLE), True, False),
    "class names not strings": (_set("dataset/classes", [1, 2, 3]), False, False),
    "image_shape of 2": (_set("dataset/image_shape", [32, 32]), False, False),
    "zero std": (_set("dataset/normalize/std", [0.0, 1, 1]), False, False),
    "normalize is closed": (_set("dataset/normalize/extra", IGNORABLE), False, True),
    "views count all": (_set("views/count", "all"), True, False),
    "views count 0": (_set("views/count", 0), False, False),
    "views count some": (_set("views/count", "some"), False, False),
    "fill 0.0 equals 0": (_set("views/policy/fill", 0.0), True, False),
    "fill false is not 0": (_set("views/policy/fill", False), False, False),
    "autocast float16": (_set("compute/autocast", "float16"), True, False),
    "autocast int8": (_set("compute/autocast", "int8"), False, False),
    "chunk_rows 0": (_set("storage/chunk_rows", 0), False, False),
    "no layers": (_set("layers", []), False, False),
    "bad group": (_set("layers/0/group", "layers/x"), False, False),
    "seed 2**64": (_set("layers/0/projection/seed", 2**64), False, False),
    "seed 2**64-1": (_set("layers/0/projection/seed", 2**64 - 1), True, False),
    "no tables": (_set("layers/0/tables", {}), False, False),
    "new table kind": (_set("layers/0/tables/pairs", IGNORABLE), False, True),
    "fidelity above 1": (_set("layers/0/tables/sample/fidelity_min_cos", 1.5), False, False),
    "scale not a string": (_set("layers/0/tables/sample/scale", 3), False, False),
    "dataset dtype float64": (_set("datasets/labels/dtype", "float64"), False, False),
    "negative shape": (_set("datasets/labels/shape", [-1]), False, False),
    "dataset entry extra": (_set("datasets/labels/extra", IGNORABLE), False, True),
    "unknown top-level field": (_set("future", 1), False, True),
    "ignorable top-level field": (_set("future", IGNORABLE), True, False),
    "must_understand 0 is not false": (_set("future", {"must_understand": 0}), False, True),
    "must_understand true": (_set("future", {"must_understand": True}), False, True),
    "unknown field in a layer": (_set("layers/1/future", "x"), False, True),
    "ignorable field in a projection": (_set("layers/1/projection/future", IGNORABLE), True, False),
    "layers not a list": (_set("layers", {"0": 1}), False, False),
}


@pytest.mark.parametrize("case", sorted(MUTATIONS))
def test_fpkit_validator_agrees_with_jsonschema(case):
    mutate, valid, unknown = MUTATIONS[case]
    doc = copy.deepcopy(GOLDEN_META["v1-float16-none.h5"])
    mutate(doc)
    assert _js_ok(doc) is valid, "the expectation is wrong, per jsonschema"
    assert _fpkit_ok(doc) is valid
    if not valid:
        with pytest.raises(SchemaViolation) as ei:
            validate(doc)
        assert ei.value.unknown_field is unknown, str(ei.value)


def test_integers_must_be_written_as_integers():
    # deliberate difference: JSON Schema's "integer" accepts 4.0; fpkit requires an integer token
    doc = copy.deepcopy(GOLDEN_META["v1-int8-zstd.h5"])
    doc["layers"][0]["d"] = 4.0
    assert _js_ok(doc) and not _fpkit_ok(doc)


def test_violation_names_the_path():
    doc = copy.deepcopy(GOLDEN_META["v1-int8-zstd.h5"])
    doc["layers"][0]["projection"]["r"] = 0
    with pytest.raises(SchemaViolation, match="/layers/0/projection/r"):
        validate(doc)
