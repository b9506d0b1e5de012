"""The pydantic -> structural schema conversion."""

from __future__ import annotations

from typing import Annotated, Literal

import pytest
from pydantic import BaseModel, Field
from voicetyped_operator.schema import Limits, SchemaError, structural


class Leaf(BaseModel):
    value: int = Field(3, gt=0, description="A value.")


class A(BaseModel):
    a: Leaf


class B(BaseModel):
    b: Leaf = Field(default_factory=Leaf)


class Model(BaseModel):
    """A model."""

    name: str | None = Field(None, description="Optional.")
    size: int | Annotated[str, Field(pattern=r"^[0-9]+Mi$")] = 1
    kind: Literal["x"] = "x"
    leaf: Leaf = Field(default_factory=Leaf)
    tags: list[str] = Field(default_factory=list, json_schema_extra={"uniqueItems": True})
    labels: dict[Annotated[str, Field(pattern=r"^[a-z]+$")], str] = Field(default_factory=dict)
    choice: A | B | None = None


def test_conversion() -> None:
    schema = structural(Model, Limits(max_string=10, max_items=5, max_properties=7))
    props = schema["properties"]
    assert schema["description"] == "A model."
    assert props["name"] == {
        "description": "Optional.", "type": "string", "nullable": True, "maxLength": 10
    }  # fmt: skip
    assert props["size"] == {
        "default": 1,
        "anyOf": [{"type": "integer"}, {"type": "string"}],
        "pattern": "^[0-9]+Mi$",
        "x-kubernetes-int-or-string": True,
    }
    assert props["kind"]["enum"] == ["x"] and props["kind"]["type"] == "string"
    assert props["leaf"]["default"] == {"value": 3}
    value = props["leaf"]["properties"]["value"]
    assert value["minimum"] == 0 and value["exclusiveMinimum"] is True
    assert props["tags"]["x-kubernetes-list-type"] == "set" and props["tags"]["maxItems"] == 5
    labels = props["labels"]
    assert labels["maxProperties"] == 7
    assert labels["x-kubernetes-validations"][0]["rule"] == 'self.all(k, k.matches("^[a-z]+$"))'
    choice = props["choice"]
    assert choice["minProperties"] == choice["maxProperties"] == 1
    assert set(choice["properties"]) == {"a", "b"} and choice["nullable"] is True
    assert "default" not in choice["properties"]["b"]
    assert choice["properties"]["b"]["nullable"] is True


class Node(BaseModel):
    children: list[Node] = Field(default_factory=list)


class Mixed(BaseModel):
    value: int | bool


def test_unsupported_models_are_refused() -> None:
    with pytest.raises(SchemaError, match="recursive"):
        structural(Node)
    with pytest.raises(SchemaError, match="no structural form"):
        structural(Mixed)
