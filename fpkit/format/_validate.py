"""A small JSON Schema (2020-12 subset) validator for the fingerprint metadata document.

fpkit validates with the schema file it ships (fpkit/schema/), using only the keywords that
schema uses; the test suite cross-checks the result against the ``jsonschema`` package.  The
first violation is reported with a JSON-pointer-like path.  A key that is not declared and whose
value is not marked ``{"must_understand": false}`` is reported as an unknown field.
"""

from __future__ import annotations

import json
import re
from functools import lru_cache
from importlib import resources
from typing import Any

SCHEMA_FILE = "fingerprint-v1.schema.json"


class SchemaViolation(Exception):
    def __init__(self, path: str, message: str, unknown_field: bool = False):
        super().__init__(f"{path or '/'}: {message}")
        self.path = path
        self.message = message
        self.unknown_field = unknown_field


@lru_cache(maxsize=None)
def load_schema() -> dict:
    text = resources.files("fpkit.schema").joinpath(SCHEMA_FILE).read_text(encoding="utf-8")
    return json.loads(text)


def validate(doc: Any, schema: dict | None = None) -> None:
    """Raise SchemaViolation at the first place ``doc`` breaks ``schema`` (default: format v1)."""
    root = load_schema() if schema is None else schema
    _check(doc, root, root, "")


_TYPES = {
    "object": lambda v: isinstance(v, dict),
    "array": lambda v: isinstance(v, list),
    "string": lambda v: isinstance(v, str),
    "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "number": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
    "boolean": lambda v: isinstance(v, bool),
    "null": lambda v: v is None,
}


def _resolve(schema: dict, root: dict) -> dict:
    while "$ref" in schema:
        ref = schema["$ref"]
        if not ref.startswith("#/"):
            raise ValueError(f"unsupported $ref {ref}")
        node: Any = root
        for part in ref[2:].split("/"):
            node = node[part]
        schema = node
    return schema


def _same(a: Any, b: Any) -> bool:
    return (
        type(a) is type(b)
        and a == b
        or (_TYPES["number"](a) and _TYPES["number"](b) and a == b and not isinstance(a, bool))
    )


def _check(v: Any, schema: dict | bool, root: dict, path: str) -> None:
    if schema is True:
        return
    if schema is False:
        raise SchemaViolation(path, "is not allowed here")
    schema = _resolve(schema, root)
    if "oneOf" in schema:
        ok = 0
        errors = []
        unknown = []
        for sub in schema["oneOf"]:
            try:
                _check(v, sub, root, path)
                ok += 1
            except SchemaViolation as e:
                errors.append(e.message)
                if e.unknown_field:
                    unknown.append(e)
        if ok == 0 and unknown:  # the form that fits but for an unknown field: report that field
            raise unknown[0]
        if ok != 1:
            raise SchemaViolation(
                path, f"value {_short(v)} matches {ok} of the allowed forms, not exactly one ({'; '.join(errors)})"
            )
    t = schema.get("type")
    if t is not None:
        types = t if isinstance(t, list) else [t]
        if not any(_TYPES[x](v) for x in types):
            raise SchemaViolation(path, f"expected {' or '.join(types)}, got {_short(v)}")
    if "const" in schema and not _same(v, schema["const"]):
        raise SchemaViolation(path, f"must be {json.dumps(schema['const'])}, got {_short(v)}")
    if "enum" in schema and not any(_same(v, e) for e in schema["enum"]):
        raise SchemaViolation(path, f"must be one of {json.dumps(schema['enum'])}, got {_short(v)}")
    if _TYPES["number"](v):
        if "minimum" in schema and v < schema["minimum"]:
            raise SchemaViolation(path, f"must be >= {schema['minimum']}, got {v}")
        if "maximum" in schema and v > schema["maximum"]:
            raise SchemaViolation(path, f"must be <= {schema['maximum']}, got {v}")
        if "exclusiveMinimum" in schema and v <= schema["exclusiveMinimum"]:
            raise SchemaViolation(path, f"must be > {schema['exclusiveMinimum']}, got {v}")
    if isinstance(v, str):
        if len(v) < schema.get("minLength", 0):
            raise SchemaViolation(path, "must not be empty")
        if "pattern" in schema and not _pattern(schema["pattern"]).search(v):
            raise SchemaViolation(path, f"{_short(v)} does not match {schema['pattern']}")
    if isinstance(v, list):
        if len(v) < schema.get("minItems", 0):
            raise SchemaViolation(path, f"needs at least {schema['minItems']} items")
        if "maxItems" in schema and len(v) > schema["maxItems"]:
            raise SchemaViolation(path, f"allows at most {schema['maxItems']} items")
        if "items" in schema:
            for i, item in enumerate(v):
                _check(item, schema["items"], root, f"{path}/{i}")
    if isinstance(v, dict):
        if len(v) < schema.get("minProperties", 0):
            raise SchemaViolation(path, f"needs at least {schema['minProperties']} entries")
        for key in schema.get("required", []):
            if key not in v:
                raise SchemaViolation(path, f"required field {key!r} is missing")
        props = schema.get("properties", {})
        extra = schema.get("additionalProperties", True)
        for key, item in v.items():
            if key in props:
                _check(item, props[key], root, f"{path}/{key}")
            else:
                try:
                    _check(item, extra, root, f"{path}/{key}")
                except SchemaViolation as e:
                    if extra is False or _is_ignorable_ref(extra):
                        raise SchemaViolation(
                            f"{path}/{key}",
                            'unknown field (not part of this format version and not marked {"must_understand": false})',
                            unknown_field=True,
                        ) from e
                    raise


def _is_ignorable_ref(schema: Any) -> bool:
    return isinstance(schema, dict) and schema.get("$ref") == "#/$defs/ignorable"


def _short(v: Any) -> str:
    s = json.dumps(v, default=str)
    return s if len(s) <= 60 else s[:57] + "..."


@lru_cache(maxsize=None)
def _pattern(pattern: str) -> re.Pattern:
    """A schema pattern with JSON Schema's (ECMA-262) meaning of ``$``: the very end of the text.
    Python's ``$`` also matches before a final newline."""
    return re.compile(re.sub(r"(?<!\\)\$$", r"\\Z", pattern))
