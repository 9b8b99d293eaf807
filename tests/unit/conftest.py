"""Unit tests are hermetic: any attempt to connect a socket anywhere but loopback fails the test.

(Lab addresses in 198.18.0.0/15 exist only while a lab is up; otherwise the default route takes them
off the machine. A unit test that reached one would depend on whatever answers there.)
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterator
from typing import Any

import pytest

from tests.builders import FakeStore, serve_fake_store

_real_connect = socket.socket.connect
_real_connect_ex = socket.socket.connect_ex


def _allowed(address: Any) -> bool:
    if isinstance(address, (str, bytes)):  # AF_UNIX
        return True
    host = address[0]
    if host in ("localhost", ""):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _guard(sock: socket.socket, address: Any) -> None:
    if not _allowed(address):
        raise AssertionError(f"unit test tried to connect to {address!r}: unit tests may only use loopback")


@pytest.fixture(autouse=True)
def _loopback_only(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    def connect(self: socket.socket, address: Any) -> None:
        _guard(self, address)
        _real_connect(self, address)

    def connect_ex(self: socket.socket, address: Any) -> int:
        _guard(self, address)
        return _real_connect_ex(self, address)

    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket.socket, "connect_ex", connect_ex)
    yield


@pytest.fixture
def store() -> Iterator[tuple[int, type[FakeStore]]]:
    """A Consul leader endpoint on loopback: (port, handler class; set ``.leader`` to change the answer)."""
    yield from serve_fake_store()
