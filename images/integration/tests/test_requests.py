"""Operation + payload -> HTTP request, and response -> result, against the real test backend."""

from __future__ import annotations

import math
from collections.abc import AsyncIterator, Mapping
from typing import TYPE_CHECKING, Any

import httpx
import pytest
from pydantic import JsonValue
from voicetyped_integration.auth import build_client
from voicetyped_integration.requests import (
    InvalidResponse,
    PayloadError,
    build_request,
    extract,
    parse_path,
)
from voicetyped_specs.integration import Integration, Operation

if TYPE_CHECKING:  # mypy runs from the repository root and names this module so
    from images.integration.tests.backend_server import Backend


def _op(**spec: Any) -> Operation:
    return Operation.model_validate(spec)


@pytest.fixture
async def client(backend: Backend) -> AsyncIterator[httpx.AsyncClient]:
    integration = Integration.model_validate(
        {"name": "shop", "baseURL": backend.base_url, "operations": {"x": {"path": "/"}}}
    )
    async with build_client(integration) as http:
        yield http


async def _send(
    client: httpx.AsyncClient,
    operation: Operation,
    payload: Mapping[str, JsonValue],
    key: str | None = None,
) -> httpx.Response:
    request = build_request(client, "op", operation, payload, key)
    request.extensions["timeout"] = httpx.Timeout(5.0).as_dict()
    response = await client.send(request)
    await response.aread()
    return response


# ---- path ---------------------------------------------------------------------------


async def test_path_placeholders_are_url_encoded_as_one_segment(
    client: httpx.AsyncClient, backend: Backend
) -> None:
    op = _op(path="/echo/orders/{order_id}/items/{item}")
    response = await _send(client, op, {"order_id": "a/b c?d#e%f&g", "item": 7})
    assert response.status_code == 200
    assert response.json()["path"] == "/echo/orders/a%2Fb%20c%3Fd%23e%25f%26g/items/7"
    assert backend.requests[-1].query == {}


async def test_scalars_become_json_text(client: httpx.AsyncClient) -> None:
    op = _op(path="/echo/{a}/{b}/{c}/{d}")
    response = await _send(client, op, {"a": True, "b": False, "c": 2.5, "d": "é"})
    assert response.json()["path"] == "/echo/true/false/2.5/%C3%A9"


async def test_base_url_path_prefix_is_kept(backend: Backend) -> None:
    integration = Integration.model_validate(
        {
            "name": "shop",
            "baseURL": f"{backend.base_url}/echo/api",
            "operations": {"x": {"path": "/"}},
        }
    )
    async with build_client(integration) as http:
        response = await _send(http, _op(path="/orders/{id}"), {"id": "1"})
    assert response.json()["path"] == "/echo/api/orders/1"


# ---- query --------------------------------------------------------------------------


async def test_query_values_are_templated_and_encoded(client: httpx.AsyncClient) -> None:
    op = _op(
        path="/echo/search",
        query={"q": "{term}", "filter": "status:{status}", "n": "{limit}", "urgent": "{urgent}"},
    )
    payload: dict[str, JsonValue] = {
        "term": "a b&c=/é?#",
        "status": "open",
        "limit": 5,
        "urgent": True,
    }
    response = await _send(client, op, payload)
    assert response.json()["query"] == {
        "q": ["a b&c=/é?#"],
        "filter": ["status:open"],
        "n": ["5"],
        "urgent": ["true"],
    }
    assert response.json()["json"] is None  # GET: no body


async def test_query_written_in_the_path_is_kept(client: httpx.AsyncClient) -> None:
    op = _op(path="/echo/search?v=2", query={"q": "{term}"})
    response = await _send(client, op, {"term": "x"})
    assert response.json()["query"] == {"v": ["2"], "q": ["x"]}


# ---- body ---------------------------------------------------------------------------


