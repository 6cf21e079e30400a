"""Plain HTTP is allowed to this machine only: which hosts count as loopback."""

from __future__ import annotations

import pytest

from target_userpilot.loopback import is_loopback


@pytest.mark.parametrize("host", ["localhost", "127.0.0.1", "127.8.9.10", "::1"])
def test_loopback_hosts(host: str) -> None:
    assert is_loopback(host)


NOT_LOOPBACK = ["analytex.userpilot.io", "10.0.0.1", "::", "localhost.example.com", ""]
NOT_LOOPBACK.append("0.0.0.0")  # noqa: S104 - classified, never bound


@pytest.mark.parametrize("host", NOT_LOOPBACK)
def test_other_hosts_are_not_loopback(host: str) -> None:
    assert not is_loopback(host)
