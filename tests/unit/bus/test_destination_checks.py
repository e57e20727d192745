"""Readiness checks of a process's own destination: ``tcp_check`` (an HTTP destination
reached without a request) and ``dir_check`` (a folder the process writes into)."""

from __future__ import annotations

import re
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from bus.health_checks import CheckFailed, Readiness, dir_check, tcp_check


@pytest.fixture
def listening() -> Iterator[int]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield int(sock.getsockname()[1])


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_tcp_check_passes_while_the_port_accepts(listening: int) -> None:
    tcp_check(f"http://127.0.0.1:{listening}/fhir")()


def test_tcp_check_fails_naming_host_and_port_never_credentials() -> None:
    port = _closed_port()
    with pytest.raises(CheckFailed) as failed:
        tcp_check(f"https://user:s3cret@127.0.0.1:{port}/fhir", timeout_s=1)()
    assert f"127.0.0.1:{port} unreachable" in str(failed.value)
    assert "s3cret" not in str(failed.value)


def test_tcp_check_defaults_the_port_by_scheme_and_waits_for_a_late_address() -> None:
    address: dict[str, str] = {}
    check = tcp_check(lambda: address.get("url"), timeout_s=0.5)
    with pytest.raises(CheckFailed, match="not listening yet"):
        check()
    address["url"] = "https://127.0.0.1/fhir"  # 443: nothing listens there here
    with pytest.raises(CheckFailed, match=re.escape("127.0.0.1:443")):
        check()


def test_tcp_check_through_readiness_goes_from_failing_to_ready() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
        readiness = Readiness(ttl_s=0.0, timeout_s=2.0)
        readiness.add("health_axis", tcp_check(f"http://127.0.0.1:{port}", timeout_s=1))
        (down,) = readiness.run()
        assert not down.ok and "unreachable" in down.reason
        sock.listen()
        (up,) = readiness.run()
        assert up.ok, up.reason


def test_dir_check_creates_the_folder(tmp_path: Path) -> None:
    target = tmp_path / "open_data"
    dir_check(target)()
    assert target.is_dir()


def test_dir_check_fails_when_a_file_is_in_the_way(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x", encoding="utf-8")
    with pytest.raises(CheckFailed, match="cannot create"):
        dir_check(blocker / "open_data")()