async def test_body_template_keeps_types_of_whole_value_fields(
    client: httpx.AsyncClient, backend: Backend
) -> None:
    op = _op(
        method="POST",
        path="/echo/orders/{order_id}",
        body={
            "order": "{order_id}",
            "amount": "{amount}",
            "note": "Order {order_id} for {name}, {amount} EUR",
            "items": "{items}",
            "customer": "{customer}",
            "meta": {"nested": ["{urgent}", "x-{amount}"], "fixed": 3, "none": None},
            "{literal_key}": "kept as written",
        },
    )
    payload: dict[str, JsonValue] = {
        "order_id": "48213",
        "amount": 12.5,
        "name": "Ada",
        "items": ["kettle", {"sku": 1}],
        "customer": {"id": 7, "vip": True},
        "urgent": False,
        "unused": "not sent with a body template",
    }
    response = await _send(client, op, payload)
    assert response.json()["json"] == {
        "order": "48213",
        "amount": 12.5,
        "note": "Order 48213 for Ada, 12.5 EUR",
        "items": ["kettle", {"sku": 1}],
        "customer": {"id": 7, "vip": True},
        "meta": {"nested": [False, "x-12.5"], "fixed": 3, "none": None},
        "{literal_key}": "kept as written",
    }
    assert backend.requests[-1].headers["Content-Type"] == "application/json"


async def test_whole_value_field_may_be_null_in_a_body(client: httpx.AsyncClient) -> None:
    op = _op(method="PUT", path="/echo/x", body={"note": "{note}"})
    response = await _send(client, op, {"note": None})
    assert response.json()["json"] == {"note": None}


@pytest.mark.parametrize("method", ["POST", "PUT", "PATCH"])
async def test_default_body_is_the_fields_not_used_in_path_or_query(
    client: httpx.AsyncClient, method: str
) -> None:
    op = _op(method=method, path="/echo/orders/{order_id}", query={"src": "{source}"})
    payload: dict[str, JsonValue] = {
        "order_id": "48213",
        "source": "ivr",
        "amount": 10,
        "note": None,
        "tags": ["a"],
    }
    response = await _send(client, op, payload)
    answer = response.json()
    assert answer["method"] == method
    assert answer["path"] == "/echo/orders/48213"
    assert answer["query"] == {"src": ["ivr"]}
    assert answer["json"] == {"amount": 10, "note": None, "tags": ["a"]}


async def test_post_with_every_field_used_sends_an_empty_object(client: httpx.AsyncClient) -> None:
    op = _op(method="POST", path="/echo/orders/{order_id}/cancel")
    response = await _send(client, op, {"order_id": "1"})
    assert response.json()["json"] == {}


@pytest.mark.parametrize("method", ["GET", "DELETE"])
async def test_get_and_delete_send_no_body(
    client: httpx.AsyncClient, backend: Backend, method: str
) -> None:
    op = _op(method=method, path="/echo/orders/{order_id}")
    response = await _send(client, op, {"order_id": "1", "extra": "not sent"})
    assert response.json()["body"] == ""
    received = backend.requests[-1]
    assert received.body == b""
    assert "Content-Type" not in received.headers


async def test_non_ascii_body_is_utf8_json(client: httpx.AsyncClient, backend: Backend) -> None:
    op = _op(method="POST", path="/echo/x")
    await _send(client, op, {"name": "Zoë 😀"})
    assert backend.requests[-1].body.decode("utf-8") == '{"name":"Zoë 😀"}'


# ---- headers ------------------------------------------------------------------------


async def test_headers_accept_and_idempotency_key(
    client: httpx.AsyncClient, backend: Backend
) -> None:
    op = _op(method="POST", path="/orders", headers={"X-Tenant": "acme"})
    response = await _send(client, op, {"amount": 10}, key="call-1:step-3")
    assert response.status_code == 201
    headers = backend.requests[-1].headers
    assert headers["Idempotency-Key"] == "call-1:step-3"
    assert headers["Accept"] == "application/json"
    assert headers["X-Tenant"] == "acme"
    assert backend.side_effects == {"call-1:step-3": 1}
    assert response.json()["request"] == {"amount": 10}


async def test_no_idempotency_key_header_without_a_key(
    client: httpx.AsyncClient, backend: Backend
) -> None:
    await _send(client, _op(path="/echo/x"), {})
    assert "Idempotency-Key" not in backend.requests[-1].headers


