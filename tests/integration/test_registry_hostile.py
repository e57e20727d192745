"""The embedded registry under hostile requests, over real HTTP: malformed, deeply
nested, oversized or wrongly typed JSON is a 4xx in Confluent's error shape
(``{"error_code": ..., "message": ...}``), never a 500, and the registry keeps
serving afterwards."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from databus.standins.registry_server import CONTENT_TYPE, RegistryServer

pytestmark = pytest.mark.integration

WRITES = [
    ("POST", "/subjects/h-value/versions"),
    ("POST", "/subjects/h-value"),
    ("POST", "/compatibility/subjects/h-value/versions"),
    ("POST", "/compatibility/subjects/h-value/versions/latest"),
    ("PUT", "/config"),
    ("PUT", "/config/h-value"),
]


@pytest.fixture(scope="module")
def registry(kafka_bootstrap: str) -> Iterator[RegistryServer]:
    with RegistryServer(kafka_bootstrap, topic=f"_schemas_hostile_{uuid.uuid4().hex[:12]}") as r:
        yield r


@pytest.fixture(scope="module")
def http(registry: RegistryServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=registry.url, timeout=30) as client:
        # one registered version, so the compatibility endpoints compare against something
        done = client.post("/subjects/h-value/versions", json={"schema": '"string"'})
        assert done.status_code == 200, done.text
        yield client


def _refused(response: httpx.Response, status: int | tuple[int, ...]) -> dict[str, Any]:
    wanted = status if isinstance(status, tuple) else (status,)
    assert response.status_code in wanted, (response.status_code, response.text[:300])
    assert response.headers["content-type"].startswith(CONTENT_TYPE)
    body: dict[str, Any] = response.json()
    assert set(body) == {"error_code", "message"}, body
    assert isinstance(body["error_code"], int) and isinstance(body["message"], str)
    assert "Traceback" not in body["message"]
    assert len(body["message"]) < 2000
    return body


def _send(http: httpx.Client, method: str, path: str, body: bytes) -> httpx.Response:
    return http.request(method, path, content=body, headers={"Content-Type": CONTENT_TYPE})


def _still_serving(http: httpx.Client) -> None:
    assert http.get("/subjects/h-value/versions/latest/schema").text == '"string"'


@pytest.mark.parametrize(("method", "path"), WRITES)
def test_deeply_nested_json_is_a_400(http: httpx.Client, method: str, path: str) -> None:
    for body in ("[" * 100_000 + "]" * 100_000, '{"a":' * 50_000 + "1" + "}" * 50_000):
        refused = _refused(_send(http, method, path, body.encode()), 400)
        assert refused["error_code"] == 400
        assert "nested" in refused["message"]
    _still_serving(http)


@pytest.mark.parametrize(
    ("body", "status"),
    [
        (b"{not json", 400),
        (b"\xff\xfe\x00garbage", 400),
        (b"[1, 2]", 400),
        (b'"just a string"', 400),
        (b'{"schema": ' + b"9" * 5000 + b"}", 400),  # past Python's int digit limit
        (b'{"schema": 12}', 422),
        (b'{"schema": null}', 422),
        (b'{"schema": {"type": "string"}}', 422),
        (b'{"schema": NaN}', 422),
        (b'{"schema": "\\"string\\"", "schemaType": ["AVRO"]}', 422),
        (b'{"schema": "\\"string\\"", "references": "x"}', 422),
        (b'{"schema": "\\"string\\"", "references": [{}]}', 422),
        (b'{"schema": "' + b"[" * 50_000 + b'"}', 422),  # a schema nested too deeply
    ],
)
def test_malformed_bodies_are_refused_in_confluent_shape(
    http: httpx.Client, body: bytes, status: int
) -> None:
    _refused(_send(http, "POST", "/subjects/h-value/versions", body), status)
    _still_serving(http)


def _nested_avro(depth: int) -> str:
    return '{"type": "array", "items": ' * depth + '"string"' + "}" * depth


@pytest.mark.parametrize("depth", [200, 600, 5000])
def test_a_deeply_nested_avro_schema_is_refused_or_served_not_a_500(
    http: httpx.Client, depth: int
) -> None:
    """An Avro schema nested deeper than the registry handles is a 422 on every
    endpoint that parses one; one it does handle is registered and compared."""
    body = json.dumps({"schema": _nested_avro(depth)}).encode()
    subject = f"deep{depth}-value"
    for method, path in [
        ("POST", f"/subjects/{subject}/versions"),
        ("POST", f"/subjects/{subject}"),
        ("POST", f"/compatibility/subjects/{subject}/versions/latest"),
        ("POST", f"/subjects/{subject}/versions"),
        ("POST", "/compatibility/subjects/h-value/versions/latest"),
    ]:
        response = _send(http, method, path, body)
        if response.status_code >= 400:
            _refused(response, (404, 409, 422))
    _still_serving(http)


def test_an_oversized_body_is_a_413(http: httpx.Client) -> None:
    body = json.dumps({"schema": json.dumps("x" * 3_000_000)}).encode()
    _refused(_send(http, "POST", "/subjects/h-value/versions", body), 413)
    _still_serving(http)


def test_a_body_of_the_wrong_media_type_is_a_415(http: httpx.Client) -> None:
    response = http.post(
        "/subjects/h-value/versions", content=b"<xml/>", headers={"Content-Type": "text/xml"}
    )
    _refused(response, 415)


@pytest.mark.parametrize(
    "path",
    [
        "/subjects/h-value/versions/abc",
        "/subjects/h-value/versions/-7",
        "/subjects/h-value/versions/99999999999999999999999",
        "/schemas/ids/99999999999999999999999",
        "/schemas/ids/-1",
        "/subjects/%00%ff/versions",
        "/subjects?offset=x&limit=y&deleted=maybe",
    ],
)
def test_odd_paths_and_queries_are_not_a_500(http: httpx.Client, path: str) -> None:
    response = http.get(path)
    if response.status_code >= 400:
        _refused(response, (400, 404, 422))


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner),
    max_leaves=20,
)
_BODIES = (
    st.binary(max_size=300)
    | _JSON.map(lambda v: json.dumps(v).encode())
    | st.fixed_dictionaries(
        {},
        optional={
            "schema": _JSON | st.sampled_from(['"string"', '{"type": "recrd"}', "[" * 3000]),
            "schemaType": _JSON | st.just("AVRO"),
            "references": _JSON,
            "compatibility": _JSON | st.sampled_from(["BACKWARD", "NONE", "FULL_TRANSITIVE"]),
            "metadata": _JSON,
        },
    ).map(lambda v: json.dumps(v).encode())
)


@settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(target=st.sampled_from(WRITES), body=_BODIES)
def test_any_body_is_answered_below_500(
    http: httpx.Client, target: tuple[str, str], body: bytes
) -> None:
    method, path = target
    response = _send(http, method, path, body)
    if response.status_code >= 400:
        _refused(response, tuple(range(400, 500)))
    else:
        assert response.status_code == 200
        response.json()
