"""The loopback health-axis receiver: as a process (token endpoint, control API, stats),
and as the standard FHIR server it stands in for (versionId/ETag, If-Match -> 412,
ifNoneExist, last-write-wins PUT, batch reads)."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fhir.resources.R4B.bundle import Bundle
from fhir.resources.R4B.organization import Organization

from bus.errors import StackError
from databus.standins.health_receiver import HealthReceiver

pytestmark = pytest.mark.integration

ROOT = Path(__file__).parents[2]
SECRET = "process-receiver-secret"
SYSTEM = "urn:databus:local:fhir:id:facility-code"


@pytest.fixture
def receiver_process(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    store = tmp_path / "axis.json"
    env = {**os.environ, "DATABUS_HEALTH_AXIS__CLIENT_SECRET": SECRET}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "databus.standins.health_receiver",
            "--port",
            "0",
            "--store",
            str(store),
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().strip()  # printed once listening
        assert url.startswith("http://127.0.0.1:"), url
        yield url, store
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        if proc.stdout is not None:
            proc.stdout.close()


def _token(client: httpx.Client, url: str, secret: str) -> httpx.Response:
    return client.post(
        f"{url}/token", data={"grant_type": "client_credentials"}, auth=("databus", secret)
    )


def _bundle(code: str) -> dict[str, object]:
    ident = {"system": SYSTEM, "value": code}
    return {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "fullUrl": "urn:uuid:6f0c2f0e-7a0b-4d8e-9a55-8f2b1f1b0c01",
                "resource": {"resourceType": "Organization", "identifier": [ident]},
                "request": {
                    "method": "POST",
                    "url": "Organization",
                    "ifNoneExist": f"identifier={ident['system']}|{code}",
                },
            }
        ],
    }


def test_process_serves_tokens_bundles_control_and_stats(
    receiver_process: tuple[str, Path],
) -> None:
    url, store = receiver_process
    with httpx.Client(timeout=5) as client:
        assert _token(client, url, "wrong").status_code == 401
        token = _token(client, url, SECRET).json()
        assert token["token_type"] == "Bearer" and token["expires_in"] > 0
        bearer = {"Authorization": f"Bearer {token['access_token']}"}

        assert client.post(url, json=_bundle("75001")).status_code == 401  # no token
        first = client.post(url, json=_bundle("75001"), headers=bearer)
        assert first.status_code == 200
        assert first.json()["entry"][0]["response"]["status"] == "201 Created"
        again = client.post(url, json=_bundle("75001"), headers=bearer)
        assert again.json()["entry"][0]["response"]["status"] == "200 OK"  # ifNoneExist

        control = client.post(f"{url}/_control", json={"action": "fail", "status": 503, "count": 1})
        assert control.status_code == 200
        assert client.post(url, json=_bundle("75002"), headers=bearer).status_code == 503
        client.post(f"{url}/_control", json={"action": "reject", "identifiers": ["75002"]})
        refused = client.post(url, json=_bundle("75002"), headers=bearer)
        assert refused.status_code == 422
        assert refused.json()["issue"][0]["expression"] == ["Bundle.entry[0]"]
        client.post(f"{url}/_control", json={"action": "rate_limit", "retry_after": 2, "count": 1})
        limited = client.post(url, json=_bundle("75003"), headers=bearer)
        assert limited.status_code == 429 and limited.headers["Retry-After"] == "2"
        assert client.post(f"{url}/_control", json={"action": "nonsense"}).status_code == 400

        stats = client.get(f"{url}/_stats").json()
        assert stats["resources"] == 1 and stats["created"] == 1
        assert stats["injected_failures"] == 2 and stats["rejected_requests"] == 1
        orgs = client.get(f"{url}/_resources", params={"type": "Organization"}).json()
        assert [o["identifier"][0]["value"] for o in orgs] == ["75001"]
    assert "75001" in store.read_text(encoding="utf-8")
    assert stat.S_IMODE(store.stat().st_mode) == 0o600  # patients' resources: owner-only


def _org(code: str, name: str, **extra: object) -> dict[str, object]:
    ident = {"system": SYSTEM, "value": code}
    return {"resourceType": "Organization", "identifier": [ident], "name": name, **extra}


def _transaction(resource: dict[str, object], request: dict[str, str]) -> dict[str, object]:
    doc: dict[str, object] = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "fullUrl": "urn:uuid:0f4b3a9e-2d1c-4e5f-8a7b-6c5d4e3f2a1b",
                "resource": resource,
                "request": request,
            }
        ],
    }
    Bundle.model_validate(doc)  # what the tests send is valid FHIR too
    return doc


@pytest.fixture
def fhir_client() -> Iterator[tuple[HealthReceiver, httpx.Client]]:
    with HealthReceiver(client_secret=SECRET) as axis, httpx.Client(timeout=5) as client:
        token = _token(client, axis.url, SECRET).json()["access_token"]
        client.headers["Authorization"] = f"Bearer {token}"
        yield axis, client


def test_versions_etags_and_if_match(fhir_client: tuple[HealthReceiver, httpx.Client]) -> None:
    axis, client = fhir_client
    search = f"identifier={SYSTEM}|75001"
    created = client.post(
        axis.url,
        json=_transaction(
            _org("75001", "A"), {"method": "POST", "url": "Organization", "ifNoneExist": search}
        ),
    )
    answer = created.json()["entry"][0]["response"]
    assert answer["status"] == "201 Created" and answer["etag"] == 'W/"1"'
    org_id = answer["location"].split("/")[1]

    read = client.get(f"{axis.url}/Organization/{org_id}")
    assert read.status_code == 200 and read.headers["ETag"] == 'W/"1"'
    meta = Organization.model_validate(read.json()).meta
    assert meta is not None and meta.versionId == "1"

    def put(name: str, if_match: str | None) -> httpx.Response:
        request = {"method": "PUT", "url": f"Organization/{org_id}"}
        if if_match is not None:
            request["ifMatch"] = if_match
        return client.post(axis.url, json=_transaction(_org("75001", name, id=org_id), request))

    updated = put("B", 'W/"1"')
    assert updated.status_code == 200
    assert updated.json()["entry"][0]["response"]["etag"] == 'W/"2"'
    stale = put("C", 'W/"1"')  # version 1 is gone: 412, nothing written
    assert stale.status_code == 412
    assert stale.json()["issue"][0]["expression"] == ["Bundle.entry[0]"]
    assert axis.stats()["conflicts"] == 1
    assert put("D", None).status_code == 200  # no If-Match: last write wins
    held = client.get(f"{axis.url}/Organization?{search}").json()
    Bundle.model_validate(held)
    assert held["type"] == "searchset" and held["total"] == 1
    assert held["entry"][0]["resource"]["name"] == "D"
    assert held["entry"][0]["resource"]["meta"]["versionId"] == "3"
    # a conditional PUT is last-write-wins too, whatever the resource says of itself
    conditional = {"method": "PUT", "url": f"Organization?{search}"}
    assert client.post(axis.url, json=_transaction(_org("75001", "E"), conditional)).is_success
    assert axis.find("Organization", SYSTEM, "75001")[0]["name"] == "E"


def test_batch_reads(fhir_client: tuple[HealthReceiver, httpx.Client]) -> None:
    axis, client = fhir_client
    request = {"method": "POST", "url": "Organization", "ifNoneExist": f"identifier={SYSTEM}|1"}
    client.post(axis.url, json=_transaction(_org("1", "one"), request))
    org_id = axis.find("Organization", SYSTEM, "1")[0]["id"]
    batch = {
        "resourceType": "Bundle",
        "type": "batch",
        "entry": [
            {"request": {"method": "GET", "url": f"Organization?identifier={SYSTEM}|1"}},
            {"request": {"method": "GET", "url": f"Organization?identifier={SYSTEM}|2"}},
            {"request": {"method": "GET", "url": f"Organization/{org_id}"}},
            {"request": {"method": "GET", "url": "Organization/missing"}},
        ],
    }
    Bundle.model_validate(batch)
    answer = client.post(axis.url, json=batch)
    assert answer.status_code == 200
    body = answer.json()
    Bundle.model_validate(body)
    assert body["type"] == "batch-response"
    one, two, by_id, missing = body["entry"]
    assert one["resource"]["total"] == 1 and two["resource"]["total"] == 0
    assert by_id["response"]["etag"] == 'W/"1"'
    assert missing["response"]["status"].startswith("404")
    assert (
        client.get(f"{axis.url}/Organization/{org_id}", headers={"Authorization": ""}).status_code
        == 401
    )


def test_started_again_after_a_stop_it_answers_on_the_same_address() -> None:
    receiver = HealthReceiver(client_secret=SECRET).start()
    try:
        url = receiver.url
        receiver.stop()
        with pytest.raises(StackError):
            _ = receiver.url
        receiver.start()
        assert receiver.url == url
        with pytest.raises(StackError):
            receiver.start()
        with httpx.Client() as client:
            assert _token(client, url, SECRET).status_code == 200
    finally:
        receiver.stop()
