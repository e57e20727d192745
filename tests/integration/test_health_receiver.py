"""The loopback health-axis receiver as a process: token endpoint, control API, stats."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

pytestmark = pytest.mark.integration

ROOT = Path(__file__).parents[2]
SECRET = "process-receiver-secret"


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


def _token(client: httpx.Client, url: str, secret: str) -> httpx.Response:
    return client.post(
        f"{url}/token", data={"grant_type": "client_credentials"}, auth=("databus", secret)
    )


def _bundle(code: str) -> dict[str, object]:
    ident = {"system": "urn:databus:fhir:id:facility-code", "value": code}
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
