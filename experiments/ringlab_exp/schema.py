"""Checks result records against experiments/schema/result-v1.json.

Only the standard library is allowed, so this is a small validator for the
subset of JSON Schema (draft 2020-12) that the schema file uses: type (one or
a list), required, properties, additionalProperties (bool), enum, const,
minimum, minLength, pattern, items, anyOf and local $ref ("#/$defs/name").

    errors = validate_record(record)      # [] when valid
    for e in errors: print(e)             # "$.rtt_us.p50: expected number ..."

Errors are returned as strings naming the JSON path, never raised, so a
caller can report every problem at once.
"""

import json
import pathlib
import re

SCHEMA_PATH = pathlib.Path(__file__).resolve().parent.parent / "schema" / "result-v1.json"
RECORD_SCHEMA_ID = "ringlab.result/1"

_TYPE_CHECKS = {
    "object": lambda v: isinstance(v, dict),
    "array": lambda v: isinstance(v, list),
    "string": lambda v: isinstance(v, str),
    # bool is an int subclass in Python; JSON keeps them apart.
    "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "number": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
    "boolean": lambda v: isinstance(v, bool),
    "null": lambda v: v is None,
}

_cached_schema = None


def load_schema():
    global _cached_schema
    if _cached_schema is None:
        with open(SCHEMA_PATH, encoding="utf-8") as f:
            _cached_schema = json.load(f)
    return _cached_schema


def _resolve(ref, root):
    if not ref.startswith("#/"):
        raise ValueError(f"only local $ref is supported, got {ref!r}")
    node = root
    for part in ref[2:].split("/"):
        node = node[part]
    return node


def validate(value, schema, root=None, path="$"):
    """Returns a list of error strings for `value` against `schema`."""
    root = root if root is not None else schema
    errors = []
    if "anyOf" in schema:
        tries = [validate(value, sub, root, path) for sub in schema["anyOf"]]
        if all(tries):
            best = min(tries, key=len)
            errors += best if len(best) == 1 else \
                [f"{path}: matches none of anyOf: " + "; ".join(best[:3])]
    if "$ref" in schema:
        errors += validate(value, _resolve(schema["$ref"], root), root, path)
    if "type" in schema:
        types = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
        if not any(_TYPE_CHECKS[t](value) for t in types):
            errors.append(f"{path}: expected {' or '.join(types)}, got "
                          f"{type(value).__name__} {_short(value)}")
            return errors
    if "const" in schema and value != schema["const"]:
        errors.append(f"{path}: expected {schema['const']!r}, got {_short(value)}")
    if "enum" in schema and value not in schema["enum"]:
        errors.append(f"{path}: {_short(value)} is not one of {schema['enum']}")
    if "minimum" in schema and _TYPE_CHECKS["number"](value) and value < schema["minimum"]:
        errors.append(f"{path}: {value} is below the minimum {schema['minimum']}")
    if isinstance(value, str):
        if "minLength" in schema and len(value) < schema["minLength"]:
            errors.append(f"{path}: shorter than {schema['minLength']} characters")
        if "pattern" in schema and not re.search(schema["pattern"], value):
            errors.append(f"{path}: {_short(value)} does not match {schema['pattern']}")
    if isinstance(value, list) and "items" in schema:
        for i, item in enumerate(value):
            errors += validate(item, schema["items"], root, f"{path}[{i}]")
    if isinstance(value, dict):
        for key in schema.get("required", []):
            if key not in value:
                errors.append(f"{path}: missing required key {key!r}")
        props = schema.get("properties", {})
        for key, item in value.items():
            if key in props:
                errors += validate(item, props[key], root, f"{path}.{key}")
            elif schema.get("additionalProperties", True) is False:
                errors.append(f"{path}: unexpected key {key!r}")
    return errors


def _short(value):
    text = json.dumps(value) if not isinstance(value, str) else repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def validate_record(record):
    return validate(record, load_schema())