async def test_operation_headers_override_accept_case_insensitively(
    client: httpx.AsyncClient, backend: Backend
) -> None:
    op = _op(method="POST", path="/echo/x", headers={"accept": "application/vnd.shop+json"})
    await _send(client, op, {})
    assert backend.requests[-1].headers.getall("Accept") == ["application/vnd.shop+json"]


# ---- payload errors -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "payload", "field", "problem"),
    [
        ({"path": "/orders/{order_id}"}, {}, "order_id", "is missing (the path uses {order_id})"),
        ({"path": "/orders/{order_id}"}, {"order_id": None}, "order_id", "is null"),
        ({"path": "/orders/{order_id}"}, {"order_id": ["1"]}, "order_id", "is not a string"),
        ({"path": "/orders/{order_id}"}, {"order_id": {"a": 1}}, "order_id", "is not a string"),
        ({"path": "/orders/{order_id}"}, {"order_id": ""}, "order_id", "is empty"),
        ({"path": "/orders/{order_id}/x"}, {"order_id": ".."}, "order_id", "'.' or '..'"),
        ({"path": "/orders/{order_id}"}, {"order_id": "."}, "order_id", "'.' or '..'"),
        ({"path": "/o", "query": {"q": "{term}"}}, {}, "term", "query parameter 'q'"),
        ({"path": "/o", "query": {"q": "x{term}"}}, {"term": None}, "term", "is null"),
        ({"path": "/o", "query": {"q": "{term}"}}, {"term": [1, 2]}, "term", "is not a string"),
        (
            {"method": "POST", "path": "/o", "body": {"a": ["{amount}"]}},
            {},
            "amount",
            "is missing (the body uses {amount})",
        ),
        (
            {"method": "POST", "path": "/o", "body": {"a": "sum {amount}"}},
            {"amount": {"v": 1}},
            "amount",
            "is not a string",
        ),
    ],
)
async def test_payload_errors_name_operation_and_field_but_not_values(
    client: httpx.AsyncClient,
    spec: dict[str, Any],
    payload: dict[str, JsonValue],
    field: str,
    problem: str,
) -> None:
    with pytest.raises(PayloadError) as caught:
        build_request(client, "get_order", _op(**spec), payload, None)
    message = str(caught.value)
    assert message.startswith(f"operation 'get_order': payload field {field!r} ")
    assert problem in message
    for value in payload.values():
        if isinstance(value, str) and len(value) > 2:
            assert value not in message


def test_payload_error_is_a_value_error() -> None:
    assert issubclass(PayloadError, ValueError)


async def test_nan_cannot_be_sent(client: httpx.AsyncClient) -> None:
    op = _op(method="POST", path="/o")
    with pytest.raises(PayloadError, match="NaN or infinity"):
        build_request(client, "op", op, {"amount": math.nan}, None)
    with pytest.raises(PayloadError, match="'amount' is not a finite number"):
        build_request(client, "op", _op(path="/o/{amount}"), {"amount": math.inf}, None)


# ---- extract --------------------------------------------------------------------------


async def test_extract_whole_response(client: httpx.AsyncClient) -> None:
    op = _op(path="/orders/{id}")
    response = await _send(client, op, {"id": "48213"})
    assert extract(op, response) == response.json()


async def test_extract_dotted_paths_and_list_indexes(client: httpx.AsyncClient) -> None:
    op = _op(
        path="/orders/{id}",
        extract={
            "status": "status",
            "eta_days": "delivery.eta_days",
            "carrier": "delivery.carrier",  # present and null
            "second_item": "items[1].id",
            "items": "items",
            "delivery": "delivery",
        },
    )
    response = await _send(client, op, {"id": "48214"})
    assert extract(op, response) == {
        "status": "processing",
        "eta_days": 5,
        "carrier": None,
        "second_item": "sku-3",
        "items": [
            {"id": "sku-2", "name": "toaster", "qty": 1},
            {"id": "sku-3", "name": "mugs", "qty": 4},
        ],
        "delivery": {"eta_days": 5, "carrier": None},
    }


