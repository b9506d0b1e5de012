"""Pydantic JSON Schema -> Kubernetes structural OpenAPI v3 schema.

The CRDs in ``crds/`` are generated from the same pydantic models the operator validates
with (and, for Dialog, from the runtime's own ``Dialog`` model), so ``kubectl explain``,
the API server's validation and the operator never disagree. Kubernetes wants a
*structural* schema: every node typed, no ``$ref``, junctors (``anyOf``...) only for value
checks, no ``uniqueItems``/``propertyNames``/``const``. This module rewrites pydantic's
output into that form:

* ``$ref`` is inlined (recursive models are refused: a CRD schema cannot recurse);
* ``Optional[X]`` (``anyOf [X, null]``) becomes ``X`` with ``nullable: true``;
* ``int | str`` becomes ``x-kubernetes-int-or-string`` (resource quantities);
* a union of single-key objects (the dialog's actions) becomes one object listing every
  key, with ``minProperties: 1`` and ``maxProperties: 1``;
* ``const`` becomes a one-value ``enum``; JSON Schema's numeric ``exclusiveMinimum``
  becomes OpenAPI 3.0's boolean form; ``uniqueItems`` becomes ``x-kubernetes-list-type: set``;
* ``propertyNames`` patterns (dict keys) become CEL ``x-kubernetes-validations``;
* free-form JSON (pydantic's ``JsonValue``) becomes ``x-kubernetes-preserve-unknown-fields``;
* strings, lists and maps without a bound get one (:class:`Limits`), so hostile objects are
  refused by the API server and CEL rules have a bounded cost.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import GenerateJsonSchema, NoDefault
from pydantic_core import core_schema, to_jsonable_python

Schema = dict[str, Any]

# What survives from JSON Schema (everything else is dropped: title, examples, $defs...).
_KEEP = {
    "type",
    "description",
    "default",
    "enum",
    "format",
    "pattern",
    "minimum",
    "maximum",
    "minLength",
    "maxLength",
    "minItems",
    "maxItems",
    "minProperties",
    "maxProperties",
    "multipleOf",
    "required",
    "properties",
    "items",
    "additionalProperties",
    "nullable",
}
_FORMATS = {"int32", "int64", "float", "double", "byte", "date", "date-time", "password"}


class SchemaError(ValueError):
    """The model cannot be expressed as a structural schema (a modelling mistake)."""


@dataclass(frozen=True)
class Limits:
    """Bounds added where the model sets none."""

    max_string: int = 4096
    max_items: int = 256
    max_properties: int = 256
    max_key: int = 253


class _WithFactoryDefaults(GenerateJsonSchema):
    """Also emit defaults made by ``default_factory`` (nested models, lists, maps), so CEL
    rules and readers of the stored object see every defaulted field."""

    def get_default_value(self, schema: core_schema.WithDefaultSchema) -> Any:
        factory = schema.get("default_factory")
        if factory is None or schema.get("default_factory_takes_data"):
            return super().get_default_value(schema)
        value = factory()  # type: ignore[call-arg]
        if isinstance(value, BaseModel):
            # The whole default (the API server checks defaults against CEL rules as given).
            return value.model_dump(mode="json", by_alias=True, exclude_none=True)
        if isinstance(value, list | dict):
            return to_jsonable_python(value, by_alias=True, exclude_none=True)
        return NoDefault


def structural(model: type[BaseModel], limits: Limits | None = None) -> Schema:
    """The structural OpenAPI schema of ``model`` (by alias), ready for a CRD."""
    raw = model.model_json_schema(
        by_alias=True, mode="validation", schema_generator=_WithFactoryDefaults
    )
    return convert(raw, limits or Limits())


def convert(raw: Schema, limits: Limits) -> Schema:
    defs = raw.get("$defs", {})
    return ordered(_Converter(defs, limits).node(raw, path="", stack=()))


_FIRST = ("description", "type", "nullable", "default", "enum")
_LAST = ("required", "properties", "items", "additionalProperties", "x-kubernetes-validations")


def ordered(schema: Schema) -> Schema:
    """Keys in a reading order (description and type first, nested schemas last)."""
    out: Schema = {k: schema[k] for k in _FIRST if k in schema}
    out.update({k: v for k, v in sorted(schema.items()) if k not in _FIRST and k not in _LAST})
    for key in _LAST:
        if key not in schema:
            continue
        value = schema[key]
        if key == "properties":
            value = {name: ordered(child) for name, child in value.items()}
        elif key in ("items", "additionalProperties") and isinstance(value, dict):
            value = ordered(value)
        out[key] = value
    return out


class _Converter:
    def __init__(self, defs: dict[str, Schema], limits: Limits) -> None:
        self.defs = defs
        self.limits = limits

    def resolve(self, node: Schema, stack: tuple[str, ...]) -> tuple[Schema, tuple[str, ...]]:
        """Inline ``$ref``; sibling keys of the ref (description, default) win."""
        while "$ref" in node:
            name = str(node["$ref"]).rsplit("/", 1)[-1]
            if name in stack:
                raise SchemaError(f"recursive model {name!r} cannot be a CRD schema")
            target = copy.deepcopy(self.defs[name])
            siblings = {k: v for k, v in node.items() if k != "$ref"}
            node = {**target, **siblings}
            stack = (*stack, name)
        return node, stack

    def node(self, node: Schema, path: str, stack: tuple[str, ...]) -> Schema:
        node, stack = self.resolve(node, stack)
        extra = {k: v for k, v in node.items() if k.startswith("x-kubernetes-")}
        description = node.get("description")
        for junctor in ("anyOf", "oneOf"):
            if junctor in node:
                out = self.union(node, node[junctor], path, stack)
                break
        else:
            if "allOf" in node:
                if len(node["allOf"]) != 1:
                    raise SchemaError(f"{path or '<root>'}: allOf with several schemas")
                merged = {**node, **node["allOf"][0]}
                del merged["allOf"]
                out = self.node(merged, path, stack)
            else:
                out = self.plain(node, path, stack)
        if description and "description" not in out:
            out["description"] = description
        if "default" in node and node["default"] is not None:
            out["default"] = node["default"]
        for key, value in extra.items():
            if key == "x-kubernetes-validations":
                out[key] = [*out.get(key, []), *value]
            else:
                out[key] = value
        return out

    def union(
        self, node: Schema, options: list[Schema], path: str, stack: tuple[str, ...]
    ) -> Schema:
        resolved = [self.resolve(o, stack) for o in options]
        non_null = [(o, s) for o, s in resolved if o.get("type") != "null"]
        nullable = len(non_null) < len(resolved)
        if len(non_null) == 1:
            inner, inner_stack = non_null[0]
            merged = {k: v for k, v in node.items() if k not in ("anyOf", "oneOf", "default")}
            out = self.node({**inner, **merged}, path, inner_stack)
        elif {o.get("type") for o, _ in non_null} == {"integer", "string"} and len(non_null) == 2:
            out = {"x-kubernetes-int-or-string": True, "anyOf": [{"type": "integer"}]}
            string = next(o for o, _ in non_null if o.get("type") == "string")
            out["anyOf"].append({"type": "string"})
            if "pattern" in string:
                out["pattern"] = string["pattern"]
        elif all(o.get("type") == "object" for o, _ in non_null):
            out = self.single_key_union(non_null, path)
        else:
            kinds = [o.get("type") for o, _ in non_null]
            raise SchemaError(f"{path or '<root>'}: union of {kinds} has no structural form")
        if nullable:
            out["nullable"] = True
        return out

    def single_key_union(self, options: list[tuple[Schema, tuple[str, ...]]], path: str) -> Schema:
        properties: dict[str, Schema] = {}
        for option, stack in options:
            props = option.get("properties", {})
            if len(props) != 1 or not set(option.get("required", [])) <= set(props):
                raise SchemaError(
                    f"{path or '<root>'}: only unions of single-key objects are supported "
                    f"(got keys {sorted(props)})"
                )
            key, value = next(iter(props.items()))
            if key in properties:
                raise SchemaError(f"{path or '<root>'}: key {key!r} in two union branches")
            properties[key] = self.node(value, f"{path}.{key}", stack)
            # A default would add this key to every object of the union.
            properties[key].pop("default", None)
            if key not in option.get("required", []):
                # `- hangup:` (null): the key alone, its value all defaults.
                properties[key]["nullable"] = True
        keys = ", ".join(properties)
        return {
            "type": "object",
            "description": f"Exactly one of: {keys}.",
            "properties": properties,
            "minProperties": 1,
            "maxProperties": 1,
        }

    def plain(self, node: Schema, path: str, stack: tuple[str, ...]) -> Schema:
        if not node or set(node) <= {"description", "default", "title"}:
            # Free-form JSON (JsonValue): any type, kept as given.
            return {"x-kubernetes-preserve-unknown-fields": True}
        out: Schema = {k: v for k, v in node.items() if k in _KEEP}
        rules: list[dict[str, str]] = []
        if "const" in node:
            out["enum"] = [node["const"]]
            out.setdefault("type", _json_type(node["const"]))
        kind = out.get("type")
        if isinstance(kind, list):
            raise SchemaError(f"{path or '<root>'}: several types {kind}")
        if kind is None:
            raise SchemaError(f"{path or '<root>'}: no type ({sorted(node)})")
        if "exclusiveMinimum" in node:
            out["minimum"] = node["exclusiveMinimum"]
            out["exclusiveMinimum"] = True
        if "exclusiveMaximum" in node:
            out["maximum"] = node["exclusiveMaximum"]
            out["exclusiveMaximum"] = True
        if "format" in out and out["format"] not in _FORMATS:
            del out["format"]
        if kind == "string" and "enum" not in out:
            out.setdefault("maxLength", self.limits.max_string)
        if kind == "array":
            items = node.get("items")
            if items is None:
                raise SchemaError(f"{path}: array without items")
            out["items"] = self.node(items, f"{path}[]", stack)
            out.setdefault("maxItems", self.limits.max_items)
            if node.get("uniqueItems"):
                if out["items"].get("type") not in ("string", "integer", "number", "boolean"):
                    raise SchemaError(f"{path}: unique items must be scalars")
                out["x-kubernetes-list-type"] = "set"
        if kind == "object":
            props = node.get("properties", {})
            out["properties"] = {
                name: self.node(value, f"{path}.{name}", stack) for name, value in props.items()
            }
            if not out["properties"]:
                del out["properties"]
            required = [r for r in node.get("required", []) if r in props]
            if required:
                out["required"] = required
            else:
                out.pop("required", None)
            additional = node.get("additionalProperties")
            names = dict(node.get("propertyNames", {}))
            patterned = node.get("patternProperties", {})
            if patterned:
                if len(patterned) != 1 or isinstance(additional, dict):
                    raise SchemaError(f"{path}: several key patterns")
                key_pattern, additional = next(iter(patterned.items()))
                names["pattern"] = key_pattern
            if isinstance(additional, dict):
                out["additionalProperties"] = self.node(additional, f"{path}.*", stack)
                out.setdefault("maxProperties", self.limits.max_properties)
                # Key rules only where they run once per object: CEL's cost estimate
                # multiplies a rule inside lists/maps by their sizes. CEL cannot type a map of
                # free-form values at all.
                keyed = "type" in out["additionalProperties"] and not _repeated(path)
                if not keyed:
                    names = {}
                key_pattern = names.get("pattern")
                max_key = names.get("maxLength", self.limits.max_key)
                if key_pattern:
                    rules.append(
                        {
                            "rule": f"self.all(k, k.matches({json.dumps(key_pattern)}))",
                            "message": f"keys must match {key_pattern}",
                        }
                    )
                if keyed:
                    rules.append(
                        {
                            "rule": f"self.all(k, size(k) <= {max_key})",
                            "message": f"keys are at most {max_key} characters",
                        }
                    )
            else:
                out.pop("additionalProperties", None)
                if not props:
                    # An object with no declared fields is free-form (e.g. affinity).
                    out["x-kubernetes-preserve-unknown-fields"] = True
        if rules:
            out["x-kubernetes-validations"] = rules
        return out


def _repeated(path: str) -> bool:
    """Inside a list or a map (the path went through items or additionalProperties)."""
    return "[]" in path or ".*" in path


def _json_type(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    raise SchemaError(f"const {value!r} of unsupported type")


def walk(schema: Schema, path: str = "") -> list[tuple[str, Schema]]:
    """Every node with its path (for structural checks in tests)."""
    nodes = [(path, schema)]
    for name, child in schema.get("properties", {}).items():
        nodes.extend(walk(child, f"{path}.{name}"))
    if isinstance(schema.get("items"), dict):
        nodes.extend(walk(schema["items"], f"{path}[]"))
    if isinstance(schema.get("additionalProperties"), dict):
        nodes.extend(walk(schema["additionalProperties"], f"{path}.*"))
    return nodes