async def test_extract_from_nested_lists(client: httpx.AsyncClient) -> None:
    op = _op(
        method="POST",
        path="/echo/x",
        body={"grid": [[1, 2], [3, {"k": "v"}]], "odd key-name": {"with space": 1}},
        extract={"cell": "json.grid[1][1].k", "odd": "json.odd key-name.with space"},
    )
    assert extract(op, await _send(client, op, {})) == {"cell": "v", "odd": 1}


@pytest.mark.parametrize(
    ("path", "missing_at"),
    [
        ("delivery.eta_weeks", "delivery.eta_weeks"),
        ("items[5].id", "items[5]"),
        ("items[0].price", "items[0].price"),
        ("status.code", "status.code"),  # status is a string
        ("delivery[0]", "delivery[0]"),  # delivery is an object
        ("nope", "nope"),
    ],
)
async def test_extract_missing_path_names_it(
    client: httpx.AsyncClient, path: str, missing_at: str
) -> None:
    op = _op(path="/orders/{id}", extract={"x": path})
    response = await _send(client, op, {"id": "48213"})
    with pytest.raises(InvalidResponse) as caught:
        extract(op, response)
    assert str(caught.value) == f"response has no {path!r} (nothing at {missing_at!r})"


async def test_extract_malformed_path(client: httpx.AsyncClient) -> None:
    op = _op(path="/orders/{id}", extract={"x": "items..id"})
    response = await _send(client, op, {"id": "48213"})
    with pytest.raises(InvalidResponse, match=r"malformed extract path 'items\.\.id'"):
        extract(op, response)


def test_parse_path() -> None:
    assert parse_path("items[0].id") == ("items", 0, "id")
    assert parse_path("[2]") == (2,)
    assert parse_path("a[0][1].b-c d") == ("a", 0, 1, "b-c d")
    for bad in ["", ".a", "a.", "a..b", "a[x]", "a[0]b", "a[-1]"]:
        with pytest.raises(ValueError, match="malformed extract path"):
            parse_path(bad)


async def test_no_content_is_none(client: httpx.AsyncClient) -> None:
    op = _op(path="/status/204")
    response = await _send(client, op, {})
    assert response.status_code == 204
    assert extract(op, response) is None
    wants = _op(path="/status/204", extract={"id": "id"})
    with pytest.raises(InvalidResponse, match="has no body"):
        extract(wants, response)


def test_empty_200_body_is_none_without_extract() -> None:
    assert extract(_op(path="/x"), httpx.Response(200, content=b"  \n")) is None
    with pytest.raises(InvalidResponse, match=r"status 200\) has no body"):
        extract(_op(path="/x", extract={"id": "id"}), httpx.Response(200))


async def test_invalid_json_is_invalid_response(
    client: httpx.AsyncClient, backend: Backend
) -> None:
    backend.invalid_json_next()
    op = _op(path="/orders/{id}", extract={"status": "status"})
    response = await _send(client, op, {"id": "48213"})
    assert response.status_code == 200
    with pytest.raises(InvalidResponse, match=r"status 200.*is not valid JSON") as caught:
        extract(op, response)
    assert "ada@example.com" not in str(caught.value)  # the body is not quoted
    with pytest.raises(InvalidResponse):
        extract(_op(path="/x"), response)  # also without extract


async def test_slow_body_is_read_whole(client: httpx.AsyncClient, backend: Backend) -> None:
    backend.slow_body_next(interval_s=0.001, chunk_bytes=16)
    op = _op(path="/orders/{id}", extract={"eta": "delivery.eta_days"})
    assert extract(op, await _send(client, op, {"id": "48213"})) == {"eta": 2}


@pytest.mark.parametrize(
    "body", [b"NaN", b'{"a": Infinity}', b"\xff\xfe\x00garbage", b"[" * 100_000]
)
def test_not_json_bodies(body: bytes) -> None:
    with pytest.raises(InvalidResponse, match="is not valid JSON"):
        extract(_op(path="/x"), httpx.Response(200, content=body))
